/**
 * The BEiT-3 multiway Transformer encoder (microsoft/torchscale v0.2.0 `BEiT3`, built as unilm's `beit3`
 * `BEiT3Wrapper` builds it), with its own key names so released BEiT-3 checkpoints load as they are:
 * `beit3.vision_embed.{proj,cls_token,mask_token}`, `beit3.text_embed`, `beit3.encoder.embed_positions.{A,B}`,
 * `beit3.encoder.layers.N.{self_attn.{q,k,v,out}_proj,self_attn.inner_attn_ln,self_attn_layer_norm,ffn.{fc1,fc2,
 * ffn_layernorm},final_layer_norm}.{A,B}`, `beit3.encoder.layer_norm.{A,B}`.
 *
 * Every multiway module has two experts: A (vision) and B (language). An image alone goes through A; image and text
 * together split the sequence at 1+N (the vision tokens use A, the text tokens B) and attend jointly. Pre-LN with
 * sub-LN (`inner_attn_ln`, `ffn_layernorm`), LayerNorm eps 1e-5, GELU, no embedding scale, no relative position, no
 * layer scale; positions are learned tables with the Fairseq offset of 2.
 *
 * {@link BEiT3Adapter} puts ViT-Adapter on the vision path. That combination's code is not public (see the fixture
 * README): its wiring here — the cls token carried through the interactions as in BEiT-Adapter, the position table
 * resized bicubically to the input grid — is this project's design, not checked against the authors'.
 */
import {
  type Tensor, cat, checkpoint, gelu, interpolate, linspace, scope, softmax, zeros,
} from '../engine/index.js';
import {
  Conv2d, DropPath, Embedding, Identity, LayerNorm, Linear, Module, ModuleList,
} from '../nn/index.js';
import { truncNormal_, zeros_ } from '../nn/init.js';

/** The torchscale `EncoderConfig` fields BEiT-3 uses (unilm's values as defaults). */
export interface BEiT3Config {
  img_size?: number;
  patch_size?: number;
  in_chans?: number;
  encoder_embed_dim?: number;
  encoder_attention_heads?: number;
  encoder_ffn_embed_dim?: number;
  encoder_layers?: number;
  vocab_size?: number;
  /** Rows of the text position table (1024 in the released models). */
  max_source_positions?: number;
  layernorm_eps?: number;
  drop_path_rate?: number;
  /** Gradient checkpointing of layers in training. */
  checkpoint_activations?: boolean;
  /** Accepted for a verbatim config; BEiT-3 needs multiway true, subln true, normalize_before true, no scaling. */
  multiway?: boolean;
  layernorm_embedding?: boolean;
  normalize_output?: boolean;
  no_output_layer?: boolean;
  encoder_normalize_before?: boolean;
  subln?: boolean;
  deepnorm?: boolean;
  activation_fn?: string;
  no_scale_embedding?: boolean;
  rel_pos_buckets?: number;
  max_rel_pos?: number;
  xpos_rel_pos?: boolean;
  bert_init?: boolean;
}

function checkSupported(c: BEiT3Config): void {
  const need: [keyof BEiT3Config, unknown][] = [
    ['multiway', true], ['layernorm_embedding', false], ['normalize_output', true], ['no_output_layer', true],
    ['encoder_normalize_before', true], ['subln', true], ['deepnorm', false], ['activation_fn', 'gelu'],
    ['no_scale_embedding', true], ['rel_pos_buckets', 0], ['max_rel_pos', 0], ['xpos_rel_pos', false],
  ];
  for (const [k, v] of need) {
    if (c[k] !== undefined && c[k] !== v) throw new Error(`BEiT3: ${k}=${JSON.stringify(c[k])} is not supported (BEiT-3 uses ${JSON.stringify(v)})`);
  }
}

/**
 * A module with two experts A (vision) and B (language): `split` −1 → A on everything, 0 → B, else A on the first
 * `split` positions of dim 1 and B on the rest. Keys `A.*`, `B.*`.
 */
export class Multiway<M extends Module & { forward(x: Tensor): Tensor }> extends Module {
  readonly A: M;
  readonly B: M;
  constructor(make: () => M) {
    super();
    this.A = this.registerModule('A', make());
    this.B = this.registerModule('B', make());
  }
  forward(x: Tensor, split: number): Tensor {
    if (split === -1) return this.A.forward(x);
    if (split === 0) return this.B.forward(x);
    const n = x.shape[1]!;
    return cat([this.A.forward(x.narrow(1, 0, split)), this.B.forward(x.narrow(1, split, n - split))], 1);
  }
}

