/** One problem in a config file. `path` is dotted with array indices (`outbound.routes[0].address`); '' is the root. */
export interface ConfigIssue {
  path: string;
  message: string;
}

export function formatIssues(file: string, issues: readonly ConfigIssue[]): string {
  const lines = [`invalid config ${file}:`];
  for (const issue of issues) lines.push(`  - ${issue.path === '' ? '(root)' : issue.path}: ${issue.message}`);
  return lines.join('\n');
}

/** Thrown by `loadConfig`/`parseConfig`; `message` lists every issue, one per line. */
export class ConfigError extends Error {
  readonly code = 'config_invalid';
  readonly issues: ConfigIssue[];
  /** The config file the issues refer to. */
  readonly file: string;

  constructor(file: string, issues: ConfigIssue[]) {
    super(formatIssues(file, issues));
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
  }
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** ['outbound', 'routes', 0, 'address'] → 'outbound.routes[0].address'; odd keys are quoted: trust.bundles["a.b"]. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else {
      const key = String(seg);
      if (IDENT.test(key)) out += out === '' ? key : `.${key}`;
      else out += `[${JSON.stringify(key)}]`;
    }
  }
  return out;
}
