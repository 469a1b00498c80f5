/** Numerical comparison used by parity checks. */
import { type Tensor, noGrad } from '../engine/index.js';

/** max |got − ref| / max |ref|, computed in float64 on the CPU. */
export function maxRelativeError(got: Tensor, ref: Tensor): number {
  return noGrad(() => {
    const g = got.to({ dtype: 'float64', device: 'cpu' });
    const r = ref.to({ dtype: 'float64', device: 'cpu' });
    if (g.shape.join() !== r.shape.join()) {
      throw new Error(`shape mismatch: got [${g.shape.join(', ')}], reference [${r.shape.join(', ')}]`);
    }
    const diff = g.sub(r).abs().max().item();
    const scale = r.abs().max().item();
    return scale === 0 ? diff : diff / scale;
  });
}

/** max |got − ref|, computed in float64 on the CPU. */
export function maxAbsoluteError(got: Tensor, ref: Tensor): number {
  return noGrad(() => {
    const g = got.to({ dtype: 'float64', device: 'cpu' });
    const r = ref.to({ dtype: 'float64', device: 'cpu' });
    if (g.shape.join() !== r.shape.join()) {
      throw new Error(`shape mismatch: got [${g.shape.join(', ')}], reference [${r.shape.join(', ')}]`);
    }
    return g.sub(r).abs().max().item();
  });
}