/** torchscale's FeedForwardNetwork with sub-LN: fc1 → GELU → ffn_layernorm → fc2. */
export class BEiT3FFN extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly ffn_layernorm: LayerNorm;
  constructor(dim: number, ffnDim: number, eps: number) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(dim, ffnDim));
    this.fc2 = this.registerModule('fc2', new Linear(ffnDim, dim));
    this.ffn_layernorm = this.registerModule('ffn_layernorm', new LayerNorm(ffnDim, eps));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.ffn_layernorm.forward(gelu(this.fc1.forward(x))));
  }
}

/** torchscale's MultiheadAttention (self-attention, multiway projections, sub-LN `inner_attn_ln`). */
export class BEiT3Attention extends Module {
  readonly k_proj: Multiway<Linear>;
  readonly v_proj: Multiway<Linear>;
  readonly q_proj: Multiway<Linear>;
  readonly out_proj: Multiway<Linear>;
  readonly inner_attn_ln: Multiway<LayerNorm>;
  readonly scaling: number;
  constructor(readonly dim: number, readonly numHeads: number, eps: number) {
    super();
    if (dim % numHeads) throw new Error(`BEiT3: embed dim ${dim} is not divisible by ${numHeads} heads`);
    this.scaling = (dim / numHeads) ** -0.5;
    this.k_proj = this.registerModule('k_proj', new Multiway(() => new Linear(dim, dim)));
    this.v_proj = this.registerModule('v_proj', new Multiway(() => new Linear(dim, dim)));
    this.q_proj = this.registerModule('q_proj', new Multiway(() => new Linear(dim, dim)));
    this.out_proj = this.registerModule('out_proj', new Multiway(() => new Linear(dim, dim)));
    this.inner_attn_ln = this.registerModule('inner_attn_ln', new Multiway(() => new LayerNorm(dim, eps)));
  }
  /** x: B×L×D; keyPadding: B×L bool (true = padded key) or null. */
  forward(x: Tensor, split: number, keyPadding: Tensor | null): Tensor {
    const [B, L, D] = x.shape as [number, number, number];
    const h = this.numHeads;
    const heads = (t: Tensor): Tensor => t.view(B, L, h, D / h).transpose(1, 2);
    const q = heads(this.q_proj.forward(x, split).mul(this.scaling));
    const k = heads(this.k_proj.forward(x, split));
    const v = heads(this.v_proj.forward(x, split));
    let logits = q.matmul(k.transpose(-2, -1));
    if (keyPadding) logits = logits.maskedFill(keyPadding.unsqueeze(1).unsqueeze(2), -Infinity);
    const attn = softmax(logits, -1).matmul(v).transpose(1, 2).reshape(B, L, D);
    return this.out_proj.forward(this.inner_attn_ln.forward(attn, split), split);
  }
}

/** torchscale's EncoderLayer (pre-LN): x + attn(self_attn_layer_norm(x)); x + ffn(final_layer_norm(x)). */
export class BEiT3EncoderLayer extends Module {
  readonly self_attn: BEiT3Attention;
  readonly self_attn_layer_norm: Multiway<LayerNorm>;
  readonly ffn: Multiway<BEiT3FFN>;
  readonly final_layer_norm: Multiway<LayerNorm>;
  readonly dropPath: DropPath | Identity;
  constructor(dim: number, heads: number, ffnDim: number, eps: number, dropPath: number, readonly withCp = false) {
    super();
    this.self_attn = this.registerModule('self_attn', new BEiT3Attention(dim, heads, eps));
    this.self_attn_layer_norm = this.registerModule('self_attn_layer_norm', new Multiway(() => new LayerNorm(dim, eps)));
    this.dropPath = dropPath > 0 ? new DropPath(dropPath) : new Identity();
    this.ffn = this.registerModule('ffn', new Multiway(() => new BEiT3FFN(dim, ffnDim, eps)));
    this.final_layer_norm = this.registerModule('final_layer_norm', new Multiway(() => new LayerNorm(dim, eps)));
  }
  forward(x: Tensor, split: number, keyPadding: Tensor | null): Tensor {
    const run = (t: Tensor): Tensor => {
      this.dropPath.training = this.training;
      const a = t.add(this.dropPath.forward(this.self_attn.forward(this.self_attn_layer_norm.forward(t, split), split, keyPadding)));
      return a.add(this.dropPath.forward(this.ffn.forward(this.final_layer_norm.forward(a, split), split)));
    };
    if (this.withCp && this.training) return checkpoint((t) => [run(t!)], [x])[0]!;
    return scope(() => run(x));
  }
}

/** A learned position table used with the Fairseq offset: positions 2, 3, ... Key `weight`. */
export class PositionalEmbedding extends Embedding {
  /** Rows 2 .. 2+n−1 as 1×n×D. */
  rows(n: number): Tensor {
    if (n + 2 > this.numEmbeddings) {
      throw new Error(`BEiT3: ${n} positions need ${n + 2} rows of the position table, it has ${this.numEmbeddings}`);
    }
    return this.weight.narrow(0, 2, n).unsqueeze(0);
  }
  override forward(x: Tensor): Tensor {
    return this.rows(x.shape[1]!);
  }
}

