import t from 'tap';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import {
  ConfigError,
  loadConfig,
  parseConfig,
  parseDuration,
  parseHostPort,
  type SigilConfig,
} from '../../src/config/index.js';

const CFG = '/etc/sigil/sidecar.yaml';

type Doc = Record<string, any>;

function base(): Doc {
  return {
    trustDomain: 'example.org',
    identity: { dev: { caDir: './ca', spiffeId: 'spiffe://example.org/agent/a' } },
    inbound: { upstream: 'http://127.0.0.1:3000' },
  };
}

function mutate(fn: (d: Doc) => void): string {
  const d = base();
  fn(d);
  return YAML.stringify(d);
}

function catchConfigError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError, got a valid config');
}

interface BadCase {
  name: string;
  yaml: string;
  path: string;
  message: string;
  format?: 'yaml' | 'json';
  env?: Record<string, string | undefined>;
}

const bad: BadCase[] = [
  {
    name: 'admin.listen beyond loopback without a token',
    yaml: mutate((d) => (d.admin = { listen: '0.0.0.0:15000' })),
    path: 'admin.listen',
    message: '0.0.0.0 is reachable beyond loopback: set admin.tokenFile too',
  },
  {
    name: 'outbound.listen beyond loopback',
    yaml: mutate((d) => (d.outbound = { listen: '10.0.0.5:15001' })),
    path: 'outbound.listen',
    message: 'must be on loopback (got 10.0.0.5): whoever reaches it calls other agents as this one',
  },
  {
    name: 'bus.local beyond loopback',
    yaml: mutate((d) => (d.bus = { local: '[::]:15002' })),
    path: 'bus.local',
    message: 'must be on loopback (got ::): whoever reaches it publishes messages signed as this agent',
  },
  {
    name: 'delegation.leeway over 60s',
    yaml: mutate((d) => (d.delegation = { issuer: 'https://broker.example.org', jwks: './jwks.json', leeway: '61s' })),
    path: 'delegation.leeway',
    message: 'must be at most 60s',
  },
  {
    name: 'bus.envelope.leeway over 60s',
    yaml: mutate((d) => (d.bus = { local: '127.0.0.1:15002', envelope: { leeway: '2m' } })),
    path: 'bus.envelope.leeway',
    message: 'must be at most 60s',
  },
  { name: 'missing trustDomain', yaml: mutate((d) => delete d.trustDomain), path: 'trustDomain', message: 'is required' },
  {
    name: 'uppercase trustDomain',
    yaml: mutate((d) => (d.trustDomain = 'Example.org')),
    path: 'trustDomain',
    message: 'invalid trust domain "Example.org"',
  },
  {
    name: 'trustDomain with scheme',
    yaml: mutate((d) => (d.trustDomain = 'spiffe://example.org')),
    path: 'trustDomain',
    message: 'without spiffe://',
  },
  {
    name: 'trustDomain too long',
    yaml: mutate((d) => (d.trustDomain = 'a'.repeat(256))),
    path: 'trustDomain',
    message: 'longer than 255',
  },
  {
    name: 'trustDomain wrong type',
    yaml: mutate((d) => (d.trustDomain = 42)),
    path: 'trustDomain',
    message: 'expected string, got number',
  },
  { name: 'missing identity', yaml: mutate((d) => delete d.identity), path: 'identity', message: 'is required' },
  {
    name: 'identity with no source',
    yaml: mutate((d) => (d.identity = {})),
    path: 'identity',
    message: 'exactly one of dev, files, workloadApi is required',
  },
  {
    name: 'identity with two sources',
    yaml: mutate((d) => (d.identity.files = { cert: 'a.pem', key: 'a.key', bundle: 'b.pem' })),
    path: 'identity',
    message: 'exactly one of dev, files, workloadApi is allowed (got dev, files)',
  },
  {
    name: 'dev spiffeId in another trust domain',
    yaml: mutate((d) => (d.identity.dev.spiffeId = 'spiffe://other.org/agent/a')),
    path: 'identity.dev.spiffeId',
    message: 'expected spiffe://example.org/<path>',
  },
  {
    name: 'dev spiffeId without path',
    yaml: mutate((d) => (d.identity.dev.spiffeId = 'spiffe://example.org')),
    path: 'identity.dev.spiffeId',
    message: "not in this sidecar's trust domain",
  },
  {
    name: 'dev spiffeId with a trailing slash',
    yaml: mutate((d) => (d.identity.dev.spiffeId = 'spiffe://example.org/')),
    path: 'identity.dev.spiffeId',
    message: 'invalid SPIFFE ID "spiffe://example.org/"',
  },
  {
    name: 'dev spiffeId not a SPIFFE ID',
    yaml: mutate((d) => (d.identity.dev.spiffeId = 'agent-a')),
    path: 'identity.dev.spiffeId',
    message: 'must start with "spiffe://"',
  },
  {
    name: 'bad ttl',
    yaml: mutate((d) => (d.identity.dev.ttl = '15x')),
    path: 'identity.dev.ttl',
    message: 'invalid duration "15x" (use e.g. 500ms, 30s, 15m, 1h)',
  },
  {
    name: 'zero ttl',
    yaml: mutate((d) => (d.identity.dev.ttl = '0s')),
    path: 'identity.dev.ttl',
    message: 'must be greater than 0',
  },
  {
    name: 'numeric ttl',
    yaml: mutate((d) => (d.identity.dev.ttl = 900)),
    path: 'identity.dev.ttl',
    message: 'expected string, got number',
  },
  {
    name: 'unknown key in identity.dev',
    yaml: mutate((d) => (d.identity.dev.tll = '1h')),
    path: 'identity.dev',
    message: 'unknown key "tll" (did you mean "ttl"?)',
  },
  {
    name: 'files identity missing key',
    yaml: mutate((d) => (d.identity = { files: { cert: 'svid.pem', bundle: 'bundle.pem' } })),
    path: 'identity.files.key',
    message: 'is required',
  },
  {
    name: 'files identity empty path',
    yaml: mutate((d) => (d.identity = { files: { cert: '', key: 'k', bundle: 'b' } })),
    path: 'identity.files.cert',
    message: 'must not be empty',
  },
  {
    name: 'workloadApi without socket or env',
    yaml: mutate((d) => (d.identity = { workloadApi: {} })),
    env: {},
    path: 'identity.workloadApi.socket',
    message: 'SPIFFE_ENDPOINT_SOCKET is not set',
  },
  {
    name: 'workloadApi bad socket',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: '/run/spire/agent.sock' } })),
    path: 'identity.workloadApi.socket',
    message: 'no scheme',
  },
  {
    name: 'workloadApi unix socket with an authority',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'unix://agent/run/spire.sock' } })),
    path: 'identity.workloadApi.socket',
    message: 'must not have an authority',
  },
  {
    name: 'workloadApi tcp endpoint with a path',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'tcp://127.0.0.1:8081/api' } })),
    path: 'identity.workloadApi.socket',
    message: 'a path is not allowed',
  },
  {
    name: 'workloadApi tcp endpoint with a host name',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'tcp://spire-agent:8081' } })),
    path: 'identity.workloadApi.socket',
    message: 'must be an IP address',
  },
  {
    name: 'workloadApi malformed SPIFFE_ENDPOINT_SOCKET',
    yaml: mutate((d) => (d.identity = { workloadApi: {} })),
    env: { SPIFFE_ENDPOINT_SOCKET: 'unix:relative/agent.sock' },
    path: 'identity.workloadApi.socket',
    message: 'from SPIFFE_ENDPOINT_SOCKET: invalid Workload API endpoint "unix:relative/agent.sock": the socket path must be absolute',
  },
  {
    name: 'workloadApi selected SPIFFE ID in another trust domain',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'unix:///run/a.sock', spiffeId: 'spiffe://other.org/agent' } })),
    path: 'identity.workloadApi.spiffeId',
    message: 'is not in the configured trust domain',
  },
  {
    name: 'workloadApi zero startup timeout',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'unix:///run/a.sock', startupTimeout: '0s' } })),
    path: 'identity.workloadApi.startupTimeout',
    message: 'must be greater than 0',
  },
  {
    name: 'workloadApi startup timeout past what a timer can wait',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'unix:///run/a.sock', startupTimeout: '1000h' } })),
    path: 'identity.workloadApi.startupTimeout',
    message: 'must be at most 24 days',
  },
  {
    name: 'workloadApi retry max below initial',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'unix:///run/a.sock', retry: { initial: '2s', max: '1s' } } })),
    path: 'identity.workloadApi.retry.max',
    message: 'must be at least retry.initial (2000 ms)',
  },
  {
    name: 'workloadApi unknown retry key',
    yaml: mutate((d) => (d.identity = { workloadApi: { socket: 'unix:///run/a.sock', retry: { jitter: 1 } } })),
    path: 'identity.workloadApi.retry',
    message: 'jitter',
  },
  {
    name: 'no inbound/outbound/bus',
    yaml: mutate((d) => delete d.inbound),
    path: '',
    message: 'at least one of inbound, outbound, bus is required',
  },
  {
    name: 'unknown key at root',
    yaml: mutate((d) => (d.foo = 1)),
    path: '',
    message: 'unknown key "foo"',
  },
  {
    name: 'unknown key in inbound',
    yaml: mutate((d) => (d.inbound = { upstrem: 'http://127.0.0.1:3000' })),
    path: 'inbound',
    message: 'unknown key "upstrem"',
  },
  {
    name: 'inbound upstream missing',
    yaml: mutate((d) => (d.inbound = { listen: '0.0.0.0:8443' })),
    path: 'inbound.upstream',
    message: 'is required',
  },
  {
    name: 'inbound upstream not http(s)',
    yaml: mutate((d) => (d.inbound.upstream = 'ftp://127.0.0.1:21')),
    path: 'inbound.upstream',
    message: 'expected http: or https:',
  },
  {
    name: 'inbound upstream not a URL',
    yaml: mutate((d) => (d.inbound.upstream = '127.0.0.1:3000x')),
    path: 'inbound.upstream',
    message: 'invalid URL',
  },
  {
    name: 'inbound listen not host:port',
    yaml: mutate((d) => (d.inbound.listen = 'x')),
    path: 'inbound.listen',
    message: 'invalid address "x" (expected host:port)',
  },
  {
    name: 'inbound listen port out of range',
    yaml: mutate((d) => (d.inbound.listen = '127.0.0.1:70000')),
    path: 'inbound.listen',
    message: 'port must be 0-65535',
  },
  {
    name: 'listen as number',
    yaml: mutate((d) => (d.inbound.listen = 8443)),
    path: 'inbound.listen',
    message: 'expected string, got number',
  },
  {
    name: 'route address without port',
    yaml: mutate(
      (d) => (d.outbound = { routes: [{ host: 'agent-b', address: '127.0.0.1', spiffeId: 'spiffe://example.org/b' }] }),
    ),
    path: 'outbound.routes[0].address',
    message: 'invalid address "127.0.0.1" (expected host:port)',
  },
  {
    name: 'route address port 0',
    yaml: mutate(
      (d) => (d.outbound = { routes: [{ host: 'agent-b', address: '127.0.0.1:0', spiffeId: 'spiffe://example.org/b' }] }),
    ),
    path: 'outbound.routes[0].address',
    message: 'port must be 1-65535',
  },
  {
    name: 'route missing spiffeId',
    yaml: mutate((d) => (d.outbound = { routes: [{ host: 'agent-b', address: '127.0.0.1:9443' }] })),
    path: 'outbound.routes[0].spiffeId',
    message: 'is required',
  },
  {
    name: 'route spiffeId not spiffe://',
    yaml: mutate(
      (d) => (d.outbound = { routes: [{ host: 'agent-b', address: '127.0.0.1:9443', spiffeId: 'example.org/b' }] }),
    ),
    path: 'outbound.routes[0].spiffeId',
    message: 'must start with "spiffe://"',
  },
  {
    name: 'route host empty',
    yaml: mutate((d) => (d.outbound = { routes: [{ host: '', address: '127.0.0.1:9443', spiffeId: 'spiffe://example.org/b' }] })),
    path: 'outbound.routes[0].host',
    message: 'must not be empty',
  },
  {
    name: 'route host bad port',
    yaml: mutate(
      (d) => (d.outbound = { routes: [{ host: 'agent-b:0', address: '127.0.0.1:9443', spiffeId: 'spiffe://example.org/b' }] }),
    ),
    path: 'outbound.routes[0].host',
    message: 'port must be 1-65535',
  },
  {
    name: 'duplicate route hosts (case-insensitive)',
    yaml: mutate(
      (d) =>
        (d.outbound = {
          routes: [
            { host: 'agent-b', address: '127.0.0.1:9443', spiffeId: 'spiffe://example.org/b' },
            { host: 'Agent-B', address: '127.0.0.1:9444', spiffeId: 'spiffe://example.org/b' },
          ],
        }),
    ),
    path: 'outbound.routes[1].host',
    message: 'duplicate route host "Agent-B"',
  },
  {
    name: 'unknown key in route',
    yaml: mutate(
      (d) =>
        (d.outbound = {
          routes: [{ host: 'a', address: '127.0.0.1:9443', spiffeId: 'spiffe://example.org/b', spifeId: 'x' }],
        }),
    ),
    path: 'outbound.routes[0]',
    message: 'unknown key "spifeId"',
  },
  {
    name: 'routes not an array',
    yaml: mutate((d) => (d.outbound = { routes: { host: 'a' } })),
    path: 'outbound.routes',
    message: 'expected array, got object',
  },
  {
    name: 'policy allow and cedar together',
    yaml: mutate((d) => (d.policy = { allow: ['spiffe://example.org/*'], cedar: './p.cedar' })),
    path: 'policy',
    message: 'mutually exclusive',
  },
  {
    name: 'policy mode invalid',
    yaml: mutate((d) => (d.policy = { mode: 'audit' })),
    path: 'policy.mode',
    message: 'expected "enforce" or "dry-run", got "audit"',
  },
  {
    name: 'policy allow entry not a SPIFFE ID',
    yaml: mutate((d) => (d.policy = { allow: ['spiffe://example.org/a', 'agent-b'] })),
    path: 'policy.allow[1]',
    message: 'must start with "spiffe://"',
  },
  {
    name: 'policy allow entry with a partial-segment wildcard',
    yaml: mutate((d) => (d.policy = { allow: ['spiffe://example.org/agent/a*'] })),
    path: 'policy.allow[0]',
    message: 'invalid SPIFFE ID or pattern "spiffe://example.org/agent/a*"',
  },
  {
    name: 'route pattern with a wildcard trust domain',
    yaml: mutate(
      (d) => (d.outbound = { routes: [{ host: 'agent-b', address: '127.0.0.1:9443', spiffeId: 'spiffe://*/agent/b' }] }),
    ),
    path: 'outbound.routes[0].spiffeId',
    message: 'invalid SPIFFE ID or pattern',
  },
  {
    name: 'route pattern with a dot segment',
    yaml: mutate(
      (d) => (d.outbound = { routes: [{ host: 'agent-b', address: '127.0.0.1:9443', spiffeId: 'spiffe://example.org/../b' }] }),
    ),
    path: 'outbound.routes[0].spiffeId',
    message: 'invalid SPIFFE ID or pattern',
  },
  {
    name: 'trust bundle key not a trust domain',
    yaml: mutate((d) => (d.trust = { bundles: { 'Partner Org': './p.pem' } })),
    path: 'trust.bundles["Partner Org"]',
    message: 'invalid trust domain',
  },
  {
    name: 'trust bundle value wrong type',
    yaml: mutate((d) => (d.trust = { bundles: { 'partner.example': 3 } })),
    path: 'trust.bundles["partner.example"]',
    message: 'expected string, got number',
  },
  {
    name: 'bus without local',
    yaml: mutate((d) => (d.bus = { nats: { servers: ['tls://127.0.0.1:4222'] } })),
    path: 'bus.local',
    message: 'is required',
  },
  {
    name: 'bus nats with no servers',
    yaml: mutate((d) => (d.bus = { local: '127.0.0.1:15002', nats: { servers: [] } })),
    path: 'bus.nats.servers',
    message: 'must have at least 1 entry',
  },
  {
    name: 'audit without path',
    yaml: mutate((d) => (d.audit = {})),
    path: 'audit.path',
    message: 'is required',
  },
  {
    name: 'audit sampleAllows above 1',
    yaml: mutate((d) => (d.audit = { path: './audit.jsonl', sampleAllows: 2 })),
    path: 'audit.sampleAllows',
    message: 'must be between 0 and 1',
  },
  {
    name: 'audit sampleAllows negative',
    yaml: mutate((d) => (d.audit = { path: './audit.jsonl', sampleAllows: -1 })),
    path: 'audit.sampleAllows',
    message: 'must be between 0 and 1',
  },
  {
    name: 'audit sampleAllows not a number',
    yaml: mutate((d) => (d.audit = { path: './audit.jsonl', sampleAllows: 'x' })),
    path: 'audit.sampleAllows',
    message: 'expected number, got string',
  },
  {
    name: 'audit sampleAllows as a percentage string',
    yaml: 'trustDomain: example.org\nidentity: { dev: { caDir: ./ca, spiffeId: "spiffe://example.org/agent/a" } }\ninbound: { upstream: "http://127.0.0.1:3000" }\naudit: { path: a.jsonl, sampleAllows: 10% }\n',
    path: 'audit.sampleAllows',
    message: 'expected number, got string',
  },
  {
    name: 'audit sampleAllows NaN',
    yaml: 'trustDomain: example.org\nidentity: { dev: { caDir: ./ca, spiffeId: "spiffe://example.org/agent/a" } }\ninbound: { upstream: "http://127.0.0.1:3000" }\naudit: { path: a.jsonl, sampleAllows: .nan }\n',
    path: 'audit.sampleAllows',
    message: 'expected number, got NaN',
  },
  {
    name: 'audit unknown key',
    yaml: mutate((d) => (d.audit = { path: './audit.jsonl', sampleAllow: 0.5 })),
    path: 'audit',
    message: 'unknown key "sampleAllow" (did you mean "sampleAllows"?)',
  },
  {
    name: 'bad drainTimeout',
    yaml: mutate((d) => (d.shutdown = { drainTimeout: '10' })),
    path: 'shutdown.drainTimeout',
    message: 'invalid duration "10"',
  },
  {
    name: 'listener conflict',
    yaml: mutate((d) => (d.admin = { listen: '127.0.0.1:8443' })),
    path: 'admin.listen',
    message: 'conflicts with inbound.listen',
  },
  {
    name: 'null section',
    yaml: 'trustDomain: example.org\nidentity:\ninbound: { upstream: "http://a" }\n',
    path: 'identity',
    message: 'expected object, got null',
  },
  {
    name: 'YAML syntax error',
    yaml: 'trustDomain: example.org\nidentity:\n  dev: { caDir: ./ca\n',
    path: '',
    message: 'YAML syntax error at line 4',
  },
  {
    name: 'YAML duplicate key',
    yaml: 'trustDomain: example.org\ntrustDomain: example.com\n',
    path: '',
    message: 'YAML syntax error at line 2, column 1',
  },
  {
    name: 'JSON syntax error',
    yaml: '{\n  "trustDomain": "example.org",\n}\n',
    format: 'json',
    path: '',
    message: 'JSON syntax error at line 3, column 1',
  },
  {
    name: 'egress upstream over plain http',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'http://api.provider.test' }] })),
    path: 'outbound.egress[0].upstream',
    message: 'must be an https:// URL',
  },
  {
    name: 'egress upstream with user info',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://key:x@api.provider.test' }] })),
    path: 'outbound.egress[0].upstream',
    message: 'must not carry user info',
  },
  {
    name: 'egress credential with two sources',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { file: './k', env: 'KEY' } }] })),
    path: 'outbound.egress[0].credential',
    message: 'exactly one of file, env, http is required (got 2)',
  },
  {
    name: 'egress credential with no source',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { header: 'x-api-key' } }] })),
    path: 'outbound.egress[0].credential',
    message: 'exactly one of file, env, http is required (got 0)',
  },
  {
    name: 'egress credential value without placeholder',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { env: 'KEY', value: 'Bearer static' } }] })),
    path: 'outbound.egress[0].credential.value',
    message: 'must contain {credential}',
  },
  {
    name: 'egress credential over plain http to a remote secrets manager',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { http: { url: 'http://vault.example/v1/k', pointer: '/data/k' } } }] })),
    path: 'outbound.egress[0].credential.http.url',
    message: 'must be https://',
  },
  {
    name: 'egress credential pointer',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { http: { url: 'https://vault.example/v1/k', pointer: 'data.k' } } }] })),
    path: 'outbound.egress[0].credential.http.pointer',
    message: 'must be a JSON pointer',
  },
  {
    name: 'egress attribution template with an unknown placeholder',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', attribution: { headers: { 'x-user': '{sub}' } } }] })),
    path: 'outbound.egress[0].attribution.headers.x-user',
    message: 'unknown placeholder',
  },
  {
    name: 'egress {user} without a secret',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', attribution: { headers: { 'x-user': '{user}' } } }] })),
    path: 'outbound.egress[0].attribution.headers.x-user',
    message: 'needs attribution.userSecret',
  },
  {
    name: 'egress attribution header is the credential header',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { env: 'KEY' }, attribution: { headers: { authorization: '{agent}' } } }] })),
    path: 'outbound.egress[0].attribution.headers.authorization',
    message: 'is the credential header',
  },
  {
    name: 'egress host also a peer route',
    yaml: mutate((d) => (d.outbound = { routes: [{ host: 'api.provider.test', address: '127.0.0.1:9443', spiffeId: 'spiffe://example.org/b' }], egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test' }] })),
    path: 'outbound.egress[0].host',
    message: 'duplicate host',
  },
  {
    name: 'egress rate not positive',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', limits: { agent: { rate: 0 } } }] })),
    path: 'outbound.egress[0].limits.agent.rate',
    message: '',
  },
  {
    name: 'egress unknown key',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', retries: 3 }] })),
    path: 'outbound.egress[0]',
    message: 'retries',
  },
  {
    name: 'egress credential header that frames the request',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { env: 'KEY', header: 'Transfer-Encoding' } }] })),
    path: 'outbound.egress[0].credential.header',
    message: 'cannot carry a credential',
  },
  {
    name: 'egress attribution header host',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', attribution: { headers: { host: '{agent}' } } }] })),
    path: 'outbound.egress[0].attribution.headers.host',
    message: 'framing, routing or hop-by-hop',
  },
  {
    name: 'egress credential value with two placeholders',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { env: 'KEY', value: '{credential} {credential}' } }] })),
    path: 'outbound.egress[0].credential.value',
    message: 'exactly once',
  },
  {
    name: 'egress credential value with a line break',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { env: 'KEY', value: "Bearer {credential}\r\nx: y" } }] })),
    path: 'outbound.egress[0].credential.value',
    message: 'line break',
  },
  {
    name: 'egress with a non-loopback outbound listener',
    yaml: mutate((d) => (d.outbound = { listen: '0.0.0.0:15001', egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test' }] })),
    path: 'outbound.listen',
    message: 'must be on loopback',
  },
  {
    name: 'egress pseudonym secret over remote plain http',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', attribution: { userSecret: { http: { url: 'http://vault.example/v1/k', pointer: '/k' } } } }] })),
    path: 'outbound.egress[0].attribution.userSecret.http.url',
    message: 'must be https://',
  },
  {
    name: 'egress secret client certificate without its key',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { http: { url: 'https://vault.example/v1/k', pointer: '/k', tls: { cert: './c.pem' } } } }] })),
    path: 'outbound.egress[0].credential.http.tls',
    message: 'cert and key go together',
  },
  {
    name: 'egress secret refresh of zero',
    yaml: mutate((d) => (d.outbound = { egress: [{ host: 'api.provider.test', upstream: 'https://api.provider.test', credential: { http: { url: 'https://vault.example/v1/k', pointer: '/k', refresh: '0s' } } }] })),
    path: 'outbound.egress[0].credential.http.refresh',
    message: 'greater than 0',
  },
  { name: 'empty document', yaml: '', path: '', message: 'config is empty' },
  { name: 'top-level array', yaml: '- a\n- b\n', path: '', message: 'expected object, got array' },
];

