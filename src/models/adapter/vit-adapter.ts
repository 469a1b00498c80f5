/**
 * ViT-Adapter (paper Fig. 4a): a plain ViT plus the spatial prior module and N interactions (injector → ViT
 * blocks → extractor), producing a 4-level pyramid (strides 4, 8, 16, 32). Keys as the authors' state dicts:
 * ViT keys, `level_embed`, `spm.*`, `interactions.N.*`, `up`, `norm1..norm4`.
 */
import { type Tensor, cat, interpolate } from '../../engine/index.js';
import {
  BatchNorm2d, ConvTranspose2d, Conv2d, LayerNorm, Linear, type Module as ModuleT, ModuleList,
} from '../../nn/index.js';
import { constant_, normal_, truncNormal_, zeros_ } from '../../nn/init.js';
import { type ViTOptions, VisionTransformer, validateViTOptions } from '../vit.js';
import { checkBool, checkDivisible, checkInt, checkNumber, checkWidth } from '../validate.js';
import { MSDeformAttn } from './deformable-attention.js';
import { type BlockRunner, InteractionBlock, deformInputs } from './interaction.js';
import { SpatialPriorModule, type SpmOutputs } from './spm.js';
import { zeros } from '../../engine/index.js';

/**
 * Which code base's forward: `segmentation` adds each interaction's own ViT output to its pyramid level;
 * `detection` adds only the final ViT output (resized) to all four levels.
 */
export type AdapterVariant = 'segmentation' | 'detection';

/** The adapter's own kwargs (the authors' names), common to ViT-Adapter, BEiT-Adapter and the BEiT-3 adapter. */
export interface AdapterKwargs {
  conv_inplane?: number;
  n_points?: number;
  deform_num_heads?: number;
  init_values?: number;
  interaction_indexes?: [number, number][];
  with_cffn?: boolean;
  cffn_ratio?: number;
  deform_ratio?: number;
  add_vit_feature?: boolean;
  use_extra_extractor?: boolean;
}

/** Constructor options: the authors' config keys verbatim (snake_case), plus `variant`. */
export interface ViTAdapterOptions extends ViTOptions, AdapterKwargs {
  pretrain_size?: number;
  /** Ignored (the authors' `pretrained` path); load weights with `loadStateDict`. */
  pretrained?: string | null;
  variant?: AdapterVariant;
}

/**
 * Receives named intermediates during a forward (for parity checks and debugging). Modules free their
 * intermediates when they return, so a callback that stores a tensor must `keep()` it (and dispose it when done).
 */
export type Capture = (name: string, t: Tensor) => void;

const KNOWN_KEYS = new Set([
  'img_size', 'patch_size', 'in_chans', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'qkv_bias', 'drop_rate',
  'attn_drop_rate', 'drop_path_rate', 'layer_scale', 'window_attn', 'window_size', 'with_cp', 'norm_eps',
  'pretrain_size', 'conv_inplane', 'n_points', 'deform_num_heads', 'init_values', 'interaction_indexes', 'with_cffn',
  'cffn_ratio', 'deform_ratio', 'add_vit_feature', 'use_extra_extractor', 'pretrained', 'variant', 'type', 'num_classes',
]);

/**
 * Checks the adapter's own options (sizes, counts, ratios, interaction indexes, head divisibility) before anything
 * is allocated; the ViT's options are checked by `validateViTOptions`.
 *
 * @param o the options
 * @param D the embedding dimension
 * @param depth the number of ViT blocks
 */
