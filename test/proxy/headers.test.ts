import t from 'tap';
import type { IncomingHttpHeaders } from 'node:http';
import { RouteTable, splitAuthority, xfccValue } from '../../src/proxy/index.js';
import { forwardableRequestHeaders, stripHopByHop, stripIdentityHeaders, setIdentityHeaders } from '../../src/proxy/headers.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const own = SpiffeId.parse('spiffe://example.org/agent/b');
const peer = SpiffeId.parse('spiffe://example.org/agent/a');

t.test('XFCC value is exact and ordered', async (t) => {
  t.equal(xfccValue(own, 'ab12', peer), 'By=spiffe://example.org/agent/b;Hash=ab12;URI=spiffe://example.org/agent/a');
});

t.test('identity headers: incoming copies removed, then set from verified material', async (t) => {
  const headers: IncomingHttpHeaders = {
    'x-forwarded-client-cert': 'By=evil',
    'x-sigil-peer-id': 'spiffe://example.org/admin',
    'x-sigil-delegation': '{}',
    'x-sigil-whatever': '1',
    x_sigil_peer_id: 'spiffe://example.org/admin',
    'x-forwarded_client_cert': 'By=evil',
    'x-other': 'kept',
    x_other_underscored: 'kept',
  };
  stripIdentityHeaders(headers);
  t.same(headers, { 'x-other': 'kept', x_other_underscored: 'kept' }, 'underscore spellings of identity headers go too');
  setIdentityHeaders(headers, own, 'ff', peer);
  t.equal(headers['x-sigil-peer-id'], peer.toString());
  t.equal(headers['x-forwarded-client-cert'], xfccValue(own, 'ff', peer));
});

t.test('hop-by-hop headers and those named by Connection are dropped', async (t) => {
  const h: IncomingHttpHeaders = { connection: 'keep-alive, X-Custom', 'x-custom': '1', 'keep-alive': 'timeout=5', te: 'trailers', 'proxy-authorization': 'secret', 'transfer-encoding': 'chunked', upgrade: 'h2c', accept: '*/*' };
  stripHopByHop(h);
  t.same(h, { accept: '*/*' });
  const ws: IncomingHttpHeaders = { connection: 'Upgrade', upgrade: 'websocket', 'keep-alive': '1', 'sec-websocket-key': 'k' };
  stripHopByHop(ws, true);
  t.same(ws, { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, 'upgrade request keeps its upgrade headers');
});

t.test('Connection cannot nominate framing, Host or identity headers', async (t) => {
  const h: IncomingHttpHeaders = {
    connection: 'content-length, Transfer-Encoding, host, x-sigil-peer-id, X-Forwarded-Client-Cert, x-custom',
    'content-length': '5',
    host: 'agent-b',
    'x-sigil-peer-id': 'spiffe://example.org/agent/a',
    'x-forwarded-client-cert': 'By=x',
    'x-custom': 'dropped',
  };
  stripHopByHop(h);
  t.same(h, { 'content-length': '5', host: 'agent-b', 'x-sigil-peer-id': 'spiffe://example.org/agent/a', 'x-forwarded-client-cert': 'By=x' });
});

t.test('a decoded chunked body is re-framed as chunked for the next hop', async (t) => {
  const chunked: IncomingHttpHeaders = { 'transfer-encoding': 'gzip, chunked', connection: 'keep-alive' };
  forwardableRequestHeaders(chunked, false);
  t.same(chunked, { 'transfer-encoding': 'chunked' });
  const plain: IncomingHttpHeaders = { 'content-length': '3' };
  forwardableRequestHeaders(plain, false);
  t.same(plain, { 'content-length': '3' }, 'no Transfer-Encoding is invented (positive control)');
});

t.test('routes: host case-insensitive, port ignored unless named', async (t) => {
  const table = new RouteTable([
    { host: 'agent-b', address: { host: '127.0.0.1', port: 1 }, spiffeId: 'spiffe://example.org/agent/b' },
    { host: 'agent-c', port: 8080, address: { host: '127.0.0.1', port: 2 }, spiffeId: 'spiffe://example.org/agent/*' },
  ]);
  t.equal(table.resolve('Agent-B')?.address.port, 1);
  t.equal(table.resolve('agent-b:9999')?.address.port, 1);
  t.equal(table.resolve('agent-c:8080')?.address.port, 2);
  t.equal(table.resolve('agent-c'), undefined, 'route with a port needs that port');
  t.equal(table.resolve('agent-c:80'), undefined);
  t.equal(table.resolve('agent-d'), undefined);
  const specific = new RouteTable([
    { host: 'svc', address: { host: '127.0.0.1', port: 1 }, spiffeId: 'spiffe://example.org/a' },
    { host: 'svc', port: 8080, address: { host: '127.0.0.1', port: 2 }, spiffeId: 'spiffe://example.org/b' },
  ]);
  t.equal(specific.resolve('svc:8080')?.address.port, 2, 'a port-specific route wins over an earlier port-less one');
  t.equal(specific.resolve('svc:9090')?.address.port, 1);
  t.same(splitAuthority('[::1]:443'), { host: '[::1]', port: 443 });
  t.throws(() => new RouteTable([{ host: 'x', address: { host: 'h', port: 1 }, spiffeId: 'spiffe://example.org/a*' }]), /outbound\.routes\[0\]\.spiffeId/);
});
