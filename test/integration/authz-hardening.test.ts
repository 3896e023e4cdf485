// Regression tests for the second security review of continuous authorization, on a real
// `sigil run` with a Cedar policy. Each refusal has a positive control on the same sidecar.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import type { Issued } from '../fixtures/certs.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, writeConfig, type RunningSigil } from '../helpers/env.js';
import { rawTls, startRecordingUpstream, type RecordingUpstream } from '../helpers/raw.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/mcp/tools';

const POLICY = `
@id("connect") permit (principal == Agent::"${ID_A}", action == Action::"connect", resource == Agent::"${ID_B}");
@id("http") permit (principal == Agent::"${ID_A}", action == Action::"http", resource == Agent::"${ID_B}") unless { context.http.path like "/admin*" };
@id("messages") permit (principal in TrustDomain::"example.org", action == Action::"websocket.message", resource in TrustDomain::"example.org");
@id("mcp") permit (principal == Agent::"${ID_A}", action in Action::"mcp", resource);
@id("no-delete") forbid (principal, action == Action::"mcp.tools/call", resource) when { resource.name like "delete_*" };
`;
const FREEZE = `${POLICY}\n@id("freeze") forbid (principal, action == Action::"http", resource);\n`;

let dir: string;
let sidecar: RunningSigil;
let upstream: RecordingUpstream;
let leaf: Issued;
const wsReceived: { data: string; isBinary: boolean }[] = [];

t.before(async () => {
  dir = await tempDir(t, 'sigil-authz-hard-');
  const td = await setupTrustDomain(dir, 'example.org');
  leaf = await td.leaf(ID_A);
  upstream = await startRecordingUpstream(t);
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  const cfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { cedar: './policy.cedar' },
    }),
  );
  sidecar = await runSigil(t, cfg);
});