/** Multiway position tables: A (vision, N+3 rows), B (text, `max_source_positions` rows). */
export class MultiwayPositions extends Module {
  readonly A: PositionalEmbedding;
  readonly B: PositionalEmbedding;
  constructor(visionRows: number, textRows: number, dim: number) {
    super();
    this.A = this.registerModule('A', new PositionalEmbedding(visionRows, dim));
    this.B = this.registerModule('B', new PositionalEmbedding(textRows, dim));
  }
  /** Positions for x (B×L×D) split at `split` as the multiway embedding: A's rows for the first part, B's for the rest. */
  forward(x: Tensor, split: number): Tensor {
    const L = x.shape[1]!;
    if (split === -1) return this.A.rows(L);
    if (split === 0) return this.B.rows(L);
    return cat([this.A.rows(split), this.B.rows(L - split)], 1);
  }
}

/** torchscale's VisionEmbedding: conv patches, cls prepended. Keys `mask_token`, `cls_token`, `proj`. */
export class BEiT3VisionEmbedding extends Module {
  mask_token: Tensor;
  cls_token: Tensor;
  readonly proj: Conv2d;
  readonly numPatches: number;
  constructor(readonly imgSize: number, readonly patchSize: number, inChans: number, dim: number) {
    super();
    this.numPatches = (Math.trunc(imgSize / patchSize)) ** 2;
    this.mask_token = this.registerParameter('mask_token', zeros([1, 1, dim]));
    this.cls_token = this.registerParameter('cls_token', zeros([1, 1, dim]));
    this.proj = this.registerModule('proj', new Conv2d(inChans, dim, patchSize, { stride: patchSize }));
  }
  /** Patch tokens B×N×D and the grid. */
  patches(x: Tensor): { tokens: Tensor; H: number; W: number } {
    const y = this.proj.forward(x);
    const [, , H, W] = y.shape as [number, number, number, number];
    return { tokens: y.flatten(2).transpose(1, 2), H, W };
  }
  /** B×(1+N)×D: cls then patches. */
  forward(x: Tensor): Tensor {
    const { tokens } = this.patches(x);
    return cat([this.cls_token.expand(tokens.shape[0]!, -1, -1), tokens], 1);
  }
  /** Rows of the position table A this embedding needs (Fairseq offset 2 + cls + patches). */
  numPositionRows(): number { return this.numPatches + 3; }
}

/** torchscale's Encoder as BEiT-3 configures it. Keys `embed_positions.{A,B}`, `layers.N.*`, `layer_norm.{A,B}`. */
export class BEiT3Encoder extends Module {
  readonly embed_positions: MultiwayPositions;
  readonly layers: ModuleList<BEiT3EncoderLayer>;
  readonly layer_norm: Multiway<LayerNorm>;
  constructor(c: Required<Pick<BEiT3Config, 'encoder_embed_dim' | 'encoder_attention_heads' | 'encoder_ffn_embed_dim' |
    'encoder_layers' | 'max_source_positions' | 'layernorm_eps' | 'drop_path_rate'>>, visionRows: number, withCp: boolean) {
    super();
    const D = c.encoder_embed_dim;
    this.embed_positions = this.registerModule('embed_positions', new MultiwayPositions(visionRows, c.max_source_positions, D));
    const dpr = linspace(0, c.drop_path_rate, c.encoder_layers).consume((t) => Array.from(t.toTypedArray() as Float32Array));
    this.layers = this.registerModule('layers', new ModuleList<BEiT3EncoderLayer>());
    for (let i = 0; i < c.encoder_layers; i++) {
      this.layers.push(new BEiT3EncoderLayer(D, c.encoder_attention_heads, c.encoder_ffn_embed_dim, c.layernorm_eps, dpr[i]!, withCp));
    }
    this.layer_norm = this.registerModule('layer_norm', new Multiway(() => new LayerNorm(D, c.layernorm_eps)));
  }
}

/** What {@link BEiT3.forward} returns. */
export interface BEiT3Output {
  /** B×L×D after `encoder.layer_norm`. */
  encoder_out: Tensor;
  /** −1 (image only), 0 (text only) or 1+N (image then text). */
  multiway_split_position: number;
}

