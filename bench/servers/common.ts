// Helpers for the benchmark's child-process servers: argument parsing, SVID loading, readiness.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';

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
