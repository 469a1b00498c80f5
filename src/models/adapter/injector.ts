/**
 * Spatial feature injector (paper Fig. 4d): ViT tokens (queries) attend to the multi-scale spatial features through
 * deformable attention; the result is added back gated by a learnable γ (`gamma`, initialised to `init_values`).
 * Keys: `gamma`, `query_norm`, `feat_norm`, `attn`.
 */
import { type Tensor, checkpoint, full, scope } from '../../engine/index.js';
import { LayerNorm, Module } from '../../nn/index.js';
import { MSDeformAttn, type SpatialShapes } from './deformable-attention.js';

/** Options of {@link Injector}. */
export interface InjectorOptions {
  dim: number;
  numHeads: number;
  nPoints: number;
  nLevels: number;
  deformRatio: number;
  initValues: number;
  normEps: number;
  withCp?: boolean;
}

/** The injector. */
export class Injector extends Module {
  readonly query_norm: LayerNorm;
  readonly feat_norm: LayerNorm;
  readonly attn: MSDeformAttn;
  gamma: Tensor;
  readonly withCp: boolean;
  constructor(o: InjectorOptions) {
    super();
    this.withCp = o.withCp ?? false;
    this.query_norm = this.registerModule('query_norm', new LayerNorm(o.dim, o.normEps));
    this.feat_norm = this.registerModule('feat_norm', new LayerNorm(o.dim, o.normEps));
    this.attn = this.registerModule('attn', new MSDeformAttn(o.dim, o.nLevels, o.numHeads, o.nPoints, o.deformRatio));
    this.gamma = this.registerParameter('gamma', full([o.dim], o.initValues));
  }
  /** query: ViT tokens B×N×D; feat: adapter tokens B×ΣHW×D over `shapes`. */
  forward(query: Tensor, ref: Tensor, feat: Tensor, shapes: SpatialShapes, levelStart: readonly number[]): Tensor {
    const inner = (q: Tensor, f: Tensor): Tensor =>
      q.add(this.attn.forward(this.query_norm.forward(q), ref, this.feat_norm.forward(f), shapes, levelStart).mul(this.gamma));
    if (this.withCp && this.training) return checkpoint((q, f) => [inner(q!, f!)], [query, feat])[0]!;
    return scope(() => inner(query, feat));
  }
}
