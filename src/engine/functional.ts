/**
 * Functional operations (like `torch` and `torch.nn.functional`): joins, linear algebra, convolutions,
 * normalisation, activations, resampling, pooling, losses and attention. PyTorch semantics throughout.
 */
import { type Reduction, type TensorOrScalar, Tensor, op, reductionCode, scalarTensor } from './tensor.js';

const aten = (name: string, overload = '') => op(`aten::${name}`, overload);
type Pair = number | readonly [number, number];
const pair = (v: Pair): number[] => (typeof v === 'number' ? [v, v] : [v[0], v[1]]);
const handles = (ts: readonly Tensor[]): unknown[] => ts.map((t) => t.handle);
const opt = (t: Tensor | null | undefined): unknown => (t ? t.handle : null);

/** Concatenates along `dim`. */
export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('cat(): expected at least one tensor');
  return aten('cat').t([handles(tensors), dim]);
}
/** Stacks along a new dimension `dim`. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('stack(): expected at least one tensor');
  return aten('stack').t([handles(tensors), dim]);
}
/** Element-wise `cond ? a : b` (numbers become 0-d tensors of the other operand's dtype). */
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  const ref = a instanceof Tensor ? a : b instanceof Tensor ? b : null;
  const lift = (x: TensorOrScalar): Tensor =>
    x instanceof Tensor ? x : scalarTensor(x, { dtype: ref?.dtype ?? 'float32', device: ref?.device ?? cond.device });
  const ta = lift(a);
  const tb = lift(b);
  const out = aten('where', 'self').t([cond.handle, ta.handle, tb.handle]);
  if (ta !== a) ta.dispose();
  if (tb !== b) tb.dispose();
  return out;
}
/** Matrix product with broadcasting. */
export function matmul(a: Tensor, b: Tensor): Tensor { return a.matmul(b); }
/** Batched matrix product (B×N×M @ B×M×P). */
export function bmm(a: Tensor, b: Tensor): Tensor { return a.bmm(b); }
/** `x @ weight^T + bias`. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return aten('linear').t([x.handle, weight.handle, opt(bias)]);
}
/** Einstein summation, e.g. `einsum('bij,bjk->bik', a, b)`. */
export function einsum(equation: string, ...operands: Tensor[]): Tensor {
  return aten('einsum').t([equation, handles(operands)]);
}

/** Convolution options. */
export interface Conv2dOptions { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }
/** 2-d convolution of N×C×H×W input. */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, o: Conv2dOptions = {}): Tensor {
  return aten('conv2d').t([x.handle, weight.handle, opt(bias), pair(o.stride ?? 1), pair(o.padding ?? 0),
    pair(o.dilation ?? 1), o.groups ?? 1]);
}
/** Transposed convolution options. */
export interface ConvTranspose2dOptions extends Conv2dOptions { outputPadding?: Pair }
/** 2-d transposed convolution (weight C_in × C_out/groups × kH × kW). */
export function convTranspose2d(x: Tensor, weight: Tensor, bias?: Tensor | null, o: ConvTranspose2dOptions = {}): Tensor {
  return aten('conv_transpose2d', 'input').t([x.handle, weight.handle, opt(bias), pair(o.stride ?? 1), pair(o.padding ?? 0),
    pair(o.outputPadding ?? 0), o.groups ?? 1, pair(o.dilation ?? 1)]);
}

/** Batch normalisation (`training` uses batch statistics and updates the running ones in place). */
export function batchNorm(x: Tensor, runningMean: Tensor | null, runningVar: Tensor | null, weight: Tensor | null,
  bias: Tensor | null, training: boolean, momentum = 0.1, eps = 1e-5): Tensor {
  return aten('batch_norm').t([x.handle, opt(weight), opt(bias), opt(runningMean), opt(runningVar), training, momentum, eps, true]);
}
/** Layer normalisation over the trailing `normalizedShape` dims. */
export function layerNorm(x: Tensor, normalizedShape: readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return aten('layer_norm').t([x.handle, [...normalizedShape], opt(weight), opt(bias), eps, true]);
}
/** Group normalisation. */
export function groupNorm(x: Tensor, numGroups: number, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return aten('group_norm').t([x.handle, numGroups, opt(weight), opt(bias), eps, true]);
}

