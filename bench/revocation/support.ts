// Shared pieces of the revocation benchmark: in-memory SVIDs from the bench CA, a raw mTLS
// HTTP/1.1 client that keeps its connection and records when the server closes it, the admin
// API calls, a nats-server (JetStream, TLS, client certificates verified against the bench
// trust domain) found on PATH, and small timing helpers.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { webcrypto, createPrivateKey } from 'node:crypto';
import { DevIssuer, type X509Svid } from '../../src/identity/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';
import { x509 } from '../../src/spiffe/peculiar.js';
import { SIGIL_BIN } from '../../src/cli/processes.js';
import { TD, findOnPath, sleep, splitHostPort } from '../lib.js';

export const hr = (): bigint => process.hrtime.bigint();
export const msSince = (t0: bigint, t1: bigint = hr()): number => Number(t1 - t0) / 1e6;

export interface BenchSvid {
  id: SpiffeId;
  certPem: string;
  keyPem: string;
  /** Client context: this SVID, and the bench CA as the only trust anchor. */
  ctx: SecureContext;
  svid: X509Svid;
}

/** Mints SVIDs in memory from the CA `makePki` wrote (no files per agent). */
export async function svidMinter(caDir: string): Promise<(id: string) => Promise<BenchSvid>> {
  const certPem = await readFile(join(caDir, 'ca.pem'), 'utf8');
  const keyPem = await readFile(join(caDir, 'ca.key'), 'utf8');
  const issuer = await DevIssuer.fromPem(TD, { certPem, keyPem });
  return async (id) => {
    const svid = await issuer.issue(SpiffeId.parse(id), 60 * 60_000);
    const leaf = svid.certificates[0]!;
    return {
      svid: { ...svid, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo), serial: leaf.serialNumber },
      id: svid.id,
      certPem: svid.certChainPem,
      keyPem: svid.privateKeyPem,
      ctx: createSecureContext({ cert: svid.certChainPem, key: svid.privateKeyPem, ca: certPem }),
    };
  };
}

// ---------------------------------------------------------------------------------------------
// Raw mTLS HTTP/1.1: one request per connection, then the connection is kept (or closed).

export interface Response {
  status: number;
  body: string;
}

export interface KeptConnection {
  socket: TLSSocket;
  response: Response;
  /** hrtime at the socket's 'close' (whoever closed it). */
  closed: Promise<bigint>;
}

function responseComplete(buf: string): Response | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const head = buf.slice(0, end);
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? NaN);
  const rest = buf.slice(end + 4);
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (cl) return rest.length >= Number(cl[1]) ? { status, body: rest.slice(0, Number(cl[1])) } : undefined;
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
    if (!rest.endsWith('0\r\n\r\n')) return undefined;
    let body = '';
    let at = 0;
    for (;;) {
      const nl = rest.indexOf('\r\n', at);
      const size = parseInt(rest.slice(at, nl), 16);
      if (!size) break;
      body += rest.slice(nl + 2, nl + 2 + size);
      at = nl + 2 + size + 2;
    }
    return { status, body };
  }
  return { status, body: rest };
}

/**
 * Opens an mTLS connection as the holder of `ctx`, sends `GET path`, and resolves with the
 * response once it is complete. With `keep`, the connection stays open afterwards and `closed`
 * resolves when it closes; otherwise the client closes it.
 */
export function mtlsGet(address: string, ctx: SecureContext, path: string, keep: boolean, timeoutMs = 20_000): Promise<KeptConnection> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    let buf = '';
    let done = false;
    let markClosed!: (t: bigint) => void;
    const closed = new Promise<bigint>((r) => (markClosed = r));
    const socket = tlsConnect({
      host,
      port,
      secureContext: ctx,
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: true,
      // Every server here presents an SVID of the bench trust domain (no DNS names).
      checkServerIdentity: (_h, cert) => (cert.subjectaltname?.includes(`URI:spiffe://${TD.name}/`) ? undefined : new Error('unexpected server identity')),
    });
    socket.once('close', () => {
      markClosed(hr());
      if (!done) {
        done = true;
        reject(new Error(`connection to ${address} closed before a complete response: ${JSON.stringify(buf.slice(0, 200))}`));
      }
    });
    socket.on('error', (err) => {
      if (!done) {
        done = true;
        reject(err);
      }
    });
    const timer = setTimeout(() => socket.destroy(new Error(`no response from ${address} in ${timeoutMs} ms`)), timeoutMs);
    socket.setNoDelay(true);
    socket.setEncoding('latin1');
    socket.once('secureConnect', () => socket.write(`GET ${path} HTTP/1.1\r\nHost: bench\r\n\r\n`));
    socket.on('data', (d: string) => {
      if (done) return;
      buf += d;
      const response = responseComplete(buf);
      if (!response) return;
      done = true;
      clearTimeout(timer);
      if (!keep) socket.end();
      resolve({ socket, response, closed });
    });
  });
}

/** Opens a TLS connection (handshake only, no request yet). */
export function mtlsOpen(address: string, ctx: SecureContext, timeoutMs = 20_000): Promise<{ socket: TLSSocket; closed: Promise<bigint> }> {
  const { host, port } = splitHostPort(address);
  return new Promise((resolve, reject) => {
    let markClosed!: (t: bigint) => void;
    const closed = new Promise<bigint>((r) => (markClosed = r));
    let settled = false;
    const socket = tlsConnect({
      host,
      port,
      secureContext: ctx,
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: true,
      checkServerIdentity: (_h, cert) => (cert.subjectaltname?.includes(`URI:spiffe://${TD.name}/`) ? undefined : new Error('unexpected server identity')),
    });
    const timer = setTimeout(() => socket.destroy(new Error(`no handshake with ${address} in ${timeoutMs} ms`)), timeoutMs);
    socket.setNoDelay(true);
    socket.once('close', () => {
      markClosed(hr());
      if (!settled) {
        settled = true;
        reject(new Error(`connection to ${address} closed during the handshake`));
      }
    });
    socket.on('error', (err) => {
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      settled = true;
      resolve({ socket, closed });
    });
  });
}

