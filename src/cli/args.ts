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
