// `sigil revoke`, the kill switch client, against a real `sigil run`: a revocation made with the
// CLI shows in `--list` and in GET /v1/revocations and is enforced (the revoked agent's calls are
// refused); `--lift` removes it and the agent gets through again. Usage errors exit 2 naming the
// flag and send nothing; refusals by the admin API exit 1 with its error and detail; an
// unreachable admin API exits 1 naming the URL and the error code. Each negative has its
// positive control next to it.
import t from 'tap';
import type { Issued } from '../fixtures/certs.js';
import { mtlsRequest } from '../helpers/clients.js';
import { closedPort, runCli, runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type CliExit, type RunningSigil } from '../helpers/env.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import type { RevocationEntryJson } from '../../src/revocation/index.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';

type Exit = CliExit;

type Entry = RevocationEntryJson;

let sidecar: RunningSigil;
let upstream: EchoUpstream;
let leafA: Issued;
let adminUrl: string;

/**
 * Runs `sigil ...args` to completion. Without tap's NODE_OPTIONS (its per-process tracking
 * import, there for coverage, which is disabled): it would triple the cost of the ~50 short CLI
 * runs in this file.
 */
// NODE_OPTIONS: '' keeps the test runner's preloads out of the CLI (its output is compared whole).
const sigil = (args: string[], timeoutMs = 15_000): Promise<Exit> => runCli(args, { NODE_OPTIONS: '' }, timeoutMs);

/** `sigil revoke --admin <the sidecar> ...args`. */
const revoke = (...args: string[]): Promise<Exit> => sigil(['revoke', '--admin', adminUrl, ...args]);

async function listApi(): Promise<{ epoch: number; revocations: Entry[] }> {
  const res = await fetch(`${adminUrl}/v1/revocations`);
  if (res.status !== 200) throw new Error(`GET /v1/revocations: HTTP ${res.status}`);
  return (await res.json()) as { epoch: number; revocations: Entry[] };
}

async function liftApi(id: string): Promise<void> {
  const res = await fetch(`${adminUrl}/v1/revocations/${id}`, { method: 'DELETE' });
  if (res.status !== 200) throw new Error(`DELETE /v1/revocations/${id}: HTTP ${res.status}`);
}

/** Agent A calling the sidecar's inbound listener: true when the upstream answered 200. */
async function agentAGetsThrough(path: string): Promise<boolean> {
  const r = await mtlsRequest({ address: sidecar.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path, timeoutMs: 5_000 });
  return r.gotHttpResponse && r.status === 200;
}

/** The summary line of `revoke`/`--lift`: `<verb> <kind> <value> (id <id>, ...)`. */
function summaryId(stdout: string, verb: 'revoked' | 'lifted', kind: string, value: string): string | undefined {
  const escaped = `${verb} ${kind} ${value}`.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  return new RegExp(`^${escaped} \\(id ([A-Za-z0-9_-]+)[,)]`).exec(stdout)?.[1];
}

t.before(async () => {
  const dir = await tempDir(t, 'sigil-revoke-cli-');
  const example = await setupTrustDomain(dir, TD);
  upstream = await startEchoUpstream(t);
  leafA = await example.leaf(ID_A);
  const cfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: TD,
      identity: { dev: { caDir: example.caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
    }),
  );
  sidecar = await runSigil(t, cfg);
  adminUrl = `http://${sidecar.admin}`;
});

