import t from 'tap';
import { SigilMetrics } from '../../src/telemetry/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const id = (s: string): SpiffeId => SpiffeId.parse(s);
const observation = (source: string, destination = 'spiffe://example.org/agent/b') => ({
  reporter: 'inbound' as const,
  source: id(source),
  destination: id(destination),
  protocol: 'http' as const,
  responseCode: 200,
  decision: 'allow' as const,
  reason: 'allowed',
  seconds: 0.002,
});

t.test('requests are attributed to caller and callee with the documented labels', async (t) => {
  const m = new SigilMetrics();
  m.observeRequest(observation('spiffe://example.org/agent/a'));
  m.observeRequest({ ...observation('spiffe://example.org/agent/a'), responseCode: 403, decision: 'deny', reason: 'policy_denied', chainDepth: 5 });
  const text = await m.exposition();
  t.match(
    text,
    'sigil_requests_total{reporter="inbound",source_principal="spiffe://example.org/agent/a",destination_principal="spiffe://example.org/agent/b",request_protocol="http",response_code="200",decision="allow",reason="allowed",delegated="false",chain_depth="0"} 1',
  );
  t.match(text, /decision="deny",reason="policy_denied",delegated="true",chain_depth="3\+"\} 1/, 'chain depth is bucketed, never raw');
  t.match(text, /sigil_request_duration_seconds_bucket\{le="0.0025",reporter="inbound"/);
});

t.test('cardinality guard: distinct principals are capped, the rest fold into "other" and are counted', async (t) => {
  const m = new SigilMetrics({ principalLabelLimit: 3 });
  for (let i = 0; i < 10; i++) m.observeRequest(observation(`spiffe://example.org/agent/${i}`));
  const text = await m.exposition();
  const sources = new Set([...text.matchAll(/sigil_requests_total\{[^}]*source_principal="([^"]+)"/g)].map((x) => x[1]));
  t.ok(sources.size <= 4, `at most limit + "other" (${[...sources].join(', ')})`);
  t.ok(sources.has('other'));
  t.match(text, /sigil_metric_label_overflow_total\{label="source_principal"\} 7/);
  const destinationOnly = text.match(/sigil_metric_label_overflow_total\{label="destination_principal"\}/);
  t.equal(destinationOnly, null, 'the single destination never overflowed (positive control)');
});

t.test('prefix mapping keeps the first N path segments', async (t) => {
  const m = new SigilMetrics({ principalPathSegments: 1 });
  m.observeRequest(observation('spiffe://example.org/tenant-1/agent/x', 'spiffe://example.org/tenant-2/agent/y'));
  const text = await m.exposition();
  t.match(text, 'source_principal="spiffe://example.org/tenant-1",destination_principal="spiffe://example.org/tenant-2"');
});

t.test('OpenMetrics on request, and Prometheus text unchanged afterwards', async (t) => {
  const m = new SigilMetrics();
  m.observeRequest(observation('spiffe://example.org/agent/a'));
  const open = await m.exposition(true);
  t.match(open, /# TYPE sigil_requests counter/);
  t.match(open, /# EOF\n$/);
  t.match(m.contentType(true), /application\/openmetrics-text/);
  // OpenMetrics first: its rendering renames counters in place, so a Prometheus rendering
  // started while it is in flight is the case the serialization in exposition() exists for.
  const [b, a] = await Promise.all([m.exposition(true), m.exposition(false)]);
  t.match(a, /# TYPE sigil_requests_total counter/, 'Prometheus text keeps _total even when rendered alongside OpenMetrics');
  t.match(b, /# TYPE sigil_requests counter/);
  t.match(await m.exposition(false), /# TYPE sigil_metric_label_overflow_total counter/);
});
