/**
 * The BEiT / BEiTv2 backbone as the ViT-Adapter authors' code has it (`base/beit.py` of their segmentation and
 * detection code bases): 16×16 patch embedding, a class token (segmentation code base), an optional absolute position
 * table, relative position bias (per block, or one shared table), attention with `q_bias` / `v_bias` (no k bias),
 * layer scale `gamma_1` / `gamma_2`, drop path, and in the detection code base window attention with a per-window
 * relative position bias. Module and parameter names equal the authors' state-dict keys (and the unilm BEiT
 * checkpoints'), so their weights load as they are; {@link loadBEiTPretrained} re-samples relative position tables
 * when the window changes, as their `init_weights` → `load_checkpoint` does.
 *
 * Also `BEiTBaseline` (plain BEiT with the four-level FPN of the authors' baseline).
 */
import {
  Tensor, cat, checkpoint, interpolate, linear, linspace, maxPool2d, op, pad, scaledDotProductAttention, scope, softmax, tensor,
  zeros, zerosLike,
} from '../engine/index.js';
import {
  BatchNorm2d, ConvTranspose2d, DropPath, Dropout, GELU, Identity, LayerNorm, Linear, Module, ModuleList, Sequential,
  StateDictError, type TensorSource,
} from '../nn/index.js';
import { openStateDict } from '../nn/serialization.js';
import { truncNormal_ } from '../nn/init.js';
import { Mlp, PatchEmbed } from './vit.js';

/**
 * Which code base: `segmentation` (mmseg: class token, one relative position table over the whole patch grid plus
 * the three cls entries) or `detection` (mmdet: no class token, per-block windows whose tables have no extra rows).
 */
export type BEiTVariant = 'segmentation' | 'detection';

/** Constructor options of {@link BEiT}, with the authors' (snake_case) names. */
export interface BEiTOptions {
  /** Image size the relative position tables (and `pos_embed`) are built for: a side, or (H, W). */
  img_size?: number | [number, number];
  patch_size?: number;
  in_chans?: number;
  embed_dim?: number;
  depth?: number;
  num_heads?: number;
  mlp_ratio?: number;
  /** q and v biases (`q_bias`, `v_bias`; no k bias). */
  qkv_bias?: boolean;
  /** Attention scale; default head_dim^-0.5. */
  qk_scale?: number | null;
  drop_rate?: number;
  attn_drop_rate?: number;
  drop_path_rate?: number;
  /** Layer scale init (`gamma_1`, `gamma_2`); null or undefined: no layer scale. */
  init_values?: number | null;
  /** An absolute position table `pos_embed`. */
  use_abs_pos_emb?: boolean;
  /** A relative position bias table in every block. */
  use_rel_pos_bias?: boolean;
  /** One relative position bias table shared by all blocks (`rel_pos_bias.*`). */
  use_shared_rel_pos_bias?: boolean;
  /** Gradient checkpointing of blocks in training. */
  with_cp?: boolean;
  /**
   * A BEiT / BEiTv2 checkpoint (unilm layout) loaded at construction as the authors' `init_weights` does (see
   * {@link loadBEiTPretrained}); null: none.
   */
  pretrained?: string | null;
  /** Detection code base: window attention per block (bool for all, or one per block). */
  window_attn?: boolean | boolean[];
  /** Detection code base: window side per block (one number for all, or one per block). */
  window_size?: number | number[];
  /** Detection code base: image size of the `pos_embed` grid (resized to the input). */
  pretrain_size?: number;
  /** Which code base's BEiT (default segmentation). */
  variant?: BEiTVariant;
  /** Ignored (the authors' classification head size; the backbone has no head). */
  num_classes?: number;
  /** Ignored (the authors' alias of `with_cp`). */
  use_checkpoint?: boolean;
}

const BADDBMM = op('aten::baddbmm');
/** libtorch 2.x's fused attention (takes the additive bias itself); absent on 1.13, where the composition runs. */
const FUSED_ATTENTION = op('aten::scaled_dot_product_attention');

const pair = (v: number | [number, number]): [number, number] => (Array.isArray(v) ? [v[0], v[1]] : [v, v]);

/**
 * The relative position index of the segmentation code base: tokens (h, w) of a Wh×Ww grid plus one cls token at
 * index 0; `index[1+p, 1+q] = (h1−h2+Wh−1)(2Ww−1) + (w1−w2+Ww−1)`, row 0 = L−3, column 0 = L−2, [0,0] = L−1
 * (L = (2Wh−1)(2Ww−1)+3). Without `cls`, the detection code base's (Wh·Ww)² index with L = (2Wh−1)(2Ww−1).
 */
export function relativePositionIndex(Wh: number, Ww: number, cls: boolean): { index: Int32Array; size: number; tableLength: number } {
  const n = Wh * Ww;
  const rel = (2 * Wh - 1) * (2 * Ww - 1);
  const L = cls ? rel + 3 : rel;
  const size = cls ? n + 1 : n;
  const off = cls ? 1 : 0;
  const index = new Int32Array(size * size);
  for (let p = 0; p < n; p++) {
    const h1 = Math.trunc(p / Ww);
    const w1 = p % Ww;
    for (let q = 0; q < n; q++) {
      const h2 = Math.trunc(q / Ww);
      const w2 = q % Ww;
      index[(p + off) * size + q + off] = (h1 - h2 + Wh - 1) * (2 * Ww - 1) + (w1 - w2 + Ww - 1);
    }
  }
  if (cls) {
    for (let j = 0; j < size; j++) index[j] = L - 3;
    for (let i = 0; i < size; i++) index[i * size] = L - 2;
    index[0] = L - 1;
  }
  return { index, size, tableLength: L };
}

