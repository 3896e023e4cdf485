import t from 'tap';
import { Backoff, grpcTarget, parseWorkloadEndpoint, WorkloadEndpointError } from '../../src/identity/workload-api/index.js';

t.test('valid endpoints (Workload Endpoint §4) and their grpc targets', async (t) => {
  const cases: [string, string][] = [
    ['unix:///run/spire/agent.sock', 'unix:///run/spire/agent.sock'],
    ['unix:/run/spire/agent.sock', 'unix:///run/spire/agent.sock'],
    ['tcp://127.0.0.1:8081', 'ipv4:127.0.0.1:8081'],
    ['tcp://[::1]:8081', 'ipv6:[::1]:8081'],
  ];
  for (const [text, target] of cases) t.equal(grpcTarget(parseWorkloadEndpoint(text)), target, text);
});

t.test('malformed endpoints are refused with the reason', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /empty/],
    ['/run/spire/agent.sock', /no scheme/],
    ['unix://spire/agent.sock', /must not have an authority/],
    ['unix:relative.sock', /must be absolute/],
    ['unix:///', /need the socket path/],
    ['unix:///run/a.sock?x=1', /query/],
    ['unix:///run/a.sock#f', /fragment/],
    ['tcp://localhost:8081', /must be an IP address/],
    ['tcp://spire-agent.svc:8081', /must be an IP address/],
    ['tcp://127.0.0.1:8081/api', /path is not allowed/],
    ['tcp://127.0.0.1', /port is required/],
    ['tcp://127.0.0.1:0', /1-65535/],
    ['tcp://user@127.0.0.1:8081', /user info/],
    ['tcp:127.0.0.1:8081', /need an authority/],
    ['http://127.0.0.1:8081', /unsupported scheme/],
    ['unix:///run/a b.sock', /whitespace/],
    ['unix:///tmp/%zz', /invalid percent-encoding/],
    ['unix:///tmp/a%00b', /NUL byte/],
  ];
  for (const [text, reason] of cases) {
    t.throws(() => parseWorkloadEndpoint(text), reason, JSON.stringify(text));
    let caught: unknown;
    try {
      parseWorkloadEndpoint(text);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof WorkloadEndpointError && caught.code === 'workload_endpoint_invalid', `${JSON.stringify(text)}: typed error`);
  }
});

t.test('backoff: jittered in [base/2, base], doubling to the cap, reset after success', async (t) => {
  const low = new Backoff(100, 1_000, () => 0);
  t.same([low.next(), low.next(), low.next(), low.next(), low.next(), low.next()], [50, 100, 200, 400, 500, 500]);
  const high = new Backoff(100, 1_000, () => 1);
  t.same([high.next(), high.next(), high.next(), high.next(), high.next()], [100, 200, 400, 800, 1_000]);
  high.reset();
  t.equal(high.next(), 100, 'reset starts over');
  const real = new Backoff(200, 10_000);
  for (let i = 0; i < 100; i++) {
    const d = real.next();
    if (d > 10_000 || d < 100) t.fail(`delay ${d} out of range`);
  }
});
