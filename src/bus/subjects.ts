// NATS subject grammar, as the local bus API accepts it. Pure.
// A subject is dot-separated non-empty tokens of printable non-space characters. A publish
// subject has no wildcards; a subscription may use `*` (exactly one token) and a final `>`
// (one or more tokens), as NATS defines them. Subjects are also Cedar `Topic` ids and audit
// fields, so they are kept short and free of control characters.

export const MAX_SUBJECT_LENGTH = 256;

const TOKEN = /^[\x21-\x7e]+$/;

/** Why `subject` is not a valid publish subject, or undefined when it is. */
export function publishSubjectProblem(subject: unknown): string | undefined {
  const base = baseProblem(subject);
  if (base) return base;
  for (const token of (subject as string).split('.')) {
    if (token === '*' || token === '>') return 'wildcards are not allowed in a publish subject';
  }
  return undefined;
}

/** Why `pattern` is not a valid subscription subject, or undefined when it is. */
export function subscriptionProblem(pattern: unknown): string | undefined {
  const base = baseProblem(pattern);
  if (base) return base;
  const tokens = (pattern as string).split('.');
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    if (token === '>' && i !== tokens.length - 1) return '">" may only be the last token';
    if ((token.includes('*') && token !== '*') || (token.includes('>') && token !== '>')) {
      return 'a wildcard must be a whole token';
    }
  }
  return undefined;
}

/** Whether the publish subject `subject` matches the subscription `pattern` (both valid). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    const token = p[i]!;
    if (token === '>') return s.length > i;
    if (i >= s.length) return false;
    if (token !== '*' && token !== s[i]) return false;
  }
  return p.length === s.length;
}

function baseProblem(subject: unknown): string | undefined {
  if (typeof subject !== 'string' || subject.length === 0) return 'must be a non-empty string';
  if (subject.length > MAX_SUBJECT_LENGTH) return `must be at most ${MAX_SUBJECT_LENGTH} characters`;
  for (const token of subject.split('.')) {
    if (token.length === 0) return 'empty token (leading, trailing or double ".")';
    if (!TOKEN.test(token)) return 'tokens may only contain printable ASCII characters other than space';
  }
  return undefined;
}
