// Cedar policy mode: compile a policy file against Sigil's schema once per version, then
// evaluate every call with the preparsed set (cedar-wasm's stateful API), building entities
// and context from the AuthzRequest. Default deny; forbid wins (Cedar semantics).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { cedarWasm } from './cedar-wasm.js';
import type { SpiffeId } from '../spiffe/index.js';
import { PolicySlices } from './cedar-slices.js';
import type { Authorizer, AuthzRequest, Decision, Resource } from './decision.js';

export const SCHEMA_PATH = fileURLToPath(new URL('../../../schema/sigil.cedarschema', import.meta.url));
const SCHEMA_NAME = 'sigil';

let schemaText: string | undefined;
function schema(): string {
  if (schemaText === undefined) {
    const text = readFileSync(SCHEMA_PATH, 'utf8');
    const parsed = cedarWasm().preparseSchema(SCHEMA_NAME, text);
    if (parsed.type !== 'success') throw new Error(`built-in Cedar schema is invalid: ${parsed.errors.map((e) => e.message).join('; ')}`);
    schemaText = text;
  }
  return schemaText;
}

export interface PolicyIssue {
  /** `@id` annotation or `policyN` (position in the file, from 0); absent for parse errors. */
  policyId?: string;
  line?: number;
  column?: number;
  message: string;
}

export class PolicyLoadError extends Error {
  readonly code = 'policy_invalid';
  constructor(
    readonly source: string,
    readonly issues: PolicyIssue[],
  ) {
    super(`invalid policy ${source}:\n${issues.map(formatIssue).join('\n')}`);
  }
}

function formatIssue(i: PolicyIssue): string {
  const where = i.line === undefined ? '' : `${i.line}:${i.column} `;
  const id = i.policyId === undefined ? '' : `policy ${i.policyId}: `;
  return `  - ${where}${id}${i.message}`;
}

export interface CompiledPolicy {
  /** Content hash; the preparsed set is registered under it. */
  version: string;
  ids: string[];
  /**
   * Whether any policy reads an attribute named `time` (conservatively: anywhere). When none
   * does, a decision is a pure function of principal, action, resource and the rest of the
   * context, so it can be cached for this version.
   */
  readsTime: boolean;
  /** Each policy's text and the exact principal and action its scope is limited to, if any. */
  scopes: PolicyScope[];
}

/**
 * What a policy's scope pins down exactly (`principal == Agent::"…"`, `action == Action::"…"`).
 * Any other form (`in`, `is`, a group, no constraint) leaves the field undefined: the policy may
 * apply to any principal or action.
 */
export interface PolicyScope {
  id: string;
  text: string;
  principal?: string;
  action?: string;
}

/** Parses, names and validates a policy file; throws PolicyLoadError with positions. */
export function compileCedarPolicy(text: string, source: string): CompiledPolicy {
  const schemaSource = schema();
  const parsed = cedarWasm().checkParsePolicySet({ staticPolicies: text });
  if (parsed.type !== 'success') {
    throw new PolicyLoadError(
      source,
      parsed.errors.map((e) => ({ ...position(text, e.sourceLocations?.[0]?.start), message: detailed(e) })),
    );
  }
  const parts = cedarWasm().policySetTextToParts(text);
  if (parts.type !== 'success') throw new PolicyLoadError(source, parts.errors.map((e) => ({ message: detailed(e) })));

  const policies: Record<string, string> = {};
  const offsets = new Map<string, number>();
  let readsTime = false;
  const issues: PolicyIssue[] = [];
  const scopes: PolicyScope[] = [];
  let cursor = 0;
  parts.policies.forEach((part, index) => {
    const at = text.indexOf(part, cursor);
    const offset = at === -1 ? cursor : at;
    cursor = at === -1 ? cursor : at + part.length;
    const json = policyJson(part);
    if (json === undefined || json.includes('"attr":"time"')) readsTime = true;
    const id = annotatedIdOf(json) ?? `policy${index}`;
    if (policies[id] !== undefined) {
      issues.push({ policyId: id, ...position(text, offset), message: `duplicate policy id "${id}"` });
      return;
    }
    policies[id] = part;
    offsets.set(id, offset);
    scopes.push({ id, text: part, ...exactScope(json) });
  });
  if (parts.policy_templates.length > 0) issues.push({ message: 'policy templates are not supported; write static policies' });
  if (issues.length > 0) throw new PolicyLoadError(source, issues);

  const validation = cedarWasm().validate({ schema: schemaSource, policies: { staticPolicies: policies }, validationSettings: { mode: 'strict' } });
  if (validation.type !== 'success') throw new PolicyLoadError(source, validation.errors.map((e) => ({ message: detailed(e) })));
  if (validation.validationErrors.length > 0) {
    throw new PolicyLoadError(
      source,
      validation.validationErrors.map((v) => ({
        policyId: v.policyId,
        ...position(text, (offsets.get(v.policyId) ?? 0) + (v.error.sourceLocations?.[0]?.start ?? 0)),
        message: detailed(v.error),
      })),
    );
  }

  const version = createHash('sha256').update(text).digest('hex').slice(0, 12);
  const registered = cedarWasm().preparsePolicySet(version, { staticPolicies: policies });
  if (registered.type !== 'success') throw new PolicyLoadError(source, registered.errors.map((e) => ({ message: detailed(e) })));
  return { version, ids: Object.keys(policies), readsTime, scopes };
}