/** torchscale's `BEiT3`. Keys `text_embed`, `vision_embed.*`, `encoder.*`. */
export class BEiT3 extends Module {
  readonly text_embed: Embedding;
  readonly vision_embed: BEiT3VisionEmbedding;
  readonly encoder: BEiT3Encoder;
  readonly embedDim: number;
  constructor(config: BEiT3Config = {}) {
    super();
    checkSupported(config);
    const D = (this.embedDim = config.encoder_embed_dim ?? 768);
    const c = {
      encoder_embed_dim: D, encoder_attention_heads: config.encoder_attention_heads ?? 12,
      encoder_ffn_embed_dim: config.encoder_ffn_embed_dim ?? 3072, encoder_layers: config.encoder_layers ?? 12,
      max_source_positions: config.max_source_positions ?? 1024, layernorm_eps: config.layernorm_eps ?? 1e-5,
      drop_path_rate: config.drop_path_rate ?? 0,
    };
    this.text_embed = this.registerModule('text_embed', new Embedding(config.vocab_size ?? 64010, D));
    this.vision_embed = this.registerModule('vision_embed',
      new BEiT3VisionEmbedding(config.img_size ?? 224, config.patch_size ?? 16, config.in_chans ?? 3, D));
    this.encoder = this.registerModule('encoder', new BEiT3Encoder(c, this.vision_embed.numPositionRows(), config.checkpoint_activations ?? false));
    this.apply((m) => {
      if (m instanceof Linear) {
        truncNormal_(m.weight, 0, 0.02);
        if (m.bias) zeros_(m.bias);
      }
    });
    truncNormal_(this.vision_embed.cls_token, 0, 0.02);
    truncNormal_(this.vision_embed.mask_token, 0, 0.02);
  }

  /**
   * The encoder on an image (B×3×H×W), text token ids (B×T int64), or both. `textPadding` (B×T bool, true = pad)
   * masks padded text keys and zeroes their embeddings. `capture` receives `vision_embed` and `encoder.layers.{j}`.
   */
  forward(o: { image?: Tensor; text?: Tensor; textPadding?: Tensor | null }, capture?: (name: string, t: Tensor) => void): BEiT3Output {
    if (!o.image && !o.text) throw new Error('BEiT3: give an image, text tokens, or both');
    return scope(() => {
      let x: Tensor;
      let split: number;
      let padding: Tensor | null = null;
      if (o.image) {
        const v = this.vision_embed.forward(o.image);
        capture?.('vision_embed', v);
        if (o.text) {
          split = v.shape[1]!;
          x = cat([v, this.text_embed.forward(o.text)], 1);
          if (o.textPadding) padding = cat([zeros([v.shape[0]!, split], { dtype: 'bool', device: v.device }), o.textPadding], 1);
        } else {
          split = -1;
          x = v;
        }
      } else {
        split = 0;
        x = this.text_embed.forward(o.text!);
        padding = o.textPadding ?? null;
      }
      x = x.add(this.encoder.embed_positions.forward(x, split));
      if (padding) x = x.mul(padding.logicalNot().unsqueeze(-1).to(x.dtype));
      for (let j = 0; j < this.encoder.layers.length; j++) {
        x = this.encoder.layers.at(j).forward(x, split, padding);
        capture?.(`encoder.layers.${j}`, x);
      }
      return { encoder_out: this.encoder.layer_norm.forward(x, split), multiway_split_position: split };
    });
  }
}

/** unilm's `BEiT3Wrapper` naming: the model under `beit3`, so checkpoint keys are `beit3.*`. */
export class BEiT3Wrapper extends Module {
  readonly beit3: BEiT3;
  constructor(config: BEiT3Config = {}) {
    super();
    this.beit3 = this.registerModule('beit3', new BEiT3(config));
  }
}

/**
 * unilm's `load_model_and_may_interpolate` for `beit3.encoder.embed_positions.A.weight`: the first
 * `rows − numPatches` rows (Fairseq offset and cls: 3) are kept, the s×s grid rows are resized bicubically
 * (align_corners false) to the model's grid and appended. `table`: R×D; returns the new table.
 */
export function resizeBEiT3Positions(table: Tensor, numPatches: number): Tensor {
  const [R, D] = table.shape as [number, number];
  const extra = numPatches + 3 - numPatches; // num_position_embeddings() + 2 − num_patches
  const orig = Math.trunc(Math.sqrt(R - extra));
  const size = Math.trunc(Math.sqrt(numPatches));
  if (orig * orig !== R - extra) throw new Error(`BEiT3 position table: ${R} rows is not ${extra} + a square grid`);
  if (orig === size) return table;
  const grid = table.narrow(0, extra, R - extra).reshape(1, orig, orig, D).permute(0, 3, 1, 2);
  const res = interpolate(grid, { size: [size, size], mode: 'bicubic', alignCorners: false }).permute(0, 2, 3, 1).reshape(size * size, D);
  return cat([table.narrow(0, 0, extra), res], 0);
}

