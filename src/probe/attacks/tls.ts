// The TLS family: who may complete a handshake with the target's inbound listener, and how.
// Every credential here is refused by a correct target before any HTTP response. Certificates
// from rogue CAs are stopped by OpenSSL's unknown-CA filter before the SPIFFE rules are even
// consulted, so each leaf rule is tried a second time with a leaf from the federated CA (an
// authority the target trusts): only then does a refusal prove the rule itself.
// TLS version and cipher attacks use the legitimate identity, so only the offer is wrong; an
// offer the local OpenSSL cannot make is a skip, never a pass.
import { spawnSync } from 'node:child_process';
import { trustDomainOfCa } from '../../identity/devca.js';
import type { ClientCredentials, Exchange, TlsOffer } from '../client.js';
import { acceptedOutcome, callInbound, describeExchange, identityCredentials, legitimateRequest, refusedByTarget } from '../inbound-steps.js';
import { createLeaf, type CertOptions, type Issued } from '../mint.js';
import type { Attack, Outcome, ProbeContext } from '../types.js';

const DAY = 86_400_000;
const HANDSHAKE_REFUSED = 'handshake refused, no HTTP response';

// ---- credentials, minted lazily and once per run ----

const minted = new WeakMap<ProbeContext, Map<string, Promise<ClientCredentials>>>();

/** The credential `key` for this run: minted on first use, shared by later steps (and reruns). */
function once(ctx: ProbeContext, key: string, make: () => Promise<ClientCredentials>): Promise<ClientCredentials> {
  let perRun = minted.get(ctx);
  if (!perRun) {
    perRun = new Map();
    minted.set(ctx, perRun);
  }
  let pending = perRun.get(key);
  if (!pending) {
    pending = make();
    perRun.set(key, pending);
  }
  return pending;
}

function credentialsOf(leaf: Issued, ...chain: string[]): ClientCredentials {
  return { certChainPem: leaf.pem + chain.join(''), keyPem: leaf.keyPem };
}

/** The trust domain a CA certificate stands for, from its `spiffe://<td>` URI SAN. */
export function caTrustDomain(ca: Issued): string | undefined {
  try {
    return trustDomainOfCa(ca.cert).name;
  } catch {
    return undefined;
  }
}

function federatedTrustDomain(ctx: ProbeContext): string {
  const td = ctx.federatedCa ? caTrustDomain(ctx.federatedCa) : undefined;
  if (!td) throw new Error('the federated CA has no spiffe://<trust domain> URI SAN');
  return td;
}

function needsFederatedCa(ctx: ProbeContext): string | undefined {
  if (!ctx.federatedCa) return 'needs --federated-ca';
  if (!caTrustDomain(ctx.federatedCa)) return 'needs --federated-ca with a spiffe://<trust domain> URI SAN';
  return undefined;
}

/** A well-formed SVID from the federated CA: what the leaf-rule attacks are a variation of. */
function federatedControlLeaf(ctx: ProbeContext): Promise<ClientCredentials> {
  return once(ctx, 'federated-control', async () => credentialsOf(await createLeaf(ctx.federatedCa!, `spiffe://${federatedTrustDomain(ctx)}/probe/control`)));
}

// ---- readings ----

/**
 * Control reading for the federated variants: the handshake completed and the target answered
 * at all. A 403 is fine (the probe's federated ID need not be allowed by policy): what matters
 * is that the TLS layer accepts a well-formed leaf from this CA.
 */
function acceptedAtTls(exchange: Exchange): Outcome {
  if (exchange.kind === 'refused') return { ok: false, observed: `a well-formed federated SVID was refused: ${exchange.detail}` };
  return { ok: true, observed: `handshake accepted (${describeExchange(exchange)})` };
}

async function federatedControl(ctx: ProbeContext, signal: AbortSignal): Promise<Outcome> {
  return acceptedAtTls(await callInbound(ctx, await federatedControlLeaf(ctx), {}, signal));
}