/** The exact principal and action of a policy's scope, from its JSON form (see PolicyScope). */
function exactScope(json: string | undefined): Pick<PolicyScope, 'principal' | 'action'> {
  if (json === undefined) return {};
  type Constraint = { op?: string; entity?: { type?: string; id?: string } };
  const { principal, action } = JSON.parse(json) as { principal?: Constraint; action?: Constraint };
  const exact = (c: Constraint | undefined, type: string): string | undefined =>
    c?.op === '==' && c.entity?.type === type && typeof c.entity.id === 'string' ? c.entity.id : undefined;
  const out: Pick<PolicyScope, 'principal' | 'action'> = {};
  const p = exact(principal, 'Agent');
  const a = exact(action, 'Action');
  if (p !== undefined) out.principal = p;
  if (a !== undefined) out.action = a;
  return out;
}

/** The policy's JSON form as text, or undefined if it cannot be converted. */
function policyJson(policyText: string): string | undefined {
  const json = cedarWasm().policyToJson(policyText);
  return json.type === 'success' ? JSON.stringify(json.json) : undefined;
}

function annotatedIdOf(json: string | undefined): string | undefined {
  if (json === undefined) return undefined;
  const id = (JSON.parse(json) as { annotations?: Record<string, string | null> }).annotations?.['id'];
  return typeof id === 'string' && id !== '' ? id : undefined;
}

function detailed(e: cedar.DetailedError): string {
  return e.help ? `${e.message} (${e.help})` : e.message;
}

function position(text: string, offset: number | undefined): { line?: number; column?: number } {
  if (offset === undefined) return {};
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart + 1 };
}

type EntityJson = cedar.EntityJson;

/** Evaluates requests against one compiled policy version. */
export class CedarAuthorizer implements Authorizer {
  readonly kind = 'cedar';
  readonly version: string;
  // Entity JSON for an agent is a pure function of its ID; agents repeat on every call.
  private readonly agentEntities = new Map<string, EntityJson[]>();
  /**
   * Decisions by the full request (principal, action, resource, context). One cache per
   * authorizer, and an authorizer per policy version, so a policy change never sees an old
   * entry. Only used when no policy reads the time (see CompiledPolicy.readsTime). Revocation
   * is checked before the policy (Sidecar.decide) and never reaches this cache; it is still
   * dropped whenever the revocation epoch moves (dropCachedDecisions), so no cached answer
   * outlives a revocation.
   */
  private readonly decisions: Map<string, Pick<Decision, 'allowed' | 'reason' | 'policies'>> | undefined;
  private readonly readsTime: boolean;
  private readonly slices: PolicySlices;

  constructor(
    compiled: CompiledPolicy,
    private readonly onEvaluationErrors: (errors: { policyId: string; message: string }[], request: AuthzRequest) => void = () => {},
  ) {
    this.version = compiled.version;
    this.readsTime = compiled.readsTime;
    this.decisions = compiled.readsTime ? undefined : new Map();
    this.slices = new PolicySlices(compiled.version, compiled.scopes);
  }

  /** Policy slices registered for this version so far (see cedar-slices.ts). */
  get sliceCount(): number {
    return this.slices.sliceCount;
  }

  /** Forgets every cached decision (the revocation epoch moved). */
  dropCachedDecisions(): void {
    this.decisions?.clear();
  }

  authorize(request: AuthzRequest): Decision {
    try {
      return this.evaluate(request);
    } catch (err) {
      // cedar-wasm throws on some inputs (e.g. strings with lone surrogates): fail closed.
      this.onEvaluationErrors([{ policyId: '', message: (err as Error).message }], request);
      return { allowed: false, reason: 'internal_error', policies: [], wouldDeny: false, policyVersion: this.version, request };
    }
  }

