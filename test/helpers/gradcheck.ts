/**
 * Gradient check by central finite differences: compares the autograd gradient of L = sum(fn(inputs) · W) (W fixed
 * random weights) with (L(x + eps·e_j) − L(x − eps·e_j)) / 2eps for every element of every differentiable input.
 * Use float64 inputs.
 */
import assert from 'node:assert/strict';
import { Tensor, backend, noGrad, scope, tensor } from '../../src/engine/index.js';
import { uniform } from './numeric.js';

export interface GradcheckOptions {
  /** Finite-difference step. */
  eps?: number;
  /** Tolerance: |analytic − numeric| <= tol · max(1, |numeric|). */
  tol?: number;
  /** Indices of inputs to check (default: every floating-point input). */
  wrt?: number[];
  /** Seed of the output weights W. */
  seed?: number;
}

/** Result of a gradient check (for reporting). */
export interface GradcheckResult {
  maxError: number;
  analytic: number[][];
  numeric: number[][];
}

type Fn = (...xs: Tensor[]) => Tensor;

function data(t: Tensor): Float64Array {
  return Float64Array.from(t.toTypedArray() as ArrayLike<number>);
}

/**
 * Runs the gradient check and asserts; returns the per-input gradients and the worst error.
 * `gradcheck(fn, inputs)`, `gradcheck(fn, inputs, eps, tol)` or `gradcheck(fn, inputs, { eps, tol, wrt, seed })`.
 */
export function gradcheck(fn: Fn, inputs: Tensor[], epsOrOptions: number | GradcheckOptions = 1e-6, tolerance = 1e-5): GradcheckResult {
  const o: GradcheckOptions = typeof epsOrOptions === 'number' ? { eps: epsOrOptions, tol: tolerance } : epsOrOptions;
  const eps = o.eps ?? 1e-6;
  const tol = o.tol ?? 1e-5;
  const wrt = o.wrt ?? inputs.map((t, i) => (t.dtype === 'float64' ? i : -1)).filter((i) => i >= 0);
  for (const i of wrt) assert.equal(inputs[i]!.dtype, 'float64', `gradcheck: input ${i} must be float64`);
  return scope(() => {
    const base = inputs.map((t, i) => (wrt.includes(i) ? t.detach().clone().requiresGrad_(true) : t));
    const out0 = fn(...base);
    assert.equal(out0.dtype, 'float64', 'gradcheck: output must be float64');
    const w = tensor(Float64Array.from(uniform(out0.numel(), o.seed ?? 1234, -1, 1)), { shape: out0.shape });
    const loss = out0.mul(w).sum();
    const diff = wrt.map((i) => base[i]!);
    const gs = backend().autogradGrad([loss.handle], diff.map((t) => t.handle), [null], false, false, true)
      .map((h) => (h === null ? null : new Tensor(h)));
    const analytic = gs.map((g, k) => (g === null ? new Array<number>(diff[k]!.numel()).fill(0) : Array.from(data(g))));
    const numeric: number[][] = [];
    let maxError = 0;
    noGrad(() => {
      const lossAt = (i: number, v: Float64Array, shape: number[]): number =>
        scope(() => fn(...base.map((b, m) => (m === i ? tensor(v, { shape }) : b))).mul(w).sum().item());
      wrt.forEach((i, k) => {
        const x = inputs[i]!;
        const shape = x.shape;
        const v = data(x);
        const num: number[] = [];
        for (let j = 0; j < v.length; j++) {
          const orig = v[j]!;
          v[j] = orig + eps;
          const plus = lossAt(i, v, shape);
          v[j] = orig - eps;
          const minus = lossAt(i, v, shape);
          v[j] = orig;
          num.push((plus - minus) / (2 * eps));
        }
        numeric.push(num);
        const an = analytic[k]!;
        for (let j = 0; j < num.length; j++) {
          const err = Math.abs(an[j]! - num[j]!) / Math.max(1, Math.abs(num[j]!));
          maxError = Math.max(maxError, err);
          if (err > tol) {
            assert.fail(`gradcheck: input ${i} element ${j}: analytic ${an[j]}, numeric ${num[j]} (error ${err} > ${tol})`);
          }
        }
      });
    });
    return { maxError, analytic, numeric };
  });
}
