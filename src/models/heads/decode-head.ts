/**
 * The base of mmseg's decode heads (`BaseDecodeHead`, mmseg 0.20.2 as ViT-Adapter uses it): input selection
 * (`in_index`, `input_transform`), the classifier `conv_seg` (a 1×1 conv with bias) behind a channel dropout
 * (`Dropout2d`), and the training loss (`CrossEntropyLoss` with `loss_weight`, `ignore_index`).
 *
 * Config keys are mmseg's, snake_case, verbatim. State: `conv_seg.{weight,bias}`, registered first (so it leads the
 * state dict, as in mmseg); subclasses register their layers after it.
 */
import {
  type Tensor, cat, crossEntropy, interpolate, isFloating, noGrad, rand, tensor, topk,
} from '../../engine/index.js';
import { Conv2d, Module } from '../../nn/index.js';
import { constant_, normal_ } from '../../nn/init.js';
import { checkWidth } from '../validate.js';
import type { Capture } from '../adapter/vit-adapter.js';
import {
  type ActCfg, type ConfigDict, type ConvCfg, type NormCfg, checkKeys, parseActCfg, parseConvCfg, parseNormCfg,
} from './conv-module.js';

export type { Capture };

/** How a head picks its inputs from the backbone's list (mmseg `input_transform`). */
export type InputTransform = null | 'resize_concat' | 'multiple_select';

/** mmseg `CrossEntropyLoss` config (softmax cross entropy only). */
export interface CrossEntropyLossCfg {
  type: 'CrossEntropyLoss';
  use_sigmoid?: false;
  use_mask?: false;
  /** `mean` (default) or `sum`. */
  reduction?: 'mean' | 'sum';
  /** Per-class weights (a list of num_classes numbers). */
  class_weight?: number[] | null;
  /** Factor on the loss (mmseg default 1.0; the configs use 0.4 for the auxiliary head). */
  loss_weight?: number;
  /** Name of the loss term (mmseg default `loss_ce`). */
  loss_name?: string;
  /**
   * mmseg ≥ 0.23: average over the non-ignored pixels only. Default false, as mmseg (and as 0.20.2, which
   * ViT-Adapter uses and which has no such option): the mean then runs over *all* label pixels, ignored ones
   * contributing 0.
   */
  avg_non_ignore?: boolean;
}

/**
 * What a segmentor needs of its decode head: logits (any resolution; the segmentor resizes them to the input with
 * `alignCorners`), the class count and the training loss. {@link DecodeHead} and the Mask2Former head implement it.
 */
export interface SegmentationHead extends Module {
  readonly numClasses: number;
  readonly alignCorners: boolean;
  /** Per-class scores N×num_classes×h×w (logits for mmseg's heads, Mask2Former's semantic scores). */
  forward(inputs: readonly Tensor[], capture?: Capture): Tensor;
  forwardTrain(inputs: readonly Tensor[], label: Tensor): HeadLosses;
}

/** Keys every decode head accepts (mmseg `BaseDecodeHead`). */
export interface DecodeHeadConfig {
  in_channels: number | number[];
  channels: number;
  num_classes: number;
  dropout_ratio?: number;
  conv_cfg?: ConvCfg | null;
  norm_cfg?: NormCfg | null;
  act_cfg?: ActCfg | null;
  in_index?: number | number[];
  input_transform?: InputTransform;
  loss_decode?: CrossEntropyLossCfg | CrossEntropyLossCfg[];
  ignore_index?: number;
  /** Only null: pixel samplers (OHEM) are not implemented. */
  sampler?: null;
  align_corners?: boolean;
  /** Accepted and ignored: initialisation is done by the constructors (mmseg's defaults). */
  init_cfg?: unknown;
}

/** The keys of {@link DecodeHeadConfig}. */
export const BASE_HEAD_KEYS: readonly string[] = [
  'in_channels', 'channels', 'num_classes', 'dropout_ratio', 'conv_cfg', 'norm_cfg', 'act_cfg', 'in_index',
  'input_transform', 'loss_decode', 'ignore_index', 'sampler', 'align_corners', 'init_cfg',
];

