/**
 * The plain Vision Transformer that ViT-Adapter wraps (timm style, as in the authors' `TIMMVisionTransformer`):
 * 16×16 patch embedding, a position-embedding table resized bicubically to the input grid, pre-norm blocks with
 * optional layer scale and window attention. Module names equal the authors' state-dict keys.
 */
import {
  type Tensor, checkpoint, dropout, gelu, scope, interpolate, linspace, ones, pad, scaledDotProductAttention, softmax, zeros,
} from '../engine/index.js';
import {
  Conv2d, DropPath, Dropout, Identity, LayerNorm, Linear, Module, ModuleList, type UnaryModule,
} from '../nn/index.js';
import { truncNormal_ } from '../nn/init.js';
import { MAX_DEPTH, checkBool, checkDivisible, checkInt, checkNumber, checkProbability, checkWidth } from './validate.js';

/** Constructor options of {@link VisionTransformer}, with the authors' (snake_case) names. */
export interface ViTOptions {
  img_size?: number;
  patch_size?: number;
  in_chans?: number;
  embed_dim?: number;
  depth?: number;
  num_heads?: number;
  mlp_ratio?: number;
  qkv_bias?: boolean;
  drop_rate?: number;
  attn_drop_rate?: number;
  drop_path_rate?: number;
  layer_scale?: boolean;
  /** Window attention for every block (bool) or per block (list). */
  window_attn?: boolean | boolean[];
  /** Window size for every block or per block. */
  window_size?: number | number[];
  /** Gradient checkpointing of blocks (and of the adapter's injectors/extractors) in training: less memory, more compute. */
  with_cp?: boolean;
  /** LayerNorm epsilon (the authors use 1e-6). */
  norm_eps?: number;
}

/** Patch embedding: a stride-16 convolution, flattened to tokens. Key: `proj`. */
export class PatchEmbed extends Module {
  readonly proj: Conv2d;
  constructor(readonly patchSize: number, inChans: number, embedDim: number) {
    super();
    this.proj = this.registerModule('proj', new Conv2d(inChans, embedDim, patchSize, { stride: patchSize }));
  }
  /** x: B×3×H×W → tokens B×(H/16·W/16)×D and the token grid size. */
  forward(x: Tensor): { tokens: Tensor; H: number; W: number } {
    const y = this.proj.forward(x);
    const [, , H, W] = y.shape as [number, number, number, number];
    return { tokens: y.flatten(2).transpose(1, 2), H, W };
  }
}

/** Two-layer MLP with GELU. Keys: `fc1`, `fc2`. */
export class Mlp extends Module implements UnaryModule {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly drop: Dropout;
  constructor(inFeatures: number, hidden: number, drop = 0) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(inFeatures, hidden));
    this.fc2 = this.registerModule('fc2', new Linear(hidden, inFeatures));
    this.drop = new Dropout(drop);
  }
  forward(x: Tensor): Tensor {
    this.drop.training = this.training;
    return this.drop.forward(this.fc2.forward(this.drop.forward(gelu(this.fc1.forward(x)))));
  }
}

/** Global multi-head self-attention. Keys: `qkv`, `proj`. Uses libtorch's fused attention when present. */
export class Attention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly scale: number;
  constructor(readonly dim: number, readonly numHeads: number, qkvBias: boolean, readonly attnDrop = 0, readonly projDrop = 0) {
    super();
    if (dim % numHeads) throw new Error(`Attention: dim ${dim} is not divisible by num_heads ${numHeads}`);
    this.scale = (dim / numHeads) ** -0.5;
    this.qkv = this.registerModule('qkv', new Linear(dim, dim * 3, { bias: qkvBias }));
    this.proj = this.registerModule('proj', new Linear(dim, dim));
  }
  forward(x: Tensor, _H: number, _W: number): Tensor {
    const [B, N, C] = x.shape as [number, number, number];
    const qkv = this.qkv.forward(x).reshape(B, N, 3, this.numHeads, C / this.numHeads).permute(2, 0, 3, 1, 4);
    const [q, k, v] = qkv.unbind(0) as [Tensor, Tensor, Tensor];
    let y: Tensor;
    if (this.training && this.attnDrop > 0) {
      const attn = dropout(softmax(q.matmul(k.transpose(-2, -1)).mul(this.scale), -1), this.attnDrop, true);
      y = attn.matmul(v);
    } else {
      y = scaledDotProductAttention(q, k, v, { scale: this.scale });
    }
    const out = this.proj.forward(y.transpose(1, 2).reshape(B, N, C));
    return this.training && this.projDrop > 0 ? dropout(out, this.projDrop, true) : out;
  }
}

