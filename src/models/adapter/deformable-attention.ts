/**
 * Multi-scale deformable attention (Deformable DETR), as ViT-Adapter uses it: each query samples `n_points`
 * locations per head and level around its reference point and takes their softmax-weighted sum.
 * Keys: `sampling_offsets`, `attention_weights`, `value_proj`, `output_proj`.
 */
import {
  type Tensor, arange, cat, gridSample, op, softmax, stack, tensor, noGrad,
} from '../../engine/index.js';
import { Linear, Module } from '../../nn/index.js';
import { constant_, xavierUniform_ } from '../../nn/init.js';

/** Level sizes (H, W) of the value maps, in order. */
export type SpatialShapes = readonly (readonly [number, number])[];

/**
 * The reference composition of the deformable-attention core with `gridSample` (bilinear, zero padding,
 * align_corners false): the oracle for the native kernel.
 * value N×S×M×D, locations N×Lq×M×L×P×2 (x, y in [0, 1]), weights N×Lq×M×L×P → N×Lq×(M·D).
 */
export function msDeformAttnComposition(value: Tensor, shapes: SpatialShapes, locations: Tensor, weights: Tensor): Tensor {
  const [N, , M, D] = value.shape as [number, number, number, number];
  const [, Lq, , L, P] = locations.shape as [number, number, number, number, number];
  const perLevel = value.split(shapes.map(([h, w]) => h * w), 1);
  const grids = locations.mul(2).sub(1);
  const sampled: Tensor[] = [];
  for (let l = 0; l < L; l++) {
    const [h, w] = shapes[l]!;
    const v = perLevel[l]!.flatten(2).transpose(1, 2).reshape(N * M, D, h, w);
    const g = grids.select(3, l).transpose(1, 2).flatten(0, 1); // N·M × Lq × P × 2
    sampled.push(gridSample(v, g, { mode: 'bilinear', paddingMode: 'zeros', alignCorners: false })); // N·M × D × Lq × P
  }
  const w = weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P);
  const out = stack(sampled, -2).flatten(-2).mul(w).sum(-1).view(N, M * D, Lq);
  return out.transpose(1, 2).contiguous();
}

const nativeOp = op('vit_adapter::ms_deform_attn');

/** Whether the native deformable-attention kernel is available in this build. */
export function hasNativeMsDeformAttn(): boolean {
  return nativeOp.available();
}

/** Which implementation {@link msDeformAttnCore} uses: the native kernel (default when built) or the composition. */
let useNative: boolean | null = null;
/** Forces the native kernel (true), the grid_sample composition (false), or automatic choice (null). */
export function setMsDeformAttnImpl(native: boolean | null): void {
  if (native === true && !hasNativeMsDeformAttn()) throw new Error('the native ms_deform_attn kernel is not built into this addon');
  useNative = native;
}

/** Deformable-attention core: the native kernel when available, else the grid_sample composition. */
export function msDeformAttnCore(value: Tensor, shapes: SpatialShapes, levelStart: readonly number[], locations: Tensor,
  weights: Tensor): Tensor {
  if (value.dtype !== locations.dtype || value.dtype !== weights.dtype) {
    // Mixed precision (autocast): linear outputs are bfloat16/float16 while the sampling locations stay float32. The
    // authors' op is declared `custom_fwd(cast_inputs=torch.float32)`: it runs in float32 on float32 inputs.
    value = value.to('float32');
    locations = locations.to('float32');
    weights = weights.to('float32');
  }
  if (useNative ?? hasNativeMsDeformAttn()) {
    const ss = tensor(shapes.flatMap(([h, w]) => [h, w]), { dtype: 'int64', shape: [shapes.length, 2], device: value.device });
    const ls = tensor([...levelStart], { dtype: 'int64', device: value.device });
    return nativeOp.t([value.handle, ss.handle, ls.handle, locations.handle, weights.handle]);
  }
  return msDeformAttnComposition(value, shapes, locations, weights);
}

/** The authors' `MSDeformAttn` module (2-d reference points). */
export class MSDeformAttn extends Module {
  readonly sampling_offsets: Linear;
  readonly attention_weights: Linear;
  readonly value_proj: Linear;
  readonly output_proj: Linear;
  readonly valueDim: number;

