/**
 * Gradient clipping by global norm: torch 1.13's `clip_grad_norm_(params, max_norm, norm_type=2)` (what mmcv's
 * `OptimizerHook(grad_clip=dict(max_norm=...))` calls).
 */
import { type Tensor, noGrad, scope, stack } from '../engine/index.js';
import * as fe from './foreach.js';

/** Options of {@link clipGradNorm}. */
export interface ClipOptions {
  /** Use `aten::_foreach_norm` / `_foreach_mul_` when available (default true). */
  foreach?: boolean;
}

/**
 * Scales every gradient in place so that their global 2-norm is at most `maxNorm`, as torch does:
 * `total = ‖(‖g_1‖, ‖g_2‖, ...)‖`, `coef = min(1 / (total + 1e-6) * max_norm, 1)` (torch evaluates
 * `max_norm / t` as `t.reciprocal() * max_norm`), every gradient multiplied by `coef` (a no-op when it is 1).
 * Parameters without a gradient are ignored. A non-finite total is not an error (torch's default), so the
 * gradients become non-finite too: with a loss scaler, unscale and check first (see `amp.ts`).
 * @returns the total norm before clipping (0 when no parameter has a gradient)
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number, o: ClipOptions = {}): number {
  if (typeof maxNorm !== 'number' || !(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be a positive number, got ${JSON.stringify(maxNorm)}`);
  const mode = { foreach: o.foreach ?? true };
  return scope(() => noGrad(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (grads.length === 0) return 0;
    const device = grads[0]!.device;
    const dtype = grads[0]!.dtype;
    for (const g of grads) {
      if (g.device !== device || g.dtype !== dtype) {
        throw new Error(`clipGradNorm: gradients on ${device}/${dtype} and ${g.device}/${g.dtype}; expected one device and dtype`);
      }
    }
    const total = stack(fe.norms(grads, mode)).norm(2);
    const coef = total.add(1e-6).reciprocal().mul(maxNorm).clamp(null, 1);
    const c = coef.item();
    if (c !== 1) fe.mulScalar_(grads, c, mode);
    return total.item();
  }));
}

/** The global 2-norm of the gradients without changing them (for logging). */
export function gradNorm(params: readonly Tensor[], o: ClipOptions = {}): number {
  const mode = { foreach: o.foreach ?? true };
  return scope(() => noGrad(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (grads.length === 0) return 0;
    return stack(fe.norms(grads, mode).map((n) => n.to('float64'))).norm(2).item();
  }));
}
