// Every refusal the proxy produces is JSON with a reason code from the closed set, whether the
// client is waiting on an HTTP response or on a raw socket mid-upgrade.
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ReasonCode } from '../authz/index.js';

export interface ErrorBody {
  error: string;
  reason: ReasonCode;
  policies?: string[];
  detail?: string;
  /** With reason `revoked`: the kind and id of the revocation entry (never the revoked value). */
  revocation?: { kind: string; id: string };
}

const ERROR_NAMES: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  429: 'too_many_requests',
  431: 'headers_too_large',
  502: 'bad_gateway',
  503: 'unavailable',
};

export function errorBody(status: number, reason: ReasonCode, extra: Omit<ErrorBody, 'error' | 'reason'> = {}): ErrorBody {
  return { error: ERROR_NAMES[status] ?? 'error', reason, ...extra };
}

/** The 403 body for a denied decision: reason, deciding policies, and the revocation if any. */
export function denialBody(decision: { reason: ReasonCode; policies: string[]; revocation?: { kind: string; id: string } }): ErrorBody {
  return errorBody(403, decision.reason, { policies: decision.policies, ...(decision.revocation ? { revocation: decision.revocation } : {}) });
}

export function sendError(res: ServerResponse, status: number, body: ErrorBody, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(payload);
}

/** For upgrade requests, where no ServerResponse exists: write a full response and close. */
export function sendRawError(socket: Duplex, status: number, body: ErrorBody): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const payload = JSON.stringify(body);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(payload)}\r\nconnection: close\r\n\r\n${payload}`,
  );
}
