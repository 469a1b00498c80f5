/**
 * Synchronised batch normalisation (the authors' `SyncBN`): in training, the per-channel statistics are those of
 * the union of all ranks' batches, exchanged through a differentiable all-reduce, so the forward equals BatchNorm on
 * the concatenated batch and autograd gives exact gradients (the backward all-reduces the statistics' gradients).
 * In eval mode it normalises with the running statistics, exactly as {@link BatchNorm2d}. Same parameters, buffers
 * and state-dict keys as {@link BatchNorm2d} (mmcv's SyncBN checkpoints load as they are).
 */
import { type Tensor, cat, full, noGrad } from '../engine/index.js';
import type { ProcessGroup } from '../engine/dist.js';
import { BatchNorm2d, type BatchNormOpts } from './layers.js';
import type { Module } from './module.js';

/** BatchNorm2d whose training statistics cover the batches of every rank of a process group. */
export class SyncBatchNorm2d extends BatchNorm2d {
  /** The group whose ranks share statistics; null normalises with this process's batch only (plain BatchNorm2d). */
  pg: ProcessGroup | null;

  constructor(numFeatures: number, pg: ProcessGroup | null, o: BatchNormOpts = {}) {
    super(numFeatures, o);
    this.pg = pg;
  }

  override forward(x: Tensor): Tensor {
    const pg = this.pg;
    if (!this.training || pg === null) return super.forward(x);
    if (x.ndim !== 4) throw new Error(`SyncBatchNorm2d: expected N×C×H×W input, got [${x.shape}]`);
    const c = this.numFeatures;
    if (x.shape[1] !== c) throw new Error(`SyncBatchNorm2d: expected ${c} channels, got input [${x.shape}]`);
    if (this.num_batches_tracked) noGrad(() => this.num_batches_tracked!.add_(1));
    const [n, , h, w] = x.shape as [number, number, number, number];
    // One collective: per-channel sums and sums of squares, accumulated in float64 (so E[x²] − E[x]² stays accurate;
    // no float64 copy of the activation is kept for backward), and the count.
    const local = cat([x.sum([0, 2, 3], false, 'float64'), x.mul(x).sum([0, 2, 3], false, 'float64'),
      full([1], n * h * w, { dtype: 'float64', device: x.device })]);
    const global = pg.allReduceAutograd(local);
    const count = global.narrow(0, 2 * c, 1).item();
    if (count <= 1) {
      throw new Error(`SyncBatchNorm2d: expected more than 1 value per channel over all ranks in training, got input [${x.shape}] ` +
        `(${count} in total)`);
    }
    const mean = global.narrow(0, 0, c).div(count);
    const variance = global.narrow(0, c, c).div(count).sub(mean.mul(mean)).clamp(0, null);  // biased
    if (this.running_mean && this.running_var) {
      const m = this.momentum;
      noGrad(() => {
        this.running_mean!.mul_(1 - m).add_(mean.detach().to(this.running_mean!.dtype), m);
        this.running_var!.mul_(1 - m).add_(variance.detach().mul(count / (count - 1)).to(this.running_var!.dtype), m);
      });
    }
    const shape = [1, c, 1, 1];
    let scale = variance.add(this.eps).rsqrt();
    if (this.weight) scale = scale.mul(this.weight.to('float64'));
    let shift = mean.mul(scale).neg();
    if (this.bias) shift = shift.add(this.bias.to('float64'));
    return x.mul(scale.to(x.dtype).view(...shape)).add(shift.to(x.dtype).view(...shape));
  }
}

/**
 * Turns every {@link BatchNorm2d} inside `module` (itself included) into a {@link SyncBatchNorm2d} over `pg`, in
 * place: the same objects keep their parameters, buffers and every reference to them. Returns how many were
 * converted (layers that already are SyncBatchNorm2d get `pg` and are not counted).
 */
export function convertSyncBatchNorm(module: Module, pg: ProcessGroup): number {
  let converted = 0;
  for (const [, m] of module.namedModules()) {
    if (m instanceof SyncBatchNorm2d) {
      m.pg = pg;
    } else if (m instanceof BatchNorm2d) {
      // A BatchNorm2d becomes a SyncBatchNorm2d by its class: its fields (weight, bias, running stats, eps, momentum)
      // are exactly those SyncBatchNorm2d reads, plus `pg`.
      Object.setPrototypeOf(m, SyncBatchNorm2d.prototype);
      (m as SyncBatchNorm2d).pg = pg;
      converted++;
    }
  }
  return converted;
}

