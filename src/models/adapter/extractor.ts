/**
 * Multi-scale feature extractor (paper Fig. 4e): adapter tokens (queries) attend to the ViT tokens through
 * deformable attention, followed by a convolutional FFN (ConvFFN: `fc1`, depth-wise 3×3 `dwconv.dwconv` applied per
 * pyramid level, GELU, `fc2`). Keys: `query_norm`, `feat_norm`, `attn`, `ffn`, `ffn_norm`.
 */
import { type Tensor, cat, checkpoint, dropout, gelu, scope } from '../../engine/index.js';
import { Conv2d, DropPath, Identity, LayerNorm, Linear, Module } from '../../nn/index.js';
import { MSDeformAttn, type SpatialShapes } from './deformable-attention.js';

/** Depth-wise 3×3 convolution over the three pyramid levels packed in the adapter tokens. Key: `dwconv`. */
export class DWConv extends Module {
  readonly dwconv: Conv2d;
  constructor(dim: number) {
    super();
    this.dwconv = this.registerModule('dwconv', new Conv2d(dim, dim, 3, { padding: 1, groups: dim }));
  }
  /** x: B×21n×C tokens for levels (2H×2W, H×W, H/2×W/2) with n = H·W/4. */
  forward(x: Tensor, H: number, W: number): Tensor {
    const [B, N, C] = x.shape as [number, number, number];
    const n = Math.trunc(N / 21);
    const levels: [number, number, number, number][] = [
      [0, 16 * n, 2 * H, 2 * W], [16 * n, 4 * n, H, W], [20 * n, N - 20 * n, Math.trunc(H / 2), Math.trunc(W / 2)],
    ];
    const outs = levels.map(([start, len, h, w]) => {
      const map = x.narrow(1, start, len).transpose(1, 2).reshape(B, C, h, w);
      return this.dwconv.forward(map).flatten(2).transpose(1, 2);
    });
    return cat(outs, 1);
  }
}

/** The convolutional feed-forward network of the extractor. Keys: `fc1`, `dwconv`, `fc2`. */
export class ConvFFN extends Module {
  readonly fc1: Linear;
  readonly dwconv: DWConv;
  readonly fc2: Linear;
  constructor(inFeatures: number, hidden: number, readonly drop = 0) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(inFeatures, hidden));
    this.dwconv = this.registerModule('dwconv', new DWConv(hidden));
    this.fc2 = this.registerModule('fc2', new Linear(hidden, inFeatures));
  }
  forward(x: Tensor, H: number, W: number): Tensor {
    const d = (t: Tensor): Tensor => (this.training && this.drop > 0 ? dropout(t, this.drop, true) : t);
    return d(this.fc2.forward(d(gelu(this.dwconv.forward(this.fc1.forward(x), H, W)))));
  }
}

/** Options of {@link Extractor}. */
export interface ExtractorOptions {
  dim: number;
  numHeads: number;
  nPoints: number;
  nLevels: number;
  deformRatio: number;
  withCffn: boolean;
  cffnRatio: number;
  drop: number;
  dropPath: number;
  normEps: number;
  withCp?: boolean;
}

/** The extractor. */
export class Extractor extends Module {
  readonly query_norm: LayerNorm;
  readonly feat_norm: LayerNorm;
  readonly attn: MSDeformAttn;
  readonly ffn: ConvFFN | null = null;
  readonly ffn_norm: LayerNorm | null = null;
  readonly dropPath: DropPath | Identity;
  readonly withCp: boolean;
  constructor(o: ExtractorOptions) {
    super();
    this.withCp = o.withCp ?? false;
    this.query_norm = this.registerModule('query_norm', new LayerNorm(o.dim, o.normEps));
    this.feat_norm = this.registerModule('feat_norm', new LayerNorm(o.dim, o.normEps));
    this.attn = this.registerModule('attn', new MSDeformAttn(o.dim, o.nLevels, o.numHeads, o.nPoints, o.deformRatio));
    if (o.withCffn) {
      this.ffn = this.registerModule('ffn', new ConvFFN(o.dim, Math.trunc(o.dim * o.cffnRatio), o.drop));
      this.ffn_norm = this.registerModule('ffn_norm', new LayerNorm(o.dim, o.normEps));
    }
    this.dropPath = o.dropPath > 0 ? new DropPath(o.dropPath) : new Identity();
  }
  /** query: adapter tokens B×21n×D; feat: ViT tokens B×HW×D (one level). */
  forward(query: Tensor, ref: Tensor, feat: Tensor, shapes: SpatialShapes, levelStart: readonly number[], H: number, W: number): Tensor {
    if (this.withCp && this.training) {
      return checkpoint((q, f) => [this.inner(q!, ref, f!, shapes, levelStart, H, W)], [query, feat])[0]!;
    }
    return scope(() => this.inner(query, ref, feat, shapes, levelStart, H, W));
  }
  private inner(query: Tensor, ref: Tensor, feat: Tensor, shapes: SpatialShapes, levelStart: readonly number[], H: number, W: number): Tensor {
    const a = this.attn.forward(this.query_norm.forward(query), ref, this.feat_norm.forward(feat), shapes, levelStart);
    let q = query.add(a);
    if (this.ffn && this.ffn_norm) {
      this.dropPath.training = this.training;
      q = q.add(this.dropPath.forward(this.ffn.forward(this.ffn_norm.forward(q), H, W)));
    }
    return q;
  }
}