async function raw(request: string): Promise<{ status?: number; body?: string; closed: boolean }> {
  const conn = await rawTls(sidecar.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  try {
    const r = await conn.request(request);
    return r.kind === 'response' ? { status: r.status, body: r.body, closed: false } : { closed: true };
  } finally {
    conn.socket.destroy();
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function alive(t: { equal: (...args: any[]) => unknown }): Promise<void> {
  const r = await raw('GET /still-alive HTTP/1.1\r\nHost: b\r\n\r\n');
  t.equal(r.status, 200, 'the sidecar is alive and serving');
}

const rpc = (body: string): string => `POST /mcp HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

t.test('lone surrogates in JSON-RPC strings are refused, not a crash', async (t) => {
  const ok = await raw(rpc('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'));
  t.equal(ok.status, 200, 'well-formed call forwarded (positive control)');
  t.ok(upstream.requests.some((r) => r.body.includes('"search"')));

  const name = await raw(rpc('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_\\ud800all"}}'));
  t.equal(JSON.parse(name.body ?? '{}').error?.code, -32602, 'lone surrogate in params.name → invalid params');
  const method = await raw(rpc('{"jsonrpc":"2.0","id":3,"method":"\\udc00x"}'));
  t.equal(JSON.parse(method.body ?? '{}').error?.code, -32600, 'lone surrogate in method → invalid request');
  t.notOk(upstream.requests.some((r) => r.body.includes('ud800') || r.body.includes('udc00')), 'neither was forwarded');
  await alive(t);
});

t.test('policy path = forwarded path: non-canonical targets are refused', async (t) => {
  t.equal((await raw('GET /admin HTTP/1.1\r\nHost: b\r\n\r\n')).status, 403, '/admin denied by policy (positive control of the rule)');
  t.equal((await raw('GET /administrator-guide-not HTTP/1.1\r\nHost: b\r\n\r\n')).status, 403);
  const fine = await raw('GET /docs/a%20b?x=1 HTTP/1.1\r\nHost: b\r\n\r\n');
  t.equal(fine.status, 200, 'a canonical path with an encoded space is forwarded (positive control)');
  t.ok(upstream.requests.some((r) => r.url === '/docs/a%20b?x=1'), 'verbatim');
  for (const target of ['//admin', '/x/../admin', '/./admin', '/%61dmin', '/%2e%2e/admin', '/a%2Fadmin', '/\\admin', 'http://evil/admin']) {
    const r = await raw(`GET ${target} HTTP/1.1\r\nHost: b\r\n\r\n`);
    t.equal(r.status, 400, `${target}: 400`);
    t.match(r.body ?? '', /"reason":"bad_request"/);
  }
  t.notOk(upstream.requests.some((r) => r.url.includes('admin')), 'no admin path ever reached the upstream');
});

t.test('compressed bodies are refused when bodies are inspected', async (t) => {
  const body = gzipSync('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}');
  const head = `POST /mcp HTTP/1.1\r\nHost: b\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Length: ${body.length}\r\n\r\n`;
  const conn = await rawTls(sidecar.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  t.teardown(() => conn.socket.destroy());
  const r = await conn.request(Buffer.concat([Buffer.from(head), body]));
  t.equal(r.kind === 'response' && r.status, 415, '415 for Content-Encoding: gzip');
  t.notOk(upstream.requests.some((q) => q.headers['content-encoding'] === 'gzip'), 'not forwarded');
  const plain = await raw('POST /notes HTTP/1.1\r\nHost: b\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello');
  t.equal(plain.status, 200, 'an uncompressed text body passes (positive control)');
});

// The head was decided under the old policy; nothing of the request has been forwarded yet when
// the reload lands (forwarding starts with the first body bytes), so it must be decided again.
t.test('a request whose body arrives after a reload that denies it is not forwarded', async (t) => {
  const conn = await rawTls(sidecar.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  t.teardown(() => conn.socket.destroy());
  const before = await conn.request('POST /early HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nok');
  t.equal(before.kind === 'response' && before.status, 200, 'same connection works before (positive control)');
  conn.socket.write('POST /parked HTTP/1.1\r\nHost: b\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n');
  await sleep(200);
  await writeFile(join(dir, 'policy.cedar'), FREEZE);
  const reload = await fetch(`http://${sidecar.admin}/v1/policy/reload`, { method: 'POST' });
  t.equal(reload.status, 200);
  conn.socket.write('helloworld');
  const after = await conn.next();
  t.equal(after.kind === 'response' && after.status, 403, 'refused under the new policy');
  t.notOk(upstream.requests.some((r) => r.url === '/parked'), 'never forwarded');
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  await fetch(`http://${sidecar.admin}/v1/policy/reload`, { method: 'POST' });
});

t.test('WebSocket: JSON-RPC in binary frames is inspected too', async (t) => {
  // Its own sidecar in front of a small WebSocket upstream (the recording upstream is HTTP only).
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws) =>
    ws.on('message', (data, isBinary) => {
      wsReceived.push({ data: data.toString(), isBinary });
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, result: 'ran' }));
    }),
  );
  const wsDir = await tempDir(t, 'sigil-authz-ws-');
  const td = await setupTrustDomain(wsDir, 'example.org');
  const client = await td.leaf(ID_A);
  await writeFile(join(wsDir, 'policy.cedar'), POLICY);
  const cfg = await writeConfig(
    wsDir,
    'ws.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${(wss.address() as { port: number }).port}` },
      policy: { cedar: './policy.cedar' },
    }),
  );
  const s = await runSigil(t, cfg);
  const ws = new WebSocket(`wss://${s.inbound}/mcp`, { cert: client.pem, key: client.keyPem, rejectUnauthorized: false });
  t.teardown(() => ws.terminate());
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const next = (): Promise<string> => new Promise((resolve) => ws.once('message', (d) => resolve(d.toString())));

  ws.send(Buffer.from('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'), { binary: true });
  t.same(JSON.parse(await next()), { jsonrpc: '2.0', id: 1, result: 'ran' }, 'allowed call in a binary frame forwarded (positive control)');
  ws.send(Buffer.from('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}'), { binary: true });
  const refusal = JSON.parse(await next()) as { id: number; error: { code: number; data: { policies: string[] } } };
  t.equal(refusal.error.code, -32043, 'denied call in a binary frame refused on the stream');
  t.same(refusal.error.data.policies, ['no-delete']);
  t.notOk(wsReceived.some((m) => m.data.includes('delete_all')), 'never reached the upstream');
  ws.send(Buffer.from([0x01, 0x02, 0x03]), { binary: true });
  t.same(JSON.parse(await next()), { jsonrpc: '2.0', id: 1, result: 'ran' }, 'non-JSON binary still passes on websocket.message alone');
});
