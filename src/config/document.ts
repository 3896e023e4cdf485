/**
 * A config file as a document: its format (from the extension), its text (read with plain-words
 * errors) and its data (YAML or JSON parsed, syntax errors with line and column). Shared by the
 * sidecar's loader (load.ts) and the broker's (delegation/broker-config.ts) so both treat files
 * alike; what the data must look like is each loader's business. Every failure is a ConfigError.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { ConfigError } from './errors.js';

export type ConfigFormat = 'yaml' | 'json';

export interface ConfigFile {
  /** Absolute path; relative paths inside the document are resolved against its folder. */
  abs: string;
  format: ConfigFormat;
  text: string;
}

export interface ReadOptions {
  /** EACCES worded as "permission denied reading FILE" (default); false: "cannot read FILE: <error>" like other errors. */
  explainPermissionDenied?: boolean;
}

/** Resolves `file`, picks the format from its extension (.yaml, .yml, .json) and reads it. */
export async function readConfigFile(file: string, options: ReadOptions = {}): Promise<ConfigFile> {
  const abs = path.resolve(file);
  const format = formatForFile(abs);
  if (!format) {
    const ext = path.extname(abs);
    throw new ConfigError(abs, [
      {
        path: '',
        message: `unsupported config file extension ${JSON.stringify(ext)} (use .yaml, .yml or .json)`,
      },
    ]);
  }
  try {
    return { abs, format, text: await readFile(abs, 'utf8') };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT'
        ? `file not found: ${abs}`
        : code === 'EISDIR'
          ? `is a directory, not a file: ${abs}`
          : code === 'EACCES' && options.explainPermissionDenied !== false
            ? `permission denied reading ${abs}`
            : `cannot read ${abs}: ${(e as Error).message}`;
    throw new ConfigError(abs, [{ path: '', message }]);
  }
}

function formatForFile(file: string): ConfigFormat | undefined {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  return undefined;
}

export interface ParseTextOptions {
  /** JSON syntax errors located as "at line L, column C" (default); false: the runtime's message as it is. */
  locateJsonErrors?: boolean;
}

/** Parses config text into plain data; `file` (absolute) names the document in errors. An empty document is an error. */
export function parseConfigText(text: string, format: ConfigFormat, file: string, options: ParseTextOptions = {}): unknown {
  const raw = format === 'json' ? parseJson(text, file, options.locateJsonErrors !== false) : parseYaml(text, file);
  if (raw === null || raw === undefined) {
    throw new ConfigError(file, [{ path: '', message: 'config is empty' }]);
  }
  return raw;
}

function parseJson(text: string, file: string, locate: boolean): unknown {
  try {
    return JSON.parse(stripBom(text));
  } catch (e) {
    if (!locate) {
      throw new ConfigError(file, [{ path: '', message: `JSON syntax error: ${(e as Error).message.replace(/^JSON\.parse: /, '')}` }]);
    }
    let message = (e as Error).message;
    const pos = /at position (\d+)/.exec(message);
    message = message
      .replace(/\s*\(line \d+ column \d+\)/, '')
      .replace(/ in JSON at position \d+/, '')
      .replace(/^JSON\.parse: /, '');
    const where = pos ? lineCol(stripBom(text), Number(pos[1])) : undefined;
    throw new ConfigError(file, [
      {
        path: '',
        message: where
          ? `JSON syntax error at line ${where.line}, column ${where.col}: ${message}`
          : `JSON syntax error: ${message}`,
      },
    ]);
  }
}

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: offset - lineStart + 1 };
}

function parseYaml(text: string, file: string): unknown {
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `YAML syntax error: ${(e as Error).message}` }]);
  }
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((err) => {
        const first = (err.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?\s*$/, '');
        const pos = err.linePos?.[0];
        return {
          path: '',
          message: pos
            ? `YAML syntax error at line ${pos.line}, column ${pos.col}: ${first}`
            : `YAML syntax error: ${first}`,
        };
      }),
    );
  }
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `YAML error: ${(e as Error).message}` }]);
  }
}
