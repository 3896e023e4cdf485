// SIGIL_* environment overrides: which keys have one (all that fit in a variable), how values are
// read, that the file's value loses, and that problems name the variable.
import t from 'tap';
import { parseConfig, SIDECAR_ENV_OVERRIDES, BROKER_ENV_OVERRIDES, ConfigError, describeOverride, envNameForKey, applyEnvOverrides, foreignOverrides, misspelledOverrides, type EnvOverride, type OverrideKind } from '../../src/config/index.js';
import { KNOWN_KEYS } from '../../src/config/schema.js';
import { BROKER_KNOWN_KEYS, parseBrokerConfig } from '../../src/delegation/broker-config.js';
import { effectiveView, redactUrl } from '../../src/config/effective.js';

const FILE = '/etc/sigil/sigil.yaml';
const BASE = `
trustDomain: example.org
identity:
  dev: { caDir: /ca, spiffeId: spiffe://example.org/agent/a }
inbound:
  upstream: http://127.0.0.1:3000
`;

function parse(env: Record<string, string>, text = BASE) {
  return parseConfig(text, 'yaml', FILE, { env });
}

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
    throw err;
  }
  return [];
}

/** Leaf keys of a document per its known-keys map: keys that are not sections themselves. */
function leafKeys(known: Readonly<Record<string, readonly string[]>>): string[] {
  const leaves: string[] = [];
  for (const [section, keys] of Object.entries(known)) {
    for (const key of keys) {
      const full = section === '' ? key : `${section}.${key}`;
      if (!(full in known)) leaves.push(full);
    }
  }
  return leaves.sort();
}

/** Keys without an override, and why (the same reasons docs/config.md gives). */
const NO_OVERRIDE: Record<string, string> = {
  'trust.bundles': 'a map of trust domain to file',
  'outbound.routes': 'a list of objects',
  'outbound.egress': 'a list of objects',
  subjectIssuers: 'a list of objects',
  scopes: 'a list of objects',
};

function coverage(known: Readonly<Record<string, readonly string[]>>, table: readonly EnvOverride[]): { missing: string[]; stale: string[] } {
  const leaves = leafKeys(known).filter((k) => !k.includes('[]'));
  const covered = new Set(table.map((o) => o.key));
  return {
    missing: leaves.filter((k) => !covered.has(k) && !(k in NO_OVERRIDE)),
    stale: table.map((o) => o.key).filter((k) => !leaves.includes(k)),
  };
}

t.test('every key that fits in a variable has an override; none is stale', async (t) => {
  t.same(coverage(KNOWN_KEYS, SIDECAR_ENV_OVERRIDES), { missing: [], stale: [] }, 'sidecar');
  t.same(coverage(BROKER_KNOWN_KEYS, BROKER_ENV_OVERRIDES), { missing: [], stale: [] }, 'broker');
  // Positive control: the check finds a key without an override, and an override for no key.
  const fewer = SIDECAR_ENV_OVERRIDES.filter((o) => o.key !== 'admin.listen');
  t.same(coverage(KNOWN_KEYS, [...fewer, { env: 'SIGIL_NOPE', key: 'admin.nope', kind: 'string' }]), { missing: ['admin.listen'], stale: ['admin.nope'] });
  t.ok(leafKeys(KNOWN_KEYS).length > 50, 'the leaf walk sees the whole schema');
});

t.test('variable names follow the key', async (t) => {
  t.equal(envNameForKey('admin.tokenFile'), 'SIGIL_ADMIN_TOKEN_FILE');
  t.equal(envNameForKey('identity.workloadApi.startupTimeout'), 'SIGIL_IDENTITY_WORKLOAD_API_STARTUP_TIMEOUT');
  t.equal(envNameForKey('bus.envelope.maxTtl'), 'SIGIL_BUS_ENVELOPE_MAX_TTL');
  for (const o of SIDECAR_ENV_OVERRIDES) t.equal(o.env, envNameForKey(o.key), o.key);
  for (const o of BROKER_ENV_OVERRIDES) t.ok(o.env.startsWith('SIGIL_BROKER_'), o.env);
  const names = SIDECAR_ENV_OVERRIDES.map((o) => o.env);
  t.equal(new Set(names).size, names.length, 'no two keys share a variable');
});