/** max(x, 0). */
export function relu(x: Tensor): Tensor { return aten('relu').t([x.handle]); }
/** GELU, exact (`erf`, default) or the `tanh` approximation. */
export function gelu(x: Tensor, approximate: 'none' | 'erf' | 'tanh' = 'none'): Tensor {
  return aten('gelu').t([x.handle, approximate === 'tanh' ? 'tanh' : 'none']);
}
/** x·sigmoid(x). */
export function silu(x: Tensor): Tensor { return aten('silu').t([x.handle]); }
/** Softmax along `dim`. */
export function softmax(x: Tensor, dim: number): Tensor { return aten('softmax', 'int').t([x.handle, dim, null]); }
/** Log-softmax along `dim`. */
export function logSoftmax(x: Tensor, dim: number): Tensor { return aten('log_softmax', 'int').t([x.handle, dim, null]); }
/** Dropout (identity unless `training`). */
export function dropout(x: Tensor, p: number, training: boolean): Tensor {
  if (p < 0 || p > 1) throw new Error(`dropout(): p must be in [0, 1], got ${p}`);
  return aten('dropout').t([x.handle, p, training]);
}

/** Padding modes of {@link pad}. */
export type PadMode = 'constant' | 'reflect' | 'replicate';
/** Pads trailing dims; `pads` = [left, right, top, bottom, ...] as in `F.pad`. */
export function pad(x: Tensor, pads: readonly number[], mode: PadMode = 'constant', value = 0): Tensor {
  if (mode === 'constant') return aten('constant_pad_nd').t([x.handle, [...pads], value]);
  const n = pads.length / 2;
  if (n !== 1 && n !== 2) throw new Error(`pad(): mode ${mode} supports 2 or 4 pad values, got ${pads.length}`);
  const name = `${mode === 'reflect' ? 'reflection' : 'replication'}_pad${n}d`;
  return aten(name).t([x.handle, [...pads]]);
}

/** Interpolation modes. */
export type InterpolateMode = 'nearest' | 'bilinear' | 'bicubic';
/** Options of {@link interpolate}: exactly one of `size` and `scaleFactor`. */
export interface InterpolateOptions {
  size?: Pair;
  scaleFactor?: number | readonly [number, number];
  mode?: InterpolateMode;
  alignCorners?: boolean;
}
/**
 * Resizes N×C×H×W maps like `F.interpolate`: with `size`, coordinates scale by in/out; with `scaleFactor` the output
 * is floor(in·s) and coordinates scale by 1/s (PyTorch's `recompute_scale_factor=None`).
 */
export function interpolate(x: Tensor, o: InterpolateOptions): Tensor {
  const mode = o.mode ?? 'nearest';
  if ((o.size === undefined) === (o.scaleFactor === undefined)) {
    throw new Error('interpolate(): give exactly one of size and scaleFactor');
  }
  if (x.ndim !== 4) throw new Error(`interpolate(): expected an N×C×H×W tensor, got shape [${x.shape}]`);
  const size = o.size === undefined ? null : pair(o.size);
  const scales = o.scaleFactor === undefined ? null
    : typeof o.scaleFactor === 'number' ? [o.scaleFactor, o.scaleFactor] : [...o.scaleFactor];
  if (mode === 'nearest') {
    if (o.alignCorners) throw new Error('interpolate(): alignCorners is only for bilinear and bicubic');
    return aten('upsample_nearest2d', 'vec').t([x.handle, size, scales]);
  }
  const name = mode === 'bilinear' ? 'upsample_bilinear2d' : mode === 'bicubic' ? 'upsample_bicubic2d' : null;
  if (!name) throw new Error(`interpolate(): unknown mode ${JSON.stringify(mode)}; expected nearest, bilinear or bicubic`);
  return aten(name, 'vec').t([x.handle, size, o.alignCorners ?? false, scales]);
}

/** Max-pooling options. */
export interface MaxPool2dOptions { stride?: Pair; padding?: Pair; dilation?: Pair; ceilMode?: boolean }
/** 2-d max pooling (stride defaults to the kernel size). */
export function maxPool2d(x: Tensor, kernel: Pair, o: MaxPool2dOptions = {}): Tensor {
  return aten('max_pool2d').t([x.handle, pair(kernel), pair(o.stride ?? kernel), pair(o.padding ?? 0), pair(o.dilation ?? 1), o.ceilMode ?? false]);
}
/** Average-pooling options. */
export interface AvgPool2dOptions { stride?: Pair; padding?: Pair; ceilMode?: boolean; countIncludePad?: boolean; divisorOverride?: number }
/** 2-d average pooling (stride defaults to the kernel size). */
export function avgPool2d(x: Tensor, kernel: Pair, o: AvgPool2dOptions = {}): Tensor {
  return aten('avg_pool2d').t([x.handle, pair(kernel), pair(o.stride ?? kernel), pair(o.padding ?? 0), o.ceilMode ?? false,
    o.countIncludePad ?? true, o.divisorOverride ?? null]);
}
/** Adaptive average pooling to an output size (PyTorch's bins: [floor(i·L/s), ceil((i+1)·L/s))). */
export function adaptiveAvgPool2d(x: Tensor, size: Pair): Tensor {
  return aten('adaptive_avg_pool2d').t([x.handle, pair(size)]);
}