t.test('outbound.egress: defaults and absolute paths', async (t) => {
  const text = YAML.stringify({
    trustDomain: 'example.org',
    identity: { dev: { caDir: './ca', spiffeId: 'spiffe://example.org/agent/a' } },
    outbound: {
      egress: [
        {
          host: 'API.Provider.test:8443',
          upstream: 'https://api.provider.test/base',
          ca: './provider-ca.pem',
          credential: { file: './provider.key' },
          attribution: { headers: { 'X-Agent': '{agent}', 'x-user': '{user}' }, userSecret: { env: 'PSEUDO' } },
          limits: { agent: { rate: 2.5 }, user: { rate: 1, burst: 3 }, concurrency: 4, maxBodyBytes: 1000 },
        },
        { host: 'vault-backed.test', upstream: 'https://x.test', credential: { http: { url: 'https://vault.test/v1/secret/data/x', pointer: '/data/data/k', headers: { 'X-Vault-Token': { file: './vt' } }, tls: { cert: './c.pem', key: './c.key' } }, header: 'x-api-key' } },
      ],
    },
  });
  const cfg = parseConfig(text, 'yaml', CFG, { env: {} });
  t.strictSame(cfg.outbound!.egress[0], {
    host: 'api.provider.test',
    port: 8443,
    upstream: 'https://api.provider.test/base',
    ca: '/etc/sigil/provider-ca.pem',
    credential: { source: { kind: 'file', path: '/etc/sigil/provider.key' }, header: 'authorization', value: 'Bearer {credential}' },
    attribution: { headers: { 'x-agent': '{agent}', 'x-user': '{user}' }, bodyFields: {}, userSecret: { kind: 'env', name: 'PSEUDO' } },
    limits: { agent: { ratePerSecond: 2.5, burst: 3 }, user: { ratePerSecond: 1, burst: 3 }, concurrency: 4, maxBodyBytes: 1000 },
  });
  t.strictSame(cfg.outbound!.egress[1]!.credential, {
    source: { kind: 'http', url: 'https://vault.test/v1/secret/data/x', pointer: '/data/data/k', refreshMs: 300_000, timeoutMs: 5_000, headers: { 'x-vault-token': { file: '/etc/sigil/vt' } }, tls: { cert: '/etc/sigil/c.pem', key: '/etc/sigil/c.key' } },
    header: 'x-api-key',
    value: '{credential}',
  });
});