  constructor(readonly dModel: number, readonly nLevels: number, readonly nHeads: number, readonly nPoints: number,
    readonly ratio = 1.0) {
    super();
    this.valueDim = Math.trunc(dModel * ratio);
    if (this.valueDim % nHeads) throw new Error(`MSDeformAttn: value dim ${this.valueDim} not divisible by ${nHeads} heads`);
    this.sampling_offsets = this.registerModule('sampling_offsets', new Linear(dModel, nHeads * nLevels * nPoints * 2));
    this.attention_weights = this.registerModule('attention_weights', new Linear(dModel, nHeads * nLevels * nPoints));
    this.value_proj = this.registerModule('value_proj', new Linear(dModel, this.valueDim));
    this.output_proj = this.registerModule('output_proj', new Linear(this.valueDim, dModel));
    this.resetParameters();
  }

  /** The authors' initialisation: zero offset weights, offsets biased along head directions scaled by point index. */
  resetParameters(): void {
    constant_(this.sampling_offsets.weight, 0);
    const M = this.nHeads;
    const L = this.nLevels;
    const P = this.nPoints;
    const bias = new Float32Array(M * L * P * 2);
    for (let m = 0; m < M; m++) {
      const theta = Math.fround(m * Math.fround((2 * Math.PI) / M));
      const c = Math.cos(theta);
      const s = Math.sin(theta);
      const mx = Math.max(Math.abs(c), Math.abs(s));
      for (let l = 0; l < L; l++) {
        for (let p = 0; p < P; p++) {
          const i = ((m * L + l) * P + p) * 2;
          bias[i] = (c / mx) * (p + 1);
          bias[i + 1] = (s / mx) * (p + 1);
        }
      }
    }
    noGrad(() => this.sampling_offsets.bias!.copy_(tensor(bias)));
    constant_(this.attention_weights.weight, 0);
    constant_(this.attention_weights.bias!, 0);
    xavierUniform_(this.value_proj.weight);
    constant_(this.value_proj.bias!, 0);
    xavierUniform_(this.output_proj.weight);
    constant_(this.output_proj.bias!, 0);
  }

  /**
   * query N×Lq×C, reference points 1×Lq×1×2 (normalised x, y), input N×S×C over `shapes` levels starting at
   * `levelStart`.
   */
  forward(query: Tensor, referencePoints: Tensor, input: Tensor, shapes: SpatialShapes, levelStart: readonly number[]): Tensor {
    const [N, Lq] = query.shape as [number, number];
    const S = input.shape[1]!;
    const total = shapes.reduce((a, [h, w]) => a + h * w, 0);
    if (total !== S) throw new Error(`MSDeformAttn: input has ${S} tokens, the spatial shapes cover ${total}`);
    const M = this.nHeads;
    const L = this.nLevels;
    const P = this.nPoints;
    const value = this.value_proj.forward(input).view(N, S, M, this.valueDim / M);
    const offsets = this.sampling_offsets.forward(query).view(N, Lq, M, L, P, 2);
    const weights = softmax(this.attention_weights.forward(query).view(N, Lq, M, L * P), -1).view(N, Lq, M, L, P);
    // offset normaliser per level: (W, H)
    const norm = tensor(shapes.flatMap(([h, w]) => [w, h]), { shape: [1, 1, 1, L, 1, 2], dtype: query.dtype, device: query.device });
    const ref = referencePoints.reshape(referencePoints.shape[0]!, Lq, 1, 1, 1, 2);
    const locations = ref.add(offsets.div(norm));
    return this.output_proj.forward(this.core(value, shapes, levelStart, locations, weights));
  }

  /** The sampling core ({@link msDeformAttnCore}); a method so that profilers can wrap it on an instance. */
  core(value: Tensor, shapes: SpatialShapes, levelStart: readonly number[], locations: Tensor, weights: Tensor): Tensor {
    return msDeformAttnCore(value, shapes, levelStart, locations, weights);
  }
}

/** Reference points: pixel centres of each level, normalised, concatenated → 1×ΣHW×1×2 (x, y). */
export function referencePoints(shapes: SpatialShapes, device = 'cpu'): Tensor {
  const parts: Tensor[] = [];
  for (const [h, w] of shapes) {
    const ys = arange(0, h, 1, { dtype: 'float32', device }).add(0.5).div(h);
    const xs = arange(0, w, 1, { dtype: 'float32', device }).add(0.5).div(w);
    const gy = ys.view(h, 1).expand(h, w).reshape(-1);
    const gx = xs.view(1, w).expand(h, w).reshape(-1);
    parts.push(stack([gx, gy], -1));
  }
  return cat(parts, 0).view(1, -1, 1, 2);
}
