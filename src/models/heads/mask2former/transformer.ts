/**
 * The transformer building blocks of the authors' Mask2Former head (mmcv 1.4.2 `cnn/bricks/transformer.py` and
 * ViT-Adapter's `transformer.py`), with their state-dict names:
 *
 * - {@link FFN}: `layers.0.0` (Linear → ReLU → Dropout), ..., `layers.{n-1}` (Linear) → Dropout, plus the identity;
 * - {@link MultiheadAttention}: mmcv's wrapper around `torch.nn.MultiheadAttention` (`attn.in_proj_weight`,
 *   `attn.in_proj_bias`, `attn.out_proj.*`): positions added to query and key, residual added to the output;
 * - {@link MultiScaleDeformableAttention}: mmcv's deformable attention (`sampling_offsets`, `attention_weights`,
 *   `value_proj`, `output_proj`) on our {@link MSDeformAttn} (the same operator and initialisation);
 * - {@link TransformerLayer}: `BaseTransformerLayer` / `DetrTransformerDecoderLayer` running an `operation_order`
 *   of `self_attn`, `cross_attn`, `norm`, `ffn` (`attentions.{i}`, `ffns.{i}`, `norms.{i}`);
 * - {@link TransformerLayerSequence}: `DetrTransformerEncoder` / `DetrTransformerDecoder` (`layers.{i}`, and the
 *   decoder's `post_norm`).
 *
 * Tensors are batch-first here (B×L×C); the authors' code holds them sequence-first, which changes no value.
 */
import {
  type Tensor, dropout, linear, scaledDotProductAttention, scope, softmax,
} from '../../../engine/index.js';
import { Dropout, LayerNorm, Linear, Module, ModuleList, ReLU, Sequential, type UnaryModule } from '../../../nn/index.js';
import { constant_, fans, normal_, uniform_ } from '../../../nn/init.js';
import { MSDeformAttn, type SpatialShapes } from '../../adapter/deformable-attention.js';
import type { Capture } from '../decode-head.js';
import { type ConfigDict, checkKeys, parseActCfg } from '../conv-module.js';

function isDict(v: unknown): v is ConfigDict {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

/** A positive integer config value. */
export function posInt(where: string, name: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) < 1) throw new Error(`${where}: ${name} must be a positive integer, got ${describe(v)}`);
  return v as number;
}

/** A probability config value (default `d`). */
export function prob(where: string, name: string, v: unknown, d = 0): number {
  const x = v ?? d;
  if (typeof x !== 'number' || !(x >= 0 && x <= 1)) throw new Error(`${where}: ${name} must be in [0, 1], got ${describe(x)}`);
  return x;
}

/** PyTorch's `xavier_normal_` (gain 1). */
export function xavierNormal_(t: Tensor): Tensor {
  const { fanIn, fanOut } = fans(t);
  return normal_(t, 0, Math.sqrt(2 / (fanIn + fanOut)));
}

/** mmcv's `caffe2_xavier_init` (Kaiming-uniform, a = 1, fan_in) with zero bias. */
export function caffe2XavierInit(weight: Tensor, bias: Tensor | null): void {
  const { fanIn } = fans(weight);
  const bound = Math.sqrt(3 / fanIn); // gain sqrt(2 / (1 + a²)) = 1, bound = gain·sqrt(3 / fan_in)
  uniform_(weight, -bound, bound);
  if (bias) constant_(bias, 0);
}

// ---- FFN --------------------------------------------------------------------------------------------------------

/** mmcv `ffn_cfgs`. */
export interface FFNCfg {
  type?: 'FFN';
  embed_dims: number;
  feedforward_channels: number;
  num_fcs?: number;
  act_cfg?: { type: 'ReLU'; inplace?: boolean };
  ffn_drop?: number;
  /** Only null (no DropPath on the FFN branch). */
  dropout_layer?: null;
  add_identity?: boolean;
  /** Activation checkpointing in the authors' training; no effect on results. */
  with_cp?: boolean;
  init_cfg?: unknown;
}

