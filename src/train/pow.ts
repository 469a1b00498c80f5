/**
 * Python's `base ** exponent` for floats. CPython calls C's `pow` (glibc), whose results differ from V8's
 * `Math.pow` in the last bit for many arguments (e.g. `0.95 ** 10`, `0.9 ** 4`). The authors' lr scales
 * (`layer_decay_rate ** k`), step decay (`gamma ** n`), poly (`(1 - i / max) ** power`) and AdamW's bias corrections
 * (`beta ** step`) are such powers, so to reproduce Python's floats bit for bit they are computed by libtorch's
 * `pow(Scalar, Tensor)` on a 0-d float64 tensor, which evaluates `std::pow` (the same C library function).
 */
import { op, scalarTensor } from '../engine/index.js';

const cache = new Map<string, number>();

/** `base ** exponent` as Python computes it for floats (C `pow`), memoised. */
export function pyPow(base: number, exponent: number): number {
  if (exponent === 1) return base; // pow(x, 1.0) == x exactly
  if (exponent === 0) return 1;
  const key = `${base}^${exponent}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const e = scalarTensor(exponent, { dtype: 'float64' });
  try {
    // A base that is an integer would be passed as an int Scalar; the result is float64 either way.
    const r = op('aten::pow', 'Scalar').t([base, e.handle]);
    const v = r.item();
    r.dispose();
    if (cache.size > 4096) cache.clear();
    cache.set(key, v);
    return v;
  } finally {
    e.dispose();
  }
}
