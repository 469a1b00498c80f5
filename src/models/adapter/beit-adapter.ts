/**
 * BEiT-Adapter: ViT-Adapter's spatial prior module, injectors and extractors on a BEiT / BEiTv2 backbone, as the
 * authors' `BEiTAdapter` of their segmentation (mmseg) and detection (mmdet) code bases. Keys as their state dicts:
 * BEiT's (`cls_token`, `patch_embed.proj`, `blocks.N.{gamma_1,gamma_2,norm1,attn.{q_bias,v_bias,qkv,
 * relative_position_bias_table,relative_position_index,proj},norm2,mlp}`) plus `level_embed`, `spm.*`,
 * `interactions.N.*`, `up`, `norm1..norm4`.
 *
 * - `variant: 'segmentation'`: the class token goes through the blocks with the patch tokens (`InteractionBlockWithCls`:
 *   the injector sees patch tokens only, the blocks `cat(cls, x)`), is carried from one interaction to the next and
 *   never reaches the pyramid; each interaction's patch tokens are added to its level.
 * - `variant: 'detection'`: no class token, optional `pos_embed` resized to the input, window attention per block;
 *   `version: 'new'` (default) adds the final ViT output to all four levels, `'old'` each interaction's output.
 */
import type { Tensor } from '../../engine/index.js';
import { BatchNorm2d, ConvTranspose2d, ModuleList } from '../../nn/index.js';
import { zeros } from '../../engine/index.js';
import { BEiT, type BEiTOptions, loadBEiTPretrainedInto } from '../beit.js';
import type { InteractionBlock } from './interaction.js';
import { SpatialPriorModule } from './spm.js';
import {
  type AdapterKwargs, type Capture, DeformInputsCache, adapterInteractionBlocks, adapterPyramid, adapterTokens,
  initAdapterModules, resolveInteractionIndexes, runInteractions,
} from './vit-adapter.js';

/** Constructor options: the authors' `BEiTAdapter` kwargs verbatim (snake_case), plus `variant`. */
export interface BEiTAdapterOptions extends BEiTOptions, AdapterKwargs {
  /** Layer scale of the BEiT blocks and the injectors' γ (default 0). */
  init_values?: number;
  /** Detection code base: `new` adds the final ViT output to every level, `old` each interaction's. */
  version?: 'new' | 'old';
}

const ADAPTER_KEYS: readonly string[] = [
  'conv_inplane', 'n_points', 'deform_num_heads', 'interaction_indexes', 'with_cffn', 'cffn_ratio', 'deform_ratio',
  'add_vit_feature', 'use_extra_extractor', 'version',
];

/** The BEiT-Adapter backbone. */
export class BEiTAdapter extends BEiT {
  level_embed: Tensor;
  readonly spm: SpatialPriorModule;
  readonly interactions: ModuleList<InteractionBlock>;
  readonly up: ConvTranspose2d;
  readonly norm1: BatchNorm2d;
  readonly norm2: BatchNorm2d;
  readonly norm3: BatchNorm2d;
  readonly norm4: BatchNorm2d;
  readonly interactionIndexes: [number, number][];
  readonly addVitFeature: boolean;
  readonly version: 'new' | 'old';
  private readonly deformCache = new DeformInputsCache();