t.test('bad configs report the path and a plain-words message', async (t) => {
  t.ok(bad.length >= 20, `${bad.length} bad configs`);
  for (const c of bad) {
    const err = catchConfigError(() => parseConfig(c.yaml, c.format ?? 'yaml', CFG, { env: c.env ?? {} }));
    t.equal(err.code, 'config_invalid', `${c.name}: code`);
    const hit = err.issues.find((i) => i.path === c.path && i.message.includes(c.message));
    t.ok(hit, `${c.name}: ${c.path || '(root)'} ~ ${c.message}`, { issues: err.issues });
    t.match(err.message, `  - ${c.path === '' ? '(root)' : c.path}: `, `${c.name}: message lists the path`);
  }
});

t.test('listeners beyond loopback: allowed where they are safe', async (t) => {
  // Controls for the three exposure rules above.
  const c = parseConfig(
    mutate((d) => {
      d.inbound.listen = '0.0.0.0:8443';
      d.admin = { listen: '0.0.0.0:15000', tokenFile: '/etc/sigil-admin/token' };
      d.outbound = { listen: 'localhost:15001' };
      d.bus = { local: '[::1]:15002' };
    }),
    'yaml',
    CFG,
    { env: {} },
  );
  t.same(c.admin.listen, { host: '0.0.0.0', port: 15000 }, 'admin anywhere with a token');
  t.equal(c.inbound?.listen.host, '0.0.0.0', 'inbound anywhere (mTLS)');
});

