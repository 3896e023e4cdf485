import { parseArgs, type ParseArgsConfig } from 'node:util';

export class CliUsageError extends Error {
  readonly code = 'usage';
}

/** util.parseArgs, with its errors turned into usage errors and required flags enforced. */
export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(
  args: string[],
  options: T,
  required: (keyof T & string)[] = [],
): Record<keyof T, string | boolean | undefined> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
  for (const name of required) {
    if (values[name] === undefined) throw new CliUsageError(`--${name} is required`);
  }
  return values as Record<keyof T, string | boolean | undefined>;
}

/** The variable `sigil run`, `sigil config check` and `sigil health` read the config path from when `--config` is absent (the image sets it). */
export const CONFIG_PATH_ENV = 'SIGIL_CONFIG';

/** `--config FILE`, else `$SIGIL_CONFIG`; neither is a usage error. */
export function configPathFrom(flag: string | boolean | undefined, env: Record<string, string | undefined> = process.env): string {
  if (typeof flag === 'string' && flag !== '') return flag;
  const fromEnv = env[CONFIG_PATH_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') return fromEnv.trim();
  throw new CliUsageError(`--config is required (or set ${CONFIG_PATH_ENV})`);
}