/** One `GET path` on an open connection; resolves with the complete response. */
export function getOn(socket: TLSSocket, path: string, timeoutMs = 20_000): Promise<Response> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => finish(new Error('no response in time')), timeoutMs);
    const onData = (d: Buffer | string): void => {
      buf += typeof d === 'string' ? d : d.toString('latin1');
      const r = responseComplete(buf);
      if (r) finish(undefined, r);
    };
    const onClose = (): void => finish(new Error(`closed before a complete response: ${JSON.stringify(buf.slice(0, 200))}`));
    const finish = (err?: Error, r?: Response): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(r!);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: bench\r\n\r\n`);
  });
}

/** `reason` from a JSON refusal body, if any. */
export function reasonOf(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { reason?: string }).reason;
  } catch {
    return undefined;
  }
}

/** Runs `fn(0..n-1)` with at most `concurrency` in flight. */
export async function pool(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(n, concurrency) }, worker));
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms))),
  ]);
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP to the admin API (and the baseline server's control port).

const adminAgent = new HttpAgent({ keepAlive: true, maxSockets: 8 });

export function destroyAdminAgent(): void {
  adminAgent.destroy();
}

export function httpJson(address: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string }> {
  const { host, port } = splitHostPort(address);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host, port, method, path, agent: adminAgent, headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {} },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, json, text });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

// ---------------------------------------------------------------------------------------------
// nats-server.

export function findNatsServer(): string | undefined {
  return findOnPath('nats-server');
}

export function natsMissingBanner(what: string): string {
  const bar = '!'.repeat(96);
  return [
    '',
    bar,
    '!!! nats-server not found on PATH.',
    `!!! ${what} SKIPPED: propagation over NATS JetStream was NOT measured.`,
    '!!! Install it with: apt-get install --no-install-recommends nats-server',
    bar,
    '',
  ].join('\n');
}

export interface NatsServer {
  url: string;
  /** PEM file of the CA that signed the server certificate (revocation.nats.tls.ca). */
  caFile: string;
  caPem: string;
  pid: number;
  stop(): Promise<void>;
}

/** A server certificate for 127.0.0.1 and the CA that signed it (nats-server's TLS identity). */
async function serverCertificate(): Promise<{ caPem: string; certPem: string; keyPem: string }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  const signing = { name: 'ECDSA', hash: 'SHA-256' } as const;
  const now = Date.now();
  const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=sigil bench nats CA',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    signingAlgorithm: signing,
    keys: caKeys,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: '02',
    subject: 'CN=nats-server',
    issuer: ca.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    signingAlgorithm: signing,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }, { type: 'dns', value: 'localhost' }]),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
  return { caPem: ca.toString('pem') + '\n', certPem: leaf.toString('pem') + '\n', keyPem };
}

/**
 * nats-server on loopback with JetStream (file store in `dir`) and TLS: its own certificate,
 * client certificates verified against `clientCaFile` (the bench trust bundle), as in
 * production. The port is picked by the server (-1) and read from its log.
 */
export async function startNatsServer(binary: string, dir: string, clientCaFile: string): Promise<NatsServer> {
  await mkdir(dir, { recursive: true });
  const cert = await serverCertificate();
  const caFile = join(dir, 'server-ca.pem');
  await writeFile(caFile, cert.caPem);
  await writeFile(join(dir, 'server.pem'), cert.certPem);
  await writeFile(join(dir, 'server.key'), cert.keyPem, { mode: 0o600 });
  const conf = join(dir, 'nats.conf');
  await writeFile(
    conf,
    `listen: 127.0.0.1:-1
jetstream { store_dir: "${join(dir, 'jetstream')}" }
tls {
  cert_file: "${join(dir, 'server.pem')}"
  key_file: "${join(dir, 'server.key')}"
  ca_file: "${clientCaFile}"
  verify: true
  timeout: 2
}
`,
  );
  const child = spawn(binary, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let log = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server not ready in 10 s: ${log}`)), 10_000);
    let port: string | undefined;
    const onData = (d: Buffer): void => {
      log += d.toString();
      port ??= /Listening for client connections on [^\s]*:(\d+)/.exec(log)?.[1];
      if (port && log.includes('Server is ready')) {
        clearTimeout(timer);
        resolve(`tls://127.0.0.1:${port}`);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`nats-server exited (${code}): ${log}`)));
  });
  return {
    url,
    caFile,
    caPem: cert.caPem,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------------

export interface QuietSigil {
  child: ChildProcess;
  ready: Record<string, unknown>;
  log: string;
  stop(): Promise<void>;
}

/** `sigil run` with stdout (its JSON log) going to a file; resolves on the `ready` line. */
export async function spawnQuietSigil(configPath: string, logPath: string): Promise<QuietSigil> {
  const fd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [SIGIL_BIN, 'run', '--config', configPath], { stdio: ['ignore', fd, 'pipe'] });
  closeSync(fd);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sigil exited (${child.exitCode}): ${stderr}`);
    const line = readFileSync(logPath, 'utf8')
      .split('\n')
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return undefined;
        }
      })
      .find((l) => l?.msg === 'ready');
    if (line) return { child, ready: line, log: logPath, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`sigil not ready in 30 s: ${stderr}`);
    }
    await sleep(50);
  }
}
