/** Standard layers with PyTorch's parameter names, shapes, defaults and initialisation. */
import {
  type Tensor, adaptiveAvgPool2d, batchNorm, conv2d, convTranspose2d, dropout, empty, gelu, layerNorm, linear,
  maxPool2d, ones, rand, relu, zeros, scalarTensor, scope, groupNorm,
} from '../engine/index.js';
import { Module, type UnaryModule } from './module.js';
import { fans, kaimingUniform_, normal_, ones_, uniform_, zeros_ } from './init.js';

type Pair = number | readonly [number, number];

function defaultLinearInit(weight: Tensor, bias: Tensor | null): void {
  kaimingUniform_(weight, { a: Math.sqrt(5) });
  if (bias) {
    const { fanIn } = fans(weight);
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    uniform_(bias, -bound, bound);
  }
}

/** y = x·Wᵀ + b. Parameters `weight` (out, in), `bias` (out). */
export class Linear extends Module implements UnaryModule {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean } = {}) {
    super();
    this.weight = this.registerParameter('weight', empty([outFeatures, inFeatures]));
    this.bias = opts.bias ?? true ? this.registerParameter('bias', empty([outFeatures])) : null;
    defaultLinearInit(this.weight, this.bias);
  }
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** Options of {@link Conv2d}. */
export interface Conv2dOpts { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number; bias?: boolean }
const pair = (v: Pair): [number, number] => (typeof v === 'number' ? [v, v] : [v[0], v[1]]);

/** 2-d convolution. Parameters `weight` (out, in/groups, kH, kW), `bias` (out). */
export class Conv2d extends Module implements UnaryModule {
  weight: Tensor;
  bias: Tensor | null;
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: Pair, o: Conv2dOpts = {}) {
    super();
    this.groups = o.groups ?? 1;
    if (inChannels % this.groups || outChannels % this.groups) {
      throw new Error(`Conv2d: channels ${inChannels}→${outChannels} not divisible by groups ${this.groups}`);
    }
    const [kh, kw] = pair(kernelSize);
    this.stride = pair(o.stride ?? 1);
    this.padding = pair(o.padding ?? 0);
    this.dilation = pair(o.dilation ?? 1);
    this.weight = this.registerParameter('weight', empty([outChannels, inChannels / this.groups, kh, kw]));
    this.bias = o.bias ?? true ? this.registerParameter('bias', empty([outChannels])) : null;
    defaultLinearInit(this.weight, this.bias);
  }
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups });
  }
}

/** Options of {@link ConvTranspose2d}. */
export interface ConvTranspose2dOpts extends Conv2dOpts { outputPadding?: Pair }

/** 2-d transposed convolution. Parameters `weight` (in, out/groups, kH, kW), `bias` (out). */
export class ConvTranspose2d extends Module implements UnaryModule {
  weight: Tensor;
  bias: Tensor | null;
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly outputPadding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: Pair, o: ConvTranspose2dOpts = {}) {
    super();
    this.groups = o.groups ?? 1;
    const [kh, kw] = pair(kernelSize);
    this.stride = pair(o.stride ?? 1);
    this.padding = pair(o.padding ?? 0);
    this.outputPadding = pair(o.outputPadding ?? 0);
    this.dilation = pair(o.dilation ?? 1);
    this.weight = this.registerParameter('weight', empty([inChannels, outChannels / this.groups, kh, kw]));
    this.bias = o.bias ?? true ? this.registerParameter('bias', empty([outChannels])) : null;
    defaultLinearInit(this.weight, this.bias);
  }
  forward(x: Tensor): Tensor {
    return convTranspose2d(x, this.weight, this.bias, {
      stride: this.stride, padding: this.padding, outputPadding: this.outputPadding, groups: this.groups, dilation: this.dilation,
    });
  }
}

/** Options of {@link BatchNorm2d}. */
export interface BatchNormOpts { eps?: number; momentum?: number; affine?: boolean; trackRunningStats?: boolean }

/**
 * Batch normalisation over N×C×H×W. State: `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`
 * (optional when loading). mmcv's SyncBN saves the same keys and loads into it; at inference they are equal.
 */
export class BatchNorm2d extends Module implements UnaryModule {
  weight: Tensor | null;
  bias: Tensor | null;
  running_mean: Tensor | null;
  running_var: Tensor | null;
  num_batches_tracked: Tensor | null;
  readonly eps: number;
  readonly momentum: number;
  constructor(readonly numFeatures: number, o: BatchNormOpts = {}) {
    super();
    this.eps = o.eps ?? 1e-5;
    this.momentum = o.momentum ?? 0.1;
    const affine = o.affine ?? true;
    this.weight = affine ? this.registerParameter('weight', ones([numFeatures])) : null;
    this.bias = affine ? this.registerParameter('bias', zeros([numFeatures])) : null;
    const track = o.trackRunningStats ?? true;
    this.running_mean = track ? this.registerBuffer('running_mean', zeros([numFeatures])) : null;
    this.running_var = track ? this.registerBuffer('running_var', ones([numFeatures])) : null;
    this.num_batches_tracked = track ? this.registerBuffer('num_batches_tracked', scalarTensor(0, { dtype: 'int64' })) : null;
    this.optionalKeys.add('num_batches_tracked');
  }
  forward(x: Tensor): Tensor {
    if (x.ndim !== 4) throw new Error(`BatchNorm2d: expected N×C×H×W input, got [${x.shape}]`);
    const useBatch = this.training || this.running_mean === null;
    if (this.training && this.num_batches_tracked) this.num_batches_tracked.add_(1);
    return batchNorm(x, this.running_mean, this.running_var, this.weight, this.bias, useBatch, this.momentum, this.eps);
  }
}