/** mmcv `FFN`: `num_fcs` Linear layers with ReLU between, dropout, plus the identity. */
export class FFN extends Module {
  readonly layers: Sequential;
  readonly addIdentity: boolean;

  constructor(where: string, cfg: FFNCfg) {
    super();
    if (!isDict(cfg)) throw new Error(`${where}: ffn_cfgs must be a dict`);
    checkKeys(`${where}: ffn_cfgs`, cfg, ['type', 'embed_dims', 'feedforward_channels', 'num_fcs', 'act_cfg', 'ffn_drop',
      'dropout_layer', 'add_identity', 'with_cp', 'init_cfg']);
    if (cfg.type !== undefined && cfg.type !== 'FFN') throw new Error(`${where}: ffn type ${describe(cfg.type)} is not supported; only FFN`);
    const C = posInt(where, 'ffn_cfgs.embed_dims', cfg.embed_dims);
    const F = posInt(where, 'ffn_cfgs.feedforward_channels', cfg.feedforward_channels);
    const n = cfg.num_fcs ?? 2;
    if (!Number.isInteger(n) || n < 2) throw new Error(`${where}: ffn_cfgs.num_fcs must be an integer >= 2, got ${describe(n)}`);
    if (parseActCfg(`${where}: ffn_cfgs`, cfg.act_cfg) === null) throw new Error(`${where}: ffn_cfgs.act_cfg must be ReLU`);
    const p = prob(where, 'ffn_cfgs.ffn_drop', cfg.ffn_drop);
    if (cfg.dropout_layer !== undefined && cfg.dropout_layer !== null) {
      throw new Error(`${where}: ffn_cfgs.dropout_layer ${describe(cfg.dropout_layer)} is not supported (only null)`);
    }
    this.addIdentity = cfg.add_identity ?? true;
    if (typeof this.addIdentity !== 'boolean') throw new Error(`${where}: ffn_cfgs.add_identity must be a boolean`);
    const layers: UnaryModule[] = [];
    let cin = C;
    for (let i = 0; i < n - 1; i++) {
      layers.push(new Sequential(new Linear(cin, F), new ReLU(), new Dropout(p)));
      cin = F;
    }
    layers.push(new Linear(F, C), new Dropout(p));
    this.layers = this.registerModule('layers', new Sequential(...layers));
  }

  /** `identity + layers(x)` (identity defaults to x). */
  forward(x: Tensor, identity?: Tensor): Tensor {
    const out = this.layers.forward(x);
    return this.addIdentity ? (identity ?? x).add(out) : out;
  }
}

// ---- multi-head attention ----------------------------------------------------------------------------------------

/** The parameters of `torch.nn.MultiheadAttention` (embed_dim = kdim = vdim, bias). */
export class TorchMultiheadAttention extends Module {
  readonly in_proj_weight: Tensor;
  readonly in_proj_bias: Tensor;
  readonly out_proj: Linear;

  constructor(readonly embedDim: number, readonly numHeads: number, readonly dropoutP = 0) {
    super();
    if (embedDim % numHeads) throw new Error(`MultiheadAttention: embed_dims ${embedDim} not divisible by num_heads ${numHeads}`);
    const w = new Linear(embedDim, 3 * embedDim);
    this.in_proj_weight = this.registerParameter('in_proj_weight', w.weight);
    this.in_proj_bias = this.registerParameter('in_proj_bias', w.bias!);
    this.out_proj = this.registerModule('out_proj', new Linear(embedDim, embedDim));
    // PyTorch: xavier_uniform_ in_proj_weight, zero in_proj_bias and out_proj.bias
    const bound = Math.sqrt(6 / (embedDim + 3 * embedDim));
    uniform_(this.in_proj_weight, -bound, bound);
    constant_(this.in_proj_bias, 0);
    constant_(this.out_proj.bias!, 0);
  }