t.test('each override has the kind its key needs', async (t) => {
  // A sample of each kind set on every key: the schema may reject the value, but never for its type.
  const sample: Record<OverrideKind, string> = { string: 'x', path: '/x', boolean: 'true', number: '1', list: 'a,b' };
  for (const o of SIDECAR_ENV_OVERRIDES) {
    const typeIssues = issuesOf(() => parse({ [o.env]: sample[o.kind] })).filter((i) => i.startsWith(`${o.key}:`) && /expected (number|boolean|string|array), got/.test(i));
    t.same(typeIssues, [], `${o.env} (${o.kind})`);
  }
  // Positive control: a wrong kind is caught that way.
  const wrong = { env: 'SIGIL_METRICS_ENABLED', key: 'metrics.enabled', kind: 'string' as const };
  const r = applyEnvOverrides({ metrics: {} }, { SIGIL_METRICS_ENABLED: 'true' }, [wrong]);
  t.same(r.document, { metrics: { enabled: 'true' } });
  t.match(issuesOf(() => parseConfig(`${BASE}metrics: { enabled: "true" }\n`, 'yaml', FILE, { env: {} })), [/metrics\.enabled: expected boolean, got string/]);
});

t.test('an override beats the file and creates missing sections', async (t) => {
  const file = `${BASE}admin: { listen: 127.0.0.1:15000 }\n`;
  t.same(parse({}, file).admin.listen, { host: '127.0.0.1', port: 15000 }, 'the file without overrides');
  const c = parse(
    {
      SIGIL_ADMIN_LISTEN: '0.0.0.0:15009',
      SIGIL_ADMIN_TOKEN_FILE: '/etc/sigil-admin/token',
      SIGIL_IDENTITY_DEV_SPIFFE_ID: 'spiffe://example.org/agent/z',
      SIGIL_BUS_LOCAL: '127.0.0.1:15002',
      SIGIL_BUS_NATS_SERVERS: ' nats://a:4222 , nats://b:4222 ,',
      SIGIL_METRICS_ENABLED: 'false',
      SIGIL_METRICS_PRINCIPAL_LABEL_LIMIT: '7',
      SIGIL_SHUTDOWN_DELAY: '5s',
      SIGIL_POLICY_ALLOW: 'spiffe://example.org/agent/*,spiffe://example.org/ops/**',
    },
    file,
  );
  t.same(c.admin.listen, { host: '0.0.0.0', port: 15009 });
  t.equal(c.identity.kind === 'dev' && c.identity.spiffeId, 'spiffe://example.org/agent/z');
  t.same(c.bus?.nats?.servers, ['nats://a:4222', 'nats://b:4222'], 'a list: split at commas, blanks dropped');
  t.equal(c.metrics.enabled, false);
  t.equal(c.metrics.principalLabelLimit, 7);
  t.equal(c.shutdown.delayMs, 5000);
  t.same(c.policy.allow, ['spiffe://example.org/agent/*', 'spiffe://example.org/ops/**']);
});

t.test('workloadApi given as null takes overrides; an empty value is unset', async (t) => {
  const file = 'trustDomain: example.org\nidentity:\n  workloadApi:\ninbound: { upstream: "http://127.0.0.1:3000" }\n';
  const c = parse({ SIGIL_IDENTITY_WORKLOAD_API_SOCKET: 'unix:///run/spire/agent.sock', SIGIL_ADMIN_LISTEN: '' }, file);
  t.equal(c.identity.kind === 'workloadApi' && c.identity.socket, 'unix:///run/spire/agent.sock');
  t.same(c.admin.listen, { host: '127.0.0.1', port: 15000 }, 'SIGIL_ADMIN_LISTEN="" leaves the default');
});

