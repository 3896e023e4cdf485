// The broker's pure layers: its config (examples/broker.yaml loads; every problem named with its
// key), RFC 8693 request parsing (each error code), and the example broker policy's decisions,
// including which OAuth error a denial maps to. The running broker is test/integration/broker.test.ts.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { ConfigError } from '../../src/config/index.js';
import { loadBrokerConfig, parseBrokerConfig } from '../../src/delegation/broker-config.js';
import { TokenEndpointError } from '../../src/delegation/broker-errors.js';
import { BrokerPolicy, compileBrokerPolicy } from '../../src/delegation/broker-policy.js';
import { parseExchangeRequest } from '../../src/delegation/broker-request.js';
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from '../../src/delegation/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  return [];
}

const MINIMAL = {
  trustDomain: 'example.org',
  identity: { dev: { caDir: './ca', spiffeId: 'spiffe://example.org/broker' } },
  issuer: 'https://broker.example.org',
  signingKeys: './keys',
  subjectIssuers: [{ issuer: 'https://idp.example.org', audience: 'sigil-broker', jwks: './idp.jwks.json' }],
  policy: { cedar: './broker.cedar' },
};

t.test('config: examples/broker.yaml loads, defaults and relative paths', async (t) => {
  const config = await loadBrokerConfig(join(EXAMPLES, 'broker.yaml'));
  t.equal(config.trustDomain, 'example.org');
  t.match(config, { listen: { host: '0.0.0.0', port: 8444 }, maxTtlMs: 300_000, maxDepth: 4, admin: { listen: { port: 15010 } } }, 'example values');
  t.equal(config.policy.cedar, join(EXAMPLES, 'policies', 'broker.cedar'), 'policy path relative to the config file');
  t.equal(config.scopes.length, 2, 'two scope ceilings');

  const min = parseBrokerConfig(JSON.stringify(MINIMAL), 'json', '/etc/sigil/broker.json');
  t.match(min, {
    listen: { host: '0.0.0.0', port: 8444 },
    admin: { listen: { host: '127.0.0.1', port: 15010 } },
    maxTtlMs: 300_000,
    maxDepth: 4,
    leewayMs: 5_000,
    keyActivationDelayMs: 0,
    signingKeys: '/etc/sigil/keys',
    subjectIssuers: [{ jwks: '/etc/sigil/idp.jwks.json' }],
    identity: { kind: 'dev', caDir: '/etc/sigil/ca', ttlMs: 900_000 },
    scopes: [],
  }, 'defaults');
  t.equal(min.jwksOut, undefined, 'no jwksOut unless configured');
});

