/**
 * Utilities for the key names of a state dict (`Map<string, T>`, insertion order kept): prefix
 * handling, renaming by rules, and a report of how a checkpoint's keys match a model's.
 * All functions return new maps and throw when two keys would collide.
 */

function put<T>(out: Map<string, T>, key: string, value: T, from: string): void {
  if (out.has(key)) throw new Error(`key collision: '${from}' maps to '${key}', which already exists`);
  out.set(key, value);
}

/**
 * Removes `prefix` from every key that starts with it; other keys are kept unchanged.
 * @example stripPrefix(m, 'module.') // 'module.blocks.0.x' -> 'blocks.0.x'
 */
export function stripPrefix<T>(map: ReadonlyMap<string, T>, prefix: string): Map<string, T> {
  const out = new Map<string, T>();
  for (const [k, v] of map) put(out, k.startsWith(prefix) ? k.slice(prefix.length) : k, v, k);
  return out;
}

/** How {@link rekeyEntries} renames keys. */
export interface RekeyOptions {
  /** Keep only keys that start with this exact string, and remove it (no dot is added). */
  select?: string;
  /** Prefixes removed, in order, from keys that have them (each at most once), after `select`. */
  strip?: readonly string[];
}

/**
 * The one renaming used wherever checkpoint keys are selected and stripped (`convert`, `readStateDict`,
 * `loadWeights`, `openStateDict`): `select` first, then `strip`. Two keys that end up with the same name (e.g.
 * `module.w` and `w` with `strip: ['module.']`) are an error naming both, as is a key that becomes empty — never is
 * one silently dropped.
 * @returns `[newKey, originalKey, value]` in input order
 */
export function rekeyEntries<T>(entries: Iterable<readonly [string, T]>, o: RekeyOptions): [string, string, T][] {
  const out: [string, string, T][] = [];
  const from = new Map<string, string>();
  for (const [name, v] of entries) {
    let k = name;
    if (o.select) {
      if (!k.startsWith(o.select)) continue;
      k = k.slice(o.select.length);
    }
    for (const p of o.strip ?? []) if (p !== '' && k.startsWith(p)) k = k.slice(p.length);
    const prev = from.get(k);
    if (prev !== undefined) throw new Error(`tensors '${prev}' and '${name}' both map to '${k}'`);
    if (k === '') throw new Error(`tensor '${name}' maps to an empty name`);
    from.set(k, name);
    out.push([k, name, v]);
  }
  return out;
}

/** Prepends `prefix` to every key. */
export function addPrefix<T>(map: ReadonlyMap<string, T>, prefix: string): Map<string, T> {
  const out = new Map<string, T>();
  for (const [k, v] of map) put(out, prefix + k, v, k);
  return out;
}

/**
 * The sub-dict under `prefix`: keys that start with it, with the prefix removed; other keys are
 * dropped. A prefix without a trailing dot gets one (`'backbone'` selects `backbone.*`); pass an
 * empty string to select everything.
 */
export function selectPrefix<T>(map: ReadonlyMap<string, T>, prefix: string): Map<string, T> {
  const p = prefix === '' || prefix.endsWith('.') ? prefix : `${prefix}.`;
  const out = new Map<string, T>();
  for (const [k, v] of map) if (k.startsWith(p)) put(out, k.slice(p.length), v, k);
  return out;
}

/** A renaming rule: a pattern and its replacement. */
export type RenameRule = readonly [pattern: RegExp | string, replacement: string];

/** Applies the rules to one key, in order (each rule sees the result of the previous ones). */
export function renameKey(key: string, rules: readonly RenameRule[]): string {
  let k = key;
  for (const [pattern, replacement] of rules) {
    k = typeof pattern === 'string' ? k.split(pattern).join(replacement) : k.replace(pattern, replacement);
  }
  return k;
}

/**
 * Renames every key by the rules, in order. A string pattern replaces every literal occurrence; a
 * RegExp is applied with `String.prototype.replace` (so `$1` works; use the `g` flag to replace
 * all matches, `^` to anchor).
 * @example renameKeys(m, [[/^blocks\.(\d+)\.attn\./, 'layers.$1.attention.'], ['gamma_1', 'gamma1']])
 */
export function renameKeys<T>(map: ReadonlyMap<string, T>, rules: readonly RenameRule[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const [k, v] of map) put(out, renameKey(k, rules), v, k);
  return out;
}

/** A key present on both sides with different shapes. */
export interface ShapeMismatch {
  /** The key. */
  key: string;
  /** Shape the model expects. */
  expected: number[];
  /** Shape found in the checkpoint. */
  got: number[];
}

/** Result of {@link compareKeys}. */
export interface KeyReport {
  /** Keys present on both sides with equal shapes (in expected order). */
  matched: string[];
  /** Expected keys absent from the checkpoint. */
  missing: string[];
  /** Checkpoint keys the model does not expect (in checkpoint order). */
  unexpected: string[];
  /** Keys present on both sides with different shapes. */
  mismatched: ShapeMismatch[];
}

function shapeOf(x: readonly number[] | { readonly shape: readonly number[] }): number[] {
  return Array.isArray(x) ? [...(x as readonly number[])] : [...(x as { shape: readonly number[] }).shape];
}

/**
 * Compares the keys and shapes a model expects with those of a checkpoint.
 * @param expected key → shape the model expects
 * @param got key → shape, or key → anything with a `shape` (RawTensor, LazyTensor)
 */
export function compareKeys(
  expected: ReadonlyMap<string, readonly number[]>,
  got: ReadonlyMap<string, readonly number[] | { readonly shape: readonly number[] }>,
): KeyReport {
  const report: KeyReport = { matched: [], missing: [], unexpected: [], mismatched: [] };
  for (const [k, shape] of expected) {
    const g = got.get(k);
    if (g === undefined) { report.missing.push(k); continue; }
    const gs = shapeOf(g);
    if (gs.length === shape.length && gs.every((d, i) => d === shape[i])) report.matched.push(k);
    else report.mismatched.push({ key: k, expected: [...shape], got: gs });
  }
  for (const k of got.keys()) if (!expected.has(k)) report.unexpected.push(k);
  return report;
}

/** Formats a {@link KeyReport} as a few human-readable lines (lists cut after `limit` names). */
export function formatKeyReport(r: KeyReport, limit = 10): string {
  const list = (xs: string[]): string => (xs.length > limit ? `${xs.slice(0, limit).join(', ')}, ... (${xs.length - limit} more)` : xs.join(', '));
  const lines = [`${r.matched.length} matched`];
  if (r.missing.length) lines.push(`${r.missing.length} missing: ${list(r.missing)}`);
  if (r.unexpected.length) lines.push(`${r.unexpected.length} unexpected: ${list(r.unexpected)}`);
  if (r.mismatched.length) {
    lines.push(`${r.mismatched.length} shape mismatches: ${list(r.mismatched.map((m) => `${m.key} expected [${m.expected.join(', ')}] got [${m.got.join(', ')}]`))}`);
  }
  return lines.join('\n');
}
