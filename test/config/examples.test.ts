// Every example under examples/ is valid as shipped: each sidecar config loads, each Cedar policy
// compiles against schema/sigil.cedarschema. A broken example is a broken doc.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { compileCedarPolicy } from '../../src/authz/index.js';
import { loadConfig } from '../../src/config/index.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));

t.test('examples/sidecar-*.yaml load', async (t) => {
  const files = (await readdir(EXAMPLES)).filter((f) => /^sidecar-.*\.ya?ml$/.test(f));
  t.ok(files.length >= 4, `found ${files.length} example configs`);
  for (const f of files) {
    const config = await loadConfig(join(EXAMPLES, f));
    t.equal(config.trustDomain, 'example.org', `${f} loads`);
  }
  const bus = await loadConfig(join(EXAMPLES, 'sidecar-bus.yaml'));
  t.match(bus.bus, { local: { port: 15002 }, nats: { servers: ['tls://127.0.0.1:4222'], bufferMessages: 1000 }, envelope: { ttlMs: 60_000 } });
});

t.test('examples/policies/*.cedar compile against the schema', async (t) => {
  const dir = join(EXAMPLES, 'policies');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cedar'));
  t.ok(files.includes('bus.cedar'));
  for (const f of files) {
    const text = await readFile(join(dir, f), 'utf8');
    t.doesNotThrow(() => compileCedarPolicy(text, f), `${f} compiles`);
  }
  t.throws(() => compileCedarPolicy('permit (principal, action == Action::"bus.nope", resource);', 'bad.cedar'), 'an unknown action does not compile (positive control)');
});
