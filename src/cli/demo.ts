// `sigil demo`: two example agents, each behind its own sidecar, on loopback with a dev CA in
// a temp dir. A calls B over HTTP and over a WebSocket whose every frame is signed by sidecar A
// and verified by sidecar B; then impostors try B directly (a self-signed certificate, an
// untrusted CA, and a workload of the trust domain injecting a forged signed message) and are
// refused. Delegation (alice → A → B via the broker) and the kill switch (alice revoked at B,
// then lifted) are shown too. Prints a summary and exits 0 only if every step behaved as it should.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { get as httpGet } from 'node:http';
import { connect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { createDevCa, DevIssuer } from '../identity/index.js';
import { x509 } from '../spiffe/peculiar.js';
import { SpiffeId, TrustDomain } from '../spiffe/index.js';
import WebSocket from 'ws';
import { createEnvelopeSigner } from '../bus/envelope/index.js';
import { initDevIdp, mintDevUserToken } from '../delegation/index.js';
import { initCaDir, issueSvidToDir } from './ca.js';
import { SIGIL_BIN, spawnJsonLines, startSigil, type JsonLineProcess } from './processes.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/demo/', import.meta.url));
const TD = TrustDomain.parse('example.org');
const ID_A = SpiffeId.parse('spiffe://example.org/agent/a');
const ID_B = SpiffeId.parse('spiffe://example.org/agent/b');
const ID_BROKER = SpiffeId.parse('spiffe://example.org/broker');
/** A reports tool agent B calls on for alice (another copy of the agent-b example). */
const ID_TOOL = SpiffeId.parse('spiffe://example.org/mcp/reports');
const BROKER_ISSUER = 'https://broker.example.org';

/** The broker's policy: A may act for people towards B. */
const BROKER_POLICY = `@id("a-for-people-to-b")
permit (principal == Agent::"spiffe://example.org/agent/a", action == Action::"delegation.exchange", resource == Agent::"spiffe://example.org/agent/b")
when { context.subjectTokenType == "user" };

@id("b-onward-to-the-reports-tool")
permit (principal == Agent::"spiffe://example.org/agent/b", action == Action::"delegation.exchange", resource == Agent::"spiffe://example.org/mcp/reports")
when { context.subjectTokenType == "delegation" };
`;

/** A workload of the trust domain that may connect to B, but holds only its own key. */
const ID_C = SpiffeId.parse('spiffe://example.org/agent/c');

/** One policy for both sidecars: A's enforces it as egress control, B's as ingress. */
const DEMO_POLICY = `@id("a-calls-b")
permit (principal == Agent::"${ID_A}", action in [Action::"connect", Action::"http"], resource == Agent::"${ID_B}");

@id("reports-for-people-only")
forbid (principal, action == Action::"http", resource == Agent::"${ID_B}")
when { context.direction == "inbound" && context.http.path like "/reports*" } unless { context has delegation };

@id("b-calls-the-reports-tool")
permit (principal == Agent::"${ID_B}", action in [Action::"connect", Action::"http"], resource == Agent::"${ID_TOOL}");

@id("c-calls-b")
permit (principal == Agent::"${ID_C}", action in [Action::"connect", Action::"http"], resource == Agent::"${ID_B}");

@id("chat")
permit (principal in TrustDomain::"${TD.name}", action == Action::"websocket.message", resource in TrustDomain::"${TD.name}")
when { context.websocket.kind == "text" && context.websocket.size <= 4096 };

@id("no-admin")
forbid (principal, action == Action::"http", resource) when { context.http.path like "/admin*" };
`;

interface Step {
  name: string;
  ok: boolean;
  detail: string;
}

