/**
 * The Mask2Former decode head of the ViT-Adapter authors (`mmseg_custom/models/decode_heads/mask2former_head.py`,
 * mmdet's `Mask2FormerHead` on mmseg's `BaseDecodeHead`) for semantic segmentation:
 *
 * - the {@link MSDeformAttnPixelDecoder} gives the mask features (stride 4) and the multi-scale memory;
 * - `num_queries` learned queries (`query_feat`, with positions `query_embed`) run through the masked-attention
 *   transformer decoder: layer i cross-attends to memory level `i % num_transformer_feat_level` (tokens plus
 *   `level_embed`, keys plus the sine position), masked where the previous stage's mask, resized to that level,
 *   has sigmoid < 0.5 (a query whose mask is empty everywhere attends everywhere), then self-attention, then FFN;
 * - every stage (the initial queries and each layer's output) predicts class logits (`cls_embed`,
 *   num_classes + 1 with "no object" last) and mask logits (`mask_embed` MLP · mask features), after the decoder's
 *   `post_norm`;
 * - semantic inference (`forward_test`): `softmax(cls)[..., :-1]` × `sigmoid(mask)`, summed over queries →
 *   B×num_classes×H/4×W/4.
 *
 * Keys: `pixel_decoder.*`, `transformer_decoder.layers.{i}.*`, `transformer_decoder.post_norm.*`,
 * (`decoder_input_projs.{l}.*` only when projecting), `query_embed.weight`, `query_feat.weight`, `level_embed.weight`,
 * `cls_embed.*`, `mask_embed.{0,2,4}.*`. There is no `conv_seg` (the authors' head sets it to None).
 *
 * Training (Hungarian matching, point-sampled mask and dice losses) is not implemented: {@link forwardTrain} throws.
 */
import { type Tensor, interpolate, scope, softmax } from '../../../engine/index.js';
import { Conv2d, Embedding, Identity, Linear, Module, ModuleList, ReLU, Sequential } from '../../../nn/index.js';
import { type ConfigDict, checkKeys } from '../conv-module.js';
import type { Capture, HeadLosses } from '../decode-head.js';
import { type MSDeformAttnPixelDecoderCfg, MSDeformAttnPixelDecoder } from './pixel-decoder.js';
import { type SineEncoding, type SinePositionalEncodingCfg, parseSineEncoding, sinePositionalEncoding } from './positional-encoding.js';
import { type TransformerSequenceCfg, MultiheadAttention, TransformerLayerSequence, caffe2XavierInit, posInt } from './transformer.js';

/** The Mask2FormerHead config (the authors' keys; `type: 'Mask2FormerHead'` is removed by `buildHead`). */
export interface Mask2FormerHeadConfig {
  in_channels: number[];
  feat_channels: number;
  out_channels: number;
  /** Which backbone maps the head takes (a list; mmseg's multiple_select). */
  in_index: number[];
  num_things_classes: number;
  num_stuff_classes: number;
  num_queries?: number;
  num_transformer_feat_level?: number;
  pixel_decoder: Omit<MSDeformAttnPixelDecoderCfg, 'in_channels' | 'feat_channels' | 'out_channels'> & Partial<MSDeformAttnPixelDecoderCfg>;
  enforce_decoder_input_project?: boolean;
  transformer_decoder: TransformerSequenceCfg;
  positional_encoding: SinePositionalEncodingCfg;
  /** Training losses: accepted (they configure the matching losses, which are not implemented). */
  loss_cls?: ConfigDict;
  loss_mask?: ConfigDict;
  loss_dice?: ConfigDict;
  train_cfg?: ConfigDict | null;
  /** The segmentor's test_cfg, passed to the head by the authors' `EncoderDecoderMask2Former`; unused here. */
  test_cfg?: ConfigDict | null;
  init_cfg?: unknown;
  /** mmseg `BaseDecodeHead` keys that apply: */
  align_corners?: boolean;
  ignore_index?: number;
}

/** Config keys of {@link Mask2FormerHeadConfig}. */
export const MASK2FORMER_HEAD_KEYS: readonly string[] = [
  'in_channels', 'feat_channels', 'out_channels', 'in_index', 'num_things_classes', 'num_stuff_classes', 'num_queries',
  'num_transformer_feat_level', 'pixel_decoder', 'enforce_decoder_input_project', 'transformer_decoder',
  'positional_encoding', 'loss_cls', 'loss_mask', 'loss_dice', 'train_cfg', 'test_cfg', 'init_cfg', 'align_corners',
  'ignore_index',
];

