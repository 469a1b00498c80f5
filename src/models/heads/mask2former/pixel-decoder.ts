/**
 * mmdet's `MSDeformAttnPixelDecoder` (Mask2Former's pixel decoder, as in the authors' `msdeformattn_pixel_decoder.py`):
 *
 * 1. the `num_levels` lowest-resolution inputs (the encoder levels, from low to high resolution) go through
 *    `input_convs` (1×1 conv with bias → GroupNorm); their positions are the sine encoding plus `level_encoding`;
 * 2. the flattened, concatenated tokens run through the deformable-attention encoder (reference points at the pixel
 *    centres, `((j + 0.5) / w, (i + 0.5) / h)`, shared by all levels);
 * 3. the memory is split back into levels (the multi-scale outputs), and an FPN top-down path (`lateral_convs`,
 *    `output_convs`) brings the highest-resolution encoder level to each remaining input (stride 4 in the configs);
 *    `mask_feature` (a 1×1 conv) projects the last one.
 *
 * Keys: `input_convs.{l}.{conv,gn}.*`, `encoder.layers.{j}.*`, `level_encoding.weight`, `lateral_convs.{i}.*`,
 * `output_convs.{i}.*`, `mask_feature.*`.
 */
import { type Tensor, arange, cat, scope, stack } from '../../../engine/index.js';
import { Conv2d, Embedding, Module, ModuleList } from '../../../nn/index.js';
import { constant_, normal_, xavierUniform_ } from '../../../nn/init.js';
import type { SpatialShapes } from '../../adapter/deformable-attention.js';
import { type ActCfg, type ConfigDict, ConvModule, type NormCfg, checkKeys, parseActCfg, parseNormCfg } from '../conv-module.js';
import { type Capture, resize } from '../decode-head.js';
import { type SineEncoding, type SinePositionalEncodingCfg, parseSineEncoding, sinePositionalEncoding } from './positional-encoding.js';
import {
  MultiScaleDeformableAttention, type TransformerSequenceCfg, TransformerLayerSequence, caffe2XavierInit, posInt,
} from './transformer.js';

/** `pixel_decoder` config (in_channels / feat_channels / out_channels are filled in by the head, as mmdet). */
export interface MSDeformAttnPixelDecoderCfg {
  type: 'MSDeformAttnPixelDecoder';
  in_channels: number[];
  strides?: number[];
  feat_channels: number;
  out_channels: number;
  num_outs?: number;
  norm_cfg?: NormCfg;
  act_cfg?: ActCfg;
  encoder: TransformerSequenceCfg;
  positional_encoding: SinePositionalEncodingCfg;
  init_cfg?: unknown;
}

/** Config keys of {@link MSDeformAttnPixelDecoderCfg}. */
export const PIXEL_DECODER_KEYS: readonly string[] = [
  'type', 'in_channels', 'strides', 'feat_channels', 'out_channels', 'num_outs', 'norm_cfg', 'act_cfg', 'encoder',
  'positional_encoding', 'init_cfg',
];

/** What the pixel decoder returns. */
export interface PixelDecoderOutput {
  /** `mask_feature` of the highest-resolution level: B×out_channels×H/4×W/4 in the configs. */
  maskFeatures: Tensor;
  /** The first `num_outs` multi-scale outputs, from low to high resolution (the encoder levels first). */
  multiScale: Tensor[];
}

/** Normalised pixel-centre reference points of each level, concatenated: S×2 (x, y). */
export function levelReferencePoints(shapes: SpatialShapes, strides: readonly number[], device = 'cpu'): Tensor {
  return scope(() => {
    const parts: Tensor[] = [];
    shapes.forEach(([h, w], l) => {
      // mmdet's MlvlPointGenerator: ((j + 0.5) · stride) / (w · stride)
      const s = strides[l]!;
      const f32 = { dtype: 'float32' as const, device };
      const xs = arange(0, w, 1, f32).add(0.5).mul(s).div(w * s);
      const ys = arange(0, h, 1, f32).add(0.5).mul(s).div(h * s);
      parts.push(stack([xs.view(1, w).expand(h, w).reshape(-1), ys.view(h, 1).expand(h, w).reshape(-1)], -1));
    });
    return cat(parts, 0);
  });
}

/** mmdet `MSDeformAttnPixelDecoder`. */
export class MSDeformAttnPixelDecoder extends Module {
  readonly input_convs: ModuleList<ConvModule>;
  readonly encoder: TransformerLayerSequence;
  readonly level_encoding: Embedding;
  readonly lateral_convs: ModuleList<ConvModule>;
  readonly output_convs: ModuleList<ConvModule>;
  readonly mask_feature: Conv2d;
  readonly numInputLevels: number;
  readonly numEncoderLevels: number;
  readonly numOuts: number;
  readonly strides: number[];
  readonly position: SineEncoding;

