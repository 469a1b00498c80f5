/** Parameter initialisers, with PyTorch's definitions (`torch.nn.init`). All work in place under no-grad. */
import { type Tensor, noGrad } from '../engine/index.js';

/** fan_in and fan_out as PyTorch computes them (dim 1 × receptive field, dim 0 × receptive field). */
export function fans(t: Tensor): { fanIn: number; fanOut: number } {
  const s = t.shape;
  if (s.length < 2) throw new Error(`fans: need at least 2 dims, got [${s}]`);
  const rf = s.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: s[1]! * rf, fanOut: s[0]! * rf };
}

let skipDepth = 0;

/**
 * Runs `fn` with every initialiser of this module turned into a no-op, so that modules built inside keep the values
 * their tensors were created with (`empty` ones stay uninitialised). For a model whose weights are loaded next, or
 * whose structure (state-dict names and shapes) is all that is needed: a large model builds in a fraction of the
 * time. Synchronous functions only.
 */
export function withoutInit<T>(fn: () => T): T {
  skipDepth++;
  try {
    return fn();
  } finally {
    skipDepth--;
  }
}

/** Whether initialisers are currently skipped ({@link withoutInit}). */
export function initSkipped(): boolean {
  return skipDepth > 0;
}

/** Fills with `value`. */
export function constant_(t: Tensor, value: number): Tensor {
  if (skipDepth > 0) return t;
  noGrad(() => t.fill_(value));
  return t;
}
/** Fills with zeros. */
export function zeros_(t: Tensor): Tensor { return constant_(t, 0); }
/** Fills with ones. */
export function ones_(t: Tensor): Tensor { return constant_(t, 1); }
/** U(a, b). */
export function uniform_(t: Tensor, a = 0, b = 1): Tensor {
  if (skipDepth > 0) return t;
  noGrad(() => t.uniform_(a, b));
  return t;
}
/** N(mean, std²). */
export function normal_(t: Tensor, mean = 0, std = 1): Tensor {
  if (skipDepth > 0) return t;
  noGrad(() => t.normal_(mean, std));
  return t;
}

const normCdf = (x: number): number => (1 + erf(x / Math.SQRT2)) / 2;
function erf(x: number): number {
  // Abramowitz–Stegun 7.1.26 is too coarse; use a series/continued fraction accurate to ~1e-15.
  const s = Math.sign(x);
  const a = Math.abs(x);
  if (a < 3) {
    let sum = a;
    let term = a;
    for (let n = 1; n < 200; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (s * 2 * sum) / Math.sqrt(Math.PI);
  }
  // continued fraction for erfc
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (a + f);
  return s * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + f));
}

/**
 * Truncated normal N(mean, std²) restricted to [a, b], by PyTorch's method (inverse CDF of a uniform between the
 * CDF values of the bounds).
 */
export function truncNormal_(t: Tensor, mean = 0, std = 1, a = -2, b = 2): Tensor {
  if (skipDepth > 0) return t;
  const l = normCdf((a - mean) / std);
  const u = normCdf((b - mean) / std);
  noGrad(() => {
    t.uniform_(2 * l - 1, 2 * u - 1);
    t.erfinv_();
    t.mul_(std * Math.SQRT2);
    t.add_(mean);
    t.clamp_(a, b);
  });
  return t;
}

/** Xavier/Glorot uniform: U(−g·sqrt(6/(fan_in+fan_out)), +...). */
export function xavierUniform_(t: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = fans(t);
  const bound = gain * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -bound, bound);
}

function kaimingGain(nonlinearity: 'relu' | 'leaky_relu' | 'linear', a: number): number {
  if (nonlinearity === 'relu') return Math.SQRT2;
  if (nonlinearity === 'leaky_relu') return Math.sqrt(2 / (1 + a * a));
  return 1;
}

/** Kaiming options. */
export interface KaimingOptions { a?: number; mode?: 'fan_in' | 'fan_out'; nonlinearity?: 'relu' | 'leaky_relu' | 'linear' }

/** He uniform: bound = gain·sqrt(3/fan). */
export function kaimingUniform_(t: Tensor, o: KaimingOptions = {}): Tensor {
  const { fanIn, fanOut } = fans(t);
  const fan = (o.mode ?? 'fan_in') === 'fan_in' ? fanIn : fanOut;
  const bound = kaimingGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) * Math.sqrt(3 / fan);
  return uniform_(t, -bound, bound);
}

/** He normal: std = gain/sqrt(fan). */
export function kaimingNormal_(t: Tensor, o: KaimingOptions = {}): Tensor {
  const { fanIn, fanOut } = fans(t);
  const fan = (o.mode ?? 'fan_in') === 'fan_in' ? fanIn : fanOut;
  return normal_(t, 0, kaimingGain(o.nonlinearity ?? 'leaky_relu', o.a ?? 0) / Math.sqrt(fan));
}