export function validateAdapterOptions(o: ViTAdapterOptions, D: number, depth: number): void {
  const where = 'ViTAdapter';
  if (o.pretrain_size !== undefined) checkInt(where, 'pretrain_size', o.pretrain_size, { min: o.patch_size ?? 16, max: 65_536 });
  if (o.conv_inplane !== undefined) checkWidth(where, 'conv_inplane', o.conv_inplane);
  if (o.n_points !== undefined) checkInt(where, 'n_points', o.n_points, { min: 1, max: 256 });
  const heads = o.deform_num_heads === undefined ? 6 : checkInt(where, 'deform_num_heads', o.deform_num_heads, { min: 1, max: D });
  const ratio = o.deform_ratio === undefined ? 1 : checkNumber(where, 'deform_ratio', o.deform_ratio, { min: 0, exclusiveMin: true, max: 16 });
  const valueDim = Math.trunc(D * ratio);
  if (valueDim < 1) throw new RangeError(`${where}: embed_dim ${D} × deform_ratio ${ratio} leaves no value channels`);
  checkDivisible(where, 'embed_dim × deform_ratio', valueDim, 'deform_num_heads', heads);
  if (o.cffn_ratio !== undefined) {
    const r = checkNumber(where, 'cffn_ratio', o.cffn_ratio, { min: 0, exclusiveMin: true, max: 64 });
    if (Math.trunc(D * r) < 1) throw new RangeError(`${where}: embed_dim ${D} × cffn_ratio ${r} leaves no hidden channels`);
  }
  if (o.init_values !== undefined) checkNumber(where, 'init_values', o.init_values, { min: 0 });
  for (const k of ['with_cffn', 'add_vit_feature', 'use_extra_extractor'] as const) if (o[k] !== undefined) checkBool(where, k, o[k]);
  if (o.interaction_indexes !== undefined) {
    const idx: unknown = o.interaction_indexes;
    if (!Array.isArray(idx) || idx.length === 0) {
      throw new RangeError(`${where}: interaction_indexes must be a non-empty list of [first, last] block pairs, got ${JSON.stringify(idx)}`);
    }
    idx.forEach((pair: unknown, i) => {
      if (!Array.isArray(pair) || pair.length !== 2) throw new RangeError(`${where}: interaction_indexes[${i}] must be a [first, last] pair, got ${JSON.stringify(pair)}`);
      const [a, b] = pair as unknown[];
      if (!Number.isInteger(a) || !Number.isInteger(b) || !((a as number) >= 0 && (b as number) >= (a as number) && (b as number) < depth)) {
        throw new RangeError(`${where}: interaction index ${JSON.stringify(pair)} (interaction_indexes[${i}]) out of range for depth ${depth}: ` +
          `expected integers 0 ≤ first ≤ last ≤ ${depth - 1}`);
      }
    });
  }
}

/** The ViT-Adapter backbone. */
export class ViTAdapter extends VisionTransformer {
  level_embed: Tensor;
  readonly spm: SpatialPriorModule;
  readonly interactions: ModuleList<InteractionBlock>;
  readonly up: ConvTranspose2d;
  readonly norm1: BatchNorm2d;
  readonly norm2: BatchNorm2d;
  readonly norm3: BatchNorm2d;
  readonly norm4: BatchNorm2d;
  readonly variant: AdapterVariant;
  readonly interactionIndexes: [number, number][];
  readonly addVitFeature: boolean;
  /** Deform inputs (reference points, level shapes) per input size and device: constant, so built once. */
  private readonly deformCache = new DeformInputsCache();

  constructor(options: ViTAdapterOptions = {}) {
    const unknown = Object.keys(options).filter((k) => !KNOWN_KEYS.has(k));
    if (unknown.length) throw new Error(`ViTAdapter: unknown option(s) ${unknown.join(', ')}`);
    // The authors pass pretrain_size to the ViT as its img_size (the position table's grid).
    const vitOpts: ViTOptions = { ...options, img_size: options.pretrain_size ?? options.img_size ?? 224 };
    for (const k of ['pretrain_size', 'conv_inplane', 'n_points', 'deform_num_heads', 'init_values', 'interaction_indexes',
      'with_cffn', 'cffn_ratio', 'deform_ratio', 'add_vit_feature', 'use_extra_extractor', 'pretrained', 'variant', 'type',
      'num_classes'] as const) delete (vitOpts as Record<string, unknown>)[k];
    validateViTOptions(vitOpts, 'ViTAdapter');
    validateAdapterOptions(options, vitOpts.embed_dim ?? 768, vitOpts.depth ?? 12);
    super(vitOpts);
    const D = this.embedDim;
    const depth = this.opts.depth;
    this.variant = options.variant ?? 'segmentation';
    if (this.variant !== 'segmentation' && this.variant !== 'detection') {
      throw new Error(`ViTAdapter: variant must be segmentation or detection, got ${JSON.stringify(this.variant)}`);
    }
    this.addVitFeature = options.add_vit_feature ?? true;
    this.interactionIndexes = resolveInteractionIndexes('ViTAdapter', options.interaction_indexes, depth);
    this.level_embed = this.registerParameter('level_embed', zeros([3, D]));
    this.spm = this.registerModule('spm', new SpatialPriorModule(options.conv_inplane ?? 64, D));
    this.interactions = this.registerModule('interactions', new ModuleList<InteractionBlock>(adapterInteractionBlocks(
      options, D, this.interactionIndexes.length, { dropPath: this.opts.drop_path_rate, normEps: this.opts.norm_eps, withCp: this.opts.with_cp })));
    this.up = this.registerModule('up', new ConvTranspose2d(D, D, 2, { stride: 2 }));
    this.norm1 = this.registerModule('norm1', new BatchNorm2d(D));
    this.norm2 = this.registerModule('norm2', new BatchNorm2d(D));
    this.norm3 = this.registerModule('norm3', new BatchNorm2d(D));
    this.norm4 = this.registerModule('norm4', new BatchNorm2d(D));
    initAdapterModules(this);
  }