/**
 * Window attention as the authors implement it: qkv is computed for every token, the qkv map is zero-padded to a
 * multiple of the window size (padded tokens have q = k = v = 0 and are not masked), attention runs inside each
 * non-overlapping window, and the result is cropped back.
 */
export class WindowedAttention extends Attention {
  constructor(dim: number, numHeads: number, qkvBias: boolean, readonly windowSize: number, attnDrop = 0, projDrop = 0) {
    super(dim, numHeads, qkvBias, attnDrop, projDrop);
  }
  override forward(x: Tensor, H: number, W: number): Tensor {
    const [B, N, C] = x.shape as [number, number, number];
    const ws = this.windowSize;
    const Hp = Math.ceil(H / ws) * ws;
    const Wp = Math.ceil(W / ws) * ws;
    const nh = Hp / ws;
    const nw = Wp / ws;
    let qkv = this.qkv.forward(x).reshape(B, H, W, 3 * C);
    if (Hp !== H || Wp !== W) qkv = pad(qkv, [0, 0, 0, Wp - W, 0, Hp - H]);
    // windows: B, nh, ws, nw, ws, 3, heads, hd → 3, B, nh·nw, heads, ws·ws, hd
    const hd = C / this.numHeads;
    const win = qkv.reshape(B, nh, ws, nw, ws, 3, this.numHeads, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
      .reshape(3, B * nh * nw, this.numHeads, ws * ws, hd);
    const [q, k, v] = win.unbind(0) as [Tensor, Tensor, Tensor];
    let y: Tensor;
    if (this.training && this.attnDrop > 0) {
      y = dropout(softmax(q.matmul(k.transpose(-2, -1)).mul(this.scale), -1), this.attnDrop, true).matmul(v);
    } else {
      y = scaledDotProductAttention(q, k, v, { scale: this.scale });
    }
    // B·nh·nw, heads, ws·ws, hd → B, nh, ws, nw, ws, C → crop
    let map = y.reshape(B, nh, nw, this.numHeads, ws, ws, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C);
    if (Hp !== H || Wp !== W) map = map.slice(1, 0, H).slice(2, 0, W);
    const out = this.proj.forward(map.reshape(B, N, C));
    return this.training && this.projDrop > 0 ? dropout(out, this.projDrop, true) : out;
  }
}

/** Options of {@link Block}. */
export interface BlockOptions {
  dim: number;
  numHeads: number;
  mlpRatio: number;
  qkvBias: boolean;
  drop: number;
  attnDrop: number;
  dropPath: number;
  windowed: boolean;
  windowSize: number;
  layerScale: boolean;
  normEps: number;
  /** Gradient checkpointing in training (the authors' `with_cp`). */
  withCp?: boolean;
}

/** Pre-norm transformer block. Keys: `norm1`, `attn`, `norm2`, `mlp`, and `gamma1`/`gamma2` with layer scale. */
export class Block extends Module {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly dropPath: DropPath | Identity;
  gamma1: Tensor | null = null;
  gamma2: Tensor | null = null;
  readonly withCp: boolean;
  constructor(o: BlockOptions) {
    super();
    this.withCp = o.withCp ?? false;
    this.norm1 = this.registerModule('norm1', new LayerNorm(o.dim, o.normEps));
    this.attn = this.registerModule('attn', o.windowed
      ? new WindowedAttention(o.dim, o.numHeads, o.qkvBias, o.windowSize, o.attnDrop, o.drop)
      : new Attention(o.dim, o.numHeads, o.qkvBias, o.attnDrop, o.drop));
    this.dropPath = o.dropPath > 0 ? new DropPath(o.dropPath) : new Identity();
    this.norm2 = this.registerModule('norm2', new LayerNorm(o.dim, o.normEps));
    this.mlp = this.registerModule('mlp', new Mlp(o.dim, Math.trunc(o.dim * o.mlpRatio), o.drop));
    if (o.layerScale) {
      this.gamma1 = this.registerParameter('gamma1', ones([o.dim]));
      this.gamma2 = this.registerParameter('gamma2', ones([o.dim]));
    }
  }
  forward(x: Tensor, H: number, W: number): Tensor {
    if (this.withCp && this.training) return checkpoint((t) => [this.inner(t, H, W)], [x])[0]!;
    return this.inner(x, H, W);
  }
  private inner(x: Tensor, H: number, W: number): Tensor {
    return scope(() => this.residuals(x, H, W));
  }
  private residuals(x: Tensor, H: number, W: number): Tensor {
    this.dropPath.training = this.training;
    let a = this.attn.forward(this.norm1.forward(x), H, W);
    if (this.gamma1) a = a.mul(this.gamma1);
    const x1 = x.add(this.dropPath.forward(a));
    let m = this.mlp.forward(this.norm2.forward(x1));
    if (this.gamma2) m = m.mul(this.gamma2);
    return x1.add(this.dropPath.forward(m));
  }
}

/** Normalised options with defaults applied. */
export interface ResolvedViTOptions extends Required<Omit<ViTOptions, 'window_attn' | 'window_size'>> {
  window_attn: boolean[];
  window_size: number[];
}

/**
 * Checks every given ViT option (type, range, `embed_dim` divisible by `num_heads`) before anything is allocated;
 * errors name `where`, the option and the value.
 *
 * @param o the options (absent ones take the defaults of {@link resolveViTOptions})
 * @param where the model named in errors
 */
export function validateViTOptions(o: ViTOptions, where = 'VisionTransformer'): void {
  const D = o.embed_dim === undefined ? 768 : checkWidth(where, 'embed_dim', o.embed_dim);
  const depth = o.depth === undefined ? 12 : checkInt(where, 'depth', o.depth, { min: 1, max: MAX_DEPTH });
  const patch = o.patch_size === undefined ? 16 : checkInt(where, 'patch_size', o.patch_size, { min: 1, max: 1024 });
  if (o.img_size !== undefined) checkInt(where, 'img_size', o.img_size, { min: patch, max: 65_536 });
  if (o.in_chans !== undefined) checkInt(where, 'in_chans', o.in_chans, { min: 1, max: 1024 });
  const heads = o.num_heads === undefined ? 12 : checkInt(where, 'num_heads', o.num_heads, { min: 1, max: D });
  checkDivisible(where, 'embed_dim', D, 'num_heads', heads);
  if (o.mlp_ratio !== undefined) checkNumber(where, 'mlp_ratio', o.mlp_ratio, { min: 0, exclusiveMin: true, max: 64 });
  for (const k of ['drop_rate', 'attn_drop_rate', 'drop_path_rate'] as const) if (o[k] !== undefined) checkProbability(where, k, o[k]);
  for (const k of ['qkv_bias', 'layer_scale', 'with_cp'] as const) if (o[k] !== undefined) checkBool(where, k, o[k]);
  if (o.norm_eps !== undefined) checkNumber(where, 'norm_eps', o.norm_eps, { min: 0, exclusiveMin: true, max: 1 });
  const perBlock = (name: string, v: unknown, check: (x: unknown, at: string) => void): void => {
    if (v === undefined) return;
    if (Array.isArray(v)) {
      if (v.length !== depth) throw new RangeError(`${where}: ${name}: list of ${v.length} entries, expected one per block (depth ${depth})`);
      v.forEach((x, i) => check(x, `${name}[${i}]`));
    } else check(v, name);
  };
  perBlock('window_attn', o.window_attn, (x, at) => checkBool(where, at, x));
  perBlock('window_size', o.window_size, (x, at) => checkInt(where, at, x, { min: 1, max: 65_536 }));
}

/** Applies the authors' defaults (`TIMMVisionTransformer`) to partial options, after {@link validateViTOptions}. */
export function resolveViTOptions(o: ViTOptions, where = 'VisionTransformer'): ResolvedViTOptions {
  validateViTOptions(o, where);
  const depth = o.depth ?? 12;
  const perBlock = <T>(v: T | T[] | undefined, dflt: T, name: string): T[] => {
    if (Array.isArray(v)) {
      if (v.length !== depth) throw new Error(`${name}: list of ${v.length} entries, expected one per block (depth ${depth})`);
      return [...v];
    }
    return Array(depth).fill(v ?? dflt) as T[];
  };
  return {
    img_size: o.img_size ?? 224,
    patch_size: o.patch_size ?? 16,
    in_chans: o.in_chans ?? 3,
    embed_dim: o.embed_dim ?? 768,
    depth,
    num_heads: o.num_heads ?? 12,
    mlp_ratio: o.mlp_ratio ?? 4,
    qkv_bias: o.qkv_bias ?? true,
    drop_rate: o.drop_rate ?? 0,
    attn_drop_rate: o.attn_drop_rate ?? 0,
    drop_path_rate: o.drop_path_rate ?? 0,
    layer_scale: o.layer_scale ?? true,
    window_attn: perBlock(o.window_attn, false, 'window_attn'),
    window_size: perBlock(o.window_size, 14, 'window_size'),
    with_cp: o.with_cp ?? false,
    norm_eps: o.norm_eps ?? 1e-6,
  };
}

/**
 * The plain ViT. Keys: `pos_embed` (1 × (1 + (img_size/16)²) × D, the first slot is the unused class-token
 * position), `patch_embed.proj`, `blocks.N.*`.
 */
export class VisionTransformer extends Module {
  readonly opts: ResolvedViTOptions;
  readonly embedDim: number;
  pos_embed: Tensor;
  readonly patch_embed: PatchEmbed;
  readonly blocks: ModuleList<Block>;
  readonly posDrop: Dropout;
  /** Grid of the position-embedding table (img_size / patch_size). */
  readonly pretrainGrid: number;