t.test('revoke an agent, see it listed and enforced, lift it, and it is gone', async (t) => {
  t.ok(await agentAGetsThrough('/before'), 'control: agent A gets through before the revocation');

  const before = Date.now();
  const made = await revoke('--agent', ID_A, '--reason', 'key leaked', '--ttl', '1h', '--by', 'alice');
  const after = Date.now();
  t.equal(made.code, 0, `revoke exits 0 (${made.stderr})`);
  const id = summaryId(made.stdout, 'revoked', 'agent', ID_A);
  t.ok(id, `one summary line naming the kind, the value and the id: ${JSON.stringify(made.stdout)}`);
  t.match(made.stdout, /, not propagated: this sidecar only\)\n$/, 'says it was not propagated (no NATS feed)');
  t.equal(made.stdout.split('\n').length, 2, 'exactly one line');

  const listed = await listApi();
  const entry = listed.revocations.find((e) => e.id === id);
  t.ok(entry, 'GET /v1/revocations has the entry');
  t.match(entry, { kind: 'agent', value: ID_A, reason: 'key leaked', revokedBy: 'alice' }, 'with the subject, the reason and --by');
  const expires = Date.parse(entry?.expiresAt ?? '');
  t.ok(expires >= before + 3_600_000 - 1_000 && expires <= after + 3_600_000 + 1_000, `--ttl 1h became expiresAt = now + 1h (${entry?.expiresAt})`);
  t.ok(made.stdout.includes(`expires ${entry?.expiresAt}`), 'the summary shows the expiry');

  t.notOk(await agentAGetsThrough('/while-revoked'), 'the sidecar refuses the revoked agent');
  t.notOk(upstream.requests.some((r) => r.url === '/while-revoked'), 'nothing reached the upstream');

  const list = await revoke('--list');
  t.equal(list.code, 0, `--list exits 0 (${list.stderr})`);
  t.match(list.stdout, /^1 revocation in force \(epoch \d+/, '--list header counts the entries');
  const row = list.stdout.split('\n').find((l) => l.startsWith(id!));
  t.ok(row, '--list has a row for the entry');
  for (const cell of ['agent', ID_A, 'alice', 'key leaked', entry!.revokedAt, entry!.expiresAt!]) t.ok(row?.includes(cell), `the row shows ${cell}`);

  const listJson = await revoke('--list', '--json');
  t.equal(listJson.code, 0, '--list --json exits 0');
  const parsed = JSON.parse(listJson.stdout) as { epoch: number; revocations: Entry[] };
  t.same(parsed.revocations, listed.revocations, '--list --json is the admin API document');
  t.type(parsed.epoch, 'number');

  const lifted = await revoke('--lift', id!, '--by', 'bob');
  t.equal(lifted.code, 0, `--lift exits 0 (${lifted.stderr})`);
  t.equal(summaryId(lifted.stdout, 'lifted', 'agent', ID_A), id, `--lift names what it lifted: ${JSON.stringify(lifted.stdout)}`);
  t.notOk((await listApi()).revocations.some((e) => e.id === id), 'GET /v1/revocations no longer has it');
  const empty = await revoke('--list');
  t.equal(empty.code, 0);
  t.match(empty.stdout, /^no revocations in force \(epoch \d+/, '--list is empty');
  t.notOk(empty.stdout.includes(id!), 'and does not show the id');
  t.ok(await agentAGetsThrough('/after-lift'), 'agent A gets through again after the lift');

  // Negative, with the lift above as its control: the same id again is unknown now.
  const again = await revoke('--lift', id!);
  t.equal(again.code, 1, 'lifting it a second time exits 1');
  t.match(again.stderr, /not_found: no revocation in force with id/, 'with the API error and detail');
  t.match(again.stderr, /HTTP 404/);
  t.equal(again.stdout, '', 'nothing on stdout');
});

t.test('--json: the admin API answer, parseable, for revoke and --lift', async (t) => {
  const expiresAt = new Date(Date.now() + 2 * 3_600_000).toISOString();
  const fingerprint = 'AB:'.repeat(31) + 'AB';
  const made = await Promise.all([
    revoke('--task', 'task-42', '--expires', expiresAt, '--json'),
    revoke('--svid', `sha256:${fingerprint}`, '--json'),
    revoke('--user', 'alice@example.org', '--reason', 'left the company', '--json'),
  ]);
  for (const m of made) t.equal(m.code, 0, `exit 0 (${m.stderr})`);
  const bodies = made.map((m) => JSON.parse(m.stdout) as { revocation: Entry; propagated: boolean });
  t.match(bodies[0], { revocation: { kind: 'task', value: 'task-42', expiresAt, revokedBy: 'admin' }, propagated: false }, '--task with --expires: the ISO time is sent as given');
  t.match(bodies[1], { revocation: { kind: 'svid', value: `sha256:${'ab'.repeat(32)}` } }, '--svid: the sidecar normalizes the fingerprint');
  t.match(bodies[2], { revocation: { kind: 'user', value: 'alice@example.org', reason: 'left the company' } }, '--user with --reason');
  t.notOk('expiresAt' in bodies[2]!.revocation, 'without --ttl/--expires the entry does not lapse');
  const ids = bodies.map((b) => b.revocation.id);
  t.same(
    (await listApi()).revocations.map((e) => e.id).sort(),
    [...ids].sort(),
    'all three are in force',
  );

  const lifted = await Promise.all(ids.map((id) => revoke('--lift', id, '--json')));
  for (const [i, l] of lifted.entries()) {
    t.equal(l.code, 0, `--lift --json exits 0 (${l.stderr})`);
    t.match(JSON.parse(l.stdout), { lifted: { id: ids[i] }, propagated: false }, '--lift --json is the API answer');
  }
  t.same((await listApi()).revocations, [], 'all lifted');

  const refused = await revoke('--lift', 'no-such-revocation', '--json');
  t.equal(refused.code, 1, '--lift of an unknown id exits 1');
  t.same(JSON.parse(refused.stdout), { error: 'not_found', detail: 'no revocation in force with id no-such-revocation' }, 'with --json, the refusal is on stdout too');
  t.match(refused.stderr, /not_found/, 'and on stderr');
});

t.test('usage errors exit 2, name the flag and send nothing', async (t) => {
  const future = new Date(Date.now() + 3_600_000).toISOString();
  const cases: Array<{ name: string; args: string[]; expect: RegExp }> = [
    { name: 'no subject flag', args: ['--reason', 'x'], expect: /one of --agent, --svid, --task, --token, --user, --trust-domain, --list or --lift is required/ },
    { name: 'nothing at all', args: [], expect: /one of --agent, .* --list or --lift is required/ },
    { name: 'two subject flags', args: ['--agent', ID_A, '--task', 'task-1'], expect: /--agent and --task cannot be combined/ },
    { name: 'a subject and --list', args: ['--user', 'u', '--list'], expect: /--user and --list cannot be combined/ },
    { name: 'a subject flag twice', args: ['--agent', ID_A, '--agent', ID_B], expect: /--agent given 2 times/ },
    { name: '--ttl with --expires', args: ['--agent', ID_A, '--ttl', '1h', '--expires', future], expect: /--ttl and --expires are exclusive/ },
    { name: 'bad --ttl', args: ['--agent', ID_A, '--ttl', '15x'], expect: /--ttl: invalid duration "15x"/ },
    { name: 'zero --ttl', args: ['--agent', ID_A, '--ttl', '0s'], expect: /--ttl: must be longer than 0/ },
    { name: 'bad --expires', args: ['--agent', ID_A, '--expires', 'tomorrow'], expect: /--expires: "tomorrow" is not an ISO 8601 date-time/ },
    { name: '--expires without a zone', args: ['--agent', ID_A, '--expires', '2030-01-01T00:00:00'], expect: /--expires: .* with a time zone/ },
    { name: 'empty subject', args: ['--agent', ''], expect: /--agent: must not be empty/ },
    { name: 'missing value', args: ['--agent'], expect: /--agent/ },
    { name: 'unknown flag', args: ['--agnet', ID_A], expect: /--agnet/ },
    { name: '--reason with --list', args: ['--list', '--reason', 'x'], expect: /--reason only applies when revoking, not with --list/ },
    { name: '--ttl with --lift', args: ['--lift', 'abcdefgh', '--ttl', '1h'], expect: /--ttl only applies when revoking, not with --lift/ },
  ];
  const withAdmin = (c: (typeof cases)[number]) => ({ ...c, args: ['revoke', '--admin', adminUrl, ...c.args] });
  const all = [
    ...cases.map(withAdmin),
    { name: '--admin not a URL', args: ['revoke', '--admin', sidecar.admin, '--list'], expect: /--admin: must be an http\(s\) URL .*did you mean http:\/\/127\.0\.0\.1:\d+\?/ },
    { name: '--admin not http(s)', args: ['revoke', '--admin', 'ftp://127.0.0.1:15000', '--list'], expect: /--admin: must be an http\(s\) URL .*"ftp"/ },
    { name: '--admin with credentials', args: ['revoke', '--admin', `http://root:hunter2@${sidecar.admin}`, '--list'], expect: /--admin: must not carry credentials/ },
  ];
  const epochBefore = (await listApi()).epoch;
  const results: Array<{ c: (typeof all)[number]; exit: Exit }> = [];
  for (let i = 0; i < all.length; i += 6) {
    results.push(...(await Promise.all(all.slice(i, i + 6).map(async (c) => ({ c, exit: await sigil(c.args) })))));
  }
  for (const { c, exit } of results) {
    t.equal(exit.code, 2, `${c.name}: exit 2`);
    t.match(exit.stderr, c.expect, `${c.name}: stderr says ${c.expect}`);
    t.match(exit.stderr, /usage:\n {2}sigil revoke --admin URL/, `${c.name}: followed by the usage`);
    t.equal(exit.stdout, '', `${c.name}: nothing on stdout`);
    t.notOk(exit.stderr.includes('hunter2'), `${c.name}: never echoes a password`);
  }
  const after = await listApi();
  t.equal(after.epoch, epochBefore, 'no usage error changed the revocation list (epoch unchanged)');
  t.same(after.revocations, [], 'nothing was revoked');

  // Positive controls: the same commands with the mistake fixed go through.
  const controls = await Promise.all([
    revoke('--agent', ID_A, '--ttl', '15m'),
    revoke('--task', 'task-1', '--expires', future),
    revoke('--agent', ID_B, '--reason', 'x'),
    sigil(['revoke', '--admin', `${adminUrl}/`, '--list']),
  ]);
  for (const c of controls) t.equal(c.code, 0, `control exits 0 (${c.stderr.split('\n')[0]})`);
  t.equal((await listApi()).revocations.length, 3, 'the three controls were revoked');
  for (const e of (await listApi()).revocations) await liftApi(e.id);

  const help = await sigil(['revoke', '--help']);
  t.equal(help.code, 0, '--help exits 0');
  for (const line of [
    'sigil revoke --admin URL (--agent ID|PATTERN | --svid SERIAL|sha256:FINGERPRINT | --task ID | --token JTI | --user SUB | --trust-domain TD)',
    '[--reason TEXT] [--ttl DURATION | --expires ISO] [--by NAME] [--token-file PATH] [--json]',
    'sigil revoke --admin URL --list [--token-file PATH] [--json]',
    'sigil revoke --admin URL --lift ID [--by NAME] [--token-file PATH] [--json]',
    'default http://127.0.0.1:15000',
    'exit codes: 0 done; 1 the admin API refused',
  ]) {
    t.ok(help.stdout.includes(line), `--help documents: ${line}`);
  }
  const top = await sigil(['help']);
  t.match(top.stdout, /\n {2}revoke --admin URL/, '`sigil help` lists revoke');
});

t.test('the admin API refuses an invalid entry: exit 1 with its error and detail', async (t) => {
  const epochBefore = (await listApi()).epoch;
  const [notAnId, badSvid, longReason, past] = await Promise.all([
    revoke('--agent', 'not-a-spiffe-id'),
    revoke('--svid', 'not-hex'),
    revoke('--user', 'u', '--reason', 'x'.repeat(300)),
    revoke('--token', 'jti-1', '--expires', '2001-01-01T00:00:00Z'),
  ]);
  const cases: Array<[string, Exit, RegExp]> = [
    ['--agent not-a-spiffe-id', notAnId!, /revocation_invalid: value: not a SPIFFE ID or pattern/],
    ['--svid not-hex', badSvid!, /revocation_invalid: value: an SVID is named by its serial or SHA-256 fingerprint/],
    ['--reason of 300 characters', longReason!, /revocation_invalid: reason: must be text of at most 256 characters/],
    ['--expires in the past', past!, /revocation_invalid: expiresAt: must be after the revocation time/],
  ];
  for (const [name, exit, re] of cases) {
    t.equal(exit.code, 1, `${name}: exit 1`);
    t.match(exit.stderr, re, `${name}: stderr has the API error and detail`);
    t.match(exit.stderr, new RegExp(`refused by ${adminUrl}/v1/revocations \\(HTTP 400\\)`), `${name}: and where and how it was refused`);
    t.equal(exit.stdout, '', `${name}: nothing on stdout`);
  }
  const after = await listApi();
  t.equal(after.epoch, epochBefore, 'the list did not change');
  t.same(after.revocations, [], 'nothing was revoked');

  const json = await revoke('--agent', 'not-a-spiffe-id', '--json');
  t.equal(json.code, 1, '--json: still exit 1');
  t.match(JSON.parse(json.stdout), { error: 'revocation_invalid', detail: /^value: / }, '--json: the refusal as JSON on stdout');

  // Positive control: the same flags with valid values are accepted.
  const ok = await Promise.all([revoke('--agent', 'spiffe://example.org/agent/*'), revoke('--svid', '0a1b'), revoke('--token', 'jti-1', '--ttl', '1m')]);
  for (const o of ok) t.equal(o.code, 0, `valid values are accepted (${o.stderr.split('\n')[0]})`);
  t.match(ok[0]!.stdout, /^revoked agent spiffe:\/\/example\.org\/agent\/\* \(id /, 'a pattern is accepted');
  t.match(ok[1]!.stdout, /^revoked svid serial:a1b \(id /, 'a serial is normalized by the sidecar');
  for (const e of (await listApi()).revocations) await liftApi(e.id);
});

t.test('an unreachable or foreign admin URL: exit 1 naming the URL and the problem', async (t) => {
  const port = await closedPort();
  const [list, made] = await Promise.all([
    sigil(['revoke', '--admin', `http://127.0.0.1:${port}`, '--list']),
    sigil(['revoke', '--admin', `http://127.0.0.1:${port}`, '--agent', ID_A]),
  ]);
  for (const [name, exit] of [['--list', list], ['revoke', made]] as const) {
    t.equal(exit.code, 1, `${name}: exit 1`);
    t.match(exit.stderr, `cannot reach the admin API at http://127.0.0.1:${port}/v1/revocations`, `${name}: names the URL`);
    t.match(exit.stderr, /ECONNREFUSED/, `${name}: and the error code`);
    t.equal(exit.stdout, '', `${name}: nothing on stdout`);
  }

  // Something answers, but it is not a Sigil admin API (the echo upstream answers any request 200).
  const foreign = await sigil(['revoke', '--admin', upstream.url, '--list']);
  t.equal(foreign.code, 1, 'a foreign HTTP server: exit 1');
  t.match(foreign.stderr, /unexpected answer from .*\/v1\/revocations \(HTTP 200\)/, 'says the answer was not what it expects');
  t.ok(upstream.requests.some((r) => r.method === 'GET' && r.url === '/v1/revocations'), 'the request did go to --admin');

  // Positive control: the same command against the sidecar's admin API.
  const control = await revoke('--list');
  t.equal(control.code, 0, `control: --list against the sidecar exits 0 (${control.stderr})`);
  t.equal(control.stderr, '');
});