/** Options of {@link gridSample}. */
export interface GridSampleOptions {
  mode?: 'bilinear' | 'nearest' | 'bicubic';
  paddingMode?: 'zeros' | 'border' | 'reflection';
  alignCorners?: boolean;
}
/** Samples N×C×H×W input at N×Ho×Wo×2 grid positions in [-1, 1] (x, y), as `F.grid_sample`. */
export function gridSample(x: Tensor, grid: Tensor, o: GridSampleOptions = {}): Tensor {
  const modes = { bilinear: 0, nearest: 1, bicubic: 2 } as const;
  const pads = { zeros: 0, border: 1, reflection: 2 } as const;
  const m = modes[o.mode ?? 'bilinear'];
  const p = pads[o.paddingMode ?? 'zeros'];
  if (m === undefined) throw new Error(`gridSample(): unknown mode ${JSON.stringify(o.mode)}`);
  if (p === undefined) throw new Error(`gridSample(): unknown paddingMode ${JSON.stringify(o.paddingMode)}`);
  return aten('grid_sampler').t([x.handle, grid.handle, m, p, o.alignCorners ?? false]);
}

/** The k largest (or smallest) entries along `dim`. */
export function topk(x: Tensor, k: number, dim = -1, largest = true, sorted = true): { values: Tensor; indices: Tensor } {
  const [values, indices] = aten('topk').ts([x.handle, k, dim, largest, sorted]);
  return { values: values!, indices: indices! };
}
/** Sorts along `dim`. */
export function sort(x: Tensor, dim = -1, descending = false): { values: Tensor; indices: Tensor } {
  const [values, indices] = aten('sort').ts([x.handle, dim, descending]);
  return { values: values!, indices: indices! };
}

/** Options of {@link crossEntropy}. */
export interface CrossEntropyOptions { weight?: Tensor | null; ignoreIndex?: number; reduction?: Reduction; labelSmoothing?: number }
/** Cross entropy of N×C(×...) logits against int64 class targets N(×...), as `F.cross_entropy`. */
export function crossEntropy(logits: Tensor, target: Tensor, o: CrossEntropyOptions = {}): Tensor {
  return aten('cross_entropy_loss').t([logits.handle, target.handle, opt(o.weight), reductionCode(o.reduction ?? 'mean'),
    o.ignoreIndex ?? -100, o.labelSmoothing ?? 0]);
}
/** Options of {@link binaryCrossEntropyWithLogits}. */
export interface BceOptions { weight?: Tensor | null; posWeight?: Tensor | null; reduction?: Reduction }
/** Sigmoid + binary cross entropy, numerically stable. */
export function binaryCrossEntropyWithLogits(logits: Tensor, target: Tensor, o: BceOptions = {}): Tensor {
  return aten('binary_cross_entropy_with_logits').t([logits.handle, target.handle, opt(o.weight), opt(o.posWeight),
    reductionCode(o.reduction ?? 'mean')]);
}

/** Options of {@link scaledDotProductAttention}. */
export interface AttentionOptions { attnMask?: Tensor | null; scale?: number }
/**
 * softmax(q·kᵀ·scale + mask)·v over (..., L, E) tensors; uses libtorch's fused kernel when it has one (2.x),
 * else the plain composition (1.13). `scale` defaults to 1/sqrt(E).
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, o: AttentionOptions = {}): Tensor {
  const e = q.shape[q.ndim - 1]!;
  const scale = o.scale ?? 1 / Math.sqrt(e);
  const fused = aten('scaled_dot_product_attention');
  if (fused.available()) {
    return fused.t([q.handle, k.handle, v.handle, opt(o.attnMask), 0, false, scale]);
  }
  return attentionComposition(q, k, v, scale, o.attnMask ?? null);
}

/** The plain composition of attention (also the oracle for the fused path). */
export function attentionComposition(q: Tensor, k: Tensor, v: Tensor, scale: number, mask: Tensor | null = null): Tensor {
  const kt = k.transpose(-2, -1);
  const qs = q.mul(scale);
  let s = qs.matmul(kt);
  kt.dispose();
  qs.dispose();
  if (mask) {
    let m: Tensor;
    if (mask.dtype === 'bool') {
      const inv = mask.logicalNot();
      m = s.maskedFill(inv, -Infinity);
      inv.dispose();
    } else {
      m = s.add(mask);
    }
    s.dispose();
    s = m;
  }
  const p = softmax(s, -1);
  s.dispose();
  const out = p.matmul(v);
  p.dispose();
  return out;
}
