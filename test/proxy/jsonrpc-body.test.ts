// readRequestBody when the whole body has already arrived before it is called. Both proxies
// await something before reading the body — the inbound side a delegation token's signature
// check (a cache miss), the outbound side the token exchange at the broker — so a small body
// and its end are routinely sitting in the request's buffer by then. Reading it must not wait
// for an 'end' that was already emitted (found by test/integration/mcp-tools-example.test.ts:
// the first JSON-RPC call with each new delegation token hung).
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { readRequestBody, type RequestBody } from '../../src/proxy/jsonrpc-http.js';
import { waitUntil } from '../helpers/env.js';

/** For messages: what came back, briefly. */
function describe(r: RequestBody | 'hang' | undefined): string {
  if (r === 'hang' || r === undefined) return String(r);
  return r.kind === 'buffered' ? `buffered ${r.body.length} bytes (${r.rpc.kind})` : r.kind;
}

const RPC = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search' } });

/**
 * Sends `body` to a server that, when `late`, waits until the request is complete (body and
 * end parsed into its buffer) before reading; resolves with what readRequestBody returned, or
 * 'hang' if it did not return within 3 s.
 */
async function readOnce(body: string, contentType: string, late: boolean): Promise<RequestBody | 'hang' | undefined> {
  let outcome: Promise<RequestBody | 'hang' | undefined> | undefined;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    outcome = (async () => {
      if (late && !(await waitUntil(() => req.complete, 3_000, 5))) throw new Error('request never completed');
      let timer: NodeJS.Timeout | undefined;
      const hang = new Promise<'hang'>((resolve) => (timer = setTimeout(() => resolve('hang'), 3_000)));
      const read = await Promise.race([readRequestBody(req, res, { inspect: true }), hang]);
      clearTimeout(timer);
      res.end('ok');
      return read;
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await new Promise<void>((resolve, reject) => {
      const req = request({ port: (server.address() as AddressInfo).port, method: 'POST', headers: { 'content-type': contentType }, agent: false }, (res) => {
        res.resume();
        res.on('end', resolve);
      });
      req.setTimeout(5_000, () => req.destroy(new Error('no answer')));
      req.on('error', (err) => (outcome ? resolve() : reject(err)));
      req.end(body);
    });
    return await outcome;
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

t.test('a JSON body read as it arrives (positive control)', async (t) => {
  const r = await readOnce(RPC, 'application/json', false);
  t.ok(r !== 'hang' && r?.kind === 'buffered' && r.body.toString() === RPC, describe(r));
});

t.test('a JSON body that arrived completely before the read', async (t) => {
  const r = await readOnce(RPC, 'application/json', true);
  t.not(r, 'hang', 'readRequestBody returns');
  t.ok(r !== 'hang' && r?.kind === 'buffered' && r.body.toString() === RPC, 'with the whole body, buffered');
  t.ok(r !== 'hang' && r?.kind === 'buffered' && r.rpc.kind === 'calls', 'and its calls parsed');
});

t.test('a body declared JSON that is not, arrived before the read', async (t) => {
  const r = await readOnce('hello', 'application/json', true);
  t.ok(r !== 'hang' && r?.kind === 'buffered' && r.body.toString() === 'hello', `buffered, to be answered as a parse error: ${describe(r)}`);
});

t.test('a non-JSON body that arrived before the read is streamed through whole', async (t) => {
  const r = await readOnce('hello', 'text/plain', true);
  t.ok(r !== 'hang' && r?.kind === 'streamed', describe(r));
  if (r !== 'hang' && r?.kind === 'streamed') {
    const chunks: Buffer[] = [];
    for await (const c of r.stream) chunks.push(c as Buffer);
    t.equal(Buffer.concat(chunks).toString(), 'hello');
  }
});