  constructor(options: ViTOptions = {}) {
    super();
    const o = (this.opts = resolveViTOptions(options));
    this.embedDim = o.embed_dim;
    this.pretrainGrid = Math.trunc(o.img_size / o.patch_size);
    const numPatches = this.pretrainGrid * this.pretrainGrid;
    this.pos_embed = this.registerParameter('pos_embed', zeros([1, numPatches + 1, o.embed_dim]));
    this.patch_embed = this.registerModule('patch_embed', new PatchEmbed(o.patch_size, o.in_chans, o.embed_dim));
    this.posDrop = new Dropout(o.drop_rate);
    const dpr = linspace(0, o.drop_path_rate, o.depth).consume((t) => Array.from(t.toTypedArray()));
    this.blocks = this.registerModule('blocks', new ModuleList<Block>());
    for (let i = 0; i < o.depth; i++) {
      this.blocks.push(new Block({
        dim: o.embed_dim, numHeads: o.num_heads, mlpRatio: o.mlp_ratio, qkvBias: o.qkv_bias, drop: o.drop_rate,
        attnDrop: o.attn_drop_rate, dropPath: dpr[i]!, windowed: o.window_attn[i]!, windowSize: o.window_size[i]!,
        layerScale: o.layer_scale, normEps: o.norm_eps, withCp: o.with_cp,
      }));
    }
    truncNormal_(this.pos_embed, 0, 0.02);
  }