  /**
   * `F.multi_head_attention_forward` on batch-first B×L×C tensors: projections by the rows of `in_proj_weight`
   * ([0, C) queries, [C, 2C) keys, [2C, 3C) values), per-head `softmax(q·kᵀ/√d + M)·v` with M = −∞ where `blocked`
   * (B×Lq×Lk bool, the same for every head), heads concatenated, `out_proj`.
   */
  forward(query: Tensor, key: Tensor, value: Tensor, blocked: Tensor | null = null): Tensor {
    const C = this.embedDim;
    const M = this.numHeads;
    const d = C / M;
    const [B, Lq] = query.shape as [number, number];
    const Lk = key.shape[1]!;
    const w = this.in_proj_weight;
    const b = this.in_proj_bias;
    const heads = (x: Tensor, L: number): Tensor => x.view(B, L, M, d).transpose(1, 2); // B×M×L×d
    const q = heads(linear(query, w.narrow(0, 0, C), b.narrow(0, 0, C)), Lq);
    const k = heads(linear(key, w.narrow(0, C, C), b.narrow(0, C, C)), Lk);
    const v = heads(linear(value, w.narrow(0, 2 * C, C), b.narrow(0, 2 * C, C)), Lk);
    const allowed = blocked ? blocked.logicalNot().unsqueeze(1) : null; // True = attend (B×1×Lq×Lk)
    let out: Tensor;
    if (this.training && this.dropoutP > 0) {
      let s = q.mul(1 / Math.sqrt(d)).matmul(k.transpose(-2, -1));
      if (blocked) s = s.maskedFill(blocked.unsqueeze(1), -Infinity);
      out = dropout(softmax(s, -1), this.dropoutP, true).matmul(v);
    } else {
      out = scaledDotProductAttention(q, k, v, { attnMask: allowed });
    }
    return this.out_proj.forward(out.transpose(1, 2).reshape(B, Lq, C));
  }
}

/** mmcv `MultiheadAttention` config. */
export interface MultiheadAttentionCfg {
  type: 'MultiheadAttention';
  embed_dims: number;
  num_heads: number;
  attn_drop?: number;
  proj_drop?: number;
  /** Only null. */
  dropout_layer?: null;
  batch_first?: boolean;
  init_cfg?: unknown;
}

/** mmcv's `MultiheadAttention`: `identity + proj_drop(attn(query + query_pos, key + key_pos, value))`. */
export class MultiheadAttention extends Module {
  readonly attn: TorchMultiheadAttention;
  readonly projDrop: number;

  constructor(where: string, cfg: MultiheadAttentionCfg) {
    super();
    checkKeys(`${where}: attn_cfgs`, cfg, ['type', 'embed_dims', 'num_heads', 'attn_drop', 'proj_drop', 'dropout_layer', 'batch_first', 'init_cfg']);
    const C = posInt(where, 'attn_cfgs.embed_dims', cfg.embed_dims);
    const M = posInt(where, 'attn_cfgs.num_heads', cfg.num_heads);
    if (C % M) throw new Error(`${where}: attn_cfgs.embed_dims ${C} is not divisible by num_heads ${M}`);
    if (cfg.dropout_layer !== undefined && cfg.dropout_layer !== null) {
      throw new Error(`${where}: attn_cfgs.dropout_layer ${describe(cfg.dropout_layer)} is not supported (only null)`);
    }
    this.projDrop = prob(where, 'attn_cfgs.proj_drop', cfg.proj_drop);
    this.attn = this.registerModule('attn', new TorchMultiheadAttention(C, M, prob(where, 'attn_cfgs.attn_drop', cfg.attn_drop)));
  }