function indexTensor(Wh: number, Ww: number, cls: boolean): { t: Tensor; tableLength: number } {
  const r = relativePositionIndex(Wh, Ww, cls);
  return { t: tensor(r.index, { dtype: 'int64', shape: [r.size, r.size] }), tableLength: r.tableLength };
}

/** `table[index]` as heads × N × N. */
function gatherBias(table: Tensor, index: Tensor): Tensor {
  const [n] = index.shape as [number];
  const heads = table.shape[1]!;
  return table.indexSelect(0, index.flatten()).view(n, n, heads).permute(2, 0, 1);
}

/**
 * One shared relative position bias (`use_shared_rel_pos_bias`, and the unilm pre-training checkpoints).
 * Keys: `relative_position_bias_table`, `relative_position_index`.
 */
export class RelativePositionBias extends Module {
  relative_position_bias_table: Tensor;
  relative_position_index: Tensor;
  constructor(readonly windowSize: [number, number], numHeads: number) {
    super();
    const { t, tableLength } = indexTensor(windowSize[0], windowSize[1], true);
    this.relative_position_bias_table = this.registerParameter('relative_position_bias_table', zeros([tableLength, numHeads]));
    this.relative_position_index = this.registerBuffer('relative_position_index', t);
  }
  /** heads × (1+N) × (1+N). */
  forward(): Tensor {
    return gatherBias(this.relative_position_bias_table, this.relative_position_index);
  }
}

/** Options of {@link BEiTAttention}. */
export interface BEiTAttentionOptions {
  dim: number;
  numHeads: number;
  qkvBias: boolean;
  qkScale?: number | null;
  attnDrop?: number;
  projDrop?: number;
  /** Relative position table for this window (h, w), or null for none. */
  windowSize?: [number, number] | null;
  /** Whether the table has the three cls entries (segmentation code base). */
  cls?: boolean;
  /** Detection code base: attention inside non-overlapping windows of `windowSize` (zero-padded). */
  windowed?: boolean;
}

/**
 * BEiT attention. Keys: `q_bias`, `v_bias`, `relative_position_bias_table`, `relative_position_index`, `qkv`
 * (no bias), `proj`. The qkv bias is `cat(q_bias, 0, v_bias)`.
 */
export class BEiTAttention extends Module {
  readonly qkv: Linear;
  q_bias: Tensor | null = null;
  v_bias: Tensor | null = null;
  relative_position_bias_table: Tensor | null = null;
  relative_position_index: Tensor | null = null;
  readonly proj: Linear;
  readonly scale: number;
  readonly windowSize: [number, number] | null;
  readonly windowed: boolean;
  readonly attnDrop: Dropout;
  readonly projDrop: Dropout;
  constructor(readonly o: BEiTAttentionOptions) {
    super();
    const { dim, numHeads } = o;
    if (dim % numHeads) throw new Error(`BEiTAttention: dim ${dim} is not divisible by num_heads ${numHeads}`);
    this.scale = o.qkScale ?? (dim / numHeads) ** -0.5;
    this.qkv = this.registerModule('qkv', new Linear(dim, dim * 3, { bias: false }));
    if (o.qkvBias) {
      this.q_bias = this.registerParameter('q_bias', zeros([dim]));
      this.v_bias = this.registerParameter('v_bias', zeros([dim]));
    }
    this.windowSize = o.windowSize ?? null;
    this.windowed = o.windowed ?? false;
    if (this.windowed && !this.windowSize) throw new Error('BEiTAttention: window attention needs a window size');
    if (this.windowSize) {
      const { t, tableLength } = indexTensor(this.windowSize[0], this.windowSize[1], o.cls ?? false);
      this.relative_position_bias_table = this.registerParameter('relative_position_bias_table', zeros([tableLength, numHeads]));
      this.relative_position_index = this.registerBuffer('relative_position_index', t);
    }
    this.proj = this.registerModule('proj', new Linear(dim, dim));
    this.attnDrop = new Dropout(o.attnDrop ?? 0);
    this.projDrop = new Dropout(o.projDrop ?? 0);
  }

  /** The relative position bias heads × N × N of this block's table (null without one). */
  relativeBias(): Tensor | null {
    if (!this.relative_position_bias_table || !this.relative_position_index) return null;
    return gatherBias(this.relative_position_bias_table, this.relative_position_index);
  }

  private qkvBias(): Tensor | null {
    if (!this.q_bias || !this.v_bias) return null;
    return cat([this.q_bias, zerosLike(this.v_bias), this.v_bias]);
  }

