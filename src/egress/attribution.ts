// What the provider learns about who is calling: the acting agent's SPIFFE ID, a stable
// pseudonym for the user (HMAC of `sub` under a sidecar secret: the provider can tell users
// apart and rate-limit or audit per user, without learning who they are), and the task id.
import { createHmac } from 'node:crypto';

export interface AttributionValues {
  /** The acting agent (this sidecar's SPIFFE ID). */
  agent: string;
  /** The user's pseudonym, when a delegation is present and a secret is configured. */
  user?: string;
  /** The delegation's task id, when a delegation is present. */
  task?: string;
}

/** `u_` + 32 hex chars of HMAC-SHA256(secret, sub): stable per (secret, user), not reversible. */
export function pseudonym(secret: Buffer | string, sub: string): string {
  return `u_${createHmac('sha256', secret).update(sub, 'utf8').digest('hex').slice(0, 32)}`;
}

const PLACEHOLDER = /\{(agent|user|task)\}/g;

export class TemplateError extends Error {
  readonly code = 'template_invalid';
}

/** Checks a header template at config load: only `{agent}`, `{user}`, `{task}`, no stray braces. */
export function templateProblem(template: string): string | undefined {
  const rest = template.replace(PLACEHOLDER, '');
  if (/[{}]/.test(rest)) return `unknown placeholder or stray brace in ${JSON.stringify(template)} (use {agent}, {user}, {task})`;
  if (/[\r\n\0]/.test(template)) return 'must not contain a line break or NUL';
  return undefined;
}

/**
 * The header value for `template`, or undefined when it names a value this call does not have
 * (no delegation: no {user}, no {task}) — the header is then left out rather than sent empty.
 */
export function renderTemplate(template: string, values: AttributionValues): string | undefined {
  let missing = false;
  const out = template.replace(PLACEHOLDER, (_m, name: keyof AttributionValues) => {
    const v = values[name];
    if (v === undefined) missing = true;
    return v ?? '';
  });
  return missing ? undefined : out;
}