  private deformInputsFor(h: number, w: number, device: string): ReturnType<typeof deformInputs> {
    return this.deformCache.get(h, w, device);
  }

  /** Frees the cached deform inputs (they are rebuilt on the next forward). */
  clearDeformCache(): void {
    this.deformCache.clear();
  }

  /** Frees parameters, buffers and cached deform inputs. */
  override dispose(): void {
    this.clearDeformCache();
    super.dispose();
  }

  /** Checks the input and returns its size. */
  private checkInput(x: Tensor): [number, number, number] {
    if (x.ndim !== 4 || x.shape[1] !== this.opts.in_chans) {
      throw new Error(`ViTAdapter: expected input B×${this.opts.in_chans}×H×W, got [${x.shape.join(', ')}]`);
    }
    const [B, , h, w] = x.shape as [number, number, number, number];
    if (h % 32 || w % 32) {
      throw new Error(`ViTAdapter: input height and width must be multiples of 32 (the adapter splits tokens at strides ` +
        `8/16/32), got ${h}×${w}; pad the image (the segmentation pipeline does this for you)`);
    }
    return [B, h, w];
  }

  /** Runs the backbone: four maps B×D×H/s×W/s for strides 4, 8, 16, 32. */
  forward(x: Tensor, capture?: Capture): [Tensor, Tensor, Tensor, Tensor] {
    const [B, h, w] = this.checkInput(x);
    const D = this.embedDim;
    const d = this.deformInputsFor(h, w, x.device);
    const spm = this.spm.forward(x);
    const c = adapterTokens(spm, this.level_embed, capture);
    const { tokens, H, W } = this.embed(x);
    const r = runInteractions(this, this, tokens, c, undefined, d, H, W, this.variant === 'segmentation', capture);
    const xt = r.x;
    const vit = this.variant === 'segmentation' ? r.outs : [xt, xt, xt, xt].map((t) => t.transpose(1, 2).reshape(B, D, H, W));
    return adapterPyramid(this, r.c, spm.c1, this.addVitFeature ? vit : null, H, W);
  }
}

/**
 * Checks interaction indexes against the backbone's depth (default: {@link defaultInteractionIndexes}) and returns a
 * fresh copy; `where` and `range` name the model and its depth in the error (`out of range for ${range}`).
 */
export function resolveInteractionIndexes(where: string, given: [number, number][] | undefined, depth: number,
  range = `depth ${depth}`): [number, number][] {
  const idx = given ?? defaultInteractionIndexes(depth);
  for (const [a, b] of idx) {
    if (!(a >= 0 && b >= a && b < depth)) throw new Error(`${where}: interaction index [${a}, ${b}] out of range for ${range}`);
  }
  return idx.map(([a, b]) => [a, b]);
}

/**
 * The `n` interaction blocks of an adapter from its kwargs (the authors' defaults: 6 deform heads, 4 points, γ 0,
 * CFFN on with ratio 0.25, deform ratio 1, extra extractors in the last interaction), with the backbone's drop path,
 * norm eps and checkpointing.
 */
