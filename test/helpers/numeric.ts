/** Numeric helpers for the engine tests: flattening, closeness assertions, a deterministic JS random source. */
import assert from 'node:assert/strict';
import { Tensor } from '../../src/engine/index.js';

/** Flattens nested arrays of numbers (row-major). */
export function flat(x: unknown): number[] {
  const out: number[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const e of v) walk(e);
    else if (typeof v === 'boolean') out.push(v ? 1 : 0);
    else out.push(v as number);
  };
  walk(x);
  return out;
}

/** The values of a tensor (any dtype) as plain numbers. */
export function values(t: Tensor): number[] {
  return Array.from(t.toTypedArray() as ArrayLike<number>);
}

/**
 * Asserts element-wise |a - e| <= atol + rtol·|e| (NaN equals NaN, ±Infinity must match exactly). `actual` may be a
 * tensor (shape is then checked against `shape` when given).
 */
export function assertClose(actual: Tensor | ArrayLike<number> | number, expected: unknown,
  o: { atol?: number; rtol?: number; shape?: readonly number[]; msg?: string } = {}): void {
  const atol = o.atol ?? 1e-6;
  const rtol = o.rtol ?? 1e-6;
  if (actual instanceof Tensor && o.shape) assert.deepEqual(actual.shape, [...o.shape], `${o.msg ?? ''} shape`);
  const a = actual instanceof Tensor ? values(actual) : typeof actual === 'number' ? [actual] : Array.from(actual);
  const e = typeof expected === 'number' ? [expected] : ArrayBuffer.isView(expected) ? Array.from(expected as unknown as ArrayLike<number>) : flat(expected);
  assert.equal(a.length, e.length, `${o.msg ?? ''} length: got ${a.length}, expected ${e.length}`);
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = e[i]!;
    if (Number.isNaN(y) && Number.isNaN(x)) continue;
    if (!Number.isFinite(y)) {
      assert.equal(x, y, `${o.msg ?? ''} [${i}]: got ${x}, expected ${y}`);
      continue;
    }
    const ok = Math.abs(x - y) <= atol + rtol * Math.abs(y);
    if (!ok) assert.fail(`${o.msg ?? ''} element ${i}: got ${x}, expected ${y} (|diff| ${Math.abs(x - y)}, atol ${atol}, rtol ${rtol})\n  got      [${a.slice(0, 24).join(', ')}]\n  expected [${e.slice(0, 24).join(', ')}]`);
  }
}

/** Exact equality of a tensor's values and shape with nested arrays. */
export function assertTensorEqual(t: Tensor, expected: unknown, shape?: readonly number[]): void {
  if (shape) assert.deepEqual(t.shape, [...shape]);
  assert.deepEqual(values(t), flat(expected));
}

/** max |a - b| / max |b| over two equal-length arrays. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return den === 0 ? num : num / den;
}

/** A small deterministic generator (mulberry32) for test data independent of libtorch's RNG. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` uniform values in [lo, hi) from a seeded generator. */
export function uniform(n: number, seed: number, lo = -1, hi = 1): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => lo + (hi - lo) * r());
}