t.test('all issues are reported, formatted one per line', async (t) => {
  const text = [
    'trustDomain: example.org',
    'identity: { dev: { caDir: ./ca, spiffeId: "spiffe://example.org/a", ttl: 15x } }',
    'inbound: { listen: x, upstrem: "http://127.0.0.1:3000" }',
    'outbound:',
    '  routes:',
    '    - { host: b, address: nowhere, spiffeId: "spiffe://example.org/b" }',
  ].join('\n');
  const err = catchConfigError(() => parseConfig(text, 'yaml', CFG));
  const lines = err.message.split('\n');
  t.equal(lines[0], `invalid config ${CFG}:`);
  t.same(
    err.issues.map((i) => i.path).sort(),
    ['identity.dev.ttl', 'inbound', 'inbound.listen', 'inbound.upstream', 'outbound.routes[0].address'].sort(),
  );
  t.equal(lines.length, 1 + err.issues.length);
  for (const issue of err.issues) t.ok(lines.includes(`  - ${issue.path}: ${issue.message}`), issue.path);
  t.ok(err instanceof Error);
  t.equal(err.name, 'ConfigError');
});

t.test('leeways: 60s is the most accepted (positive control for the caps)', async (t) => {
  const cfg = parseConfig(
    mutate((d) => {
      d.delegation = { issuer: 'https://broker.example.org', jwks: './jwks.json', leeway: '60s' };
      d.bus = { local: '127.0.0.1:15002', envelope: { leeway: '60s' } };
    }),
    'yaml',
    CFG,
  );
  t.equal(cfg.delegation?.leewayMs, 60_000, 'delegation.leeway 60s');
  t.equal(cfg.bus?.envelope.leewayMs, 60_000, 'bus.envelope.leeway 60s');
});