  /** B×Lq×C query, B×Lk×C key/value; positions are added to query and key; `blocked` B×Lq×Lk (true = masked). */
  forward(query: Tensor, key: Tensor, value: Tensor, o: { identity?: Tensor; queryPos?: Tensor | null; keyPos?: Tensor | null;
    blocked?: Tensor | null } = {}): Tensor {
    const q = o.queryPos ? query.add(o.queryPos) : query;
    const k = o.keyPos ? key.add(o.keyPos) : key;
    const out = this.attn.forward(q, k, value, o.blocked ?? null);
    return (o.identity ?? query).add(this.training && this.projDrop > 0 ? dropout(out, this.projDrop, true) : out);
  }
}

// ---- multi-scale deformable attention ---------------------------------------------------------------------------

/** mmcv `MultiScaleDeformableAttention` config. */
export interface MultiScaleDeformableAttentionCfg {
  type: 'MultiScaleDeformableAttention';
  embed_dims: number;
  num_heads: number;
  num_levels: number;
  num_points: number;
  /** CUDA chunking of the authors' kernel; no effect on results. */
  im2col_step?: number;
  dropout?: number;
  batch_first?: boolean;
  /** Unused by mmcv 1.4.2; only null. */
  norm_cfg?: null;
  init_cfg?: unknown;
}

/** The geometry of a deformable attention call. */
export interface DeformableInputs {
  /** 1×L×1×2 or B×L×1×2 normalised (x, y) reference points (the same for every level). */
  referencePoints: Tensor;
  spatialShapes: SpatialShapes;
  levelStart: readonly number[];
}

/**
 * mmcv's `MultiScaleDeformableAttention` (self-attention use): `identity + dropout(output_proj(MSDA(value_proj(value),
 * query + query_pos)))`, sampling offsets normalised by each level's (w, h). Keys and initialisation are those of
 * {@link MSDeformAttn}, which this extends.
 */
export class MultiScaleDeformableAttention extends MSDeformAttn {
  readonly dropoutP: number;

  constructor(where: string, cfg: MultiScaleDeformableAttentionCfg) {
    checkKeys(`${where}: attn_cfgs`, cfg, ['type', 'embed_dims', 'num_heads', 'num_levels', 'num_points', 'im2col_step',
      'dropout', 'batch_first', 'norm_cfg', 'init_cfg']);
    const C = posInt(where, 'attn_cfgs.embed_dims', cfg.embed_dims);
    const M = posInt(where, 'attn_cfgs.num_heads', cfg.num_heads);
    if (C % M) throw new Error(`${where}: attn_cfgs.embed_dims ${C} is not divisible by num_heads ${M}`);
    if (cfg.norm_cfg !== undefined && cfg.norm_cfg !== null) throw new Error(`${where}: attn_cfgs.norm_cfg must be null`);
    super(C, posInt(where, 'attn_cfgs.num_levels', cfg.num_levels), M, posInt(where, 'attn_cfgs.num_points', cfg.num_points));
    this.dropoutP = prob(where, 'attn_cfgs.dropout', cfg.dropout, 0.1);
  }

  /** B×L×C query (also the value, as in the encoder's self-attention), B×L×C position. */
  attend(query: Tensor, o: { value?: Tensor; identity?: Tensor; queryPos?: Tensor | null; geometry: DeformableInputs }): Tensor {
    const value = o.value ?? query;
    const q = o.queryPos ? query.add(o.queryPos) : query;
    const g = o.geometry;
    const out = this.forward(q, g.referencePoints, value, g.spatialShapes, g.levelStart);
    return (o.identity ?? query).add(this.training && this.dropoutP > 0 ? dropout(out, this.dropoutP, true) : out);
  }
}

// ---- layers ----------------------------------------------------------------------------------------------------

/** The operations of a transformer layer. */
export type LayerOp = 'self_attn' | 'cross_attn' | 'norm' | 'ffn';

