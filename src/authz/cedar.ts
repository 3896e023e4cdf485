// Cedar policy mode: compile a policy file against Sigil's schema once per version, then
// evaluate every call with the preparsed set (cedar-wasm's stateful API), building entities
// and context from the AuthzRequest. Default deny; forbid wins (Cedar semantics).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { SpiffeId } from '../spiffe/index.js';
import type { Authorizer, AuthzRequest, Decision, Resource } from './decision.js';

export const SCHEMA_PATH = fileURLToPath(new URL('../../../schema/sigil.cedarschema', import.meta.url));
const SCHEMA_NAME = 'sigil';

let schemaText: string | undefined;
function schema(): string {
  if (schemaText === undefined) {
    const text = readFileSync(SCHEMA_PATH, 'utf8');
    const parsed = cedar.preparseSchema(SCHEMA_NAME, text);
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
}

/** Parses, names and validates a policy file; throws PolicyLoadError with positions. */
export function compileCedarPolicy(text: string, source: string): CompiledPolicy {
  const schemaSource = schema();
  const parsed = cedar.checkParsePolicySet({ staticPolicies: text });
  if (parsed.type !== 'success') {
    throw new PolicyLoadError(
      source,
      parsed.errors.map((e) => ({ ...position(text, e.sourceLocations?.[0]?.start), message: detailed(e) })),
    );
  }
  const parts = cedar.policySetTextToParts(text);
  if (parts.type !== 'success') throw new PolicyLoadError(source, parts.errors.map((e) => ({ message: detailed(e) })));

  const policies: Record<string, string> = {};
  const offsets = new Map<string, number>();
  const issues: PolicyIssue[] = [];
  let cursor = 0;
  parts.policies.forEach((part, index) => {
    const at = text.indexOf(part, cursor);
    const offset = at === -1 ? cursor : at;
    cursor = at === -1 ? cursor : at + part.length;
    const id = annotatedId(part) ?? `policy${index}`;
    if (policies[id] !== undefined) {
      issues.push({ policyId: id, ...position(text, offset), message: `duplicate policy id "${id}"` });
      return;
    }
    policies[id] = part;
    offsets.set(id, offset);
  });
  if (parts.policy_templates.length > 0) issues.push({ message: 'policy templates are not supported; write static policies' });
  if (issues.length > 0) throw new PolicyLoadError(source, issues);

  const validation = cedar.validate({ schema: schemaSource, policies: { staticPolicies: policies }, validationSettings: { mode: 'strict' } });
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
  const registered = cedar.preparsePolicySet(version, { staticPolicies: policies });
  if (registered.type !== 'success') throw new PolicyLoadError(source, registered.errors.map((e) => ({ message: detailed(e) })));
  return { version, ids: Object.keys(policies) };
}

function annotatedId(policyText: string): string | undefined {
  const json = cedar.policyToJson(policyText);
  if (json.type !== 'success') return undefined;
  const id = (json.json as { annotations?: Record<string, string | null> }).annotations?.['id'];
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

  constructor(
    compiled: CompiledPolicy,
    private readonly onEvaluationErrors: (errors: { policyId: string; message: string }[], request: AuthzRequest) => void = () => {},
  ) {
    this.version = compiled.version;
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
    const answer = cedar.statefulIsAuthorized({
      principal: { type: 'Agent', id: request.principal.toString() },
      action: { type: 'Action', id: request.action },
      resource: resourceUid(request.resource),
      context: contextOf(request),
      entities: this.entitiesFor(request),
      preparsedPolicySetId: this.version,
      preparsedSchemaName: SCHEMA_NAME,
      validateRequest: false,
    });
    if (answer.type !== 'success') {
      this.onEvaluationErrors(answer.errors.map((e) => ({ policyId: '', message: e.message })), request);
      return { allowed: false, reason: 'internal_error', policies: [], wouldDeny: false, policyVersion: this.version, request };
    }
    const { decision, diagnostics } = answer.response;
    if (diagnostics.errors.length > 0) {
      // A policy that errors is skipped by Cedar; a skipped permit cannot allow, so this fails closed.
      this.onEvaluationErrors(diagnostics.errors.map((e) => ({ policyId: e.policyId, message: e.error.message })), request);
    }
    return {
      allowed: decision === 'allow',
      reason: decision === 'allow' ? 'allowed' : 'policy_denied',
      policies: diagnostics.reason,
      wouldDeny: false,
      policyVersion: this.version,
      request,
    };
  }

  private entitiesFor(request: AuthzRequest): EntityJson[] {
    const entities = [...this.agent(request.principal)];
    const resource = request.resource;
    if (resource.type === 'Agent') {
      if (!resource.id.equals(request.principal)) entities.push(...this.agent(resource.id));
    } else if (resource.type === 'Tool') {
      entities.push({
        uid: { type: 'Tool', id: resource.name },
        attrs: { name: resource.name },
        parents: [{ type: 'Agent', id: resource.agent.toString() }],
      });
      if (!resource.agent.equals(request.principal)) entities.push(...this.agent(resource.agent));
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
  }
}

/** Only defined fields: cedar-wasm rejects `undefined` values. */
function contextOf(request: AuthzRequest): cedar.Context {
  const context: cedar.Context = { direction: request.direction, time: Math.floor(Date.now() / 1000) };
  if (request.http) context['http'] = { ...request.http };
  if (request.jsonrpc) {
    context['jsonrpc'] = request.jsonrpc.tool === undefined ? { method: request.jsonrpc.method } : { method: request.jsonrpc.method, tool: request.jsonrpc.tool };
  }
  if (request.websocket) context['websocket'] = { ...request.websocket };
  if (request.delegation) {
    const d = request.delegation;
    context['delegation'] = { sub: d.sub, actors: d.actors, depth: d.depth, scope: d.scope };
  }
  return context;
}