  /** Attention over tokens x (B×N×C) with an additive bias (heads×N×N or null). */
  private attend(x: Tensor, bias: Tensor | null): Tensor {
    const [B, N, C] = x.shape as [number, number, number];
    const h = this.o.numHeads;
    const qkv = linear(x, this.qkv.weight, this.qkvBias()).reshape(B, N, 3, h, C / h).permute(2, 0, 3, 1, 4);
    const [q, k, v] = qkv.unbind(0) as [Tensor, Tensor, Tensor];
    let y: Tensor;
    if (this.training && this.attnDrop.p > 0) {
      let logits = q.mul(this.scale).matmul(k.transpose(-2, -1));
      if (bias) logits = logits.add(bias.unsqueeze(0));
      this.attnDrop.training = true;
      y = this.attnDrop.forward(softmax(logits, -1)).matmul(v);
    } else if (bias && !FUSED_ATTENTION.available()) {
      // bias + scale·q·kᵀ in one baddbmm (no scaled copy of q, no separate bias pass), then softmax · v.
      const hd = C / h;
      const b3 = (B === 1 ? bias : bias.unsqueeze(0).expand(B, -1, -1, -1)).reshape(B * h, N, N);
      const logits = BADDBMM.t([b3.handle, q.reshape(B * h, N, hd).handle, k.reshape(B * h, N, hd).transpose(1, 2).handle, 1, this.scale]);
      y = softmax(logits, -1).bmm(v.reshape(B * h, N, hd)).view(B, h, N, hd);
    } else {
      y = scaledDotProductAttention(q, k, v, { scale: this.scale, attnMask: bias ? bias.unsqueeze(0) : null });
    }
    return y.transpose(1, 2).reshape(B, N, C);
  }

  /**
   * x: B×N×C tokens on an H×W grid (N = H·W, or 1 + H·W with the cls token). `relPosBias`: the shared bias
   * (heads×N×N), added to this block's own.
   */
  forward(x: Tensor, H: number, W: number, relPosBias: Tensor | null = null): Tensor {
    this.projDrop.training = this.training;
    if (this.windowed) return this.projDrop.forward(this.forwardWindowed(x, H, W, relPosBias));
    let bias = this.relativeBias();
    if (bias && bias.shape[1] !== x.shape[1]) {
      throw new Error(`BEiTAttention: the relative position table is for ${bias.shape[1]} tokens (a ${this.windowSize!.join('×')} ` +
        `grid${this.o.cls ? ' + cls' : ''}) but the input has ${x.shape[1]}; build the model with img_size matching the input`);
    }
    if (relPosBias) bias = bias ? bias.add(relPosBias) : relPosBias;
    return this.projDrop.forward(this.proj.forward(this.attend(x, bias)));
  }

  /**
   * The detection code base's window attention: the (normed) tokens are zero-padded at the bottom/right to a
   * multiple of the window, attention runs inside each window with the window's relative bias (padded tokens are
   * keys too: their k is 0 and their v is `v_bias`), the projection is applied, and the map is cropped.
   */
  private forwardWindowed(x: Tensor, H: number, W: number, relPosBias: Tensor | null): Tensor {
    const [B, N, C] = x.shape as [number, number, number];
    if (N !== H * W) throw new Error(`BEiTAttention: window attention needs H·W = ${H * W} tokens, got ${N}`);
    const [wh, ww] = this.windowSize!;
    const Hp = Math.ceil(H / wh) * wh;
    const Wp = Math.ceil(W / ww) * ww;
    let map = x.reshape(B, H, W, C);
    if (Hp !== H || Wp !== W) map = pad(map, [0, 0, 0, Wp - W, 0, Hp - H]);
    const nh = Hp / wh;
    const nw = Wp / ww;
    const win = map.reshape(B, nh, wh, nw, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, wh * ww, C);
    let bias = this.relativeBias();
    if (relPosBias) bias = bias ? bias.add(relPosBias) : relPosBias;
    const y = this.proj.forward(this.attend(win, bias));
    let out = y.reshape(B, nh, nw, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C);
    if (Hp !== H || Wp !== W) out = out.slice(1, 0, H).slice(2, 0, W);
    return out.reshape(B, N, C);
  }
}

/** Options of {@link BEiTBlock}. */
export interface BEiTBlockOptions extends BEiTAttentionOptions {
  mlpRatio: number;
  drop: number;
  dropPath: number;
  initValues: number | null;
  normEps: number;
  withCp?: boolean;
}

/** Pre-norm BEiT block. Keys: `gamma_1`, `gamma_2` (with layer scale), `norm1`, `attn`, `norm2`, `mlp`. */
export class BEiTBlock extends Module {
  gamma_1: Tensor | null = null;
  gamma_2: Tensor | null = null;
  readonly norm1: LayerNorm;
  readonly attn: BEiTAttention;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly dropPath: DropPath | Identity;
  readonly withCp: boolean;
  constructor(o: BEiTBlockOptions) {
    super();
    this.withCp = o.withCp ?? false;
    this.norm1 = this.registerModule('norm1', new LayerNorm(o.dim, o.normEps));
    this.attn = this.registerModule('attn', new BEiTAttention(o));
    this.dropPath = o.dropPath > 0 ? new DropPath(o.dropPath) : new Identity();
    this.norm2 = this.registerModule('norm2', new LayerNorm(o.dim, o.normEps));
    this.mlp = this.registerModule('mlp', new Mlp(o.dim, Math.trunc(o.dim * o.mlpRatio), o.drop));
    if (o.initValues !== null && o.initValues !== undefined) {
      this.gamma_1 = this.registerParameter('gamma_1', tensor(new Float32Array(o.dim).fill(o.initValues)));
      this.gamma_2 = this.registerParameter('gamma_2', tensor(new Float32Array(o.dim).fill(o.initValues)));
    }
  }
  /** x + γ1·attn(norm1(x)), then x + γ2·mlp(norm2(x)). */
  forward(x: Tensor, H: number, W: number, relPosBias: Tensor | null = null): Tensor {
    if (this.withCp && this.training) {
      return checkpoint((t) => [this.residuals(t!, H, W, relPosBias)], [x])[0]!;
    }
    return scope(() => this.residuals(x, H, W, relPosBias));
  }
  private residuals(x: Tensor, H: number, W: number, relPosBias: Tensor | null): Tensor {
    this.dropPath.training = this.training;
    let a = this.attn.forward(this.norm1.forward(x), H, W, relPosBias);
    if (this.gamma_1) a = a.mul(this.gamma_1);
    const x1 = x.add(this.dropPath.forward(a));
    let m = this.mlp.forward(this.norm2.forward(x1));
    if (this.gamma_2) m = m.mul(this.gamma_2);
    return x1.add(this.dropPath.forward(m));
  }
}