/** Bilinear (or other) resize to a given size, as mmseg's `resize` with `size` (coordinates scale by in/out). */
export function resize(x: Tensor, size: readonly [number, number], alignCorners = false): Tensor {
  const [h, w] = [x.shape[2]!, x.shape[3]!];
  if (h === size[0] && w === size[1]) return x; // exact identity for bilinear
  return interpolate(x, { size: [size[0], size[1]], mode: 'bilinear', alignCorners });
}

/** The spatial size of an N×C×H×W tensor. */
export function spatial(x: Tensor): [number, number] {
  return [x.shape[2]!, x.shape[3]!];
}

/**
 * Channel dropout (PyTorch `Dropout2d` on N×C×H×W): in training, each whole (n, c) plane is zeroed with probability
 * `p` and the kept planes are scaled by 1/(1−p); the identity in eval or for p = 0.
 */
export function dropout2d(x: Tensor, p: number, training: boolean): Tensor {
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout2d: p must be in [0, 1], got ${p}`);
  if (!training || p === 0) return x;
  if (p === 1) return x.mul(0);
  if (x.ndim < 2) throw new Error(`dropout2d: expected N×C×..., got [${x.shape.join(', ')}]`);
  const shape = x.shape.map((s, i) => (i < 2 ? s : 1));
  const mask = noGrad(() => rand(shape, { dtype: isFloating(x.dtype) ? x.dtype : 'float32', device: x.device })
    .ge(p).to(x.dtype).div(1 - p));
  return x.mul(mask);
}

/** Labels as int64 N×H×W (accepts N×1×H×W and other integer dtypes). */
export function toLabelMap(label: Tensor): Tensor {
  let l = label;
  if (l.ndim === 4) {
    if (l.shape[1] !== 1) throw new Error(`segmentation label: expected N×H×W or N×1×H×W, got [${l.shape.join(', ')}]`);
    l = l.squeeze(1);
  }
  if (l.ndim !== 3) throw new Error(`segmentation label: expected N×H×W or N×1×H×W, got [${l.shape.join(', ')}]`);
  if (l.dtype !== 'int64') {
    if (isFloating(l.dtype) || l.dtype === 'bool') throw new Error(`segmentation label: expected an integer dtype, got ${l.dtype}`);
    l = l.to('int64');
  }
  return l;
}

/** Options of {@link accuracy}. */
export interface AccuracyOptions {
  /** A prediction counts when the label is among the top k classes (default 1). */
  topk?: number;
  /** Pixels with this label are left out of numerator and denominator (default: none left out, as mmseg 0.20). */
  ignoreIndex?: number | null;
  /** Only predictions whose score exceeds this count as correct. */
  thresh?: number | null;
}

/**
 * Pixel accuracy in percent (a 0-d float32 tensor, no gradient) of N×C×H×W scores against N×H×W labels, as mmseg's
 * `accuracy`: `100 · (correct + 1e-6) / (counted + 1e-6)` (the epsilons as mmseg ≥ 0.24; they keep an image with only
 * ignored pixels finite).
 */
export function accuracy(logits: Tensor, label: Tensor, o: AccuracyOptions = {}): Tensor {
  return noGrad(() => {
    const k = o.topk ?? 1;
    const lab = toLabelMap(label);
    if (logits.ndim !== lab.ndim + 1 || logits.shape[0] !== lab.shape[0]) {
      throw new Error(`accuracy: scores [${logits.shape.join(', ')}] do not match labels [${lab.shape.join(', ')}]`);
    }
    if (!(Number.isInteger(k) && k >= 1 && k <= logits.shape[1]!)) throw new Error(`accuracy: topk ${k} out of range`);
    const { values, indices } = topk(logits, k, 1);
    let correct = indices.eq(lab.unsqueeze(1)); // N×k×H×W
    if (o.thresh !== undefined && o.thresh !== null) correct = correct.logicalAnd(values.gt(o.thresh));
    let hits = correct.sum(1).gt(0); // N×H×W
    let total = lab.numel();
    if (o.ignoreIndex !== undefined && o.ignoreIndex !== null) {
      const valid = lab.ne(o.ignoreIndex);
      hits = hits.logicalAnd(valid);
      total = valid.sum().item();
    }
    const n = hits.sum().item();
    return tensor([(100 * (n + 1e-6)) / (total + 1e-6)], { dtype: 'float32', device: logits.device, shape: [] });
  });
}

/**
 * mmseg 0.20.2's `accuracy(seg_logit, seg_label)` as `BaseDecodeHead.losses` logs it in `acc_seg`:
 * `100 · #(argmax == label) / (N·H·W)` evaluated as torch does in float32 (`correct.float().sum() * float32(100 / numel)`),
 * ignored pixels counted as wrong (mmseg added `ignore_index` to the accuracy in 0.22 and the epsilons later).
 */
export function accuracyMmseg020(logits: Tensor, label: Tensor): Tensor {
  return noGrad(() => {
    const lab = toLabelMap(label);
    if (logits.ndim !== lab.ndim + 1 || logits.shape[0] !== lab.shape[0]) {
      throw new Error(`accuracy: scores [${logits.shape.join(', ')}] do not match labels [${lab.shape.join(', ')}]`);
    }
    const { indices } = topk(logits, 1, 1);
    const count = indices.squeeze(1).eq(lab).sum().item();
    const v = Math.fround(Math.fround(count) * Math.fround(100 / lab.numel()));
    return tensor([v], { dtype: 'float32', device: logits.device, shape: [] });
  });
}

/** The loss terms and accuracy of a head. */
export interface HeadLosses {
  /** Sum of all weighted loss terms (what is back-propagated). */
  loss: Tensor;
  /** Each loss term by its `loss_name` (`loss_ce` by default), weighted by its `loss_weight`. */
  terms: Record<string, Tensor>;
  /** Pixel accuracy in percent over all label pixels, mmseg 0.20.2 (0-d float32, no gradient). */
  acc_seg: Tensor;
}

interface ParsedLoss {
  weight: number;
  name: string;
  classWeight: number[] | null;
  reduction: 'mean' | 'sum';
  avgNonIgnore: boolean;
}

function parseLoss(where: string, v: unknown, numClasses: number): ParsedLoss[] {
  if (v === undefined) return [{ weight: 1, name: 'loss_ce', classWeight: null, reduction: 'mean', avgNonIgnore: false }];
  const list = Array.isArray(v) ? v : [v];
  if (list.length === 0) throw new Error(`${where}: loss_decode is an empty list`);
  return list.map((c, i) => {
    const at = `${where}: loss_decode${Array.isArray(v) ? `[${i}]` : ''}`;
    if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new Error(`${at} must be a dict`);
    const d = c as ConfigDict;
    checkKeys(at, d, ['type', 'use_sigmoid', 'use_mask', 'reduction', 'class_weight', 'loss_weight', 'loss_name', 'avg_non_ignore']);
    if (d.type !== 'CrossEntropyLoss') {
      throw new Error(`${at}: loss type ${JSON.stringify(d.type)} is not supported; only CrossEntropyLoss (softmax)`);
    }
    if (d.use_sigmoid || d.use_mask) throw new Error(`${at}: use_sigmoid / use_mask are not supported (softmax cross entropy only)`);
    const reduction = d.reduction ?? 'mean';
    if (reduction !== 'mean' && reduction !== 'sum') throw new Error(`${at}: reduction must be mean or sum, got ${JSON.stringify(reduction)}`);
    const weight = d.loss_weight ?? 1;
    if (typeof weight !== 'number' || !Number.isFinite(weight)) throw new Error(`${at}: loss_weight must be a number`);
    const name = d.loss_name ?? 'loss_ce';
    if (typeof name !== 'string' || !name.startsWith('loss_')) throw new Error(`${at}: loss_name must be a string starting with loss_`);
    let classWeight: number[] | null = null;
    if (d.class_weight !== undefined && d.class_weight !== null) {
      if (!Array.isArray(d.class_weight) || d.class_weight.length !== numClasses || d.class_weight.some((x) => typeof x !== 'number')) {
        throw new Error(`${at}: class_weight must be a list of ${numClasses} numbers (a file path is not supported)`);
      }
      classWeight = [...(d.class_weight as number[])];
    }
    if (d.avg_non_ignore !== undefined && typeof d.avg_non_ignore !== 'boolean') throw new Error(`${at}: avg_non_ignore must be a boolean`);
    return { weight, name, classWeight, reduction, avgNonIgnore: d.avg_non_ignore === true };
  });
}

const FLOAT32_EPS = 1.1920928955078125e-7;

/** A channel count or class count: an integer in 1..MAX_WIDTH (the shared model-option check). */
const positiveInt = checkWidth;

/** mmseg's `BaseDecodeHead`. */
export abstract class DecodeHead extends Module {
  /** Input channels after the input transform: a number (single input, resize_concat) or a list (multiple_select). */
  readonly inChannels: number | number[];
  readonly channels: number;
  readonly numClasses: number;
  readonly dropoutRatio: number;
  readonly convCfg: ConvCfg | null;
  readonly normCfg: NormCfg | null;
  readonly actCfg: ActCfg | null;
  readonly inIndex: number | number[];
  readonly inputTransform: InputTransform;
  readonly ignoreIndex: number;
  readonly alignCorners: boolean;
  readonly conv_seg: Conv2d;
  private readonly lossCfgs: ParsedLoss[];

  /**
   * @param cfg the mmseg config (snake_case), without `type`
   * @param extraKeys the subclass's own config keys
   * @param forcedTransform the transform the subclass passes to mmseg's base class (UPerHead, FPNHead:
   *   `multiple_select`); `input_transform` in `cfg` is then an error, as in mmseg (a duplicate keyword)
   */
  protected constructor(readonly typeName: string, cfg: DecodeHeadConfig, extraKeys: readonly string[] = [],
    forcedTransform?: InputTransform) {
    super();
    const where = typeName;
    if (typeof cfg !== 'object' || cfg === null) throw new Error(`${where}: config must be a dict`);
    if (forcedTransform !== undefined && 'input_transform' in cfg) {
      throw new Error(`${where}: input_transform cannot be configured; ${where} always uses ${JSON.stringify(forcedTransform)} ` +
        '(mmseg passes it to the base class itself)');
    }
    checkKeys(where, cfg, [...BASE_HEAD_KEYS.filter((k) => forcedTransform === undefined || k !== 'input_transform'), ...extraKeys]);
    for (const k of ['in_channels', 'channels', 'num_classes'] as const) {
      if (cfg[k] === undefined) throw new Error(`${where}: ${k} is required`);
    }
    this.channels = positiveInt(where, 'channels', cfg.channels);
    this.numClasses = positiveInt(where, 'num_classes', cfg.num_classes);
    const dr = cfg.dropout_ratio ?? 0.1;
    if (typeof dr !== 'number' || !(dr >= 0 && dr <= 1)) throw new Error(`${where}: dropout_ratio must be in [0, 1], got ${JSON.stringify(dr)}`);
    this.dropoutRatio = dr;
    this.convCfg = parseConvCfg(where, cfg.conv_cfg);
    this.normCfg = parseNormCfg(where, cfg.norm_cfg);
    this.actCfg = parseActCfg(where, cfg.act_cfg);
    this.ignoreIndex = cfg.ignore_index ?? 255;
    if (!Number.isInteger(this.ignoreIndex)) throw new Error(`${where}: ignore_index must be an integer`);
    this.alignCorners = cfg.align_corners ?? false;
    if (typeof this.alignCorners !== 'boolean') throw new Error(`${where}: align_corners must be a boolean`);
    if (cfg.sampler !== undefined && cfg.sampler !== null) {
      throw new Error(`${where}: sampler ${JSON.stringify(cfg.sampler)} is not supported (pixel samplers such as OHEM are not implemented)`);
    }
    this.lossCfgs = parseLoss(where, cfg.loss_decode, this.numClasses);

    // mmseg BaseDecodeHead._init_inputs
    const transform = forcedTransform ?? cfg.input_transform ?? null;
    if (transform !== null && transform !== 'resize_concat' && transform !== 'multiple_select') {
      throw new Error(`${where}: input_transform must be null, resize_concat or multiple_select, got ${JSON.stringify(transform)}`);
    }
    this.inputTransform = transform;
    const inIndex = cfg.in_index ?? -1;
    if (transform !== null) {
      if (!Array.isArray(cfg.in_channels) || !Array.isArray(inIndex)) {
        throw new Error(`${where}: with input_transform ${transform}, in_channels and in_index must be lists`);
      }
      if (cfg.in_channels.length !== inIndex.length || inIndex.length === 0) {
        throw new Error(`${where}: in_channels (${cfg.in_channels.length}) and in_index (${inIndex.length}) must have the same non-zero length`);
      }
      cfg.in_channels.forEach((c, i) => positiveInt(where, `in_channels[${i}]`, c));
      inIndex.forEach((c) => { if (!Number.isInteger(c)) throw new Error(`${where}: in_index entries must be integers`); });
      this.inChannels = transform === 'resize_concat' ? cfg.in_channels.reduce((a, b) => a + b, 0) : [...cfg.in_channels];
      this.inIndex = [...inIndex];
    } else {
      if (typeof cfg.in_channels !== 'number' || typeof inIndex !== 'number') {
        throw new Error(`${where}: without input_transform, in_channels and in_index must be integers ` +
          `(got ${JSON.stringify(cfg.in_channels)}, ${JSON.stringify(inIndex)})`);
      }
      this.inChannels = positiveInt(where, 'in_channels', cfg.in_channels);
      if (!Number.isInteger(inIndex)) throw new Error(`${where}: in_index must be an integer`);
      this.inIndex = inIndex;
    }

    this.conv_seg = this.registerModule('conv_seg', new Conv2d(this.channels, this.numClasses, 1));
    // mmseg init_cfg: Normal(std=0.01) on conv_seg, bias 0
    normal_(this.conv_seg.weight, 0, 0.01);
    constant_(this.conv_seg.bias!, 0);
  }

  /** The input channels as a list (multiple_select heads). */
  protected inChannelList(): number[] {
    if (!Array.isArray(this.inChannels)) throw new Error(`${this.typeName}: expected a list of in_channels`);
    return this.inChannels;
  }

  /** The input channels as one number (single-input heads). */
  protected inChannelCount(): number {
    if (Array.isArray(this.inChannels)) throw new Error(`${this.typeName}: expected a single in_channels value`);
    return this.inChannels;
  }

  private pick(inputs: readonly Tensor[], i: number): Tensor {
    const t = inputs[i < 0 ? inputs.length + i : i];
    if (!t) throw new Error(`${this.typeName}: in_index ${i} out of range for ${inputs.length} input(s)`);
    return t;
  }

  /** mmseg `_transform_inputs`: one selected map, the selected maps, or the selected maps resized and concatenated. */
  transformInputs(inputs: readonly Tensor[]): Tensor | Tensor[] {
    if (!Array.isArray(inputs)) throw new Error(`${this.typeName}: expected a list of feature maps`);
    if (this.inputTransform === null) return this.pick(inputs, this.inIndex as number);
    const sel = (this.inIndex as number[]).map((i) => this.pick(inputs, i));
    if (this.inputTransform === 'multiple_select') return sel;
    const size = spatial(sel[0]!);
    return cat(sel.map((x) => resize(x, size, this.alignCorners)), 1);
  }

  /** Like {@link transformInputs} for heads that take one map. */
  protected singleInput(inputs: readonly Tensor[]): Tensor {
    const x = this.transformInputs(inputs);
    if (Array.isArray(x)) throw new Error(`${this.typeName}: expected a single input (input_transform ${this.inputTransform})`);
    return x;
  }

  /** Like {@link transformInputs} for heads that take several maps. */
  protected multipleInputs(inputs: readonly Tensor[]): Tensor[] {
    const x = this.transformInputs(inputs);
    if (!Array.isArray(x)) throw new Error(`${this.typeName}: expected several inputs`);
    return x;
  }

  /** mmseg `cls_seg`: Dropout2d (training only) then the 1×1 classifier `conv_seg`. */
  clsSeg(feat: Tensor): Tensor {
    return this.conv_seg.forward(dropout2d(feat, this.dropoutRatio, this.training));
  }

  /** Logits N×num_classes×h×w at the resolution of the head's output (e.g. stride 4 for UPerHead). */
  /** The feature map fed to `cls_seg` (reported to `capture` under head-specific names, ending with its own). */
  abstract features(inputs: readonly Tensor[], capture?: Capture): Tensor;

  /** Logits (`cls_seg` of {@link features}). Captures the features' intermediates, plus `logits`. */
  forward(inputs: readonly Tensor[], capture?: Capture): Tensor {
    const logits = this.clsSeg(this.features(inputs, capture));
    capture?.('logits', logits);
    return logits;
  }

  /**
   * mmseg `losses`: logits resized (bilinear, the head's align_corners) to the label size, then each configured
   * cross entropy (ignore_index, class weights, `loss_weight`), summed by `loss_name`; plus the pixel accuracy.
   * Reduction `mean` divides the summed per-pixel losses by the number of label pixels (mmseg 0.20 semantics, ignored
   * pixels included with loss 0), or by the number of non-ignored pixels with `avg_non_ignore: true`.
   * `acc_seg` is mmseg 0.20.2's ({@link accuracyMmseg020}): correct pixels over all label pixels, ignored ones
   * included (so they count as wrong), as the authors' logs show it.
   * @param label N×H×W (or N×1×H×W) integer class map, `ignore_index` where unlabeled
   */
  losses(logits: Tensor, label: Tensor): HeadLosses {
    const lab = toLabelMap(label);
    let lg = logits;
    if (lg.dtype !== 'float32' && lg.dtype !== 'float64') lg = lg.to('float32'); // mmseg force_fp32
    lg = resize(lg, [lab.shape[1]!, lab.shape[2]!], this.alignCorners);
    const terms: Record<string, Tensor> = {};
    for (const c of this.lossCfgs) {
      const weight = c.classWeight ? tensor(c.classWeight, { dtype: lg.dtype, device: lg.device }) : null;
      const perPixel = crossEntropy(lg, lab, { weight, ignoreIndex: this.ignoreIndex, reduction: 'none' });
      let value: Tensor;
      if (c.reduction === 'sum') {
        value = perPixel.sum();
      } else {
        // mmseg: the element count (ignored pixels included, loss 0 there), or with avg_non_ignore an avg_factor of
        // the non-ignored pixels, divided as sum / (avg_factor + float32 eps)
        value = c.avgNonIgnore
          ? perPixel.sum().div(noGrad(() => lab.ne(this.ignoreIndex).sum().item()) + FLOAT32_EPS)
          : perPixel.mean();
      }
      value = value.mul(c.weight);
      terms[c.name] = terms[c.name] ? terms[c.name]!.add(value) : value;
    }
    const names = Object.keys(terms);
    let loss = terms[names[0]!]!;
    for (const n of names.slice(1)) loss = loss.add(terms[n]!);
    return { loss, terms, acc_seg: accuracyMmseg020(lg, lab) };
  }

  /** mmseg `forward_train`: forward then {@link losses}. */
  forwardTrain(inputs: readonly Tensor[], label: Tensor): HeadLosses {
    return this.losses(this.forward(inputs), label);
  }
}