t.test('config: each problem names its key', async (t) => {
  const parse = (doc: unknown) => issuesOf(() => parseBrokerConfig(JSON.stringify(doc), 'json', '/x/broker.json'));
  t.match(parse({ ...MINIMAL, policy: undefined }), [{ path: 'policy', message: 'is required' }], 'policy required (fail closed)');
  t.match(parse({ ...MINIMAL, maxTtl: '5 min' }), [{ path: 'maxTtl', message: /invalid duration/ }]);
  t.match(parse({ ...MINIMAL, maxTtl: '48h' }), [{ path: 'maxTtl', message: /at most 24h/ }]);
  t.match(parse({ ...MINIMAL, maxDepth: 0 }), [{ path: 'maxDepth', message: /at least 1/ }]);
  t.match(parse({ ...MINIMAL, issuer: 'broker' }), [{ path: 'issuer', message: /invalid issuer/ }]);
  t.match(parse({ ...MINIMAL, issur: 'x' }), [{ path: '', message: 'unknown key "issur" (did you mean "issuer"?)' }]);
  t.match(parse({ ...MINIMAL, subjectIssuers: [] }), [{ path: 'subjectIssuers', message: 'must have at least 1 entry' }]);
  t.match(
    parse({ ...MINIMAL, subjectIssuers: [{ issuer: 'https://idp.example.org', audience: 'a' }] }),
    [{ path: 'subjectIssuers[0]', message: /exactly one of jwks .* and jwksUri/ }],
  );
  t.match(
    parse({ ...MINIMAL, subjectIssuers: [...MINIMAL.subjectIssuers, ...MINIMAL.subjectIssuers] }),
    [{ path: 'subjectIssuers[1].issuer', message: /duplicate issuer/ }],
  );
  t.match(
    parse({ ...MINIMAL, subjectIssuers: [{ issuer: MINIMAL.issuer, audience: 'a', jwks: 'x' }] }),
    [{ path: 'subjectIssuers[0].issuer', message: /must differ from the broker's own issuer/ }],
  );
  t.match(parse({ ...MINIMAL, scopes: [{ audience: 'agent-b', allow: ['read'] }] }), [{ path: 'scopes[0].audience', message: /SPIFFE/ }]);
  t.match(parse({ ...MINIMAL, scopes: [{ audience: 'spiffe://example.org/a', allow: ['read write'] }] }), [{ path: 'scopes[0].allow[0]', message: /scope token/ }]);
  t.same(parse({ ...MINIMAL, identity: { workloadApi: { socket: 'unix:///run/spire.sock' } } }), [], 'the broker takes its SVID from the Workload API too');
  t.match(parse({ ...MINIMAL, identity: { workloadApi: { socket: 'tcp://spire-agent:8081' } } }), [{ path: 'identity.workloadApi.socket', message: /must be an IP address/ }]);
  const withEnv = parseBrokerConfig(JSON.stringify({ ...MINIMAL, identity: { workloadApi: null } }), 'json', '/x/broker.json', { SPIFFE_ENDPOINT_SOCKET: 'unix:///run/spire/agent.sock' });
  t.match(withEnv.identity, { kind: 'workloadApi', socket: 'unix:///run/spire/agent.sock', startupTimeoutMs: 30_000 }, 'socket from SPIFFE_ENDPOINT_SOCKET');
  t.match(
    issuesOf(() => parseBrokerConfig(JSON.stringify({ ...MINIMAL, identity: { workloadApi: null } }), 'json', '/x/broker.json', {})),
    [{ path: 'identity.workloadApi.socket', message: /SPIFFE_ENDPOINT_SOCKET is not set/ }],
  );
  t.match(parse({ ...MINIMAL, identity: { dev: { caDir: 'ca', spiffeId: 'spiffe://other.org/broker' } } }), [{ path: 'identity.dev.spiffeId', message: /trust domain/ }]);
  t.match(parse({ ...MINIMAL, listen: '127.0.0.1:9000', admin: { listen: '127.0.0.1:9000' } }), [{ path: 'admin.listen', message: /conflicts/ }]);
  t.same(parse(MINIMAL), [], 'positive control: the minimal config has no issues');
  t.same(parse({ ...MINIMAL, subjectIssuers: [{ issuer: 'https://idp.example.org', audience: 'a', jwksUri: 'https://idp.example.org/jwks' }] }), [], 'jwksUri instead of jwks');
  const yaml = issuesOf(() => parseBrokerConfig('trustDomain: [', 'yaml', '/x/b.yaml'));
  t.match(yaml, [{ path: '', message: /YAML syntax error at line/ }], 'YAML syntax errors with a position');
});

const form = (params: Record<string, string | string[] | undefined>): string => {
  const f = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const one of v === undefined ? [] : Array.isArray(v) ? v : [v]) f.append(k, one);
  return f.toString();
};
const BASE = {
  grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
  subject_token: 'x.y.z',
  subject_token_type: TOKEN_TYPE_ACCESS_TOKEN,
  audience: 'spiffe://example.org/agent/b',
};

interface Asserts {
  ok(v: unknown, m: string): unknown;
  equal(a: unknown, b: unknown, m: string): unknown;
  fail(m: string): unknown;
}

function refusal(t: Asserts, params: Record<string, string | string[] | undefined>, error: string, what: string): void {
  try {
    parseExchangeRequest(form(params));
    t.fail(`${what}: accepted`);
  } catch (err) {
    t.ok(err instanceof TokenEndpointError, `${what}: a TokenEndpointError`);
    t.equal((err as TokenEndpointError).error, error, `${what}: ${error}`);
  }
}

t.test('request parsing: RFC 8693 §2.1 and RFC 6749 rules', async (t) => {
  const ok = parseExchangeRequest(form({ ...BASE, scope: 'read  write read', actor_token: 'a.b.c', actor_token_type: TOKEN_TYPE_JWT, extra: 'ignored' }));
  t.ok(ok.audience.equals(SpiffeId.parse(BASE.audience)), 'audience parsed');
  t.same(ok.scope, ['read', 'write'], 'scope split and deduplicated');
  t.equal(ok.actorToken, 'a.b.c');
  t.same(parseExchangeRequest(form({ ...BASE, audience: undefined, resource: BASE.audience })).audience.toString(), BASE.audience, 'resource works as audience');
  t.equal(parseExchangeRequest(form({ ...BASE, scope: '' })).scope, undefined, 'an empty parameter counts as absent (RFC 6749 §3.1)');
  refusal(t, { ...BASE, grant_type: undefined }, 'invalid_request', 'no grant_type');
  refusal(t, { ...BASE, grant_type: 'authorization_code' }, 'unsupported_grant_type', 'another grant');
  refusal(t, { ...BASE, subject_token: undefined }, 'invalid_request', 'no subject_token');
  refusal(t, { ...BASE, subject_token_type: undefined }, 'invalid_request', 'no subject_token_type');
  refusal(t, { ...BASE, subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }, 'invalid_request', 'SAML subject');
  refusal(t, { ...BASE, actor_token: 'a.b.c' }, 'invalid_request', 'actor_token without type');
  refusal(t, { ...BASE, actor_token_type: TOKEN_TYPE_JWT }, 'invalid_request', 'actor_token_type alone');
  refusal(t, { ...BASE, actor_token: 'a.b.c', actor_token_type: TOKEN_TYPE_ACCESS_TOKEN }, 'invalid_request', 'actor token not a JWT type');
  refusal(t, { ...BASE, requested_token_type: 'urn:ietf:params:oauth:token-type:id_token' }, 'invalid_request', 'unsupported requested_token_type');
  refusal(t, { ...BASE, audience: undefined }, 'invalid_request', 'no target');
  refusal(t, { ...BASE, audience: 'agent-b' }, 'invalid_target', 'target not a SPIFFE ID');
  refusal(t, { ...BASE, resource: 'spiffe://example.org/agent/c' }, 'invalid_target', 'two targets');
  refusal(t, { ...BASE, subject_token: ['a', 'b'] }, 'invalid_request', 'a repeated parameter');
  refusal(t, { ...BASE, scope: 'read\\write' }, 'invalid_scope', 'backslash in scope');
  refusal(t, { ...BASE, scope: '   ' }, 'invalid_scope', 'blank scope');
});

t.test('the example broker policy', async (t) => {
  const policy = new BrokerPolicy(join(EXAMPLES, 'policies', 'broker.cedar'));
  const loaded = await policy.start();
  t.teardown(() => policy.stop());
  t.ok(loaded.mentionsExchange, 'has permits for delegation.exchange');
  const id = (s: string) => SpiffeId.parse(`spiffe://example.org/${s}`);
  const orchestrator = id('agent/orchestrator');
  const base = { sub: 'alice', scope: ['tasks.read'], actors: [] as string[], depth: 1, subjectTokenType: 'user' as const };
  t.match(policy.authorize({ ...base, actor: orchestrator, audience: id('agent/worker') }), { allowed: true, policies: ['orchestrator-acts-for-users'] }, 'orchestrator for a user');
  t.match(policy.authorize({ ...base, actor: id('agent/worker'), audience: id('agent/other') }), { allowed: false, error: 'invalid_target', policies: [] }, 'a worker cannot start a chain');
  const chained = { ...base, actors: [orchestrator.toString()], depth: 2, subjectTokenType: 'delegation' as const };
  t.match(policy.authorize({ ...chained, actor: id('agent/worker'), audience: id('mcp/search') }), { allowed: true }, 'worker on to a tool');
  t.match(policy.authorize({ ...chained, actor: id('agent/worker'), audience: id('agent/other') }), { allowed: false, error: 'invalid_target' }, 'worker on to another agent: audience refused');
  t.match(policy.authorize({ ...chained, scope: ['tasks.write'], actor: id('agent/worker'), audience: id('mcp/search') }), { allowed: false, error: 'invalid_scope', policies: ['no-write-down-the-chain'] }, 'write down the chain: invalid_scope');
  t.match(
    policy.authorize({ ...base, actor: SpiffeId.parse('spiffe://partner.example/agent/orchestrator'), audience: id('agent/worker') }),
    { allowed: false, error: 'unauthorized_client', policies: ['no-foreign-actors'] },
    'a foreign actor: unauthorized_client',
  );
});

t.test('@error annotations are checked when the policy loads', async (t) => {
  t.throws(() => compileBrokerPolicy('@error("nope") forbid (principal, action == Action::"delegation.exchange", resource);', 'p.cedar'), /not one of/, 'unknown error code');
  t.throws(() => compileBrokerPolicy('@error("invalid_scope") permit (principal, action == Action::"delegation.exchange", resource);', 'p.cedar'), /only has a meaning on forbid/, 'on a permit');
  t.notOk(compileBrokerPolicy('permit (principal, action == Action::"connect", resource);', 'p.cedar').mentionsExchange, 'a sidecar policy has no exchange permit');
  t.doesNotThrow(() => compileBrokerPolicy('@error("unauthorized_client") forbid (principal, action == Action::"delegation.exchange", resource);', 'p.cedar'), 'positive control');
});

t.test('signing keys: generated when missing, new keys picked up, activation delay, removal', async (t) => {
  const { mkdtemp, rm, readFile: read, unlink } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { BrokerKeys } = await import('../../src/delegation/broker-keys.js');
  const { SigningKeyRing } = await import('../../src/delegation/index.js');
  const { silentLogger } = await import('../../src/telemetry/index.js');
  const dir = await mkdtemp(join(tmpdir(), 'sigil-keys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const changes: number[] = [];
  const keys = new BrokerKeys({ dir: join(dir, 'keys'), activationDelayMs: 60_000, jwksOut: join(dir, 'out', 'jwks.json'), logger: silentLogger, onChange: (n) => changes.push(n), pollIntervalMs: 60_000 });
  await keys.start();
  t.teardown(() => keys.stop());
  const first = keys.signer();
  t.equal(keys.jwks().keys.length, 1, 'a key is generated in an empty folder');
  t.same(JSON.parse(await read(join(dir, 'out', 'jwks.json'), 'utf8')), keys.jwks(), 'jwksOut written at start');

  const second = await SigningKeyRing.generate(join(dir, 'keys'));
  await keys.poll();
  t.same(keys.jwks().keys.map((k) => k.kid).sort(), [first.kid, second.kid].sort(), 'the new key is published at once');
  t.equal(keys.signer().kid, first.kid, 'but does not sign before the activation delay');
  t.equal(keys.signer(Date.now() + 61_000).kid, second.kid, 'and signs once the delay has passed');
  t.same(changes, [1, 2], 'onChange per published set');
  t.equal(JSON.parse(await read(join(dir, 'out', 'jwks.json'), 'utf8')).keys.length, 2, 'jwksOut rewritten');

  await unlink(join(dir, 'keys', `signing-${first.kid}.json`));
  await keys.poll();
  t.same(keys.jwks().keys.map((k) => k.kid), [second.kid], 'a removed file leaves the JWKS');
  const { writeFile: write } = await import('node:fs/promises');
  await write(join(dir, 'keys', 'signing-broken.json'), '{ not json');
  await keys.poll();
  t.same(keys.jwks().keys.map((k) => k.kid), [second.kid], 'a broken key file keeps the last good ring');
  t.equal(keys.signer().kid, second.kid, 'and its signer');
});

t.test('config: the broker keeps its own wording where it differs from sigil run', async (t) => {
  const json = (text: string) => issuesOf(() => parseBrokerConfig(text, 'json', '/x/broker.json'));
  t.match(json('{\n"a": 1\n"b": 2}'), [{ path: '', message: /^JSON syntax error: Expected ',' or '}' after property value in JSON at position 9/ }], 'JSON errors as the runtime words them, not located');
  const yaml = `${Object.entries(MINIMAL).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n')}\nmaxDepth: .nan\n`;
  t.strictSame(issuesOf(() => parseBrokerConfig(yaml, 'yaml', '/x/broker.yaml')), [{ path: 'maxDepth', message: 'expected number, got number' }], 'NaN named "number"');
  t.strictSame(json(JSON.stringify({ ...MINIMAL, tru: 1 })), [{ path: '', message: 'unknown key "tru" (did you mean "trust"?)' }], 'did you mean: the first known key within 2');
});