async function refusedWith(ctx: ProbeContext, credentials: ClientCredentials, signal: AbortSignal): Promise<Outcome> {
  return refusedByTarget(ctx, await callInbound(ctx, credentials, {}, signal), signal);
}

// ---- identity attacks ----

interface IdentityAttackSpec {
  name: string;
  title: string;
  proves: string;
  credentials(ctx: ProbeContext): Promise<ClientCredentials>;
  control?: Attack['control'];
  skip?: Attack['skip'];
}

function identityAttack(spec: IdentityAttackSpec): Attack {
  return {
    id: `tls.${spec.name}`,
    family: 'tls',
    title: spec.title,
    expected: HANDSHAKE_REFUSED,
    proves: spec.proves,
    ...(spec.skip ? { skip: spec.skip } : {}),
    control: spec.control ?? ((ctx, signal) => legitimateRequest(ctx, signal)),
    attack: async (ctx, signal) => refusedWith(ctx, await spec.credentials(ctx), signal),
  };
}

function basicIdentityAttacks(): Attack[] {
  return [
    identityAttack({
      name: 'no-client-cert',
      title: 'connection without a client certificate',
      proves: 'The target requires mutual TLS: a caller without an SVID gets no HTTP response at all.',
      credentials: async () => ({}),
    }),
    identityAttack({
      name: 'self-signed',
      title: "self-signed certificate claiming the victim's SPIFFE ID",
      proves: 'A URI SAN alone is not an identity: the certificate must chain to a trusted bundle.',
      credentials: (ctx) => once(ctx, 'self-signed', async () => credentialsOf(await createLeaf(undefined, ctx.victim.toString(), { role: 'Probe Impostor' }))),
    }),
    identityAttack({
      name: 'rogue-ca-same-trust-domain',
      title: "SVID for the victim's ID from a rogue CA named after the victim's trust domain",
      proves: "Trust comes from the bundle's keys, not from a CA that merely carries the right trust-domain name.",
      credentials: (ctx) => once(ctx, 'rogue-same-td', async () => credentialsOf(await createLeaf(ctx.rogue.sameTrustDomainCa, ctx.victim.toString()))),
    }),
    identityAttack({
      name: 'rogue-ca-other-trust-domain',
      title: 'SVID from a CA of a trust domain the target does not trust',
      proves: 'Unknown trust domains are refused: a well-formed SPIFFE chain is not enough without a bundle for its trust domain.',
      credentials: (ctx) =>
        once(ctx, 'rogue-other-td', async () => credentialsOf(await createLeaf(ctx.rogue.otherTrustDomainCa, `spiffe://${ctx.rogue.otherTrustDomain}${ctx.victim.path || '/probe'}`))),
    }),
  ];
}

// ---- leaf rules (X509-SVID), from a rogue CA and from the federated CA ----

interface LeafFlaw {
  name: string;
  /** What is wrong with the leaf, for titles ("basicConstraints cA=true"). */
  flaw: string;
  /** The SPIFFE rule a refusal from a trusted CA proves. */
  rule: string;
  /** Leaf options for an ID `id` in trust domain `td`. */
  options(id: string, td: string): CertOptions;
}