t.test('minimal config gets defaults', async (t) => {
  const cfg = parseConfig(YAML.stringify(base()), 'yaml', CFG);
  const expected: SigilConfig = {
    configPath: CFG,
    trustDomain: 'example.org',
    identity: { kind: 'dev', caDir: '/etc/sigil/ca', spiffeId: 'spiffe://example.org/agent/a', ttlMs: 15 * 60_000 },
    trust: { bundles: {} },
    inbound: { listen: { host: '0.0.0.0', port: 8443 }, upstream: 'http://127.0.0.1:3000', requireSignedFrames: false },
    policy: { mode: 'enforce' },
    metrics: { enabled: true, principalLabelLimit: 100 },
    admin: { listen: { host: '127.0.0.1', port: 15000 } },
    shutdown: { delayMs: 0, drainTimeoutMs: 10_000 },
  };
  t.strictSame(cfg, expected);
});

t.test('audit: path relative to the config folder, sampleAllows defaults to 1, 0 and 1 accepted', async (t) => {
  const cfg = parseConfig(mutate((d) => (d.audit = { path: 'logs/audit.jsonl' })), 'yaml', CFG);
  t.strictSame(cfg.audit, { path: '/etc/sigil/logs/audit.jsonl', sampleAllows: 1 });
  for (const v of [0, 1, 0.001]) {
    const c = parseConfig(mutate((d) => (d.audit = { path: '/var/log/sigil/audit.jsonl', sampleAllows: v })), 'yaml', CFG);
    t.strictSame(c.audit, { path: '/var/log/sigil/audit.jsonl', sampleAllows: v }, `sampleAllows ${v}`);
  }
});