/** Option keys {@link BEiT} understands. */
export const BEIT_OPTION_KEYS: readonly string[] = [
  'img_size', 'patch_size', 'in_chans', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'qkv_bias', 'qk_scale', 'drop_rate',
  'attn_drop_rate', 'drop_path_rate', 'init_values', 'use_abs_pos_emb', 'use_rel_pos_bias', 'use_shared_rel_pos_bias',
  'with_cp', 'pretrained', 'window_attn', 'window_size', 'pretrain_size', 'variant', 'num_classes', 'use_checkpoint',
];

/**
 * The BEiT backbone (no head, no final norm). Keys: `cls_token` (segmentation), `pos_embed` (with
 * `use_abs_pos_emb`), `patch_embed.proj`, `rel_pos_bias.*` (shared), `blocks.N.*`.
 */
export class BEiT extends Module {
  readonly variant: BEiTVariant;
  readonly embedDim: number;
  readonly depth: number;
  readonly numHeads: number;
  readonly patchSize: number;
  readonly inChans: number;
  /** The patch grid of `img_size` (the relative position window of the segmentation code base). */
  readonly patchShape: [number, number];
  /** Detection: the `pos_embed` grid side (pretrain_size / patch). */
  readonly pretrainGrid: number;
  readonly normEps = 1e-6;
  cls_token: Tensor | null = null;
  pos_embed: Tensor | null = null;
  readonly patch_embed: PatchEmbed;
  readonly posDrop: Dropout;
  readonly rel_pos_bias: RelativePositionBias | null = null;
  readonly blocks: ModuleList<BEiTBlock>;
  /** Per-block window sizes of the detection code base (null in segmentation). */
  readonly windowSizes: number[] | null = null;
  readonly windowAttn: boolean[] | null = null;

  constructor(options: BEiTOptions = {}, knownExtra: readonly string[] = []) {
    super();
    const unknown = Object.keys(options).filter((k) => !BEIT_OPTION_KEYS.includes(k) && !knownExtra.includes(k) && k !== 'type');
    if (unknown.length) throw new Error(`${new.target.name}: unknown option(s) ${unknown.join(', ')}`);
    const o = options;
    this.variant = o.variant ?? 'segmentation';
    if (this.variant !== 'segmentation' && this.variant !== 'detection') {
      throw new Error(`BEiT: variant must be segmentation or detection, got ${JSON.stringify(this.variant)}`);
    }
    const seg = this.variant === 'segmentation';
    const D = (this.embedDim = o.embed_dim ?? 768);
    const depth = (this.depth = o.depth ?? 12);
    const heads = (this.numHeads = o.num_heads ?? 12);
    this.patchSize = o.patch_size ?? 16;
    this.inChans = o.in_chans ?? 3;
    const [ih, iw] = pair(o.img_size ?? 224);
    this.patchShape = [Math.trunc(ih / this.patchSize), Math.trunc(iw / this.patchSize)];
    this.pretrainGrid = Math.trunc((o.pretrain_size ?? ih) / this.patchSize);
    const numPatches = this.patchShape[0] * this.patchShape[1];
    this.patch_embed = this.registerModule('patch_embed', new PatchEmbed(this.patchSize, this.inChans, D));
    if (seg) this.cls_token = this.registerParameter('cls_token', zeros([1, 1, D]));
    if (o.use_abs_pos_emb) {
      const rows = seg ? numPatches + 1 : this.pretrainGrid * this.pretrainGrid;
      this.pos_embed = this.registerParameter('pos_embed', zeros([1, rows, D]));
    }
    this.posDrop = new Dropout(o.drop_rate ?? 0);
    if (o.use_shared_rel_pos_bias) {
      if (!seg) throw new Error('BEiT: use_shared_rel_pos_bias is only supported by the segmentation code base');
      this.rel_pos_bias = this.registerModule('rel_pos_bias', new RelativePositionBias(this.patchShape, heads));
    }
    const dpr = linspace(0, o.drop_path_rate ?? 0, depth).consume((t) => Array.from(t.toTypedArray() as Float32Array));
    const perBlock = <T>(v: T | T[] | undefined, dflt: T, name: string): T[] => {
      if (Array.isArray(v)) {
        if (v.length !== depth) throw new Error(`BEiT: ${name} has ${v.length} entries, expected one per block (depth ${depth})`);
        return [...v];
      }
      return Array(depth).fill(v ?? dflt) as T[];
    };
    if (!seg) {
      this.windowAttn = perBlock(o.window_attn, false, 'window_attn');
      this.windowSizes = perBlock(o.window_size, 14, 'window_size');
    } else if (o.window_attn !== undefined && o.window_attn !== false || o.window_size !== undefined) {
      throw new Error('BEiT: window_attn / window_size belong to the detection code base (variant: "detection")');
    }
    const useRel = o.use_rel_pos_bias ?? false;
    this.blocks = this.registerModule('blocks', new ModuleList<BEiTBlock>());
    for (let i = 0; i < depth; i++) {
      const ws = seg ? this.patchShape : [this.windowSizes![i]!, this.windowSizes![i]!] as [number, number];
      this.blocks.push(new BEiTBlock({
        dim: D, numHeads: heads, qkvBias: o.qkv_bias ?? false, qkScale: o.qk_scale ?? null, attnDrop: o.attn_drop_rate ?? 0,
        projDrop: o.drop_rate ?? 0, windowSize: useRel ? ws : null, cls: seg, windowed: seg ? false : this.windowAttn![i]!,
        mlpRatio: o.mlp_ratio ?? 4, drop: o.drop_rate ?? 0, dropPath: dpr[i]!, initValues: o.init_values ?? null,
        normEps: this.normEps, withCp: o.with_cp ?? o.use_checkpoint ?? false,
      }));
    }
    this.initBEiTWeights();
    if (o.pretrained) this.pretrainedReport = loadBEiTPretrainedInto(this, o.pretrained);
  }