  constructor(cfg: MSDeformAttnPixelDecoderCfg) {
    super();
    const where = 'MSDeformAttnPixelDecoder';
    if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new Error(`${where}: config must be a dict`);
    checkKeys(where, cfg, PIXEL_DECODER_KEYS);
    if (cfg.type !== undefined && cfg.type !== 'MSDeformAttnPixelDecoder') {
      throw new Error(`${where}: pixel_decoder type ${JSON.stringify(cfg.type)} is not supported; only MSDeformAttnPixelDecoder`);
    }
    if (!Array.isArray(cfg.in_channels) || cfg.in_channels.length === 0) throw new Error(`${where}: in_channels must be a non-empty list`);
    const inCh = cfg.in_channels.map((c, i) => posInt(where, `in_channels[${i}]`, c));
    this.numInputLevels = inCh.length;
    this.strides = [...(cfg.strides ?? [4, 8, 16, 32])];
    if (this.strides.length !== this.numInputLevels) {
      throw new Error(`${where}: strides (${this.strides.length}) and in_channels (${this.numInputLevels}) must have the same length`);
    }
    this.strides.forEach((s, i) => posInt(where, `strides[${i}]`, s));
    const F = posInt(where, 'feat_channels', cfg.feat_channels);
    const O = posInt(where, 'out_channels', cfg.out_channels);
    const norm = parseNormCfg(where, cfg.norm_cfg === undefined ? { type: 'GN', num_groups: 32 } : cfg.norm_cfg);
    const act = parseActCfg(where, cfg.act_cfg);
    this.position = parseSineEncoding(where, cfg.positional_encoding);
    if (this.position.numFeats * 2 !== F) {
      throw new Error(`${where}: positional_encoding.num_feats (${this.position.numFeats}) must be feat_channels / 2 (${F / 2})`);
    }
    // the number of encoder levels is the deformable attention's num_levels (mmdet reads it from the config)
    const attn = (cfg.encoder as { transformerlayers?: { attn_cfgs?: ConfigDict | ConfigDict[] } } | undefined)?.transformerlayers?.attn_cfgs;
    const first = Array.isArray(attn) ? attn[0] : attn;
    const L = posInt(where, 'encoder attn_cfgs.num_levels', first?.num_levels);
    if (L > this.numInputLevels) throw new Error(`${where}: num_levels ${L} exceeds the ${this.numInputLevels} inputs`);
    this.numEncoderLevels = L;
    this.numOuts = cfg.num_outs ?? 3;
    posInt(where, 'num_outs', this.numOuts);
    if (this.numOuts > this.numInputLevels) throw new Error(`${where}: num_outs ${this.numOuts} exceeds the ${this.numInputLevels} inputs`);

    const inputConvs: ConvModule[] = [];
    for (let i = 0; i < L; i++) {
      const level = this.numInputLevels - i - 1;
      inputConvs.push(new ConvModule(inCh[level]!, F, { kernelSize: 1, norm, act: null, bias: true }));
    }
    this.input_convs = this.registerModule('input_convs', new ModuleList(inputConvs));
    this.encoder = this.registerModule('encoder', new TransformerLayerSequence(where, cfg.encoder, 'encoder'));
    for (const layer of this.encoder.layers) {
      const a = layer.attentions.at(0) as MultiScaleDeformableAttention;
      if (a.dModel !== F) throw new Error(`${where}: encoder embed_dims ${a.dModel} must equal feat_channels ${F}`);
      if (a.nLevels !== L) throw new Error(`${where}: every encoder layer must use num_levels ${L}`);
    }
    this.level_encoding = this.registerModule('level_encoding', new Embedding(L, F));
    const useBias = norm === null;
    const lateral: ConvModule[] = [];
    const output: ConvModule[] = [];
    // mmdet appends for input levels i = n − L − 1 down to 0, and its forward indexes the lists by i (the same
    // entry when one level remains, as in every config); both kept as they are for checkpoint compatibility
    for (let i = this.numInputLevels - L - 1; i >= 0; i--) {
      lateral.push(new ConvModule(inCh[i]!, F, { kernelSize: 1, bias: useBias, norm, act: null }));
      output.push(new ConvModule(F, F, { kernelSize: 3, padding: 1, bias: useBias, norm, act }));
    }
    this.lateral_convs = this.registerModule('lateral_convs', new ModuleList(lateral));
    this.output_convs = this.registerModule('output_convs', new ModuleList(output));
    this.mask_feature = this.registerModule('mask_feature', new Conv2d(F, O, 1));
    this.initWeights();
  }