export function adapterInteractionBlocks(o: AdapterKwargs, D: number, n: number,
  backbone: { dropPath: number; normEps: number; withCp: boolean }): InteractionBlock[] {
  const useExtra = o.use_extra_extractor ?? true;
  return Array.from({ length: n }, (_, i) => new InteractionBlock({
    dim: D, numHeads: o.deform_num_heads ?? 6, nPoints: o.n_points ?? 4, initValues: o.init_values ?? 0,
    dropPath: backbone.dropPath, withCffn: o.with_cffn ?? true, cffnRatio: o.cffn_ratio ?? 0.25,
    deformRatio: o.deform_ratio ?? 1.0, extraExtractor: useExtra && i === n - 1, normEps: backbone.normEps,
    withCp: backbone.withCp,
  }));
}

/** The adapter modules that {@link initAdapterModules} initialises. */
export interface AdapterModules extends PyramidModules {
  level_embed: Tensor;
  spm: SpatialPriorModule;
  interactions: ModuleList<InteractionBlock>;
}

/**
 * The authors' initialisation of the adapter modules (after the backbone's): `_init_weights` on `up`, `spm` and the
 * interactions, the deformable attentions' own reset, then a normal `level_embed`. The order is fixed (it draws
 * from the global generator).
 */
export function initAdapterModules(m: AdapterModules): void {
  for (const mod of [m.up, m.spm, m.interactions]) mod.apply(initWeights);
  m.interactions.apply((mod) => { if (mod instanceof MSDeformAttn) mod.resetParameters(); });
  normal_(m.level_embed);
}

/**
 * The interaction loop of an adapter's forward: interaction `i` runs the backbone's blocks
 * `interactionIndexes[i]` between its injector and extractor (with the cls token riding along when `cls` is given).
 * `capture` receives `interactions.{i}.x|c` (and `.cls`); with `collect`, each interaction's ViT tokens are returned
 * as a B×D×H×W map in `outs`.
 */
export function runInteractions(m: { interactions: ModuleList<InteractionBlock>; interactionIndexes: [number, number][] },
  runner: BlockRunner, x: Tensor, c: Tensor, cls: Tensor | undefined, d: ReturnType<typeof deformInputs>, H: number, W: number,
  collect: boolean, capture?: Capture): { x: Tensor; c: Tensor; cls: Tensor | undefined; outs: Tensor[] } {
  const [B, , D] = x.shape as [number, number, number];
  let xt = x;
  let ct = c;
  let cl = cls;
  const outs: Tensor[] = [];
  m.interactions.slice(0).forEach((layer, i) => {
    const [from, to] = m.interactionIndexes[i]!;
    const r = layer.forward(xt, ct, runner, from, to, d, H, W, cl);
    xt = r.x;
    ct = r.c;
    cl = r.cls;
    capture?.(`interactions.${i}.x`, xt);
    capture?.(`interactions.${i}.c`, ct);
    if (cl) capture?.(`interactions.${i}.cls`, cl);
    if (collect) outs.push(xt.transpose(1, 2).reshape(B, D, H, W));
  });
  return { x: xt, c: ct, cls: cl, outs };
}

/**
 * The adapter tokens at the start of the forward: the SPM's c2, c3, c4 plus their level embeddings, concatenated
 * (B×21n×D). `capture` receives `spm.c1..c4` (before the level embedding).
 */
export function adapterTokens(spm: SpmOutputs, levelEmbed: Tensor, capture?: Capture): Tensor {
  capture?.('spm.c1', spm.c1);
  capture?.('spm.c2', spm.c2);
  capture?.('spm.c3', spm.c3);
  capture?.('spm.c4', spm.c4);
  const le = levelEmbed;
  return cat([spm.c2.add(le.select(0, 0)), spm.c3.add(le.select(0, 1)), spm.c4.add(le.select(0, 2))], 1);
}

/** The modules of an adapter that {@link adapterPyramid} uses. */
export interface PyramidModules {
  up: ConvTranspose2d;
  norm1: BatchNorm2d;
  norm2: BatchNorm2d;
  norm3: BatchNorm2d;
  norm4: BatchNorm2d;
}