  /** What loading `pretrained` did (null when none was given). */
  pretrainedReport: BEiTPretrainedReport | null = null;

  /**
   * Initialisation: trunc-normal(0.02) class token, position table and relative position tables, as the authors.
   * Linear layers keep their default (PyTorch's) initialisation rather than the authors' trunc-normal(0.02), as
   * this project's ViT does: BEiT backbones are always used with pretrained weights, and trunc-normal over ~300 M
   * parameters takes over a minute on a small CPU.
   */
  protected initBEiTWeights(): void {
    if (this.cls_token) truncNormal_(this.cls_token, 0, 0.02);
    if (this.pos_embed) truncNormal_(this.pos_embed, 0, 0.02);
    for (const b of this.blocks) {
      if (b.attn.relative_position_bias_table) truncNormal_(b.attn.relative_position_bias_table, 0, 0.02);
    }
    if (this.rel_pos_bias) truncNormal_(this.rel_pos_bias.relative_position_bias_table, 0, 0.02);
  }

  /** Checks an image batch: B×in_chans×H×W with sides multiple of the patch size. */
  protected checkImage(x: Tensor, name: string, multiple = this.patchSize): [number, number, number] {
    if (x.ndim !== 4 || x.shape[1] !== this.inChans) {
      throw new Error(`${name}: expected input B×${this.inChans}×H×W, got [${x.shape.join(', ')}]`);
    }
    const [B, , h, w] = x.shape as [number, number, number, number];
    if (h % multiple || w % multiple) {
      throw new Error(`${name}: input height and width must be multiples of ${multiple}, got ${h}×${w}`);
    }
    return [B, h, w];
  }

  /** Detection code base: the `pos_embed` grid resized bicubically to H×W (1×HW×D). */
  protected posEmbedFor(H: number, W: number): Tensor {
    const g = this.pretrainGrid;
    const D = this.embedDim;
    const table = this.pos_embed!.reshape(1, g, g, D).permute(0, 3, 1, 2);
    const resized = H === g && W === g ? table : interpolate(table, { size: [H, W], mode: 'bicubic', alignCorners: false });
    return resized.reshape(1, D, H * W).permute(0, 2, 1);
  }

  /**
   * Patch embedding (+ absolute positions where the model has them) and position dropout; tokens without cls.
   * The segmentation code base adds its table (cls row included) after prepending cls, see {@link BEiTBaseline}.
   */
  embedPatches(x: Tensor): { tokens: Tensor; H: number; W: number } {
    const { tokens, H, W } = this.patch_embed.forward(x);
    let t = tokens;
    if (this.pos_embed && this.variant === 'detection') t = t.add(this.posEmbedFor(H, W));
    this.posDrop.training = this.training;
    return { tokens: this.posDrop.forward(t), H, W };
  }

  /** The shared relative position bias (heads × N × N), or null. */
  sharedBias(): Tensor | null {
    return this.rel_pos_bias ? this.rel_pos_bias.forward() : null;
  }

  /**
   * Receives `blocks.{j}` for every block that does not end the range a {@link runBlocks} call runs (set by a
   * forward that captures intermediates; null otherwise).
   */
  protected blockCapture: ((name: string, t: Tensor) => void) | null = null;

  /** Runs blocks [from, to] (inclusive) on tokens (with the cls token first in the segmentation code base). */
  runBlocks(x: Tensor, from: number, to: number, H: number, W: number): Tensor {
    return scope(() => {
      const shared = this.sharedBias();
      let y = x;
      for (let i = from; i <= to; i++) {
        y = this.blocks.at(i).forward(y, H, W, shared);
        if (i < to) this.blockCapture?.(`blocks.${i}`, y);
      }
      return y;
    });
  }
}

/** Options of {@link BEiTBaseline}. */
export interface BEiTBaselineOptions extends BEiTOptions {
  /** Blocks whose outputs feed fpn1..fpn4 (four indexes). */
  out_indices?: number[];
}

/**
 * The authors' `BEiTBaseline`: plain BEiT whose four chosen block outputs go through fpn1 (ConvT 2×2/2 → BatchNorm →
 * GELU → ConvT 2×2/2, stride 4), fpn2 (ConvT, stride 8), fpn3 (identity, stride 16), fpn4 (max-pool 2×2, stride 32).
 * Keys: BEiT's plus `fpn1.{0,1,3}`, `fpn2.0`.
 */
export class BEiTBaseline extends BEiT {
  readonly outIndices: number[];
  readonly fpn1: Sequential;
  readonly fpn2: Sequential;