  /** mmdet's init: xavier-uniform input convs, caffe2-xavier lateral/output/mask convs, N(0,1) level encoding, xavier-normal encoder matrices, then the deformable attention's own init. */
  initWeights(): void {
    for (const c of this.input_convs) {
      xavierUniform_(c.conv.weight);
      if (c.conv.bias) constant_(c.conv.bias, 0);
    }
    for (const c of [...this.lateral_convs, ...this.output_convs]) caffe2XavierInit(c.conv.weight, c.conv.bias);
    caffe2XavierInit(this.mask_feature.weight, this.mask_feature.bias);
    normal_(this.level_encoding.weight, 0, 1);
    this.encoder.xavierNormalMatrices();
    for (const layer of this.encoder.layers) for (const a of layer.attentions) (a as MultiScaleDeformableAttention).resetParameters();
  }

  /**
   * @param feats the backbone maps from high to low resolution (strides 4, 8, 16, 32)
   * Captures `pixel_decoder.input_convs.{l}`, `pixel_decoder.level_pos.{l}`, `pixel_decoder.reference_points`,
   * `pixel_decoder.encoder.layers.{j}[.self_attn]`, `ms_memory.{l}`, `pixel_decoder.lateral_convs.{i}`,
   * `pixel_decoder.output_convs.{i}`, `mask_features`.
   */
  forward(feats: readonly Tensor[], capture?: Capture): PixelDecoderOutput {
    if (feats.length !== this.numInputLevels) {
      throw new Error(`MSDeformAttnPixelDecoder: expected ${this.numInputLevels} feature maps, got ${feats.length}`);
    }
    const B = feats[0]!.shape[0]!;
    const L = this.numEncoderLevels;
    const device = feats[0]!.device;
    const dtype = feats[0]!.dtype;
    const tokens: Tensor[] = [];
    const positions: Tensor[] = [];
    const shapes: [number, number][] = [];
    const strides: number[] = [];
    for (let i = 0; i < L; i++) {
      const level = this.numInputLevels - i - 1;
      const feat = feats[level]!;
      if (feat.ndim !== 4 || feat.shape[0] !== B) {
        throw new Error(`MSDeformAttnPixelDecoder: input ${level} must be ${B}×C×h×w, got [${feat.shape.join(', ')}]`);
      }
      const [h, w] = [feat.shape[2]!, feat.shape[3]!];
      const x = this.input_convs.at(i).forward(feat);
      capture?.(`pixel_decoder.input_convs.${i}`, x);
      const pos = sinePositionalEncoding(this.position, h, w, { device })
        .to(dtype).add(this.level_encoding.weight.select(0, i).view(1, -1, 1, 1)).expand(B, -1, h, w);
      capture?.(`pixel_decoder.level_pos.${i}`, pos);
      tokens.push(x.flatten(2).transpose(1, 2));
      positions.push(pos.flatten(2).transpose(1, 2));
      shapes.push([h, w]);
      strides.push(this.strides[level]!);
    }
    const query = cat(tokens, 1); // B×S×F
    const queryPos = cat(positions, 1);
    const levelStart: number[] = [];
    let acc = 0;
    for (const [h, w] of shapes) {
      levelStart.push(acc);
      acc += h * w;
    }
    const ref = levelReferencePoints(shapes, strides, device).to(dtype);
    capture?.('pixel_decoder.reference_points', ref);
    const geometry = { referencePoints: ref.view(1, -1, 1, 2), spatialShapes: shapes, levelStart };
    let memory = query;
    this.encoder.layers.slice(0).forEach((layer, j) => {
      memory = layer.forward(memory, { queryPos, geometry }, capture, `pixel_decoder.encoder.layers.${j}`);
      capture?.(`pixel_decoder.encoder.layers.${j}`, memory);
    });
    // split back into levels: B×F×h×w each
    const outs: Tensor[] = memory.transpose(1, 2).split(shapes.map(([h, w]) => h * w), 2)
      .map((t, l) => t.reshape(B, -1, shapes[l]![0], shapes[l]![1]));
    outs.forEach((t, l) => capture?.(`ms_memory.${l}`, t));
    for (let i = this.numInputLevels - L - 1; i >= 0; i--) {
      const cur = this.lateral_convs.at(i).forward(feats[i]!);
      capture?.(`pixel_decoder.lateral_convs.${i}`, cur);
      const y = this.output_convs.at(i).forward(cur.add(resize(outs[outs.length - 1]!, [cur.shape[2]!, cur.shape[3]!], false)));
      capture?.(`pixel_decoder.output_convs.${i}`, y);
      outs.push(y);
    }
    const maskFeatures = this.mask_feature.forward(outs[outs.length - 1]!);
    capture?.('mask_features', maskFeatures);
    return { maskFeatures, multiScale: outs.slice(0, this.numOuts) };
  }
}
