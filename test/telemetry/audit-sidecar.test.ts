// The audit trail through a real `sigil run`: every decision of the inbound proxy lands in the
// file (allow and deny), without query strings; an unwritable audit path is reported and the
// sidecar keeps serving.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { assertStatus } from '../helpers/assert.js';
import { mtlsRequest } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig } from '../helpers/env.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_DENIED = 'spiffe://example.org/agent/not-on-the-list';

t.test('sidecar writes one audit line per decision; allow and deny', async (t) => {
  const dir = await tempDir(t, 'sigil-audit-it-');
  const example = await setupTrustDomain(dir, 'example.org');
  const upstream = await startEchoUpstream(t);
  await mkdir(join(dir, 'logs'));
  const config = await writeConfig(
    dir,
    'sidecar-b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: './ca-example.org', spiffeId: ID_B } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
      audit: { path: 'logs/audit.jsonl' }, // relative to the config file's folder
    }),
  );
  const sidecar = await runSigil(t, config);
  const [leafA, leafDenied] = await Promise.all([example.leaf(ID_A), example.leaf(ID_DENIED)]);

  const ok = await mtlsRequest({ address: sidecar.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/hello?token=SECRET' });
  assertStatus(t, ok, 'allowed call');
  const denied = await mtlsRequest({ address: sidecar.inbound, certPem: leafDenied.pem, keyPem: leafDenied.keyPem, path: '/hello' });
  assertStatus(t, denied, 'denied call', 403);

  t.equal(await sidecar.stop(), 0, 'clean exit (the audit log is flushed on stop)');
  const text = await readFile(join(dir, 'logs', 'audit.jsonl'), 'utf8');
  t.notMatch(text, /SECRET|token=/, 'no query string in the audit trail');
  const lines = text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, any>);
  const allowHttp = lines.find((l) => l.action === 'http' && l.source === ID_A);
  t.ok(allowHttp, 'the allowed request is recorded', { lines });
  t.match(allowHttp, {
    reporter: 'inbound',
    source: ID_A,
    destination: ID_B,
    resource: { type: 'Agent', id: ID_B },
    decision: 'allow',
    wouldDeny: false,
    reason: 'allowed',
    policies: ['allow[0]'],
    http: { method: 'GET', path: '/hello' },
  });
  t.match(allowHttp?.policyVersion, /\S/);
  const deny = lines.find((l) => l.source === ID_DENIED);
  t.ok(deny, 'the denied peer is recorded', { lines });
  t.match(deny, { reporter: 'inbound', decision: 'deny', reason: 'policy_denied', destination: ID_B });
  for (const l of lines) t.match(l.time, /^\d{4}-\d\d-\d\dT/, 'every line has a time');
});

t.test('an unwritable audit path is reported and the sidecar keeps serving', async (t) => {
  const dir = await tempDir(t, 'sigil-audit-it-');
  const example = await setupTrustDomain(dir, 'example.org');
  const upstream = await startEchoUpstream(t);
  const config = await writeConfig(
    dir,
    'sidecar-b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: './ca-example.org', spiffeId: ID_B } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
      audit: { path: '.' }, // a directory: EISDIR
    }),
  );
  const sidecar = await runSigil(t, config);
  const warning = await sidecar.proc.waitFor((l) => l.level === 'warn' && l.component === 'audit', 10_000);
  t.equal(warning.code, 'EISDIR');
  const leafA = await example.leaf(ID_A);
  for (let i = 0; i < 3; i++) {
    assertStatus(t, await mtlsRequest({ address: sidecar.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/hello' }), `call ${i}`);
  }
  t.equal(await sidecar.stop(), 0, 'clean exit');
  t.equal(sidecar.proc.lines.filter((l) => l.level === 'warn' && l.component === 'audit').length, 1, 'one warning');
});