  constructor(options: BEiTBaselineOptions = {}) {
    const { out_indices: outIdx, ...rest } = options;
    super(rest);
    if (this.variant !== 'segmentation') throw new Error('BEiTBaseline: only the segmentation code base (cls token) is supported');
    this.outIndices = outIdx ?? [3, 5, 7, 11];
    if (this.outIndices.length !== 4 || new Set(this.outIndices).size !== 4 || this.outIndices.some((i) => !(i >= 0 && i < this.depth))) {
      throw new Error(`BEiTBaseline: out_indices must be four distinct block indexes below depth ${this.depth}, got [${this.outIndices.join(', ')}]`);
    }
    const D = this.embedDim;
    if (this.patchSize !== 16) throw new Error(`BEiTBaseline: the FPN is built for patch size 16, got ${this.patchSize}`);
    this.fpn1 = this.registerModule('fpn1', new Sequential(
      new ConvTranspose2d(D, D, 2, { stride: 2 }), new BatchNorm2d(D), new GELU(), new ConvTranspose2d(D, D, 2, { stride: 2 })));
    this.fpn2 = this.registerModule('fpn2', new Sequential(new ConvTranspose2d(D, D, 2, { stride: 2 })));
  }

  /**
   * The four FPN maps (strides 4, 8, 16, 32). `capture` receives `blocks.{j}` (B×(1+N)×D) for every block.
   */
  forward(x: Tensor, capture?: (name: string, t: Tensor) => void): [Tensor, Tensor, Tensor, Tensor] {
    const [B] = this.checkImage(x, 'BEiTBaseline');
    return scope(() => {
      const { tokens, H, W } = this.patch_embed.forward(x);
      let t = cat([this.cls_token!.expand(B, -1, -1), tokens], 1);
      if (this.pos_embed) {
        if (this.pos_embed.shape[1] !== t.shape[1]) {
          throw new Error(`BEiTBaseline: pos_embed has ${this.pos_embed.shape[1]} rows, the input has ${t.shape[1]} tokens`);
        }
        t = t.add(this.pos_embed);
      }
      this.posDrop.training = this.training;
      t = this.posDrop.forward(t);
      const shared = this.sharedBias();
      const feats: Tensor[] = [];
      for (let i = 0; i < this.depth; i++) {
        t = this.blocks.at(i).forward(t, H, W, shared);
        capture?.(`blocks.${i}`, t);
        if (this.outIndices.includes(i)) feats.push(t.slice(1, 1, null).permute(0, 2, 1).reshape(B, this.embedDim, H, W));
      }
      // Features in block order; fpn1..fpn4 applied by position, as the authors' loop.
      return [
        this.fpn1.forward(feats[0]!),
        this.fpn2.forward(feats[1]!),
        feats[2]!,
        maxPool2d(feats[3]!, 2, { stride: 2 }),
      ] as [Tensor, Tensor, Tensor, Tensor];
    });
  }
}

// ---- pretrained BEiT / BEiTv2 checkpoints: the authors' load_checkpoint -----------------------------------------

/**
 * The coordinates the authors' `load_checkpoint` uses to re-sample an S×S relative position grid to T×T: the ratio q
 * of a geometric progression found by bisection on [1.01, 1.5] (until the bracket is below 1e-6; the last midpoint
 * is used) so that its S//2 terms sum to about T//2; source coordinates `x = −dis reversed, 0, dis` with
 * `dis[i] = Σ_{j≤i} q^j`; target coordinates `dx = arange(−T//2, T//2 + 0.1)`.
 */
export function relposResizeCoordinates(S: number, T: number): { q: number; x: number[]; dx: number[] } {
  const half = Math.floor(S / 2);
  let left = 1.01;
  let right = 1.5;
  let q = 0;
  while (right - left > 1e-6) {
    q = (left + right) / 2;
    const gp = (1 - q ** half) / (1 - q);
    if (gp > Math.floor(T / 2)) right = q;
    else left = q;
  }
  const dis: number[] = [];
  let cur = 1;
  for (let i = 0; i < half; i++) {
    dis.push(cur);
    cur += q ** (i + 1);
  }
  const x = [...dis.map((v) => -v).reverse(), 0, ...dis];
  const t = Math.floor(T / 2);
  const dx: number[] = [];
  for (let v = -t; v < t + 0.1; v += 1) dx.push(v);
  return { q, x, dx };
}

/**
 * The weights W (targets × knots) of the interpolating cubic spline with not-a-knot end conditions through knots
 * `x`, evaluated at `at` (points outside [x₀, x_last] are clamped to the ends): spline(at) = W · values. The spline is
 * linear in the values, so W is built from the unit vectors. Needs at least 4 knots (as FITPACK's cubic).
 */