// Dates relative to minting: the credential is minted at most a run before it is used.
const LEAF_FLAWS: LeafFlaw[] = [
  {
    name: 'ca-true-leaf',
    flaw: 'basicConstraints cA=true',
    rule: 'X509-SVID §4.1: a leaf must have cA=false; a CA-shaped certificate is not a workload identity.',
    options: () => ({ ca: true }),
  },
  {
    name: 'key-cert-sign-leaf',
    flaw: 'keyUsage keyCertSign',
    rule: 'X509-SVID §4.3: a leaf must not have keyCertSign (or cRLSign); a leaf that can sign certificates is refused.',
    options: () => ({ keyUsage: ['digitalSignature', 'keyCertSign'] }),
  },
  {
    name: 'two-uri-sans',
    flaw: 'two URI SANs',
    rule: 'X509-SVID §2: exactly one URI SAN; a certificate naming two identities is refused rather than read either way.',
    options: (id, td) => ({ uris: [id, `spiffe://${td}/probe/second-identity`] }),
  },
  {
    name: 'no-uri-san',
    flaw: 'no URI SAN (a DNS name only)',
    rule: 'X509-SVID §2: a certificate without a SPIFFE ID is not an SVID, whoever signed it.',
    options: () => ({ uris: [], dnsNames: ['probe.invalid'] }),
  },
  {
    name: 'non-spiffe-uri',
    flaw: 'a non-spiffe URI SAN (https://)',
    rule: 'The URI SAN must be a spiffe:// ID; another scheme that looks like the ID is refused.',
    options: (id) => ({ uris: [id.replace(/^spiffe:/, 'https:')] }),
  },
  {
    name: 'root-path-id',
    flaw: 'the trust-domain ID itself (spiffe://<td>, no path)',
    rule: 'The trust-domain ID (no path) names no workload: a leaf carrying it is refused.',
    options: (_id, td) => ({ uris: [`spiffe://${td}`] }),
  },
  {
    name: 'expired',
    flaw: 'validity that ended yesterday',
    rule: 'Expired SVIDs are refused: a stolen SVID is useful only until it expires.',
    options: () => ({ notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) }),
  },
  {
    name: 'not-yet-valid',
    flaw: 'validity starting tomorrow',
    rule: 'Not-yet-valid SVIDs are refused: a certificate minted ahead of time is not usable early.',
    options: () => ({ notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 2 * DAY) }),
  },
];

function rogueLeafAttack(flaw: LeafFlaw): Attack {
  return identityAttack({
    name: flaw.name,
    title: `victim's ID in a leaf with ${flaw.flaw}, from a rogue CA`,
    proves: `Refused; from a rogue CA this may be the unknown-CA filter alone, tls.federated-${flaw.name} proves the rule itself.`,
    credentials: (ctx) =>
      once(ctx, `rogue-${flaw.name}`, async () => {
        const id = ctx.victim.toString();
        return credentialsOf(await createLeaf(ctx.rogue.sameTrustDomainCa, id, flaw.options(id, ctx.victim.trustDomain.name)));
      }),
  });
}

function federatedLeafAttack(flaw: LeafFlaw): Attack {
  return identityAttack({
    name: `federated-${flaw.name}`,
    title: `leaf with ${flaw.flaw}, from the federated CA (a trusted authority)`,
    proves: flaw.rule,
    skip: needsFederatedCa,
    control: federatedControl,
    credentials: (ctx) =>
      once(ctx, `federated-${flaw.name}`, async () => {
        const td = federatedTrustDomain(ctx);
        const id = `spiffe://${td}/probe/${flaw.name}`;
        return credentialsOf(await createLeaf(ctx.federatedCa!, id, flaw.options(id, td)));
      }),
  });
}

// ---- authority confusion ----

function authorityAttacks(): Attack[] {
  return [
    identityAttack({
      name: 'cross-trust-domain',
      title: "federated CA signs a leaf claiming the victim's ID (in the victim's trust domain)",
      proves: "Each ID is verified against its own trust domain's bundle only; a verifier that pools bundles would let a federated partner mint your identities.",
      skip: (ctx) => needsFederatedCa(ctx) ?? (federatedTrustDomain(ctx) === ctx.victim.trustDomain.name ? "needs --federated-ca of a trust domain other than the victim's" : undefined),
      control: federatedControl,
      credentials: (ctx) => once(ctx, 'cross-td', async () => credentialsOf(await createLeaf(ctx.federatedCa!, ctx.victim.toString()))),
    }),
    identityAttack({
      name: 'svid-as-ca',
      title: "leaf claiming the victim's ID signed by the test SVID's key, presented with the test SVID as its issuer",
      proves: 'An SVID is not a CA: a compromised workload cannot mint other identities with its own key.',
      // The test SVID's full chain follows the forged leaf, so a path to a trusted root exists
      // if the verifier lets a cA=false leaf issue.
      credentials: (ctx) => once(ctx, 'svid-as-ca', async () => credentialsOf(await createLeaf(ctx.identity.asIssuer, ctx.victim.toString()), ctx.identity.certChainPem)),
    }),
  ];
}