/** `transformerlayers` config (`BaseTransformerLayer` / `DetrTransformerDecoderLayer`). */
export interface TransformerLayerCfg {
  type: 'BaseTransformerLayer' | 'DetrTransformerDecoderLayer';
  attn_cfgs: ConfigDict | ConfigDict[];
  ffn_cfgs?: FFNCfg | FFNCfg[];
  operation_order: LayerOp[];
  /** Only LayerNorm (`{type:'LN'}`, the default). */
  norm_cfg?: { type: 'LN'; eps?: number };
  /** Deprecated mmcv arguments, copied into `ffn_cfgs` as mmcv does. */
  feedforward_channels?: number;
  ffn_dropout?: number;
  ffn_num_fcs?: number;
  batch_first?: boolean;
  init_cfg?: unknown;
}

type Attention = MultiheadAttention | MultiScaleDeformableAttention;

/** Inputs of a layer besides the query. */
export interface LayerInputs {
  queryPos?: Tensor | null;
  /** Cross-attention key/value (B×Lk×C) and key position. */
  key?: Tensor;
  value?: Tensor;
  keyPos?: Tensor | null;
  /** One entry per attention (B×Lq×Lk bool, true = blocked) or null. */
  blocked?: (Tensor | null)[];
  /** Deformable attention geometry. */
  geometry?: DeformableInputs;
}

/** mmcv's `BaseTransformerLayer` (post-norm and pre-norm orders). */
export class TransformerLayer extends Module {
  readonly attentions: ModuleList<Attention>;
  readonly ffns: ModuleList<FFN>;
  readonly norms: ModuleList<LayerNorm>;
  readonly order: LayerOp[];
  readonly preNorm: boolean;