t.test('bad values are refused with the variable named; the file is not modified', async (t) => {
  const raw = { trustDomain: 'example.org', admin: 'oops' };
  const r = applyEnvOverrides(raw, { SIGIL_ADMIN_LISTEN: '127.0.0.1:1', SIGIL_METRICS_ENABLED: 'yes' });
  t.same(raw, { trustDomain: 'example.org', admin: 'oops' }, 'input untouched');
  t.same(r.applied, []);
  t.match(r.issues, [
    { path: 'admin', message: /SIGIL_ADMIN_LISTEN: cannot set admin\.listen: admin in the file is not a section/ },
    { path: 'metrics.enabled', message: 'SIGIL_METRICS_ENABLED: must be true or false (got "yes")' },
  ]);

  t.match(issuesOf(() => parse({ SIGIL_AUDIT_PATH: 'audit.log' })), ['audit.path: SIGIL_AUDIT_PATH: must be an absolute path (got "audit.log")']);
  t.match(issuesOf(() => parse({ SIGIL_BUS_ENVELOPE_MAX_BYTES: '1MB', SIGIL_BUS_LOCAL: '127.0.0.1:0' })), ['bus.envelope.maxBytes: SIGIL_BUS_ENVELOPE_MAX_BYTES: must be a number (got "1MB")']);
  t.match(issuesOf(() => parse({ SIGIL_POLICY_ALLOW: ' , ' })), ['policy.allow: SIGIL_POLICY_ALLOW: must list at least one comma-separated value']);
  // Schema problems with an overridden value say where the value came from.
  t.same(issuesOf(() => parse({ SIGIL_INBOUND_LISTEN: 'nowhere' })), ['inbound.listen: invalid address "nowhere" (expected host:port) (from SIGIL_INBOUND_LISTEN)']);
  t.same(issuesOf(() => parse({ SIGIL_POLICY_MODE: 'audit' })), ['policy.mode: expected "enforce" or "dry-run", got "audit" (from SIGIL_POLICY_MODE)']);
  // ...and rules about a section the override wrote into.
  t.same(issuesOf(() => parse({ SIGIL_IDENTITY_FILES_CERT: '/svid.pem' })), [
    'identity.files.key: is required',
    'identity.files.bundle: is required',
    'identity: exactly one of dev, files, workloadApi is allowed (got dev, files) (SIGIL_IDENTITY_FILES_CERT sets identity.files.cert)',
  ]);
  // Issues elsewhere are not attributed (control).
  t.same(issuesOf(() => parse({ SIGIL_ADMIN_LISTEN: '127.0.0.1:15000' }, BASE.replace('http://127.0.0.1:3000', 'ftp://x'))), ['inbound.upstream: unsupported URL scheme "ftp:" in "ftp://x" (expected http: or https:)']);
});

t.test('misspelled SIGIL_ variables are reported; unrelated ones are not', async (t) => {
  const env = { SIGIL_ADMIN_LISTN: '1', SIGIL_INBOUND_UPSTRAEM: 'x', SIGIL_SERVICE_HOST: '10.0.0.1', SIGIL_PORT: 'tcp://10.0.0.1:8443', SIGIL_LOG_LEVEL: 'debug', SIGIL_BROKER_LISTEN: '0.0.0.0:8444', OTHER: 'x' };
  t.same(misspelledOverrides(env), [
    { env: 'SIGIL_ADMIN_LISTN', suggestion: 'SIGIL_ADMIN_LISTEN' },
    { env: 'SIGIL_INBOUND_UPSTRAEM', suggestion: 'SIGIL_INBOUND_UPSTREAM' },
  ]);
});

t.test('the broker reads SIGIL_BROKER_* overrides', async (t) => {
  const text = `
trustDomain: example.org
identity: { dev: { caDir: /ca, spiffeId: spiffe://example.org/broker } }
issuer: https://broker.example.org
signingKeys: /keys
subjectIssuers: [{ issuer: https://idp.example.org, audience: sigil, jwks: /idp.json }]
policy: { cedar: /broker.cedar }
`;
  const c = parseBrokerConfig(text, 'yaml', '/etc/sigil/broker.yaml', { SIGIL_BROKER_LISTEN: '0.0.0.0:9444', SIGIL_BROKER_MAX_DEPTH: '3', SIGIL_ADMIN_LISTEN: '0.0.0.0:1' });
  t.same(c.listen, { host: '0.0.0.0', port: 9444 });
  t.equal(c.maxDepth, 3);
  t.same(c.admin.listen, { host: '127.0.0.1', port: 15010 }, "the sidecar's SIGIL_ADMIN_LISTEN does not apply to the broker");
  t.match(issuesOf(() => parseBrokerConfig(text, 'yaml', '/etc/sigil/broker.yaml', { SIGIL_BROKER_MAX_DEPTH: '99' })), [/maxDepth: must be at most 16 \(from SIGIL_BROKER_MAX_DEPTH\)/]);
});