t.test('outbound defaults and workloadApi socket from the environment', async (t) => {
  const text = 'trustDomain: example.org\nidentity: { workloadApi: }\noutbound: {}\n';
  const cfg = parseConfig(text, 'yaml', CFG, { env: { SPIFFE_ENDPOINT_SOCKET: 'unix:///run/spire/agent.sock' } });
  const defaults = { startupTimeoutMs: 30_000, retryInitialMs: 500, retryMaxMs: 30_000 };
  t.strictSame(cfg.identity, { kind: 'workloadApi', socket: 'unix:///run/spire/agent.sock', ...defaults });
  t.strictSame(cfg.outbound, { listen: { host: '127.0.0.1', port: 15001 }, routes: [], egress: [] });
  t.equal(cfg.inbound, undefined);
  t.equal(cfg.bus, undefined);

  const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
  process.env.SPIFFE_ENDPOINT_SOCKET = 'unix:///tmp/from-process-env.sock';
  t.teardown(() => {
    if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
    else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
  });
  const cfg2 = parseConfig(text, 'yaml', CFG);
  t.strictSame(cfg2.identity, { kind: 'workloadApi', socket: 'unix:///tmp/from-process-env.sock', ...defaults });

  const explicit = parseConfig(
    'trustDomain: example.org\nidentity: { workloadApi: { socket: "tcp://127.0.0.1:8081" } }\noutbound: {}\n',
    'yaml',
    CFG,
    { env: {} },
  );
  t.strictSame(explicit.identity, { kind: 'workloadApi', socket: 'tcp://127.0.0.1:8081', ...defaults });

  const selected = parseConfig(
    'trustDomain: example.org\nidentity: { workloadApi: { socket: "unix:///run/a.sock", spiffeId: "spiffe://example.org/agent/b", hint: internal, startupTimeout: 5s, retry: { initial: 100ms, max: 2s } } }\noutbound: {}\n',
    'yaml',
    CFG,
    { env: {} },
  );
  t.strictSame(selected.identity, {
    kind: 'workloadApi',
    socket: 'unix:///run/a.sock',
    spiffeId: 'spiffe://example.org/agent/b',
    hint: 'internal',
    startupTimeoutMs: 5_000,
    retryInitialMs: 100,
    retryMaxMs: 2_000,
  });
});

