// Helpers for the benchmark's child-process servers: argument parsing, SVID loading, readiness,
// and the byte piping of an HTTP Upgrade that both raw proxy halves do.
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';

export function args(): Record<string, string> {
  const out: Record<string, string> = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    const v = argv[i + 1];
    if (!k?.startsWith('--') || v === undefined) throw new Error(`bad arguments: ${argv.join(' ')}`);
    out[k.slice(2)] = v;
  }
  return out;
}

/** svid.pem, svid.key and bundle.pem from a directory written by issueSvidToDir. */
export function loadSvid(dir: string): { cert: string; key: string; ca: string } {
  return {
    cert: readFileSync(join(dir, 'svid.pem'), 'utf8'),
    key: readFileSync(join(dir, 'svid.key'), 'utf8'),
    ca: readFileSync(join(dir, 'bundle.pem'), 'utf8'),
  };
}

export function hostPort(address: string): { host: string; port: number } {
  const sep = address.lastIndexOf(':');
  return { host: address.slice(0, sep), port: Number(address.slice(sep + 1)) };
}

export function announce(address: AddressInfo | string | null): void {
  const a = address as AddressInfo;
  process.stdout.write(JSON.stringify({ msg: 'listening', address: `${a.address}:${a.port}`, port: a.port, pid: process.pid }) + '\n');
}

export function exitOnSignal(): void {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
}

/** The URI SAN of a peer certificate's subjectaltname string ("URI:spiffe://...,DNS:..."). */
export function uriSan(subjectaltname: string | undefined): string | undefined {
  for (const part of (subjectaltname ?? '').split(', ')) if (part.startsWith('URI:')) return part.slice(4);
  return undefined;
}

/**
 * Forwards an HTTP Upgrade request (a WebSocket handshake): writes its head to `upstream`, with
 * `extra` headers replacing any the client sent under those names, then pipes bytes both ways
 * (the 101 answer included) until either side closes. Nothing after the head is parsed, so
 * messages are neither inspected nor re-framed.
 */
export function pipeUpgrade(req: IncomingMessage, client: Duplex, head: Buffer, upstream: Duplex, extra: Record<string, string> = {}): void {
  const lines = [`${req.method} ${req.url} HTTP/1.1`];
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!;
    if (!(name.toLowerCase() in extra)) lines.push(`${name}: ${req.rawHeaders[i + 1]}`);
  }
  for (const [name, value] of Object.entries(extra)) lines.push(`${name}: ${value}`);
  upstream.write(lines.join('\r\n') + '\r\n\r\n');
  if (head.length > 0) upstream.write(head);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  for (const side of [client, upstream]) side.once('error', close).once('close', close);
  client.pipe(upstream);
  upstream.pipe(client);
}