  private evaluate(request: AuthzRequest): Decision {
    const principal = request.principal.toString();
    const resource = resourceUid(request.resource);
    const context = contextOf(request, this.readsTime);
    const key =
      this.decisions &&
      `${principal}\n${request.action}\n${resource.type}\n${resource.id}\n${request.resource.type === 'Tool' ? request.resource.agent : ''}\n${JSON.stringify(context)}`;
    const cached = key === undefined ? undefined : this.decisions!.get(key);
    if (cached) return { ...cached, wouldDeny: false, policyVersion: this.version, request };

    const answer = cedarWasm().statefulIsAuthorized({
      principal: { type: 'Agent', id: principal },
      action: { type: 'Action', id: request.action },
      resource,
      context,
      entities: this.entitiesFor(request),
      preparsedPolicySetId: this.slices.setFor(request.action, principal),
      preparsedSchemaName: SCHEMA_NAME,
      validateRequest: false,
    });
    if (answer.type !== 'success') {
      this.onEvaluationErrors(answer.errors.map((e) => ({ policyId: '', message: e.message })), request);
      return { allowed: false, reason: 'internal_error', policies: [], wouldDeny: false, policyVersion: this.version, request };
    }
    const { decision, diagnostics } = answer.response;
    // Sorted: Cedar lists policies in the hash order of the set it evaluated (the full set or a
    // slice), and these lists reach denial bodies and the audit trail.
    const policies = [...diagnostics.reason].sort();
    const outcome = { allowed: decision === 'allow', reason: decision === 'allow' ? ('allowed' as const) : ('policy_denied' as const), policies };
    if (diagnostics.errors.length > 0) {
      // A policy that errors is skipped by Cedar; a skipped permit cannot allow, so this fails
      // closed. Not cached, so every occurrence is reported.
      const errors = diagnostics.errors.map((e) => ({ policyId: e.policyId, message: e.error.message }));
      this.onEvaluationErrors(errors.sort((a, b) => (a.policyId < b.policyId ? -1 : a.policyId > b.policyId ? 1 : 0)), request);
    } else if (key !== undefined) {
      if (this.decisions!.size >= DECISION_CACHE_LIMIT) this.decisions!.clear();
      this.decisions!.set(key, outcome);
    }
    return { ...outcome, wouldDeny: false, policyVersion: this.version, request };
  }

  private entitiesFor(request: AuthzRequest): EntityJson[] {
    const entities = [...this.agent(request.principal)];
    const resource = request.resource;
    // The other agent, and its trust domain unless it is the principal's (no duplicate entities).
    const addAgent = (id: SpiffeId): void => {
      if (id.equals(request.principal)) return;
      const [agent, trustDomain] = this.agent(id);
      entities.push(agent!);
      if (!id.trustDomain.equals(request.principal.trustDomain)) entities.push(trustDomain!);
    };
    if (resource.type === 'Agent') {
      addAgent(resource.id);
    } else if (resource.type === 'Tool') {
      entities.push({
        uid: { type: 'Tool', id: resource.name },
        attrs: { name: resource.name },
        parents: [{ type: 'Agent', id: resource.agent.toString() }],
      });
      addAgent(resource.agent);
    } else if (resource.type === 'Host') {
      entities.push({ uid: { type: 'Host', id: resource.name }, attrs: { name: resource.name }, parents: [] });
    } else {
      entities.push({ uid: { type: 'Topic', id: resource.subject }, attrs: { subject: resource.subject }, parents: [] });
    }
    return entities;
  }

  private agent(id: SpiffeId): EntityJson[] {
    const key = id.toString();
    let cached = this.agentEntities.get(key);
    if (!cached) {
      const td = id.trustDomain.name;
      cached = [
        { uid: { type: 'Agent', id: key }, attrs: { trustDomain: td, path: id.path }, parents: [{ type: 'TrustDomain', id: td }] },
        { uid: { type: 'TrustDomain', id: td }, attrs: {}, parents: [] },
      ];
      if (this.agentEntities.size >= 4096) this.agentEntities.clear();
      this.agentEntities.set(key, cached);
    }
    return cached;
  }
}

function resourceUid(resource: Resource): { type: string; id: string } {
  switch (resource.type) {
    case 'Agent':
      return { type: 'Agent', id: resource.id.toString() };
    case 'Tool':
      return { type: 'Tool', id: resource.name };
    case 'Topic':
      return { type: 'Topic', id: resource.subject };
    case 'Host':
      return { type: 'Host', id: resource.name };
  }
}

const DECISION_CACHE_LIMIT = 10_000;

/**
 * Only defined fields: cedar-wasm rejects `undefined` values. The schema requires `time`; when
 * no policy reads it, it is a constant 0 (nothing can observe it), which keeps the context —
 * and so the decision — cacheable.
 */
function contextOf(request: AuthzRequest, withTime: boolean): cedar.Context {
  const context: cedar.Context = { direction: request.direction, time: withTime ? Math.floor(Date.now() / 1000) : 0 };
  if (request.http) context['http'] = { ...request.http };
  if (request.jsonrpc) {
    context['jsonrpc'] = request.jsonrpc.tool === undefined ? { method: request.jsonrpc.method } : { method: request.jsonrpc.method, tool: request.jsonrpc.tool };
  }
  if (request.websocket) context['websocket'] = { ...request.websocket };
  if (request.delegation) {
    const d = request.delegation;
    context['delegation'] = { sub: d.sub, actors: d.actors, depth: d.depth, scope: d.scope, task: d.task };
  }
  if (request.revocation) {
    context['op'] = request.revocation.op;
    context['kind'] = request.revocation.kind;
  }
  return context;
}