export function notAKnotSplineWeights(x: readonly number[], at: readonly number[]): Float64Array {
  const n = x.length;
  if (n < 4) throw new Error(`cubic spline interpolation needs at least 4 knots, got ${n}`);
  const h = Array.from({ length: n - 1 }, (_, i) => x[i + 1]! - x[i]!);
  // Second derivatives M solve A·M = B·y; A is fixed, so invert it once by Gaussian elimination.
  const A: number[][] = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  A[0]![0] = h[1]!; A[0]![1] = -(h[0]! + h[1]!); A[0]![2] = h[0]!;
  for (let i = 1; i < n - 1; i++) {
    A[i]![i - 1] = h[i - 1]!; A[i]![i] = 2 * (h[i - 1]! + h[i]!); A[i]![i + 1] = h[i]!;
  }
  A[n - 1]![n - 3] = h[n - 2]!; A[n - 1]![n - 2] = -(h[n - 3]! + h[n - 2]!); A[n - 1]![n - 1] = h[n - 3]!;
  // B: right-hand side as a matrix over y (rows 0 and n−1 are zero).
  const Bm: number[][] = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 1; i < n - 1; i++) {
    Bm[i]![i + 1] = 6 / h[i]!;
    Bm[i]![i] = -6 / h[i]! - 6 / h[i - 1]!;
    Bm[i]![i - 1] = 6 / h[i - 1]!;
  }
  // Solve A·Mmat = Bm (Mmat: n×n, column j = second derivatives for unit vector e_j).
  const a = A.map((r, i) => [...r, ...Bm[i]!]);
  for (let col = 0; col < n; col++) {
    let piv = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(a[r]![col]!) > Math.abs(a[piv]![col]!)) piv = r;
    [a[col], a[piv]] = [a[piv]!, a[col]!];
    const p = a[col]![col]!;
    for (let r = 0; r < n; r++) {
      if (r === col) continue;
      const f = a[r]![col]! / p;
      if (f === 0) continue;
      for (let k = col; k < 2 * n; k++) a[r]![k]! -= f * a[col]![k]!;
    }
  }
  const M = a.map((r, i) => r.slice(n).map((v) => v / a[i]![i]!));
  const W = new Float64Array(at.length * n);
  at.forEach((t0, row) => {
    const t = Math.min(Math.max(t0, x[0]!), x[n - 1]!);
    let i = 0;
    while (i < n - 2 && t > x[i + 1]!) i++;
    const hi = h[i]!;
    const A1 = (x[i + 1]! - t) / hi;
    const B1 = (t - x[i]!) / hi;
    const c0 = ((A1 ** 3 - A1) * hi * hi) / 6;
    const c1 = ((B1 ** 3 - B1) * hi * hi) / 6;
    for (let j = 0; j < n; j++) {
      let w = c0 * M[i]![j]! + c1 * M[i + 1]![j]!;
      if (j === i) w += A1;
      if (j === i + 1) w += B1;
      W[row * n + j] = w;
    }
  });
  return W;
}

/**
 * Re-samples the S×S part of a relative position table (rows `row·S + col`, one column per head; float64 values)
 * to T×T as the authors' `load_checkpoint` (bicubic not-a-knot spline over the geometric coordinates of
 * {@link relposResizeCoordinates}, tensor product along columns then rows, computed in float64). Returns T²×heads.
 */
export function resizeRelposGrid(grid: Float64Array, S: number, T: number, heads: number): Float64Array {
  const { x, dx } = relposResizeCoordinates(S, T);
  const W = notAKnotSplineWeights(x, dx); // T×S
  const out = new Float64Array(T * T * heads);
  const tmp = new Float64Array(S * T); // rows of the source, columns resampled
  for (let hd = 0; hd < heads; hd++) {
    for (let r = 0; r < S; r++) {
      for (let tc = 0; tc < T; tc++) {
        let s = 0;
        for (let c = 0; c < S; c++) s += W[tc * S + c]! * grid[(r * S + c) * heads + hd]!;
        tmp[r * T + tc] = s;
      }
    }
    for (let tr = 0; tr < T; tr++) {
      for (let tc = 0; tc < T; tc++) {
        let s = 0;
        for (let r = 0; r < S; r++) s += W[tr * S + r]! * tmp[r * T + tc]!;
        out[(tr * T + tc) * heads + hd] = s;
      }
    }
  }
  return out;
}

/** Which loader's rules re-size a table: the segmentation code base (extra cls rows kept) or the detection one (dropped). */
export type RelposLoader = 'segmentation' | 'detection';

/**
 * A checkpoint relative position table (`Ls`×heads) made to fit a model table of `Ld` rows as the authors'
 * `load_checkpoint`. Segmentation: `E = Ld − (2Wh−1)(2Ww−1)` extra rows (kept aside, appended after the resized
 * grid), `S = ⌊√(Ls−E)⌋`, `T = ⌊√(Ld−E)⌋`. Detection: E = 3 assumed for the source, `T = ⌊√Ld⌋`, the extra rows are
 * dropped. Returns the new table as float32 (`resized` false when S = T and nothing but the extras changed), and
 * the authors' log line.
 */
export function resizeRelposTable(src: Float64Array, Ls: number, heads: number, Ld: number, loader: RelposLoader,
  patchShape: [number, number]): { table: Float32Array; rows: number; resized: boolean; S: number; T: number } {
  if (patchShape[0] !== patchShape[1]) {
    throw new Error(`relative position table resize: the model's patch grid must be square, got ${patchShape.join('×')} ` +
      '(the authors\' load_checkpoint raises NotImplementedError)');
  }
  const seg = loader === 'segmentation';
  const E = seg ? Ld - (2 * patchShape[0] - 1) * (2 * patchShape[1] - 1) : 3;
  if (E < 0 || Ls - E <= 0) throw new Error(`relative position table resize: cannot fit ${Ls} rows to ${Ld} (extra rows ${E})`);
  const S = Math.trunc(Math.sqrt(Ls - E));
  const T = Math.trunc(Math.sqrt(seg ? Ld - E : Ld));
  const extras = src.subarray((Ls - E) * heads, Ls * heads);
  let grid: Float64Array;
  let resized = false;
  if (S !== T) {
    grid = resizeRelposGrid(src.subarray(0, (Ls - E) * heads), S, T, heads);
    resized = true;
  } else {
    grid = src.subarray(0, (Ls - E) * heads);
  }
  const keep = seg ? extras : new Float64Array(0);
  const table = new Float32Array(grid.length + keep.length);
  table.set(grid);
  table.set(keep, grid.length);
  return { table, rows: table.length / heads, resized, S, T };
}