t.test('the effective view formats addresses and redacts URL secrets', async (t) => {
  t.equal(redactUrl('nats://sigil:hunter2@nats:4222'), 'nats://[redacted]:[redacted]@nats:4222');
  t.equal(redactUrl('https://vault:8200/v1/secret?token=s.abc&x=1'), 'https://vault:8200/v1/secret?token=[redacted]&x=[redacted]');
  t.equal(redactUrl('https://ghp_token123@git.example.org/repo'), 'https://[redacted]@git.example.org/repo', 'a user name alone can be the credential');
  t.equal(redactUrl('https://idp.example.org/cb#access_token=abc'), 'https://idp.example.org/cb#[redacted]');
  t.equal(redactUrl('nats://nats:4222'), 'nats://nats:4222', 'nothing to redact: unchanged');
  t.equal(redactUrl('spiffe://example.org/agent/a'), 'spiffe://example.org/agent/a');
  t.equal(redactUrl('/etc/sigil/token'), '/etc/sigil/token');
  const view = effectiveView({ admin: { listen: { host: '::1', port: 15000 } }, bus: { nats: { servers: ['tls://u:p@n:4222'] } }, n: 3, b: false }) as any;
  t.same(view, { admin: { listen: '[::1]:15000' }, bus: { nats: { servers: ['tls://[redacted]:[redacted]@n:4222'] } }, n: 3, b: false });
  t.notMatch(JSON.stringify(view), /:p@/);
  // Config errors that echo a URL redact it too.
  t.same(issuesOf(() => parse({ SIGIL_INBOUND_UPSTREAM: 'ftp://user:hunter2@host/' })), ['inbound.upstream: unsupported URL scheme "ftp:" in "ftp://[redacted]:[redacted]@host/" (expected http: or https:) (from SIGIL_INBOUND_UPSTREAM)']);
});

t.test('the other command\'s variables and safe values are recognised', async (t) => {
  t.same(foreignOverrides({ SIGIL_ADMIN_LISTEN: '0.0.0.0:1', SIGIL_INBOUND_LISTEN: 'x', SIGIL_BROKER_LISTEN: 'y' }, BROKER_ENV_OVERRIDES, SIDECAR_ENV_OVERRIDES), [
    { env: 'SIGIL_INBOUND_LISTEN' },
    { env: 'SIGIL_ADMIN_LISTEN', suggestion: 'SIGIL_BROKER_ADMIN_LISTEN' },
  ].sort((a, b) => SIDECAR_ENV_OVERRIDES.findIndex((o) => o.env === a.env) - SIDECAR_ENV_OVERRIDES.findIndex((o) => o.env === b.env)));
  t.same(foreignOverrides({ SIGIL_ADMIN_LISTEN: '0.0.0.0:1' }, SIDECAR_ENV_OVERRIDES, BROKER_ENV_OVERRIDES), [], 'a sidecar variable on a sidecar is its own');
  const env = { SIGIL_METRICS_ENABLED: 'false', SIGIL_POLICY_MODE: 'dry-run', SIGIL_INBOUND_UPSTREAM: 'http://u:secret@x' };
  t.equal(describeOverride({ env: 'SIGIL_METRICS_ENABLED', key: 'metrics.enabled' }, env, SIDECAR_ENV_OVERRIDES), 'SIGIL_METRICS_ENABLED → metrics.enabled = false');
  t.equal(describeOverride({ env: 'SIGIL_POLICY_MODE', key: 'policy.mode' }, env, SIDECAR_ENV_OVERRIDES), 'SIGIL_POLICY_MODE → policy.mode = dry-run');
  t.equal(describeOverride({ env: 'SIGIL_INBOUND_UPSTREAM', key: 'inbound.upstream' }, env, SIDECAR_ENV_OVERRIDES), 'SIGIL_INBOUND_UPSTREAM → inbound.upstream', 'strings (URLs) stay out');
});

t.test('docs/config.md lists every override, and only those', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const doc = await readFile(new URL('../../../docs/config.md', import.meta.url), 'utf8');
  const rows = [...doc.matchAll(/^\| `(SIGIL_[A-Z0-9_]+)` \| `([^`]+)` \|/gm)].map((m) => `${m[1]} ${m[2]}`);
  t.same(rows, SIDECAR_ENV_OVERRIDES.map((o) => `${o.env} ${o.key}`), 'the table matches the code, in order');
  const brokerNames = [...doc.matchAll(/`(SIGIL_BROKER_[A-Z0-9_]+)`/g)].map((m) => m[1]);
  t.ok(brokerNames.length > 0, 'broker variables are named');
  for (const name of brokerNames) t.ok(BROKER_ENV_OVERRIDES.some((o) => o.env === name), `${name} exists`);
});
