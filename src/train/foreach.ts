/**
 * libtorch's multi-tensor (`aten::_foreach_*`) operators, with a per-tensor fallback when an operator is missing
 * (or `perTensor` is forced, for benchmarks). On CPU libtorch runs the foreach operators as a loop of the same
 * per-tensor kernels, so both paths give identical numbers there; on CUDA they launch one fused kernel per chunk.
 */
import { type Handle, type Tensor, backend, op } from '../engine/index.js';

const hs = (ts: readonly Tensor[]): unknown[] => ts.map((t) => t.handle);

/** Which path the helpers take. */
export interface ForeachMode {
  /** Use `aten::_foreach_*` when available (default true). */
  foreach: boolean;
}

function has(name: string, overload: string, mode: ForeachMode): boolean {
  return mode.foreach && op(`aten::${name}`, overload).available();
}

/** `t *= s` for every tensor. */
export function mulScalar_(ts: readonly Tensor[], s: number, mode: ForeachMode): void {
  if (ts.length === 0) return;
  if (has('_foreach_mul_', 'Scalar', mode)) op('aten::_foreach_mul_', 'Scalar').call([hs(ts), s]);
  else for (const t of ts) t.mul_(s);
}

/** `t /= s` for every tensor. */
export function divScalar_(ts: readonly Tensor[], s: number, mode: ForeachMode): void {
  if (ts.length === 0) return;
  if (has('_foreach_div_', 'Scalar', mode)) op('aten::_foreach_div_', 'Scalar').call([hs(ts), s]);
  else {
    for (const t of ts) {
      const alias = op('aten::div_', 'Scalar').call([t.handle, s]);
      if (alias !== null && typeof alias === 'object') backend().dispose(alias as Handle);
    }
  }
}

/** `t += s` for every tensor. */
export function addScalar_(ts: readonly Tensor[], s: number, mode: ForeachMode): void {
  if (ts.length === 0) return;
  if (has('_foreach_add_', 'Scalar', mode)) op('aten::_foreach_add_', 'Scalar').call([hs(ts), s]);
  else for (const t of ts) t.add_(s);
}

/** `a[i] += alpha * b[i]`. */
export function addList_(a: readonly Tensor[], b: readonly Tensor[], alpha: number, mode: ForeachMode): void {
  if (a.length === 0) return;
  if (has('_foreach_add_', 'List', mode)) op('aten::_foreach_add_', 'List').call([hs(a), hs(b), alpha]);
  else a.forEach((t, i) => t.add_(b[i]!, alpha));
}

/** `a[i] += value * t1[i] * t2[i]`. */
export function addcmul_(a: readonly Tensor[], t1: readonly Tensor[], t2: readonly Tensor[], value: number, mode: ForeachMode): void {
  if (a.length === 0) return;
  if (has('_foreach_addcmul_', 'Scalar', mode)) op('aten::_foreach_addcmul_', 'Scalar').call([hs(a), hs(t1), hs(t2), value]);
  else a.forEach((t, i) => t.addcmul_(t1[i]!, t2[i]!, value));
}

/** `a[i] += value * t1[i] / t2[i]`. */
export function addcdiv_(a: readonly Tensor[], t1: readonly Tensor[], t2: readonly Tensor[], value: number, mode: ForeachMode): void {
  if (a.length === 0) return;
  if (has('_foreach_addcdiv_', 'Scalar', mode)) op('aten::_foreach_addcdiv_', 'Scalar').call([hs(a), hs(t1), hs(t2), value]);
  else a.forEach((t, i) => t.addcdiv_(t1[i]!, t2[i]!, value));
}

/** New tensors `sqrt(t)`. */
export function sqrt(ts: readonly Tensor[], mode: ForeachMode): Tensor[] {
  if (ts.length === 0) return [];
  if (has('_foreach_sqrt', '', mode)) return op('aten::_foreach_sqrt').ts([hs(ts)]);
  return ts.map((t) => t.sqrt());
}

/** New 0-d tensors: the 2-norm of each tensor (`torch.norm(t, 2)`). */
export function norms(ts: readonly Tensor[], mode: ForeachMode): Tensor[] {
  if (ts.length === 0) return [];
  if (has('_foreach_norm', 'Scalar', mode)) return op('aten::_foreach_norm', 'Scalar').ts([hs(ts), 2]);
  return ts.map((t) => t.norm(2));
}

/** Sets every tensor to zero. */
export function zero_(ts: readonly Tensor[], mode: ForeachMode): void {
  if (ts.length === 0) return;
  if (has('_foreach_zero_', '', mode)) op('aten::_foreach_zero_').call([hs(ts)]);
  else for (const t of ts) t.zero_();
}