  constructor(options: BEiTAdapterOptions = {}) {
    // BEiTAdapter passes init_values (default 0) to BEiT: the blocks always have layer scale.
    const initValues = options.init_values ?? 0;
    // The pretrained checkpoint is loaded by BEiT's constructor, before the adapter modules exist (as the authors').
    super({ ...options, init_values: initValues }, ADAPTER_KEYS);
    const D = this.embedDim;
    if (this.variant === 'segmentation' && this.pos_embed) {
      throw new Error('BEiTAdapter: use_abs_pos_emb is not supported by the segmentation BEiTAdapter (the authors\' ' +
        '_get_pos_embed reshapes a table that includes the cls row and fails; every released config has it false)');
    }
    this.version = options.version ?? 'new';
    if (this.version !== 'new' && this.version !== 'old') throw new Error(`BEiTAdapter: version must be new or old, got ${JSON.stringify(this.version)}`);
    this.addVitFeature = options.add_vit_feature ?? true;
    const idx = resolveInteractionIndexes('BEiTAdapter', options.interaction_indexes, this.depth);
    if (this.addVitFeature && (this.variant === 'segmentation' || this.version === 'old') && idx.length !== 4) {
      throw new Error(`BEiTAdapter: add_vit_feature adds one interaction's output to each of the 4 pyramid levels, so it ` +
        `needs 4 interactions, got ${idx.length}`);
    }
    this.interactionIndexes = idx;
    this.level_embed = this.registerParameter('level_embed', zeros([3, D]));
    this.spm = this.registerModule('spm', new SpatialPriorModule(options.conv_inplane ?? 64, D));
    this.interactions = this.registerModule('interactions', new ModuleList<InteractionBlock>(adapterInteractionBlocks(
      { ...options, init_values: initValues }, D, idx.length,
      { dropPath: options.drop_path_rate ?? 0, normEps: this.normEps, withCp: options.with_cp ?? false })));
    this.up = this.registerModule('up', new ConvTranspose2d(D, D, 2, { stride: 2 }));
    this.norm1 = this.registerModule('norm1', new BatchNorm2d(D));
    this.norm2 = this.registerModule('norm2', new BatchNorm2d(D));
    this.norm3 = this.registerModule('norm3', new BatchNorm2d(D));
    this.norm4 = this.registerModule('norm4', new BatchNorm2d(D));
    initAdapterModules(this);
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

  /**
   * Runs the backbone: four maps B×D×H/s×W/s for strides 4, 8, 16, 32. `capture` receives `spm.c1..c4`,
   * `interactions.{i}.x|c` (and `.cls` in the segmentation variant), and `blocks.{j}` for blocks that do not end an
   * interaction (with the cls token at index 0 in the segmentation variant).
   */
  forward(x: Tensor, capture?: Capture): [Tensor, Tensor, Tensor, Tensor] {
    this.blockCapture = capture ?? null;
    try {
      return this.run(x, capture);
    } finally {
      this.blockCapture = null;
    }
  }

  private run(x: Tensor, capture?: Capture): [Tensor, Tensor, Tensor, Tensor] {
    const [B, h, w] = this.checkImage(x, 'BEiTAdapter', 32);
    const d = this.deformCache.get(h, w, x.device);
    const spm = this.spm.forward(x);
    const c0 = adapterTokens(spm, this.level_embed, capture);
    const { tokens, H, W } = this.embedPatches(x);
    const cls0 = this.cls_token ? this.cls_token.expand(B, -1, -1) : undefined;
    const { c, outs } = runInteractions(this, this, tokens, c0, cls0, d, H, W, true, capture);
    const perLevel = this.variant === 'segmentation' || this.version === 'old';
    const vit = perLevel ? outs : [outs[outs.length - 1]!, outs[outs.length - 1]!, outs[outs.length - 1]!, outs[outs.length - 1]!];
    return adapterPyramid(this, c, spm.c1, this.addVitFeature ? vit : null, H, W);
  }
}

export { loadBEiTPretrainedInto };

const beitCommon: BEiTAdapterOptions = {
  patch_size: 16, mlp_ratio: 4, qkv_bias: true, use_abs_pos_emb: false, use_rel_pos_bias: true, init_values: 1e-6,
  conv_inplane: 64, n_points: 4, cffn_ratio: 0.25, deform_ratio: 0.5, variant: 'segmentation',
};

/**
 * BEiT-Adapter sizes of the authors' segmentation configs: `beit-base` (BEiT-B: 768 wide, 12 blocks, 12 heads,
 * interactions [[0,2],[3,5],[6,8],[9,11]]) and `beit-large` (BEiT-L: 1024 wide, 24 blocks, 16 heads,
 * [[0,5],[6,11],[12,17],[18,23]]), with drop path 0.3, layer scale 1e-6, deform_ratio 0.5. `img_size` (the relative
 * position grid) is set by {@link beitAdapterPreset}.
 */
export const BEIT_ADAPTER_PRESETS = {
  'beit-base': {
    ...beitCommon, embed_dim: 768, depth: 12, num_heads: 12, deform_num_heads: 12, drop_path_rate: 0.3,
    interaction_indexes: [[0, 2], [3, 5], [6, 8], [9, 11]],
  },
  'beit-large': {
    ...beitCommon, embed_dim: 1024, depth: 24, num_heads: 16, deform_num_heads: 16, drop_path_rate: 0.3,
    interaction_indexes: [[0, 5], [6, 11], [12, 17], [18, 23]],
  },
} satisfies Record<string, BEiTAdapterOptions>;

/** The options of a BEiT-Adapter preset for inputs of `imgSize`² pixels (a fresh copy), with overrides applied. */
export function beitAdapterPreset(name: string, imgSize: number, overrides: BEiTAdapterOptions = {}): BEiTAdapterOptions {
  const p = (BEIT_ADAPTER_PRESETS as Record<string, BEiTAdapterOptions>)[name];
  if (!p) throw new Error(`unknown BEiT-Adapter preset ${JSON.stringify(name)}; expected one of ${Object.keys(BEIT_ADAPTER_PRESETS).join(', ')}`);
  return structuredClone({ ...p, img_size: imgSize, ...overrides });
}
