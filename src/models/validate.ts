/**
 * Up-front validation of model options, shared by the ViT, the ViT-Adapter and the heads: every size, count and
 * ratio is checked (type, range, divisibility) before a single tensor is allocated, and errors name the model, the
 * option, the value and what was expected — instead of `Invalid array length` or an allocation failure later.
 *
 * The upper bounds are far above any published model (ViT-22B has embed_dim 6144, depth 48) and only catch values
 * that cannot be meant (a typo'd `embed_dim: 1920000` would need terabytes).
 */

/** Largest channel width / embedding dimension accepted (ViT-22B uses 6144). */
export const MAX_WIDTH = 65_536;
/** Largest block count accepted. */
export const MAX_DEPTH = 1_024;

const show = (v: unknown): string => (typeof v === 'number' ? String(v) : JSON.stringify(v) ?? String(v));

/** Range of {@link checkInt} / {@link checkNumber}. */
export interface Range {
  /** Smallest allowed value (inclusive). */
  min?: number;
  /** Largest allowed value (inclusive). */
  max?: number;
  /** Values must be strictly above `min` (numbers only). */
  exclusiveMin?: boolean;
}

function rangeText(r: Range, integer: boolean): string {
  const kind = integer ? 'an integer' : 'a number';
  const lo = r.min === undefined ? '' : `${r.exclusiveMin ? '>' : '≥'} ${r.min}`;
  const hi = r.max === undefined ? '' : `≤ ${r.max}`;
  return [kind, [lo, hi].filter((x) => x).join(' and ')].filter((x) => x).join(' ');
}

/**
 * Checks that `v` is an integer within `r`; returns it.
 *
 * @param where the model or module (e.g. `ViTAdapter`)
 * @param name the option (e.g. `depth`)
 * @param v the value
 * @param r allowed range (default: ≥ 1)
 */
export function checkInt(where: string, name: string, v: unknown, r: Range = { min: 1 }): number {
  const ok = typeof v === 'number' && Number.isInteger(v) && (r.min === undefined || v >= r.min) && (r.max === undefined || v <= r.max);
  if (!ok) throw new RangeError(`${where}: ${name} must be ${rangeText(r, true)}, got ${show(v)}`);
  return v as number;
}

/**
 * Checks that `v` is a finite number within `r`; returns it.
 *
 * @param where the model or module
 * @param name the option
 * @param v the value
 * @param r allowed range
 */
export function checkNumber(where: string, name: string, v: unknown, r: Range = {}): number {
  const ok = typeof v === 'number' && Number.isFinite(v) && (r.min === undefined || (r.exclusiveMin ? v > r.min : v >= r.min)) &&
    (r.max === undefined || v <= r.max);
  if (!ok) throw new RangeError(`${where}: ${name} must be ${rangeText(r, false)}, got ${show(v)}`);
  return v as number;
}

/** Checks that `v` is a boolean; returns it. */
export function checkBool(where: string, name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new TypeError(`${where}: ${name} must be true or false, got ${show(v)}`);
  return v;
}

/**
 * Checks that `dim` (named `dimName`) is divisible by `by` (named `byName`), as attention heads need.
 */
export function checkDivisible(where: string, dimName: string, dim: number, byName: string, by: number): void {
  if (dim % by !== 0) {
    throw new RangeError(`${where}: ${dimName} ${dim} is not divisible by ${byName} ${by} (each head gets ${dimName} / ${byName} channels)`);
  }
}

/** A positive channel width (1..{@link MAX_WIDTH}). */
export function checkWidth(where: string, name: string, v: unknown): number {
  return checkInt(where, name, v, { min: 1, max: MAX_WIDTH });
}

/** A drop / dropout probability in [0, 1]. */
export function checkProbability(where: string, name: string, v: unknown): number {
  return checkNumber(where, name, v, { min: 0, max: 1 });
}
