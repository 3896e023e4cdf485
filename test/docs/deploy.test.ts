// docs/deploy.md is what a platform team follows: its ports must be the code's defaults, and the
// variables, metrics and links it names must exist, so that the page cannot drift from Sigil.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { BROKER_ENV_OVERRIDES, OTHER_SIGIL_VARIABLES, SIDECAR_ENV_OVERRIDES } from '../../src/config/env-overrides.js';
import { formatHostPort } from '../../src/config/effective.js';
import { DEFAULTS } from '../../src/config/load.js';
import { BROKER_DEFAULTS } from '../../src/delegation/broker-config.js';
import { registeredMetrics, unknownMetrics, unknownVariables } from '../helpers/markdown.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const file = resolve(repo, 'docs/deploy.md');
const doc = readFileSync(file, 'utf8');

t.test('the ports table gives the code defaults', async (t) => {
  const rows: [string, string][] = [
    ['`inbound.listen`', formatHostPort(DEFAULTS.inboundListen)],
    ['`outbound.listen`', formatHostPort(DEFAULTS.outboundListen)],
    ['`admin.listen`', formatHostPort(DEFAULTS.adminListen)],
    ['broker `listen`', formatHostPort(BROKER_DEFAULTS.listen)],
    ['broker `admin.listen`', formatHostPort(BROKER_DEFAULTS.adminListen)],
  ];
  for (const [key, value] of rows) t.ok(doc.includes(`\n| ${key} | \`${value}\` |`), `${key}: ${value}`);
  t.notOk(doc.includes('\n| `inbound.listen` | `0.0.0.0:9443` |'), 'control: another port is not found');
});

t.test('every SIGIL_* variable it names exists', async (t) => {
  // The revocation stream's default name looks like a variable and is one of the page's names.
  const known = new Set([...SIDECAR_ENV_OVERRIDES, ...BROKER_ENV_OVERRIDES].map((o) => o.env).concat(OTHER_SIGIL_VARIABLES, DEFAULTS.revocationStream));
  const named = [...doc.matchAll(/\bSIGIL_[A-Z0-9_]+/g)];
  t.ok(named.length > 8, `variables named (${named.length})`);
  t.same(unknownVariables(doc, known), []);
  t.same(unknownVariables('set SIGIL_ADMIN_LISTN and SIGIL_BROKER_*', known), ['SIGIL_ADMIN_LISTN'], 'control: a misspelled name is reported, a prefix is not');
});

t.test('every metric it names is registered', async (t) => {
  const known = registeredMetrics(readFileSync(resolve(repo, 'src/telemetry/metrics.ts'), 'utf8'));
  t.ok(known.size > 20, `registered metrics (${known.size})`);
  const named = [...doc.matchAll(/\bsigil_[a-z0-9_]+/g)];
  t.ok(named.length > 10, `metrics named (${named.length})`);
  t.same(unknownMetrics(doc, known), []);
  t.same(unknownMetrics('sigil_requests_total sigil_request_duration_seconds_bucket sigil_request_total', known), ['sigil_request_total'], 'control: histogram series fold in, a wrong name is reported');
});