  /** The position table without the class slot, resized bicubically (align_corners false) to H×W tokens. */
  posEmbedFor(H: number, W: number): Tensor {
    const g = this.pretrainGrid;
    const table = this.pos_embed.slice(1, 1, null).reshape(1, g, g, this.embedDim).permute(0, 3, 1, 2);
    if (H === g && W === g) return table.reshape(1, this.embedDim, H * W).permute(0, 2, 1);
    return interpolate(table, { size: [H, W], mode: 'bicubic', alignCorners: false })
      .reshape(1, this.embedDim, H * W).permute(0, 2, 1);
  }

  /** Patch embedding plus position embedding: tokens B×N×D and the grid size. */
  embed(x: Tensor): { tokens: Tensor; H: number; W: number } {
    const { tokens, H, W } = this.patch_embed.forward(x);
    this.posDrop.training = this.training;
    return { tokens: this.posDrop.forward(tokens.add(this.posEmbedFor(H, W))), H, W };
  }

  /** Runs blocks [from, to] (inclusive) on tokens. */
  runBlocks(x: Tensor, from: number, to: number, H: number, W: number): Tensor {
    let y = x;
    for (let i = from; i <= to; i++) y = this.blocks.at(i).forward(y, H, W);
    return y;
  }

  /** Plain ViT forward: tokens after all blocks (no final norm, as the authors' backbone). */
  forwardTokens(x: Tensor): { tokens: Tensor; H: number; W: number } {
    const { tokens, H, W } = this.embed(x);
    return { tokens: this.runBlocks(tokens, 0, this.opts.depth - 1, H, W), H, W };
  }
}