/**
 * The end of the adapter's forward (ViT-Adapter and BEiT-Adapter alike): the adapter tokens `c` (B×21n×D) are split
 * into their three levels (2H×2W, H×W, H/2×W/2), `c1 = up(c2) + spm_c1`, the ViT maps `vit` (four B×D×H×W maps,
 * or null when `add_vit_feature` is off) are added — bilinearly ×4, ×2, as is, ×0.5 (align_corners false) — and
 * `norm1..norm4` give the pyramid.
 */
export function adapterPyramid(m: PyramidModules, c: Tensor, spmC1: Tensor, vit: Tensor[] | null, H: number, W: number): [Tensor, Tensor, Tensor, Tensor] {
  const [B, N, D] = c.shape as [number, number, number];
  const n2 = 4 * H * W;
  const n3 = H * W;
  const toMap = (t: Tensor, hh: number, ww: number): Tensor => t.transpose(1, 2).reshape(B, D, hh, ww);
  let c2 = toMap(c.narrow(1, 0, n2), H * 2, W * 2);
  let c3 = toMap(c.narrow(1, n2, n3), H, W);
  let c4 = toMap(c.narrow(1, n2 + n3, N - n2 - n3), Math.trunc(H / 2), Math.trunc(W / 2));
  let c1 = m.up.forward(c2).add(spmC1);
  if (vit) {
    const [x1, x2, x3, x4] = vit as [Tensor, Tensor, Tensor, Tensor];
    const up = (t: Tensor, s: number): Tensor => interpolate(t, { scaleFactor: s, mode: 'bilinear', alignCorners: false });
    c1 = c1.add(up(x1, 4));
    c2 = c2.add(up(x2, 2));
    c3 = c3.add(x3);
    c4 = c4.add(up(x4, 0.5));
  }
  return [m.norm1.forward(c1), m.norm2.forward(c2), m.norm3.forward(c3), m.norm4.forward(c4)];
}

/** The adapter's deform inputs (reference points, level shapes) per input size and device: constant, so built once. */
export class DeformInputsCache {
  private readonly map = new Map<string, ReturnType<typeof deformInputs>>();
  /** The inputs for an h×w image on `device` (built and kept on first use; at most 8 sizes are kept). */
  get(h: number, w: number, device: string): ReturnType<typeof deformInputs> {
    const key = `${h}x${w}@${device}`;
    let d = this.map.get(key);
    if (!d) {
      d = deformInputs(h, w, device);
      d.injector.ref.keep();
      d.extractor.ref.keep();
      if (this.map.size >= 8) this.clear();
      this.map.set(key, d);
    }
    return d;
  }
  /** Frees every cached tensor. */
  clear(): void {
    for (const d of this.map.values()) {
      d.injector.ref.dispose();
      d.extractor.ref.dispose();
    }
    this.map.clear();
  }
}

/** [[0, d/4−1], ...] evenly split interactions for a depth divisible by 4. */
export function defaultInteractionIndexes(depth: number): [number, number][] {
  if (depth % 4) throw new Error(`ViTAdapter: give interaction_indexes for depth ${depth} (not divisible by 4)`);
  const q = depth / 4;
  return [0, 1, 2, 3].map((i) => [i * q, (i + 1) * q - 1]);
}

/** The authors' `_init_weights`: trunc-normal linears, unit norms, He-normal (fan-out) convolutions. */
export function initWeights(m: ModuleT): void {
  if (m instanceof Linear) {
    truncNormal_(m.weight, 0, 0.02);
    if (m.bias) constant_(m.bias, 0);
  } else if (m instanceof LayerNorm || m instanceof BatchNorm2d) {
    if (m.bias) constant_(m.bias, 0);
    if (m.weight) constant_(m.weight, 1);
  } else if (m instanceof Conv2d || m instanceof ConvTranspose2d) {
    const [, , kh, kw] = m.weight.shape as [number, number, number, number];
    const fanOut = Math.trunc((kh * kw * m.outChannels) / m.groups);
    normal_(m.weight, 0, Math.sqrt(2 / fanOut));
    if (m.bias) zeros_(m.bias);
  }
}