export async function runDemo(_args: string[]): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-demo-'));
  const procs: JsonLineProcess[] = [];
  const steps: Step[] = [];
  try {
    say(`dev CA for ${TD.name} in ${dir}`);
    await initCaDir(TD, join(dir, 'ca'));
    await writeFile(join(dir, 'policy.cedar'), DEMO_POLICY);
    await writeFile(join(dir, 'broker.cedar'), BROKER_POLICY);

    // Delegation: a DEV ONLY identity provider for alice, and the token-exchange broker.
    const idp = await initDevIdp(join(dir, 'dev-idp'));
    const broker = spawnJsonLines([SIGIL_BIN, 'broker', '--config', await writeConfig(dir, 'broker.yaml', {
      trustDomain: TD.name,
      identity: { dev: { caDir: './ca', spiffeId: ID_BROKER.toString(), ttl: '15m' } },
      listen: '127.0.0.1:0',
      issuer: BROKER_ISSUER,
      signingKeys: './broker-keys',
      jwksOut: './broker-jwks.json',
      subjectIssuers: [{ issuer: idp.issuer, audience: 'sigil-broker', jwks: idp.jwksPath }],
      policy: { cedar: './broker.cedar' },
      admin: { listen: '127.0.0.1:0' },
    })]);
    procs.push(broker);
    const brokerAddress = (await broker.waitFor((l) => l.msg === 'ready')).listen as string;
    say(`broker (${ID_BROKER}) ready: token endpoint https://${brokerAddress}/token`);
    const delegation = { issuer: BROKER_ISSUER, jwks: './broker-jwks.json', broker: { url: `https://${brokerAddress}/token`, spiffeId: ID_BROKER.toString() } };

    const tool = spawnJsonLines([join(EXAMPLES, 'agent-b.mjs')]);
    procs.push(tool);
    const toolPort = (await tool.waitFor((l) => l.msg === 'listening')).port as number;
    const sidecarTool = await startSigil(
      await writeConfig(dir, 'sidecar-tool.yaml', {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: ID_TOOL.toString(), ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${toolPort}` },
        policy: { cedar: './policy.cedar' },
        admin: { listen: '127.0.0.1:0' },
        delegation,
      }),
    );
    procs.push(sidecarTool.proc);

    const agentB = spawnJsonLines([join(EXAMPLES, 'agent-b.mjs')], { SIGIL_OUTBOUND_FILE: join(dir, 'agent-b-outbound') });
    procs.push(agentB);
    const bPort = (await agentB.waitFor((l) => l.msg === 'listening')).port as number;

    const sidecarB = await startSigil(
      await writeConfig(dir, 'sidecar-b.yaml', {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: ID_B.toString(), ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${bPort}`, requireSignedFrames: true },
        // B's own calls: to the reports tool, exchanging the token alice's call came with — asking
        // for "admin", which alice never granted.
        outbound: {
          listen: '127.0.0.1:0',
          routes: [{ host: 'reports-tool', address: sidecarTool.ready.inbound as string, spiffeId: ID_TOOL.toString(), exchange: { scope: 'admin' } }],
        },
        policy: { cedar: './policy.cedar' },
        admin: { listen: '127.0.0.1:0' },
        delegation,
      }),
    );
    procs.push(sidecarB.proc);
    await writeFile(join(dir, 'agent-b-outbound'), sidecarB.ready.outbound as string);
    const bInbound = sidecarB.ready.inbound as string;
    say(`sidecar B (${ID_B}) ready: inbound ${bInbound} → agent B on 127.0.0.1:${bPort}`);

    const sidecarA = await startSigil(
      await writeConfig(dir, 'sidecar-a.yaml', {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: ID_A.toString(), ttl: '15m' } },
        outbound: {
          listen: '127.0.0.1:0',
          routes: [
            { host: 'agent-b', address: bInbound, spiffeId: ID_B.toString(), signFrames: true, exchange: { scope: 'reports.read' } },
          ],
        },
        policy: { cedar: './policy.cedar' },
        admin: { listen: '127.0.0.1:0' },
        delegation,
      }),
    );
    procs.push(sidecarA.proc);
    say(`sidecar A (${ID_A}) ready: outbound ${sidecarA.ready.outbound as string}, route agent-b → ${bInbound}`);

    const agentA = spawnJsonLines([join(EXAMPLES, 'agent-a.mjs')], { SIGIL_OUTBOUND: sidecarA.ready.outbound as string });
    procs.push(agentA);
    const result = (await agentA.waitFor((l) => l.msg === 'result')) as {
      http: { status: number; body: { verifiedCaller: string } };
      websocket: { echo: string; verifiedCaller: string };
      denied: { status: number; body: { reason?: string; policies?: string[] } };
    };
    steps.push({
      name: 'A → B over HTTP through both sidecars',
      ok: result.http.status === 200 && result.http.body.verifiedCaller === ID_A.toString(),
      detail: `status ${result.http.status}; B was told the caller is ${result.http.body.verifiedCaller} (A's forged x-sigil-peer-id was stripped)`,
    });
    steps.push({
      name: 'A → B over WebSocket, every frame signed by sidecar A and verified by sidecar B',
      ok: result.websocket.verifiedCaller === ID_A.toString() && result.websocket.echo === 'ping from agent A',
      detail: `echo "${result.websocket.echo}", verified caller ${result.websocket.verifiedCaller}`,
    });

    steps.push({
      name: 'A → B GET /admin/users, denied by the Cedar policy before it leaves sidecar A (egress)',
      ok: result.denied.status === 403 && result.denied.body.reason === 'policy_denied' && (result.denied.body.policies ?? []).includes('no-admin'),
      detail: `status ${result.denied.status}, reason ${result.denied.body.reason}, policies ${JSON.stringify(result.denied.body.policies)}`,
    });

    // Alice asks agent A for a report; A calls B with her token. Sidecar A exchanges it at the
    // broker for a token addressed to B (act = A, scope narrowed); sidecar B verifies it.
    const alice = await mintDevUserToken(join(dir, 'dev-idp'), { sub: 'alice', scope: ['reports.read', 'email.send'], audience: 'sigil-broker' });
    const outboundA = sidecarA.ready.outbound as string;
    const asAlice = await plainGet(outboundA, 'agent-b', '/reports/q3', alice);
    const d = (asAlice.body as { delegation?: { sub: string; actors: string[]; scope: string[] } } | undefined)?.delegation;
    steps.push({
      name: 'alice → A → B: B sees alice behind the call, acted for by A, with the scope narrowed',
      ok: asAlice.status === 200 && d?.sub === 'alice' && d.actors.join() === ID_A.toString() && d.scope.join(' ') === 'reports.read',
      detail: `status ${asAlice.status}; delegation at B: ${JSON.stringify(d ?? null)}`,
    });
    const bare = await plainGet(outboundA, 'agent-b', '/reports/q3');
    steps.push({
      name: 'the same report without a person behind it is refused by B',
      ok: bare.status === 403 && (bare.body as { policies?: string[] } | undefined)?.policies?.includes('reports-for-people-only') === true,
      detail: `status ${bare.status}, ${JSON.stringify(bare.body)}`,
    });
    const widen = await plainGet(outboundA, 'agent-b', '/reports/escalate', alice);
    const escalation = (widen.body as { escalation?: { status: number; body?: { reason?: string; detail?: string } } } | undefined)?.escalation;
    steps.push({
      name: 'worker B, acting for alice, asks the reports tool for "admin" (a scope alice never granted): the broker refuses',
      ok:
        widen.status === 200 &&
        escalation?.status === 502 &&
        escalation.body?.reason === 'exchange_failed' &&
        escalation.body.detail === 'invalid_scope' &&
        !tool.lines.some((l) => l.msg === 'request'),
      detail: `B's sidecar answered B with ${escalation?.status} ${JSON.stringify(escalation?.body ?? null)}; the tool received ${tool.lines.filter((l) => l.msg === 'request').length} requests`,
    });

    // The kill switch: alice's delegation is revoked at sidecar B's admin API (as `sigil revoke
    // --admin ... --user alice` does); her calls stop at once, A's own calls go on; then lifted.
    const adminB = `http://${sidecarB.ready.admin as string}/v1/revocations`;
    const revoked = (await (await fetch(adminB, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'user', value: 'alice', reason: 'demo' }) })).json()) as { revocation?: { id: string } };
    const asRevoked = await plainGet(outboundA, 'agent-b', '/reports/q3', alice);
    const stillA = await plainGet(outboundA, 'agent-b', '/hello');
    const liftedStatus = revoked.revocation ? (await fetch(`${adminB}/${revoked.revocation.id}`, { method: 'DELETE' })).status : 0;
    const afterLift = await plainGet(outboundA, 'agent-b', '/reports/q3', alice);
    steps.push({
      name: 'kill switch: user alice revoked at sidecar B — her chain is refused, A\'s own calls go on, lifting restores it',
      ok: asRevoked.status === 403 && (asRevoked.body as { reason?: string } | undefined)?.reason === 'revoked' && stillA.status === 200 && liftedStatus === 200 && afterLift.status === 200,
      detail: `alice's call: ${asRevoked.status} ${JSON.stringify(asRevoked.body)}; A alone: ${stillA.status}; after the lift: ${afterLift.status}`,
    });

    const selfSigned = await selfSignedSvid(ID_A);
    const forged = await tryDirect(bInbound, selfSigned);
    steps.push({ name: `impostor with a self-signed certificate claiming ${ID_A}`, ok: forged.refused, detail: forged.detail });

    const otherCa = await DevIssuer.fromPem(TD, await createDevCa(TD));
    const untrusted = await otherCa.issue(ID_A, 15 * 60_000);
    const rogue = await tryDirect(bInbound, { cert: untrusted.certChainPem, key: untrusted.privateKeyPem });
    steps.push({ name: `impostor with a valid SVID for ${ID_A} from an untrusted CA`, ok: rogue.refused, detail: rogue.detail });

    // Agent C is a real workload of the trust domain (B lets it connect), but it cannot sign as
    // A: the message it injects claims A and is signed with the untrusted CA's SVID for A.
    await issueSvidToDir(join(dir, 'ca'), ID_C, 15 * 60_000, join(dir, 'agent-c'));
    const cCreds = { cert: await readFile(join(dir, 'agent-c', 'svid.pem'), 'utf8'), key: await readFile(join(dir, 'agent-c', 'svid.key'), 'utf8') };
    const forgedFrame = createEnvelopeSigner({ ...untrusted, notBefore: new Date(untrusted.certificates[0]!.validFrom), notAfter: new Date(untrusted.certificates[0]!.validTo), serial: untrusted.certificates[0]!.serialNumber }).sign({
      subject: 'ws:/chat',
      data: 'transfer everything (forged, claiming agent A)',
      audience: [ID_B.toString()],
    }).jws;
    const injected = await injectSignedFrame(bInbound, cCreds, forgedFrame);
    steps.push({
      name: `a workload of the trust domain injects a message signed as ${ID_A} with a key B does not trust`,
      ok: injected.code === 1008 && injected.reason === 'signer_untrusted' && !injected.echoed,
      detail: `stream closed by sidecar B with ${injected.code} "${injected.reason}"; agent B ${injected.echoed ? 'RECEIVED it' : 'never saw it'}`,
    });
  } catch (err) {
    steps.push({ name: 'demo setup', ok: false, detail: (err as Error).message });
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await rm(dir, { recursive: true, force: true });
  }

  say('\nsummary');
  for (const s of steps) say(`  ${s.ok ? 'PASS' : 'FAIL'}  ${s.name}\n        ${s.detail}`);
  const ok = steps.length > 0 && steps.every((s) => s.ok);
  say(ok ? '\nall checks passed' : '\nsome checks FAILED');
  return ok ? 0 : 1;
}

