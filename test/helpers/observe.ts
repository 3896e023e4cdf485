// What the policy and reload integration tests look at besides HTTP answers: WebSocket streams
// (messages and the close code/reason), a sidecar's admin API (/metrics parsed into samples,
// /status, POST /v1/policy/reload) and its audit file (JSON lines).
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import WebSocket, { type ClientOptions } from 'ws';
import type { RunningSigil } from './env.js';
import { waitUntil } from './env.js';

// ---------------------------------------------------------------------------------------------
// WebSocket

export interface WsMessage {
  data: Buffer;
  isBinary: boolean;
}

/** A WebSocket client with a message queue and the close code/reason it got. */
export class WsClient {
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly queue: WsMessage[] = [];
  private waiter: (() => void) | undefined;
  private closeInfo: { code: number; reason: string } | undefined;

  constructor(readonly ws: WebSocket) {
    ws.on('error', () => {});
    ws.on('message', (data: Buffer, isBinary) => {
      this.queue.push({ data, isBinary });
      this.waiter?.();
    });
    this.closed = new Promise((resolve) =>
      ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        this.waiter?.();
        resolve(this.closeInfo);
      }),
    );
  }

  /** The next message; rejects if the stream closes (or nothing arrives in time) first. */
  async next(timeoutMs = 5_000): Promise<WsMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.queue.shift();
      if (m) return m;
      if (this.closeInfo) throw new Error(`stream closed (${this.closeInfo.code} ${this.closeInfo.reason}) instead of a message`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no message in time');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  /** Sends `data` (binary when a Buffer) and returns the next message. */
  async roundTrip(data: string | Buffer, binary = typeof data !== 'string'): Promise<WsMessage> {
    this.ws.send(data, { binary });
    return this.next();
  }

  /** The close this stream got within `timeoutMs`, or 'still open'. */
  closeWithin(timeoutMs = 5_000): Promise<{ code: number; reason: string } | 'still open'> {
    return Promise.race([this.closed, new Promise<'still open'>((r) => setTimeout(() => r('still open'), timeoutMs))]);
  }
}

/** Opens a WebSocket; rejects when the upgrade is refused. */
export function openWs(url: string, options: ClientOptions = {}): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, [], options);
    ws.once('open', () => resolve(new WsClient(ws)));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

/** The HTTP answer to an upgrade that must not succeed. */
export function wsRefusal(url: string, options: ClientOptions = {}): Promise<{ status: number; headers: IncomingHttpHeaders; body: string; json: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('upgrade unexpectedly succeeded'));
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json });
      });
    });
    ws.once('error', reject);
  });
}

// ---------------------------------------------------------------------------------------------
// Admin API

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text exposition format (samples only). */
export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return samples;
}

export async function metrics(sidecar: RunningSigil): Promise<Sample[]> {
  const res = await fetch(`http://${sidecar.admin}/metrics`);
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}

/** Sum of the samples named `name` whose labels include `labels`. */
export function metricSum(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** `sigil_authz_decisions_total` for these labels, right now. */
export async function decisions(sidecar: RunningSigil, labels: Record<string, string>): Promise<number> {
  return metricSum(await metrics(sidecar), 'sigil_authz_decisions_total', labels);
}

export async function adminStatus(sidecar: RunningSigil): Promise<any> {
  const res = await fetch(`http://${sidecar.admin}/status`);
  return res.json();
}

export async function policyVersion(sidecar: RunningSigil): Promise<string> {
  return String((await adminStatus(sidecar)).policy?.version);
}

export async function postReload(sidecar: RunningSigil): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://${sidecar.admin}/v1/policy/reload`, { method: 'POST' });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/**
 * Replaces the policy file atomically (write + rename, so the file watcher never sees a partly
 * written file) and reloads at once through the admin API; throws unless the reload succeeded.
 * Returns the version now in force.
 */
export async function setPolicy(sidecar: RunningSigil, path: string, text: string): Promise<string> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
  const r = await postReload(sidecar);
  if (r.status !== 200) throw new Error(`policy reload answered ${r.status}: ${JSON.stringify(r.json)}`);
  return policyVersion(sidecar);
}

// ---------------------------------------------------------------------------------------------
// Audit

export async function readAudit(path: string): Promise<any[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    });
}

/** The audit lines matching `pred`, waiting up to `timeoutMs` for at least one (writes are asynchronous). */
export async function auditLines(path: string, pred: (line: any) => boolean, timeoutMs = 3_000): Promise<any[]> {
  return (await waitUntil(async () => {
    const found = (await readAudit(path)).filter(pred);
    return found.length > 0 ? found : undefined;
  }, timeoutMs)) ?? [];
}
