// The broker's policy: Cedar `delegation.exchange` rules (schema/sigil.cedarschema,
// ExchangeContext). principal = the requesting actor (mTLS peer), resource = the audience agent.
// Compiled and validated with the sidecar's compiler; the file is watched and a bad new file
// keeps the last good policy. Default deny: no permit, no token.
//
// Which RFC 8693 error a denial gets: `invalid_target` (the audience is refused) unless a
// determining `forbid` carries an `@error("unauthorized_client")` or `@error("invalid_scope")`
// annotation (docs/delegation.md §4).
//
// The same file also decides `revocation.issue` (schema/sigil.cedarschema, RevocationContext):
// which agents' signed revocation records arriving over NATS the broker applies, exactly as a
// sidecar's policy does (principal = the signer, resource = Topic::"<revocation subject>").
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { cedarWasm } from '../authz/cedar-wasm.js';
import { compileCedarPolicy, PolicyLoadError, type ReloadOutcome } from '../authz/index.js';
import { watchFiles, type FileWatch } from '../identity/index.js';
import type { SpiffeId } from '../spiffe/index.js';

export type DenialError = 'invalid_target' | 'unauthorized_client' | 'invalid_scope';
const DENIAL_ERRORS = new Set<string>(['invalid_target', 'unauthorized_client', 'invalid_scope']);

export interface ExchangeAuthzRequest {
  actor: SpiffeId;
  audience: SpiffeId;
  sub: string;
  /** The scope asked for, already narrowed to the parent's. */
  scope: string[];
  /** The parent chain's actors (empty for a user token). */
  actors: string[];
  /** The depth the new token would have. */
  depth: number;
  subjectTokenType: 'user' | 'delegation';
  /** Unix seconds; defaults to now. */
  time?: number;
}

export interface ExchangeDecision {
  allowed: boolean;
  /** Ids of the determining policies (`@id` or `policyN`). */
  policies: string[];
  /** For a denial: the OAuth error to answer with. */
  error?: DenialError;
  /** Set when evaluation failed (fails closed). */
  evaluationError?: string;
  policyVersion: string;
}

interface LoadedPolicy {
  version: string;
  /** Policy id → the `@error` annotation, where present. */
  errors: Map<string, DenialError>;
  /** Whether any permit can apply to `delegation.exchange` (otherwise every exchange is refused). */
  mentionsExchange: boolean;
  /** Whether any permit can apply to `revocation.issue` (otherwise every NATS record is refused). */
  mentionsRevocation: boolean;
}

/** `revocation.issue` for a record that arrived over NATS (or one this broker is about to sign). */
export interface RevocationDecision {
  allowed: boolean;
  policies: string[];
  /** Set when evaluation failed (fails closed). */
  evaluationError?: string;
  policyVersion: string;
}

export interface BrokerPolicyEvents {
  reload: [ReloadOutcome];
}

export class BrokerPolicy extends EventEmitter<BrokerPolicyEvents> {
  private loaded: LoadedPolicy | undefined;
  private watch: FileWatch | undefined;
  private reloading: Promise<ReloadOutcome> | undefined;

  constructor(private readonly path: string) {
    super();
  }

  /** Loads the file (a bad file at startup is fatal) and starts watching it. */
  async start(): Promise<LoadedPolicy> {
    this.loaded = await this.load();
    this.watch = watchFiles([this.path], () => void this.reload());
    return this.loaded;
  }

  stop(): void {
    this.watch?.close();
  }

  get version(): string {
    return this.loaded?.version ?? 'none';
  }

  reload(): Promise<ReloadOutcome> {
    this.reloading ??= this.doReload().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async doReload(): Promise<ReloadOutcome> {
    let outcome: ReloadOutcome;
    try {
      const next = await this.load();
      const changed = next.version !== this.loaded?.version;
      this.loaded = next;
      outcome = { result: 'success', version: next.version, changed };
    } catch (err) {
      outcome = { result: 'failure', error: err as Error };
    }
    this.emit('reload', outcome);
    return outcome;
  }

  private async load(): Promise<LoadedPolicy> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      throw new PolicyLoadError(this.path, [{ message: `cannot read policy file (${(err as NodeJS.ErrnoException).code ?? 'error'})` }]);
    }
    return compileBrokerPolicy(text, this.path);
  }

  /** Evaluates one exchange with the policy in force. Never throws: anything unexpected denies. */
  authorize(request: ExchangeAuthzRequest): ExchangeDecision {
    const loaded = this.loaded;
    if (!loaded) return { allowed: false, policies: [], error: 'invalid_target', evaluationError: 'no policy loaded', policyVersion: 'none' };
    try {
      return evaluate(loaded, request);
    } catch (err) {
      return { allowed: false, policies: [], error: 'invalid_target', evaluationError: (err as Error).message, policyVersion: loaded.version };
    }
  }

  /**
   * May `signer` issue a revocation record (`op` on an entry of `kind`; '' for a lift of an entry
   * not known here) on `subject`? Evaluated like a sidecar's: principal Agent::"<signer>", action
   * `revocation.issue`, resource Topic::"<subject>". Never throws: anything unexpected denies.
   */
  authorizeRevocation(signer: SpiffeId, subject: string, op: 'revoke' | 'lift', kind: string, time = Math.floor(Date.now() / 1000)): RevocationDecision {
    const loaded = this.loaded;
    if (!loaded) return { allowed: false, policies: [], evaluationError: 'no policy loaded', policyVersion: 'none' };
    try {
      return evaluateRevocation(loaded, signer, subject, { direction: 'inbound', time, op, kind });
    } catch (err) {
      return { allowed: false, policies: [], evaluationError: (err as Error).message, policyVersion: loaded.version };
    }
  }
}

