// Reading nats.conf well enough to check what Sigil needs from it (test/config/
// kubernetes-examples.test.ts): blocks, scalar values, sizes, the users with their publish and
// subscribe permissions, and NATS subject matching. Not a full parser of the format: what the
// examples use (key: value, key { … }, key: [ … ], quoted strings, # and // comments).

/** nats.conf without comments (# and //, outside quoted strings). */
export function natsUncomment(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      let quoted = false;
      for (let i = 0; i < line.length; i++) {
        const c = line[i];
        if (c === '"') quoted = !quoted;
        else if (!quoted && (c === '#' || (c === '/' && line[i + 1] === '/'))) return line.slice(0, i);
      }
      return line;
    })
    .join('\n');
}

/** The text between the brackets that open right after `key` (`key { … }`, `key: [ … ]`), or undefined. */
export function natsBlock(text: string, key: string): { open: string; inner: string } | undefined {
  const m = new RegExp(`(^|[\\s{,])${key.replace(/[.$]/g, '\\$&')}\\s*[:=]?\\s*([{\\[])`, 'm').exec(text);
  if (!m) return undefined;
  const start = m.index + m[0].length;
  let depth = 1;
  let quoted = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted;
    if (quoted) continue;
    if (c === '{' || c === '[') depth++;
    if (c === '}' || c === ']') depth--;
    if (depth === 0) return { open: m[2]!, inner: text.slice(start, i) };
  }
  return undefined;
}

/** The text outside every `{ … }` block: top-level keys only. */
export function natsTopLevel(text: string): string {
  let out = '';
  let depth = 0;
  for (const c of text) {
    if (c === '{') depth++;
    if (depth === 0) out += c;
    if (c === '}') depth--;
  }
  return out;
}

/** The value of `key` (quoted or bare) in `text`. */
export function natsScalar(text: string, key: string): string | undefined {
  const m = new RegExp(`(^|[\\s{,])${key}\\s*[:=]?\\s*(?:"([^"]*)"|([^\\s,}\\]]+))`, 'm').exec(text);
  return m ? (m[2] ?? m[3]) : undefined;
}

const natsList = (inner: string): string[] =>
  inner
    .split(/[,\n]/)
    .map((s) => s.trim().replace(/^"(.*)"$/, '$1'))
    .filter((s) => s.length > 0);

/** NATS size: 2MB = 2 MiB, 2M = 2,000,000 (the server's own suffixes). */
export function natsSize(value: string): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(value.trim());
  if (!m) return NaN;
  const unit = m[2]!.toLowerCase();
  const scale: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1024, ki: 1024, kib: 1024, m: 1e6, mb: 1024 ** 2, mi: 1024 ** 2, mib: 1024 ** 2, g: 1e9, gb: 1024 ** 3, gi: 1024 ** 3, gib: 1024 ** 3 };
  return Number(m[1]) * (scale[unit] ?? NaN);
}

/** Whether NATS subject permission `pattern` covers every subject `subject` stands for. */
export function covers(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i < s.length;
    if (i >= s.length) return false;
    if (s[i] === '>') return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

export interface NatsUser {
  user: string;
  /** undefined = no publish (or subscribe) permissions: NATS then allows everything. */
  publish?: { allow: string[]; deny: string[] };
  subscribe?: { allow: string[]; deny: string[] };
}

/** The users of `authorization { users: [ … ] }`, each with its permissions. */
export function natsUsers(conf: string): NatsUser[] {
  const users = natsBlock(conf, 'users');
  if (!users) return [];
  const out: NatsUser[] = [];
  // Each `{ … }` at the top of the users list is one user.
  let depth = 0;
  let start = -1;
  let quoted = false;
  for (let i = 0; i < users.inner.length; i++) {
    const c = users.inner[i];
    if (c === '"') quoted = !quoted;
    if (quoted) continue;
    if (c === '{' && depth++ === 0) start = i + 1;
    if (c === '}' && --depth === 0) {
      const body = users.inner.slice(start, i);
      // No `permissions` (or no publish/subscribe in it): NATS allows everything.
      const permissions = natsBlock(body, 'permissions');
      const perms = (key: string): NatsUser['publish'] => {
        const b = permissions && natsBlock(permissions.inner, key);
        if (!b) return undefined;
        if (b.open === '[') return { allow: natsList(b.inner), deny: [] };
        const allow = natsBlock(b.inner, 'allow');
        const deny = natsBlock(b.inner, 'deny');
        return { allow: allow ? natsList(allow.inner) : [], deny: deny ? natsList(deny.inner) : [] };
      };
      out.push({ user: natsScalar(body, 'user') ?? '', publish: perms('publish'), subscribe: perms('subscribe') });
    }
  }
  return out;
}

/** Whether `perms` let a client publish (or subscribe) `subject`. */
export const mayUse = (perms: NatsUser['publish'], subject: string): boolean => perms === undefined || (perms.allow.some((a) => covers(a, subject)) && !perms.deny.some((d) => covers(d, subject)));