function say(line: string): void {
  process.stdout.write(line + '\n');
}

async function writeConfig(dir: string, name: string, config: unknown): Promise<string> {
  const path = join(dir, name);
  // JSON is valid YAML; the .yaml name exercises the YAML loader.
  await writeFile(path, JSON.stringify(config, null, 2));
  return path;
}

/** A certificate that looks like an SVID for `id` but is signed by its own key. */
async function selfSignedSvid(id: SpiffeId): Promise<{ cert: string; key: string }> {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as import("node:crypto").webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'O=SPIFFE',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }], true),
    ],
  });
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  return { cert: cert.toString('pem'), key: `-----BEGIN PRIVATE KEY-----\n${pkcs8}\n-----END PRIVATE KEY-----\n` };
}

/** Connects straight to a sidecar's inbound port with `creds` and tries one HTTP request. */
function tryDirect(address: string, creds: { cert: string; key: string }): Promise<{ refused: boolean; detail: string }> {
  const sep = address.lastIndexOf(':');
  return new Promise((resolve) => {
    const socket = connect({
      host: address.slice(0, sep),
      port: Number(address.slice(sep + 1)),
      cert: creds.cert,
      key: creds.key,
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    let response = '';
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
    socket.on('secureConnect', () => socket.write('GET /hello HTTP/1.1\r\nHost: agent-b\r\nConnection: close\r\n\r\n'));
    socket.on('data', (d: Buffer) => (response += d.toString()));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      resolve({ refused: response === '', detail: `refused: ${err.code ?? err.message}` });
    });
    socket.on('close', () => {
      resolve(
        response === ''
          ? { refused: true, detail: 'connection closed by sidecar B without any HTTP response' }
          : { refused: false, detail: `got a response: ${response.split('\r\n')[0]}` },
      );
    });
  });
}

/** Dials B's inbound as a signed stream and sends one frame; how the stream ended. */
function injectSignedFrame(address: string, creds: { cert: string; key: string }, frame: string): Promise<{ code: number; reason: string; echoed: boolean }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://${address}/chat`, { cert: creds.cert, key: creds.key, rejectUnauthorized: false, headers: { 'x-sigil-signed-frames': 'v1' } });
    let echoed = false;
    const timer = setTimeout(() => ws.terminate(), 5_000);
    ws.on('open', () => ws.send(frame));
    ws.on('message', () => (echoed = true));
    ws.on('error', () => undefined);
    ws.on('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      resolve({ code: res.statusCode ?? 0, reason: 'upgrade refused', echoed: false });
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString(), echoed });
    });
  });
}

/** A plain GET through an outbound listener, as an agent would make it. */
function plainGet(address: string, host: string, path: string, token?: string): Promise<{ status: number; body: unknown }> {
  const sep = address.lastIndexOf(':');
  return new Promise((resolve) => {
    const req = httpGet(
      { host: address.slice(0, sep), port: Number(address.slice(sep + 1)), path, headers: { host, ...(token ? { authorization: `Bearer ${token}` } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => {
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
  });
}