  /**
   * @param attention 'msda' (encoder: deformable self-attention) or 'mha' (decoder: multi-head attention)
   */
  constructor(where: string, cfg: TransformerLayerCfg, attention: 'msda' | 'mha') {
    super();
    if (!isDict(cfg)) throw new Error(`${where}: transformerlayers must be a dict`);
    checkKeys(`${where}: transformerlayers`, cfg, ['type', 'attn_cfgs', 'ffn_cfgs', 'operation_order', 'norm_cfg',
      'feedforward_channels', 'ffn_dropout', 'ffn_num_fcs', 'batch_first', 'init_cfg']);
    if (cfg.type !== 'BaseTransformerLayer' && cfg.type !== 'DetrTransformerDecoderLayer') {
      throw new Error(`${where}: transformerlayers type ${describe(cfg.type)} is not supported; BaseTransformerLayer or DetrTransformerDecoderLayer`);
    }
    const order = cfg.operation_order;
    const ops: readonly string[] = ['self_attn', 'cross_attn', 'norm', 'ffn'];
    if (!Array.isArray(order) || order.length === 0 || order.some((o) => !ops.includes(o))) {
      throw new Error(`${where}: operation_order must be a list of self_attn, cross_attn, norm, ffn; got ${describe(order)}`);
    }
    if (attention === 'msda' && order.includes('cross_attn')) throw new Error(`${where}: the pixel-decoder encoder has no cross_attn`);
    this.order = [...order];
    this.preNorm = order[0] === 'norm';
    const nAttn = order.filter((o) => o === 'self_attn' || o === 'cross_attn').length;
    const nFfn = order.filter((o) => o === 'ffn').length;
    const nNorm = order.filter((o) => o === 'norm').length;
    const attnCfgs = Array.isArray(cfg.attn_cfgs) ? cfg.attn_cfgs : Array.from({ length: nAttn }, () => cfg.attn_cfgs as ConfigDict);
    if (attnCfgs.length !== nAttn) throw new Error(`${where}: ${attnCfgs.length} attn_cfgs for ${nAttn} attentions in operation_order`);
    const attns: Attention[] = attnCfgs.map((a) => {
      if (!isDict(a)) throw new Error(`${where}: attn_cfgs must be dicts`);
      const want = attention === 'msda' ? 'MultiScaleDeformableAttention' : 'MultiheadAttention';
      if (a.type !== want) throw new Error(`${where}: attention type ${describe(a.type)} is not supported here; expected ${want}`);
      return attention === 'msda'
        ? new MultiScaleDeformableAttention(where, a as unknown as MultiScaleDeformableAttentionCfg)
        : new MultiheadAttention(where, a as unknown as MultiheadAttentionCfg);
    });
    const C = attention === 'msda' ? (attns[0] as MultiScaleDeformableAttention).dModel : (attns[0] as MultiheadAttention).attn.embedDim;
    // mmcv: deprecated feedforward_channels / ffn_dropout / ffn_num_fcs are copied into ffn_cfgs
    const baseFfn = cfg.ffn_cfgs ?? { type: 'FFN', embed_dims: C } as FFNCfg;
    const ffnCfgs = (Array.isArray(baseFfn) ? baseFfn : Array.from({ length: nFfn }, () => baseFfn)).map((f) => {
      const c: FFNCfg = { ...f };
      if (cfg.feedforward_channels !== undefined) c.feedforward_channels = cfg.feedforward_channels;
      if (cfg.ffn_dropout !== undefined) c.ffn_drop = cfg.ffn_dropout;
      if (cfg.ffn_num_fcs !== undefined) c.num_fcs = cfg.ffn_num_fcs;
      return c;
    });
    if (ffnCfgs.length !== nFfn) throw new Error(`${where}: ${ffnCfgs.length} ffn_cfgs for ${nFfn} ffns in operation_order`);
    const norm = cfg.norm_cfg ?? { type: 'LN' };
    if (!isDict(norm) || norm.type !== 'LN') throw new Error(`${where}: transformer norm_cfg ${describe(norm)} is not supported; only LN`);
    checkKeys(`${where}: transformerlayers.norm_cfg`, norm, ['type', 'eps']);
    const eps = (norm as { eps?: number }).eps ?? 1e-5;
    this.attentions = this.registerModule('attentions', new ModuleList<Attention>(attns));
    this.ffns = this.registerModule('ffns', new ModuleList(ffnCfgs.map((f) => {
      if (f.embed_dims !== C) throw new Error(`${where}: ffn_cfgs.embed_dims ${f.embed_dims} differs from the attention's ${C}`);
      return new FFN(where, f);
    })));
    this.norms = this.registerModule('norms', new ModuleList(Array.from({ length: nNorm }, () => new LayerNorm(C, eps))));
  }

  /**
   * Runs `operation_order` on a B×L×C query. Captures `<prefix>.self_attn` / `<prefix>.cross_attn` after the first
   * attention of that kind (before its norm) when `capture` is given.
   */
  forward(query: Tensor, x: LayerInputs, capture?: Capture, prefix = ''): Tensor {
    // intermediates are freed when the layer returns (captured tensors are kept by the caller)
    return scope(() => this.run(query, x, capture, prefix));
  }

  private run(query: Tensor, x: LayerInputs, capture: Capture | undefined, prefix: string): Tensor {
    let q = query;
    let identity = query;
    let ai = 0;
    let ni = 0;
    let fi = 0;
    const seen = new Set<string>();
    for (const op of this.order) {
      if (op === 'norm') {
        q = this.norms.at(ni++).forward(q);
      } else if (op === 'ffn') {
        q = this.ffns.at(fi++).forward(q, this.preNorm ? identity : undefined);
      } else {
        const attn = this.attentions.at(ai);
        const blocked = x.blocked?.[ai] ?? null;
        ai++;
        const id = this.preNorm ? identity : undefined;
        if (attn instanceof MultiScaleDeformableAttention) {
          if (!x.geometry) throw new Error('TransformerLayer: deformable attention needs reference points and spatial shapes');
          if (blocked) throw new Error('TransformerLayer: deformable attention takes no attention mask');
          q = attn.attend(q, { identity: id, queryPos: x.queryPos, geometry: x.geometry });
        } else if (op === 'self_attn') {
          q = attn.forward(q, q, q, { identity: id, queryPos: x.queryPos, keyPos: x.queryPos, blocked });
        } else {
          if (!x.key) throw new Error('TransformerLayer: cross_attn needs a key');
          q = attn.forward(q, x.key, x.value ?? x.key, { identity: id, queryPos: x.queryPos, keyPos: x.keyPos, blocked });
        }
        identity = q;
        if (capture && !seen.has(op)) {
          seen.add(op);
          capture(`${prefix}.${op}`, q);
        }
      }
    }
    return q;
  }
}

