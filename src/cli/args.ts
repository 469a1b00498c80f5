/** A small, strict command-line parser: `--flag`, `--key value`, `--key=value`, repeated keys, positionals. */

/** Declared options of one command: name → kind. `list` options may repeat. */
export type OptionSpec = Record<string, 'boolean' | 'string' | 'number' | 'list'>;

/** Parsed arguments. */
export interface Parsed {
  positionals: string[];
  options: Record<string, string | number | boolean | string[] | undefined>;
}

/** Error for bad command-line input (printed without a stack trace, exit code 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Parses argv against a spec; unknown options and missing values are usage errors. */
export function parseArgs(argv: readonly string[], spec: OptionSpec, command: string): Parsed {
  const out: Parsed = { positionals: [], options: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--')) {
      out.positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const key = a.slice(2, eq < 0 ? undefined : eq);
    const kind = spec[key];
    if (!kind) {
      throw new UsageError(`${command}: unknown option --${key} (known: ${Object.keys(spec).map((k) => `--${k}`).join(', ') || 'none'})`);
    }
    if (kind === 'boolean') {
      if (eq >= 0) throw new UsageError(`${command}: --${key} takes no value`);
      out.options[key] = true;
      continue;
    }
    let value: string | undefined;
    if (eq >= 0) value = a.slice(eq + 1);
    else {
      value = argv[i + 1];
      i++;
    }
    if (value === undefined || (eq < 0 && value.startsWith('--'))) throw new UsageError(`${command}: --${key} needs a value`);
    if (kind === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n)) throw new UsageError(`${command}: --${key} expects a number, got ${JSON.stringify(value)}`);
      out.options[key] = n;
    } else if (kind === 'list') {
      const prev = out.options[key];
      out.options[key] = [...(Array.isArray(prev) ? prev : []), value];
    } else {
      out.options[key] = value;
    }
  }
  return out;
}

/** Returns a string option, undefined when absent; a flag given without its value is a usage error. */
export function stringOption(p: Parsed, key: string): string | undefined {
  const v = p.options[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`--${key} expects a value`);
  return v;
}

/** Returns a positive integer option or its default. */
export function intOption(p: Parsed, key: string, dflt: number, min = 1): number {
  const v = p.options[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new UsageError(`--${key} must be an integer ≥ ${min}, got ${String(v)}`);
  return v;
}