// ---- protocol versions and cipher suites, with the legitimate identity ----

/** TLS 1.2 offers: SECLEVEL=0 so that OpenSSL is willing to offer the suites it still has. */
const weakTls12 = (ciphers: string): TlsOffer => ({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: `${ciphers}@SECLEVEL=0` });

interface OfferAttackSpec {
  name: string;
  title: string;
  expected: string;
  proves: string;
  /** What was on offer, for the observation when the target takes it ("TLS 1.0 only"). */
  offered: string;
  offer: TlsOffer;
  /** The same offer shape that a correct target accepts. */
  controlOffer: TlsOffer;
  /** Only meaningful against an RSA SVID (static-RSA key exchange needs an RSA server key). */
  rsaTargetOnly?: boolean;
}

const TLS12_CONTROL: TlsOffer = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'DEFAULT@SECLEVEL=0' };
const AEAD_CONTROL: TlsOffer = {
  minVersion: 'TLSv1.2',
  maxVersion: 'TLSv1.2',
  ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305',
};

// Each cipher offer names both ECDSA and RSA variants, so whichever key the target's SVID has,
// a suite it could negotiate is on offer and only its cipher policy can refuse.
const OFFER_ATTACKS: OfferAttackSpec[] = [
  {
    name: 'tls-1-0',
    offered: 'TLS 1.0 only',
    title: 'legitimate SVID, client offers only TLS 1.0',
    expected: 'handshake refused (protocol version)',
    proves: 'The TLS floor is 1.2: a downgrade to TLS 1.0 is refused even for a valid identity.',
    offer: { minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' },
    controlOffer: TLS12_CONTROL,
  },
  {
    name: 'tls-1-1',
    offered: 'TLS 1.1 only',
    title: 'legitimate SVID, client offers only TLS 1.1',
    expected: 'handshake refused (protocol version)',
    proves: 'The TLS floor is 1.2: a downgrade to TLS 1.1 is refused even for a valid identity.',
    offer: { minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' },
    controlOffer: TLS12_CONTROL,
  },
  {
    name: 'cipher-cbc-sha1',
    offered: 'CBC/SHA-1 suites only',
    title: 'legitimate SVID, TLS 1.2 with only ECDHE AES-CBC/SHA-1 suites',
    expected: 'handshake refused (no shared cipher)',
    proves: 'TLS 1.2 is AEAD-only: CBC suites with SHA-1 MACs (Lucky13-class padding oracles) are not negotiated.',
    offer: weakTls12('ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA'),
    controlOffer: AEAD_CONTROL,
  },
  {
    name: 'cipher-cbc-sha2',
    offered: 'CBC/SHA-2 suites only',
    title: 'legitimate SVID, TLS 1.2 with only ECDHE AES-CBC/SHA-256/384 suites',
    expected: 'handshake refused (no shared cipher)',
    proves: 'TLS 1.2 is AEAD-only: MAC-then-encrypt CBC suites are not negotiated, whatever their hash.',
    offer: weakTls12('ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384'),
    controlOffer: AEAD_CONTROL,
  },
  {
    name: 'cipher-static-rsa',
    offered: 'static-RSA suites only',
    title: 'legitimate SVID, TLS 1.2 with only static-RSA key exchange suites (no forward secrecy)',
    expected: 'handshake refused (no shared cipher)',
    proves: 'Only ECDHE key exchange: a stolen RSA SVID key cannot decrypt recorded traffic (skipped against an EC SVID, which cannot do static RSA at all).',
    offer: weakTls12('AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES128-SHA:AES256-SHA'),
    controlOffer: AEAD_CONTROL,
    rsaTargetOnly: true,
  },
  {
    name: 'cipher-3des',
    offered: '3DES suites only',
    title: 'legitimate SVID, TLS 1.2 with only 3DES suites',
    expected: 'handshake refused (no shared cipher)',
    proves: '64-bit-block 3DES (Sweet32) is not negotiated.',
    offer: weakTls12('ECDHE-ECDSA-DES-CBC3-SHA:ECDHE-RSA-DES-CBC3-SHA:DES-CBC3-SHA'),
    controlOffer: AEAD_CONTROL,
  },
  {
    name: 'cipher-null',
    offered: 'NULL suites only',
    title: 'legitimate SVID, TLS 1.2 with only NULL-encryption suites',
    expected: 'handshake refused (no shared cipher)',
    proves: 'Traffic is always encrypted: authenticated-but-cleartext suites are not negotiated.',
    offer: weakTls12('ECDHE-ECDSA-NULL-SHA:ECDHE-RSA-NULL-SHA:NULL-SHA256:NULL-SHA'),
    controlOffer: AEAD_CONTROL,
  },
  {
    name: 'cipher-rc4',
    offered: 'RC4 suites only',
    title: 'legitimate SVID, TLS 1.2 with only RC4 suites',
    expected: 'handshake refused (no shared cipher)',
    proves: 'The broken RC4 stream cipher is not negotiated.',
    offer: weakTls12('ECDHE-ECDSA-RC4-SHA:ECDHE-RSA-RC4-SHA:RC4-SHA'),
    controlOffer: AEAD_CONTROL,
  },
];

/**
 * Can this process's OpenSSL actually put each offer on the wire? Answered once per process by
 * a child `node` that dials a loopback TCP listener and reads the ClientHello (skip() is
 * synchronous, and a handshake is not). Node's flags and environment carry over, so the answer
 * is about the same OpenSSL with the same configuration the attack will use.
 */
let offerSupport: Map<string, string | undefined> | undefined;

const CLIENT_HELLO_SCRIPT = `
const net = require('net'), tls = require('tls');
const offers = JSON.parse(process.argv[1]);
function check(offer) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r) => { if (!done) { done = true; server.close(); resolve(r); } };
    const server = net.createServer((s) => {
      s.on('error', () => {});
      s.once('data', (d) => { finish({ sent: true, version: d.length > 10 && d[0] === 0x16 && d[5] === 1 ? d.readUInt16BE(9) : 0 }); s.destroy(); });
    });
    server.listen(0, '127.0.0.1', () => {
      let c;
      try { c = tls.connect({ host: '127.0.0.1', port: server.address().port, rejectUnauthorized: false, ...offer }); }
      catch (e) { return finish({ sent: false, error: e.code || e.message }); }
      c.on('error', (e) => finish({ sent: false, error: e.code || e.message }));
    });
  });
}
(async () => { const out = []; for (const o of offers) out.push(await check(o)); process.stdout.write(JSON.stringify(out)); })();
`;

const WIRE_VERSION: Record<string, number> = { TLSv1: 0x0301, 'TLSv1.1': 0x0302, 'TLSv1.2': 0x0303 };

function offerKey(offer: TlsOffer): string {
  return JSON.stringify([offer.minVersion, offer.maxVersion, offer.ciphers]);
}

/** Flags that shape TLS in the child exactly as in this process (others, e.g. --inspect, would clash). */
function tlsExecArgv(): string[] {
  return process.execArgv.filter((a) => /^--(tls-|openssl-|use-openssl-ca|use-bundled-ca|enable-fips|force-fips)/.test(a));
}

function measureOfferSupport(): Map<string, string | undefined> {
  const offers = OFFER_ATTACKS.map((a) => a.offer);
  const result = new Map<string, string | undefined>();
  const child = spawnSync(process.execPath, [...tlsExecArgv(), '-e', CLIENT_HELLO_SCRIPT, JSON.stringify(offers)], { encoding: 'utf8', timeout: 15_000 });
  const seen = parseSeen(child.stdout);
  if (!seen) {
    const why = `could not check what the local OpenSSL can offer (${child.error?.message ?? (String(child.stderr ?? '').trim().split('\n')[0] || 'no output')})`;
    for (const offer of offers) result.set(offerKey(offer), why);
    return result;
  }
  offers.forEach((offer, i) => {
    const r = seen[i];
    const want = WIRE_VERSION[offer.maxVersion ?? ''];
    let problem: string | undefined;
    if (!r?.sent) problem = `the local OpenSSL cannot offer it (${describeLocalError(r?.error)})`;
    else if (want !== undefined && r.version !== want) problem = `the local OpenSSL offered version 0x${(r.version ?? 0).toString(16)} instead of ${offer.maxVersion}`;
    result.set(offerKey(offer), problem);
  });
  return result;
}

type SeenHello = { sent: boolean; version?: number; error?: string };

function parseSeen(stdout: string | null): SeenHello[] | undefined {
  try {
    const parsed: unknown = JSON.parse(stdout ?? '');
    return Array.isArray(parsed) ? (parsed as SeenHello[]) : undefined;
  } catch {
    return undefined;
  }
}

function describeLocalError(code: string | undefined): string {
  if (!code) return 'no ClientHello sent';
  return code.startsWith('ERR_SSL_') ? code.slice('ERR_SSL_'.length).toLowerCase().replace(/_/g, ' ') : code;
}

/** Why this offer cannot be attempted from here, or undefined when it can. */
export function localOfferProblem(offer: TlsOffer): string | undefined {
  offerSupport ??= measureOfferSupport();
  return offerSupport.has(offerKey(offer)) ? offerSupport.get(offerKey(offer)) : 'not a known offer';
}

// Errors the local OpenSSL raises before a ClientHello leaves: the offer was never made.
const LOCAL_REFUSAL = /no protocols available|no ciphers available|no cipher match/;

function offerAttack(spec: OfferAttackSpec): Attack {
  return {
    id: `tls.${spec.name}`,
    family: 'tls',
    title: spec.title,
    expected: spec.expected,
    proves: spec.proves,
    skip: (ctx) => {
      if (spec.rsaTargetOnly && ctx.targetKeyType !== 'rsa') return `the target's SVID key is ${ctx.targetKeyType ?? 'not RSA'}: these suites cannot be negotiated with it whatever its cipher policy`;
      const problem = localOfferProblem(spec.offer);
      return problem ? `cannot be attempted from here: ${problem}` : undefined;
    },
    control: async (ctx, signal) => acceptedOutcome(await callInbound(ctx, identityCredentials(ctx), {}, signal, spec.controlOffer)),
    attack: async (ctx, signal) => {
      const exchange = await callInbound(ctx, identityCredentials(ctx), {}, signal, spec.offer);
      if (exchange.kind === 'response') return { ok: false, observed: `accepted: ${describeExchange(exchange)} with ${spec.offered} offered` };
      // A refusal that happened on our side proves nothing about the target: not a pass.
      if (LOCAL_REFUSAL.test(exchange.detail)) throw new Error(`not attempted: the local OpenSSL did not send the offer (${exchange.detail})`);
      return refusedByTarget(ctx, exchange, signal);
    },
  };
}

/** The TLS family, in report order. */
export function tlsAttacks(): Attack[] {
  return [
    ...basicIdentityAttacks(),
    ...LEAF_FLAWS.map(rogueLeafAttack),
    ...LEAF_FLAWS.map(federatedLeafAttack),
    ...authorityAttacks(),
    ...OFFER_ATTACKS.map(offerAttack),
  ];
}