/** What {@link loadBEiTPretrainedInto} did. */
export interface BEiTPretrainedReport {
  /** The file loaded. */
  path: string;
  /** Checkpoint keys the model does not have (ignored: `mask_token`, `norm`, `lm_head`, ...). */
  unexpected: string[];
  /** Model keys (of the BEiT part) the checkpoint lacks (normally the dropped index buffers). */
  missing: string[];
  /** The authors' log lines (shared table expanded, tables interpolated). */
  log: string[];
}

const isAdapterKey = (k: string): boolean => /^(level_embed|spm\.|interactions\.|up\.|norm[1-4]\.|fpn[12]\.)/.test(k);

/**
 * Loads a BEiT / BEiTv2 checkpoint (unilm layout) into a BEiT-based model as the authors' `init_weights` →
 * `load_checkpoint`: takes `state_dict` / `model` / `module` (or the whole file), strips `module.`, keeps only
 * `encoder.*` when the alphabetically first key starts with `encoder`; copies a shared
 * `rel_pos_bias.relative_position_bias_table` to every block (when the model has per-block tables); drops every
 * `relative_position_index` (the model keeps its own); re-samples relative position tables whose grid differs
 * ({@link resizeRelposTable}) and a `pos_embed` whose grid differs (bicubic); loads non-strictly. Keys outside the
 * BEiT part (adapter, FPN) are neither expected nor reported missing.
 */
export function loadBEiTPretrainedInto(model: BEiT, path: string): BEiTPretrainedReport {
  const { sources, checkpoint: ckpt } = openStateDict(path);
  try {
    let entries = [...sources.entries()];
    if (entries.length === 0) throw new Error(`${path}: no tensors in the checkpoint`);
    if (entries[0]![0].startsWith('module.')) entries = entries.map(([k, v]) => [k.startsWith('module.') ? k.slice(7) : k, v]);
    const first = [...entries.map(([k]) => k)].sort()[0]!;
    if (first.startsWith('encoder')) entries = entries.filter(([k]) => k.startsWith('encoder.')).map(([k, v]) => [k.slice(8), v]);
    const sd = new Map<string, Tensor | TensorSource>(entries);
    const log: string[] = [];
    const own = model.stateDict();
    const shared = 'rel_pos_bias.relative_position_bias_table';
    if (sd.has(shared) && !model.rel_pos_bias) {
      log.push('Expand the shared relative position embedding to each layers. ');
      const src = sd.get(shared)!;
      for (let i = 0; i < model.depth; i++) sd.set(`blocks.${i}.attn.relative_position_bias_table`, src);
      sd.delete(shared);
    }
    for (const k of [...sd.keys()]) if (k.endsWith('relative_position_index')) sd.delete(k);
    const made: Tensor[] = [];
    for (const [k, s] of [...sd]) {
      if (!k.endsWith('relative_position_bias_table')) continue;
      const dst = own.get(k);
      if (!dst) continue;
      const [Ls, heads] = s.shape as [number, number];
      const [Ld, hd] = dst.shape as [number, number];
      if (heads !== hd) continue; // reported as a mismatch by the load
      const t = s instanceof Tensor ? s : s.materialize();
      const values = t.to('float64').consume((v) => Float64Array.from(v.toTypedArray() as Float64Array));
      if (t !== s) t.dispose();
      const r = resizeRelposTable(values, Ls, heads, Ld, model.variant, model.patchShape);
      if (r.resized) log.push(`Position interpolate for ${k} from ${r.S}x${r.S} to ${r.T}x${r.T}`);
      const nt = tensor(r.table, { shape: [r.rows, heads] });
      made.push(nt);
      sd.set(k, nt);
    }
    const pe = sd.get('pos_embed');
    if (pe && model.pos_embed) {
      const D = pe.shape[pe.shape.length - 1]!;
      const numPatches = model.patchShape[0] * model.patchShape[1];
      const extra = model.pos_embed.shape[1]! - numPatches;
      const orig = Math.trunc(Math.sqrt(pe.shape[1]! - extra));
      const size = Math.trunc(Math.sqrt(numPatches));
      if (orig !== size) {
        const t = pe instanceof Tensor ? pe : pe.materialize();
        const grid = t.slice(1, extra, null).reshape(1, orig, orig, D).permute(0, 3, 1, 2);
        const res = interpolate(grid, { size: [size, size], mode: 'bicubic', alignCorners: false }).flatten(2).transpose(1, 2);
        const nt = cat([t.slice(1, 0, extra), res], 1).keep();
        if (t !== pe) t.dispose();
        log.push(`Position interpolate from ${orig}x${orig} to ${size}x${size}`);
        made.push(nt);
        sd.set('pos_embed', nt);
      }
    }
    const r = model.loadStateDict(sd, { strict: false });
    made.forEach((t) => t.dispose());
    if (r.mismatched.length) {
      throw new StateDictError({ missing: [], unexpected: [], mismatched: r.mismatched }, `${model.constructor.name} (pretrained ${path})`);
    }
    return { path, unexpected: r.unexpected, missing: r.missing.filter((k) => !isAdapterKey(k)), log };
  } finally {
    ckpt.close();
  }
}