/** Compiles a broker policy: the sidecar's compiler (schema validation) plus `@error` annotations. */
export function compileBrokerPolicy(text: string, source: string): LoadedPolicy {
  const compiled = compileCedarPolicy(text, source);
  const errors = new Map<string, DenialError>();
  const parts = cedarWasm().policySetTextToParts(text);
  if (parts.type !== 'success') throw new PolicyLoadError(source, parts.errors.map((e) => ({ message: e.message })));
  let mentionsExchange = false;
  let mentionsRevocation = false;
  parts.policies.forEach((part, index) => {
    const json = cedarWasm().policyToJson(part);
    if (json.type !== 'success') return;
    const policy = json.json as { effect?: string; action?: { op?: string }; annotations?: Record<string, string | null> };
    const id = (typeof policy.annotations?.['id'] === 'string' && policy.annotations['id'] !== '' ? policy.annotations['id'] : undefined) ?? `policy${index}`;
    if (policy.effect === 'permit' && (policy.action?.op === 'All' || JSON.stringify(policy.action).includes('"delegation.exchange"'))) mentionsExchange = true;
    if (policy.effect === 'permit' && (policy.action?.op === 'All' || JSON.stringify(policy.action).includes('"revocation.issue"'))) mentionsRevocation = true;
    const error = policy.annotations?.['error'];
    if (error === undefined || error === null) return;
    if (!DENIAL_ERRORS.has(error)) {
      throw new PolicyLoadError(source, [{ policyId: id, message: `@error(${JSON.stringify(error)}) is not one of unauthorized_client, invalid_target, invalid_scope` }]);
    }
    if (policy.effect !== 'forbid') {
      throw new PolicyLoadError(source, [{ policyId: id, message: '@error only has a meaning on forbid policies' }]);
    }
    errors.set(id, error as DenialError);
  });
  return { version: compiled.version, errors, mentionsExchange, mentionsRevocation };
}

function agentEntities(id: SpiffeId): cedar.EntityJson[] {
  const td = id.trustDomain.name;
  return [
    { uid: { type: 'Agent', id: id.toString() }, attrs: { trustDomain: td, path: id.path }, parents: [{ type: 'TrustDomain', id: td }] },
    { uid: { type: 'TrustDomain', id: td }, attrs: {}, parents: [] },
  ];
}

/** `revocation.issue`: the signer in its trust domain, the subject as a Topic (as src/authz/cedar.ts builds them). */
function evaluateRevocation(loaded: LoadedPolicy, signer: SpiffeId, subject: string, context: { direction: 'inbound'; time: number; op: string; kind: string }): RevocationDecision {
  const entities = agentEntities(signer);
  entities.push({ uid: { type: 'Topic', id: subject }, attrs: { subject }, parents: [] });
  const answer = cedarWasm().statefulIsAuthorized({
    principal: { type: 'Agent', id: signer.toString() },
    action: { type: 'Action', id: 'revocation.issue' },
    resource: { type: 'Topic', id: subject },
    context,
    entities,
    preparsedPolicySetId: loaded.version,
    validateRequest: false,
  });
  if (answer.type !== 'success') {
    return { allowed: false, policies: [], evaluationError: answer.errors.map((e) => e.message).join('; '), policyVersion: loaded.version };
  }
  const { decision, diagnostics } = answer.response;
  const evaluationError = diagnostics.errors.length > 0 ? diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`).join('; ') : undefined;
  return { allowed: decision === 'allow', policies: diagnostics.reason, policyVersion: loaded.version, ...(evaluationError ? { evaluationError } : {}) };
}

function evaluate(loaded: LoadedPolicy, request: ExchangeAuthzRequest): ExchangeDecision {
  const entities = agentEntities(request.actor);
  if (!request.audience.equals(request.actor)) {
    const [agent, td] = agentEntities(request.audience);
    entities.push(agent!);
    if (!request.audience.trustDomain.equals(request.actor.trustDomain)) entities.push(td!);
  }
  const answer = cedarWasm().statefulIsAuthorized({
    principal: { type: 'Agent', id: request.actor.toString() },
    action: { type: 'Action', id: 'delegation.exchange' },
    resource: { type: 'Agent', id: request.audience.toString() },
    context: {
      time: request.time ?? Math.floor(Date.now() / 1000),
      sub: request.sub,
      scope: request.scope,
      actors: request.actors,
      depth: request.depth,
      subjectTokenType: request.subjectTokenType,
    },
    entities,
    preparsedPolicySetId: loaded.version,
    validateRequest: false,
  });
  if (answer.type !== 'success') {
    return { allowed: false, policies: [], error: 'invalid_target', evaluationError: answer.errors.map((e) => e.message).join('; '), policyVersion: loaded.version };
  }
  const { decision, diagnostics } = answer.response;
  const policies = diagnostics.reason;
  const evaluationError = diagnostics.errors.length > 0 ? diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`).join('; ') : undefined;
  if (decision === 'allow') return { allowed: true, policies, policyVersion: loaded.version, ...(evaluationError ? { evaluationError } : {}) };
  // A deny names the determining forbids (none when simply nothing permitted). The first
  // annotated one picks the error; unauthorized_client outranks invalid_scope.
  const annotated = policies.map((id) => loaded.errors.get(id)).filter((e): e is DenialError => e !== undefined);
  const error: DenialError = annotated.includes('unauthorized_client') ? 'unauthorized_client' : annotated.includes('invalid_scope') ? 'invalid_scope' : 'invalid_target';
  return { allowed: false, policies, error, policyVersion: loaded.version, ...(evaluationError ? { evaluationError } : {}) };
}