/** Per-stage predictions of {@link Mask2FormerHead.predictions}. */
export interface Mask2FormerPredictions {
  /** B×Q×(num_classes + 1) class logits per stage (stage 0 = the learned queries, stage i + 1 = after layer i). */
  clsPreds: Tensor[];
  /** B×Q×h×w mask logits per stage, at the mask features' resolution (stride 4). */
  maskPreds: Tensor[];
}

function nonNegInt(where: string, name: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) < 0) throw new Error(`${where}: ${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v as number;
}

/** The authors' `Mask2FormerHead` (semantic segmentation inference). */
export class Mask2FormerHead extends Module {
  readonly typeName = 'Mask2FormerHead';
  readonly pixel_decoder: MSDeformAttnPixelDecoder;
  readonly transformer_decoder: TransformerLayerSequence;
  readonly decoder_input_projs: ModuleList<Conv2d | Identity>;
  readonly query_embed: Embedding;
  readonly query_feat: Embedding;
  readonly level_embed: Embedding;
  readonly cls_embed: Linear;
  readonly mask_embed: Sequential;
  readonly numClasses: number;
  readonly numQueries: number;
  readonly numFeatLevels: number;
  readonly inIndex: number[];
  readonly alignCorners: boolean;
  readonly ignoreIndex: number;
  readonly position: SineEncoding;

  constructor(cfg: Mask2FormerHeadConfig) {
    super();
    const where = 'Mask2FormerHead';
    if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new Error(`${where}: config must be a dict`);
    checkKeys(where, cfg, MASK2FORMER_HEAD_KEYS);
    for (const k of ['in_channels', 'feat_channels', 'out_channels', 'in_index', 'num_things_classes', 'num_stuff_classes',
      'pixel_decoder', 'transformer_decoder', 'positional_encoding'] as const) {
      if (cfg[k] === undefined) throw new Error(`${where}: ${k} is required`);
    }
    if (!Array.isArray(cfg.in_channels) || !Array.isArray(cfg.in_index) || cfg.in_channels.length !== cfg.in_index.length || cfg.in_index.length === 0) {
      throw new Error(`${where}: in_channels and in_index must be lists of the same non-zero length (mmseg multiple_select)`);
    }
    cfg.in_index.forEach((i) => { if (!Number.isInteger(i)) throw new Error(`${where}: in_index entries must be integers`); });
    this.inIndex = [...cfg.in_index];
    const F = posInt(where, 'feat_channels', cfg.feat_channels);
    const O = posInt(where, 'out_channels', cfg.out_channels);
    this.numClasses = nonNegInt(where, 'num_things_classes', cfg.num_things_classes) + nonNegInt(where, 'num_stuff_classes', cfg.num_stuff_classes);
    if (this.numClasses < 1) throw new Error(`${where}: num_things_classes + num_stuff_classes must be at least 1`);
    this.numQueries = posInt(where, 'num_queries', cfg.num_queries ?? 100);
    this.numFeatLevels = posInt(where, 'num_transformer_feat_level', cfg.num_transformer_feat_level ?? 3);
    this.alignCorners = cfg.align_corners ?? false;
    if (typeof this.alignCorners !== 'boolean') throw new Error(`${where}: align_corners must be a boolean`);
    this.ignoreIndex = cfg.ignore_index ?? 255;
    if (!Number.isInteger(this.ignoreIndex)) throw new Error(`${where}: ignore_index must be an integer`);
    const enforce = cfg.enforce_decoder_input_project ?? false;
    if (typeof enforce !== 'boolean') throw new Error(`${where}: enforce_decoder_input_project must be a boolean`);
    if (typeof cfg.pixel_decoder !== 'object' || cfg.pixel_decoder === null) throw new Error(`${where}: pixel_decoder must be a dict`);

    // as the authors' head: the pixel decoder gets the head's channel settings
    this.pixel_decoder = this.registerModule('pixel_decoder', new MSDeformAttnPixelDecoder({
      ...cfg.pixel_decoder, in_channels: [...cfg.in_channels], feat_channels: F, out_channels: O,
    } as MSDeformAttnPixelDecoderCfg));
    if (this.numFeatLevels > this.pixel_decoder.numOuts) {
      throw new Error(`${where}: num_transformer_feat_level ${this.numFeatLevels} exceeds the pixel decoder's num_outs ${this.pixel_decoder.numOuts}`);
    }
    this.transformer_decoder = this.registerModule('transformer_decoder', new TransformerLayerSequence(where, cfg.transformer_decoder, 'decoder'));
    if (!this.transformer_decoder.post_norm) throw new Error(`${where}: transformer_decoder needs its post_norm (post_norm_cfg LN)`);
    const layer0 = this.transformer_decoder.layers.at(0);
    const D = (layer0.attentions.at(0) as MultiheadAttention).attn.embedDim;
    if (D !== F) throw new Error(`${where}: the decoder's embed_dims (${D}) must equal feat_channels (${F})`);
    for (const layer of this.transformer_decoder.layers) {
      const kinds = layer.order.filter((o) => o === 'self_attn' || o === 'cross_attn');
      if (kinds[0] !== 'cross_attn') throw new Error(`${where}: decoder layers must start with cross_attn (the masked attention); got ${layer.order.join(', ')}`);
    }
    const projs: (Conv2d | Identity)[] = [];
    for (let l = 0; l < this.numFeatLevels; l++) projs.push(D !== F || enforce ? new Conv2d(F, D, 1) : new Identity());
    this.decoder_input_projs = this.registerModule('decoder_input_projs', new ModuleList(projs));
    this.position = parseSineEncoding(where, cfg.positional_encoding);
    if (this.position.numFeats * 2 !== D) {
      throw new Error(`${where}: positional_encoding.num_feats (${this.position.numFeats}) must be half the decoder width (${D})`);
    }
    this.query_embed = this.registerModule('query_embed', new Embedding(this.numQueries, F));
    this.query_feat = this.registerModule('query_feat', new Embedding(this.numQueries, F));
    this.level_embed = this.registerModule('level_embed', new Embedding(this.numFeatLevels, F));
    this.cls_embed = this.registerModule('cls_embed', new Linear(F, this.numClasses + 1));
    this.mask_embed = this.registerModule('mask_embed', new Sequential(
      new Linear(F, F), new ReLU(), new Linear(F, F), new ReLU(), new Linear(F, O)));
    this.initWeights();
  }

  /** The authors' init: caffe2-xavier input projections, the pixel decoder's init, xavier-normal decoder matrices. */
  initWeights(): void {
    for (const p of this.decoder_input_projs) if (p instanceof Conv2d) caffe2XavierInit(p.weight, p.bias);
    this.pixel_decoder.initWeights();
    this.transformer_decoder.xavierNormalMatrices();
  }

  /** mmseg multiple_select: the maps at `in_index`. */
  private selectInputs(inputs: readonly Tensor[]): Tensor[] {
    if (!Array.isArray(inputs)) throw new Error('Mask2FormerHead: expected a list of feature maps');
    return this.inIndex.map((i) => {
      const t = inputs[i < 0 ? inputs.length + i : i];
      if (!t) throw new Error(`Mask2FormerHead: in_index ${i} out of range for ${inputs.length} input(s)`);
      return t;
    });
  }

  /**
   * `forward_head`: post-norm, class logits, mask logits, and the attention mask for the next layer at `size`
   * (true = blocked: sigmoid < 0.5 of the bilinearly resized mask logits), B×Q×(h·w).
   */
  private predict(x: Tensor, maskFeatures: Tensor, size: [number, number], stage: number, capture?: Capture):
    { cls: Tensor; mask: Tensor; blocked: Tensor } {
    return scope(() => this.runPredict(x, maskFeatures, size, stage, capture));
  }

  private runPredict(x: Tensor, maskFeatures: Tensor, size: [number, number], stage: number, capture?: Capture):
    { cls: Tensor; mask: Tensor; blocked: Tensor } {
    const z = this.transformer_decoder.post_norm!.forward(x);
    const cls = this.cls_embed.forward(z);
    const e = this.mask_embed.forward(z); // B×Q×O
    const [B, O, h, w] = maskFeatures.shape as [number, number, number, number];
    const mask = e.matmul(maskFeatures.reshape(B, O, h * w)).view(B, -1, h, w); // einsum bqc,bchw->bqhw
    const resized = interpolate(mask, { size, mode: 'bilinear', alignCorners: false });
    capture?.(`attn_mask_logits.${stage}`, resized);
    const blocked = resized.sigmoid().lt(0.5).flatten(2).detach();
    return { cls, mask, blocked };
  }

  /**
   * The authors' `forward`: every stage's class and mask logits. Captures the pixel decoder's intermediates,
   * `decoder.pos.{l}`, `decoder.input.{l}`, `cls_pred.{k}`, `mask_pred.{k}`, `attn_mask_logits.{i}`, `attn_mask.{i}`
   * (float, 1 = blocked), `decoder.layers.{i}.cross_attn` and `decoder.layers.{i}.query`.
   */
  predictions(inputs: readonly Tensor[], capture?: Capture): Mask2FormerPredictions {
    return scope(() => {
      const feats = this.selectInputs(inputs);
      const { maskFeatures, multiScale } = this.pixel_decoder.forward(feats, capture);
      const B = maskFeatures.shape[0]!;
      const device = maskFeatures.device;
      const dtype = maskFeatures.dtype;
      const kv: Tensor[] = [];
      const kpos: Tensor[] = [];
      const sizes: [number, number][] = [];
      for (let l = 0; l < this.numFeatLevels; l++) {
        const m = this.decoder_input_projs.at(l).forward(multiScale[l]!);
        const [h, w] = [m.shape[2]!, m.shape[3]!];
        const pos = sinePositionalEncoding(this.position, h, w, { device }).to(dtype).expand(B, -1, h, w);
        capture?.(`decoder.pos.${l}`, pos);
        const tokens = m.flatten(2).transpose(1, 2).add(this.level_embed.weight.select(0, l).view(1, 1, -1));
        capture?.(`decoder.input.${l}`, tokens);
        kv.push(tokens);
        kpos.push(pos.flatten(2).transpose(1, 2));
        sizes.push([h, w]);
      }
      const Q = this.numQueries;
      let x = this.query_feat.weight.unsqueeze(0).expand(B, Q, -1);
      const qpos = this.query_embed.weight.unsqueeze(0).expand(B, Q, -1);
      const clsPreds: Tensor[] = [];
      const maskPreds: Tensor[] = [];
      let p = this.predict(x, maskFeatures, sizes[0]!, 0, capture);
      clsPreds.push(p.cls);
      maskPreds.push(p.mask);
      capture?.('cls_pred.0', p.cls);
      capture?.('mask_pred.0', p.mask);
      this.transformer_decoder.layers.slice(0).forEach((layer, i) => {
        const lvl = i % this.numFeatLevels;
        // a query whose mask blocks every position attends to all of them
        const blocked = scope(() => p.blocked.logicalAnd(p.blocked.sum(-1, true).eq(p.blocked.shape[2]!).logicalNot()));
        p.blocked.dispose();
        if (capture) capture(`attn_mask.${i}`, blocked.to(dtype));
        x = layer.forward(x, { queryPos: qpos, key: kv[lvl]!, value: kv[lvl]!, keyPos: kpos[lvl]!, blocked: [blocked, null] },
          capture, `decoder.layers.${i}`);
        blocked.dispose();
        capture?.(`decoder.layers.${i}.query`, x);
        p = this.predict(x, maskFeatures, sizes[(i + 1) % this.numFeatLevels]!, i + 1, capture);
        clsPreds.push(p.cls);
        maskPreds.push(p.mask);
        capture?.(`cls_pred.${i + 1}`, p.cls);
        capture?.(`mask_pred.${i + 1}`, p.mask);
      });
      return { clsPreds, maskPreds };
    });
  }

  /**
   * Semantic inference (the authors' `forward_test`): `softmax(cls)` without the no-object column × `sigmoid(mask)`,
   * summed over the queries, from the last stage → B×num_classes×h×w at the mask features' resolution (stride 4).
   * Captures `seg_mask` and everything {@link predictions} captures.
   */
  forward(inputs: readonly Tensor[], capture?: Capture): Tensor {
    return scope(() => {
      const { clsPreds, maskPreds } = this.predictions(inputs, capture);
      const cls = clsPreds[clsPreds.length - 1]!;
      const mask = maskPreds[maskPreds.length - 1]!;
      const K = this.numClasses;
      const probs = softmax(cls, -1).narrow(2, 0, K); // B×Q×K
      const [B, Q, h, w] = mask.shape as [number, number, number, number];
      const seg = probs.transpose(1, 2).matmul(mask.sigmoid().reshape(B, Q, h * w)).view(B, K, h, w); // einsum bqc,bqhw->bchw
      capture?.('seg_mask', seg);
      return seg;
    });
  }

  /** Not implemented: throws (training Mask2Former needs the matching losses). */
  forwardTrain(_inputs: readonly Tensor[], _label: Tensor): HeadLosses {
    throw new Error('Mask2FormerHead.forwardTrain: not implemented yet: training Mask2Former needs the matching losses ' +
      '(Hungarian matching, point-sampled mask and dice losses; left for a later issue, see issue 11)');
  }
}