/** Layer normalisation over the trailing dims. Parameters `weight`, `bias`. */
export class LayerNorm extends Module implements UnaryModule {
  weight: Tensor | null;
  bias: Tensor | null;
  readonly normalizedShape: number[];
  constructor(normalizedShape: number | readonly number[], readonly eps = 1e-5, elementwiseAffine = true) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.weight = elementwiseAffine ? this.registerParameter('weight', ones(this.normalizedShape)) : null;
    this.bias = elementwiseAffine ? this.registerParameter('bias', zeros(this.normalizedShape)) : null;
  }
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }
}

/** GELU activation (exact by default). */
export class GELU extends Module implements UnaryModule {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') { super(); }
  forward(x: Tensor): Tensor { return gelu(x, this.approximate); }
}

/** ReLU activation. */
export class ReLU extends Module implements UnaryModule {
  forward(x: Tensor): Tensor { return relu(x); }
}

/** Identity. */
export class Identity extends Module implements UnaryModule {
  forward(x: Tensor): Tensor { return x; }
}

/** Dropout (identity in eval mode). */
export class Dropout extends Module implements UnaryModule {
  constructor(readonly p = 0.5) { super(); }
  forward(x: Tensor): Tensor { return this.training && this.p > 0 ? dropout(x, this.p, true) : x; }
}

/** Stochastic depth: drops whole samples of a residual branch with probability p (training only), as timm. */
export class DropPath extends Module implements UnaryModule {
  constructor(readonly p = 0) { super(); }
  forward(x: Tensor): Tensor {
    if (!this.training || this.p === 0) return x;
    const keep = 1 - this.p;
    const shape = [x.shape[0]!, ...Array(x.ndim - 1).fill(1)];
    const mask = rand(shape, { dtype: x.dtype, device: x.device }).add(keep).floor();
    return x.div(keep).mul(mask);
  }
}

/** Max pooling. */
export class MaxPool2d extends Module implements UnaryModule {
  constructor(readonly kernelSize: Pair, readonly stride: Pair = kernelSize, readonly padding: Pair = 0) { super(); }
  forward(x: Tensor): Tensor { return maxPool2d(x, this.kernelSize, { stride: this.stride, padding: this.padding }); }
}

/** Adaptive average pooling to a fixed output size. */
export class AdaptiveAvgPool2d extends Module implements UnaryModule {
  constructor(readonly outputSize: Pair) { super(); }
  forward(x: Tensor): Tensor { return adaptiveAvgPool2d(x, this.outputSize); }
}

/** Lookup table. Parameter `weight` (num, dim), initialised N(0, 1). */
export class Embedding extends Module {
  weight: Tensor;
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number) {
    super();
    this.weight = this.registerParameter('weight', empty([numEmbeddings, embeddingDim]));
    normal_(this.weight);
  }
  forward(indices: Tensor): Tensor {
    const flat = indices.flatten();
    const rows = this.weight.indexSelect(0, flat);
    return rows.reshape(...indices.shape, this.embeddingDim);
  }
}

/** Children named 0, 1, 2, ... applied in order. */
export class Sequential extends Module implements UnaryModule {
  readonly layers: UnaryModule[];
  constructor(...layers: UnaryModule[]) {
    super();
    this.layers = layers.map((m, i) => this.registerModule(String(i), m));
  }
  /** Runs the layers in order; the intermediate results are freed on return. */
  forward(x: Tensor): Tensor {
    return scope(() => {
      let y = x;
      for (const m of this.layers) y = m.forward(y);
      return y;
    });
  }
  get length(): number { return this.layers.length; }
  at(i: number): UnaryModule {
    const m = this.layers[i < 0 ? i + this.layers.length : i];
    if (!m) throw new RangeError(`Sequential: index ${i} out of range (${this.layers.length})`);
    return m;
  }
}

/** A list of submodules named 0, 1, 2, ... */
export class ModuleList<M extends Module = Module> extends Module implements Iterable<M> {
  private readonly items: M[] = [];
  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }
  push(m: M): this {
    this.items.push(this.registerModule(String(this.items.length), m));
    return this;
  }
  get length(): number { return this.items.length; }
  at(i: number): M {
    const m = this.items[i < 0 ? i + this.items.length : i];
    if (!m) throw new RangeError(`ModuleList: index ${i} out of range (${this.items.length})`);
    return m;
  }
  [Symbol.iterator](): Iterator<M> { return this.items[Symbol.iterator](); }
  slice(start: number, end?: number): M[] { return this.items.slice(start, end); }
}

/** Group normalisation over N×C×... (PyTorch `GroupNorm`). Parameters `weight`, `bias` (affine); no buffers. */
export class GroupNorm extends Module implements UnaryModule {
  weight: Tensor | null;
  bias: Tensor | null;
  constructor(readonly numGroups: number, readonly numChannels: number, readonly eps = 1e-5, affine = true) {
    super();
    if (!Number.isInteger(numGroups) || numGroups < 1 || numChannels % numGroups) {
      throw new Error(`GroupNorm: num_channels ${numChannels} must be divisible by num_groups ${numGroups}`);
    }
    this.weight = affine ? this.registerParameter('weight', ones([numChannels])) : null;
    this.bias = affine ? this.registerParameter('bias', zeros([numChannels])) : null;
  }
  forward(x: Tensor): Tensor {
    if (x.ndim < 2 || x.shape[1] !== this.numChannels) {
      throw new Error(`GroupNorm: expected N×${this.numChannels}×..., got [${x.shape.join(', ')}]`);
    }
    return groupNorm(x, this.numGroups, this.weight, this.bias, this.eps);
  }
}

export { ones_, zeros_ };
