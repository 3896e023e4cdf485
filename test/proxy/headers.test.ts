import t from 'tap';
import type { IncomingHttpHeaders } from 'node:http';
import { RouteTable, splitAuthority, xfccValue } from '../../src/proxy/index.js';
import { stripHopByHop, stripIdentityHeaders, setIdentityHeaders } from '../../src/proxy/headers.js';
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
    'x-other': 'kept',
  };
  stripIdentityHeaders(headers);
  t.same(headers, { 'x-other': 'kept' });
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
  t.same(splitAuthority('[::1]:443'), { host: '[::1]', port: 443 });
  t.throws(() => new RouteTable([{ host: 'x', address: { host: 'h', port: 1 }, spiffeId: 'spiffe://example.org/a*' }]), /outbound\.routes\[0\]\.spiffeId/);
});