/** `DetrTransformerEncoder` / `DetrTransformerDecoder` config. */
export interface TransformerSequenceCfg {
  type: 'DetrTransformerEncoder' | 'DetrTransformerDecoder';
  num_layers: number;
  transformerlayers: TransformerLayerCfg;
  /** The decoder's (default `{type:'LN'}`; the encoder builds it only for pre-norm layers). */
  post_norm_cfg?: { type: 'LN' } | null;
  /** Decoder: accepted (the Mask2Former head runs the layers itself and keeps every stage). */
  return_intermediate?: boolean;
  init_cfg?: unknown;
}

/** mmdet's `DetrTransformerEncoder` / `DetrTransformerDecoder`: `layers.{i}` and (decoder, pre-norm encoder) `post_norm`. */
export class TransformerLayerSequence extends Module {
  readonly layers: ModuleList<TransformerLayer>;
  readonly post_norm: LayerNorm | null = null;
  readonly embedDims: number;

  constructor(where: string, cfg: TransformerSequenceCfg, kind: 'encoder' | 'decoder') {
    super();
    if (!isDict(cfg)) throw new Error(`${where}: ${kind} must be a dict`);
    checkKeys(`${where}: ${kind}`, cfg, ['type', 'num_layers', 'transformerlayers', 'post_norm_cfg', 'return_intermediate', 'init_cfg']);
    const want = kind === 'encoder' ? 'DetrTransformerEncoder' : 'DetrTransformerDecoder';
    if (cfg.type !== want) throw new Error(`${where}: ${kind} type ${describe(cfg.type)} is not supported; expected ${want}`);
    const n = posInt(where, `${kind}.num_layers`, cfg.num_layers);
    if (Array.isArray(cfg.transformerlayers)) throw new Error(`${where}: ${kind}.transformerlayers must be one dict (shared by every layer)`);
    const layers = Array.from({ length: n }, () => new TransformerLayer(`${where}: ${kind}`, cfg.transformerlayers,
      kind === 'encoder' ? 'msda' : 'mha'));
    this.layers = this.registerModule('layers', new ModuleList(layers));
    const first = layers[0]!;
    this.embedDims = first.norms.length ? first.norms.at(0).normalizedShape[0]! : 0;
    const postCfg = cfg.post_norm_cfg === undefined ? { type: 'LN' } : cfg.post_norm_cfg;
    if (postCfg !== null && (!isDict(postCfg) || postCfg.type !== 'LN')) throw new Error(`${where}: ${kind}.post_norm_cfg must be {type: 'LN'} or null`);
    // mmdet: the encoder has a post norm only with pre-norm layers; the decoder always (with post_norm_cfg)
    const withPost = postCfg !== null && (kind === 'decoder' || first.preNorm);
    if (withPost) this.post_norm = this.registerModule('post_norm', new LayerNorm(this.embedDims));
    if (cfg.return_intermediate !== undefined && typeof cfg.return_intermediate !== 'boolean') {
      throw new Error(`${where}: ${kind}.return_intermediate must be a boolean`);
    }
  }

  /** Initialisation of the authors' heads: xavier-normal on every parameter with more than one dimension. */
  xavierNormalMatrices(): void {
    for (const [, p] of this.namedParameters()) if (p.ndim > 1) xavierNormal_(p);
  }
}