t.test('loadConfig: full YAML and full JSON configs', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sigil-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(path.join(dir, 'conf'));

  const yamlText = `
trustDomain: example.org
identity:
  dev: { caDir: ./ca, spiffeId: spiffe://example.org/agent/a, ttl: 1h30m }
trust:
  bundles: { partner.example: ./partner.jwks.json, other.example: /etc/other/bundle.pem }
inbound: { listen: 0.0.0.0:8443, upstream: http://127.0.0.1:3000 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: Agent-B, address: 127.0.0.1:9443, spiffeId: spiffe://example.org/agent/b }
    - { host: "AGENT-C.internal:8080", address: "[::1]:9444", spiffeId: "spiffe://example.org/agent/*" }
    - { host: agent-c.internal, address: localhost:9445, spiffeId: "spiffe://example.org/team/**" }
policy: { allow: [ "spiffe://example.org/agent/*", "spiffe://partner.example/**" ], mode: dry-run }
bus: { local: 127.0.0.1:15002, nats: { servers: [ "tls://127.0.0.1:4222" ] } }
admin: { listen: "[::1]:0" }
audit: { path: ../audit/audit.jsonl, sampleAllows: 0.25 }
shutdown: { drainTimeout: 2500ms }
`;
  const yamlFile = path.join(dir, 'conf', 'sidecar.yaml');
  await writeFile(yamlFile, yamlText);
  const y = await loadConfig(yamlFile);
  const expectedYaml: SigilConfig = {
    configPath: yamlFile,
    trustDomain: 'example.org',
    identity: {
      kind: 'dev',
      caDir: path.join(dir, 'conf', 'ca'),
      spiffeId: 'spiffe://example.org/agent/a',
      ttlMs: 90 * 60_000,
    },
    trust: {
      bundles: {
        'partner.example': path.join(dir, 'conf', 'partner.jwks.json'),
        'other.example': '/etc/other/bundle.pem',
      },
    },
    inbound: { listen: { host: '0.0.0.0', port: 8443 }, upstream: 'http://127.0.0.1:3000', requireSignedFrames: false },
    outbound: {
      listen: { host: '127.0.0.1', port: 0 },
      routes: [
        { host: 'agent-b', address: { host: '127.0.0.1', port: 9443 }, spiffeId: 'spiffe://example.org/agent/b' },
        {
          host: 'agent-c.internal',
          port: 8080,
          address: { host: '::1', port: 9444 },
          spiffeId: 'spiffe://example.org/agent/*',
        },
        {
          host: 'agent-c.internal',
          address: { host: 'localhost', port: 9445 },
          spiffeId: 'spiffe://example.org/team/**',
        },
      ],
      egress: [],
    },
    policy: { mode: 'dry-run', allow: ['spiffe://example.org/agent/*', 'spiffe://partner.example/**'] },
    bus: {
      local: { host: '127.0.0.1', port: 15002 },
      nats: { servers: ['tls://127.0.0.1:4222'], bufferMessages: 1000 },
      envelope: { ttlMs: 60_000, maxTtlMs: 300_000, leewayMs: 5_000, maxBytes: 1024 * 1024, replayWindowEntries: 200_000 },
    },
    metrics: { enabled: true, principalLabelLimit: 100 },
    admin: { listen: { host: '::1', port: 0 } },
    audit: { path: path.join(dir, 'audit', 'audit.jsonl'), sampleAllows: 0.25 },
    shutdown: { delayMs: 0, drainTimeoutMs: 2500 },
  };
  t.strictSame(y, expectedYaml, 'full YAML');

  const json = {
    trustDomain: 'prod.example.com',
    identity: { files: { cert: 'svid/svid.pem', key: 'svid/svid.key', bundle: '/var/run/sigil/bundle.pem' } },
    outbound: {
      routes: [{ host: 'Tools.MCP', address: '10.0.0.7:443', spiffeId: 'spiffe://prod.example.com/mcp/tools' }],
    },
    policy: { cedar: 'policy.cedar' },
  };
  const jsonFile = path.join(dir, 'conf', 'sidecar.json');
  await writeFile(jsonFile, JSON.stringify(json, null, 2));
  // a relative argument still yields an absolute configPath
  const j = await loadConfig(path.relative(process.cwd(), jsonFile));
  const expectedJson: SigilConfig = {
    configPath: jsonFile,
    trustDomain: 'prod.example.com',
    identity: {
      kind: 'files',
      cert: path.join(dir, 'conf', 'svid', 'svid.pem'),
      key: path.join(dir, 'conf', 'svid', 'svid.key'),
      bundle: '/var/run/sigil/bundle.pem',
    },
    trust: { bundles: {} },
    outbound: {
      listen: { host: '127.0.0.1', port: 15001 },
      routes: [{ host: 'tools.mcp', address: { host: '10.0.0.7', port: 443 }, spiffeId: 'spiffe://prod.example.com/mcp/tools' }],
      egress: [],
    },
    policy: { mode: 'enforce', cedar: path.join(dir, 'conf', 'policy.cedar') },
    metrics: { enabled: true, principalLabelLimit: 100 },
    admin: { listen: { host: '127.0.0.1', port: 15000 } },
    shutdown: { delayMs: 0, drainTimeoutMs: 10_000 },
  };
  t.strictSame(j, expectedJson, 'full JSON');

  // .yml works too
  const ymlFile = path.join(dir, 'conf', 'small.yml');
  await writeFile(ymlFile, YAML.stringify(base()));
  t.equal((await loadConfig(ymlFile)).identity.kind, 'dev');
});

async function rejectsConfigError(p: Promise<unknown>): Promise<ConfigError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError, got a valid config');
}

t.test('loadConfig: file-level errors', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sigil-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));

  const missing = path.join(dir, 'nope.yaml');
  const e1 = await rejectsConfigError(loadConfig(missing));
  t.equal(e1.message.split('\n')[0], `invalid config ${missing}:`);
  t.strictSame(e1.issues, [{ path: '', message: `file not found: ${missing}` }]);

  const toml = path.join(dir, 'sidecar.toml');
  await writeFile(toml, 'trustDomain = "example.org"\n');
  const e2 = await rejectsConfigError(loadConfig(toml));
  t.match(e2.issues[0]?.message, 'unsupported config file extension ".toml"');

  const badJson = path.join(dir, 'bad.json');
  await writeFile(badJson, '{\n  "trustDomain": "example.org"\n  "identity": {}\n}\n');
  const e3 = await rejectsConfigError(loadConfig(badJson));
  t.match(e3.issues[0]?.message, /JSON syntax error at line 3, column 3/);

  const badYaml = path.join(dir, 'bad.yaml');
  await writeFile(badYaml, 'trustDomain: example.org\n  identity: x\n');
  const e4 = await rejectsConfigError(loadConfig(badYaml));
  t.match(e4.issues[0]?.message, /YAML syntax error at line \d+, column \d+: /);

  const asDir = path.join(dir, 'folder.yaml');
  await mkdir(asDir);
  const e5 = await rejectsConfigError(loadConfig(asDir));
  t.match(e5.issues[0]?.message, 'is a directory');
});

t.test('parseDuration', async (t) => {
  const good: [string, number][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['15m', 900_000],
    ['1h', 3_600_000],
    ['1h30m', 5_400_000],
    ['1m30s', 90_000],
    ['1s500ms', 1_500],
    ['2h0m5s', 7_205_000],
    ['0s', 0],
    ['90m', 5_400_000],
  ];
  for (const [s, ms] of good) t.equal(parseDuration(s), ms, s);
  const badInputs = ['', '15x', '30', '1.5h', '-1s', '+1s', ' 1s', '1s ', '1 s', '1d', '1H', '30m1h', '1h1h', 'ms', 'h1', '1h 30m', '1e3ms'];
  for (const s of badInputs) {
    t.throws(() => parseDuration(s), { message: `invalid duration ${JSON.stringify(s)} (use e.g. 500ms, 30s, 15m, 1h)` }, JSON.stringify(s));
  }
});

t.test('parseHostPort', async (t) => {
  const good: [string, { host: string; port: number }][] = [
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['0.0.0.0:8443', { host: '0.0.0.0', port: 8443 }],
    ['[::1]:8443', { host: '::1', port: 8443 }],
    ['[::]:0', { host: '::', port: 0 }],
    ['localhost:80', { host: 'localhost', port: 80 }],
    ['agent-b.svc.cluster.local:65535', { host: 'agent-b.svc.cluster.local', port: 65535 }],
  ];
  for (const [s, hp] of good) t.strictSame(parseHostPort(s), hp, s);
  const badInputs: [string, string][] = [
    ['x', 'expected host:port'],
    ['localhost', 'expected host:port'],
    [':8443', 'expected host:port'],
    ['127.0.0.1:', 'expected host:port'],
    ['127.0.0.1:http', 'expected host:port'],
    ['127.0.0.1:-1', 'expected host:port'],
    ['127.0.0.1:65536', 'port must be 0-65535'],
    ['::1:8443', 'expected host:port'],
    ['[::1]', 'expected host:port'],
    ['[nothost]:80', 'expected host:port'],
    ['http://a:80', 'expected host:port'],
    ['a b:80', 'expected host:port'],
    ['', 'expected host:port'],
  ];
  for (const [s, msg] of badInputs) {
    t.throws(() => parseHostPort(s), { message: `invalid address ${JSON.stringify(s)} (${msg})` }, JSON.stringify(s));
  }
});
