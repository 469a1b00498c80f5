/**
 * ViT-Adapter on the vision path of the BEiT-3 multiway encoder. The BEiT-3 + adapter code of the paper's ADE20K
 * result is not public (see ../shared/fixtures/beit/README.md), so the wiring here is this project's design, made
 * to mirror BEiT-Adapter's segmentation variant:
 *
 * - the BEiT-3 encoder keeps its own keys under `beit3.*` (`beit3.vision_embed`, `beit3.text_embed`,
 *   `beit3.encoder.{embed_positions,layers,layer_norm}`), so released BEiT-3 checkpoints load into that part as they
 *   are; the adapter adds `level_embed`, `spm.*`, `interactions.*`, `up`, `norm1..norm4` at the top level;
 * - an image goes through the vision (A) experts only; the position table A (rows 2.. after the Fairseq offset:
 *   cls, then the `img_size` grid) is added to cls and the patches, its grid resized bicubically to the input grid
 *   when they differ (as unilm's checkpoint interpolation does);
 * - the cls token rides through the interactions as in BEiT-Adapter (`InteractionBlockWithCls`), and the final
 *   `encoder.layer_norm` is not applied (the adapter reads the layers' outputs, as with BEiT).
 *
 * With the injectors' γ at 0 the patch tokens after each interaction are exactly the BEiT-3 encoder's layer outputs
 * (a test checks this against the BEiT-3 fixture).
 */
import { type Tensor, interpolate, scope, zeros } from '../../engine/index.js';
import { BatchNorm2d, ConvTranspose2d, Module, ModuleList } from '../../nn/index.js';
import { BEiT3, type BEiT3Config } from '../beit3.js';
import type { BlockRunner, InteractionBlock } from './interaction.js';
import { SpatialPriorModule } from './spm.js';
import {
  type AdapterKwargs, type Capture, DeformInputsCache, adapterInteractionBlocks, adapterPyramid, adapterTokens,
  initAdapterModules, resolveInteractionIndexes, runInteractions,
} from './vit-adapter.js';

/** Options: the BEiT-3 `EncoderConfig` fields plus the adapter's kwargs (the authors' names). */
export interface BEiT3AdapterOptions extends BEiT3Config, AdapterKwargs {
  /** The injectors' γ initial value (default 0). */
  init_values?: number;
  with_cp?: boolean;
}

/** The BEiT-3 encoder's vision path with ViT-Adapter. */
export class BEiT3Adapter extends Module implements BlockRunner {
  readonly beit3: BEiT3;
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
  readonly embedDim: number;
  private readonly deformCache = new DeformInputsCache();

  constructor(options: BEiT3AdapterOptions = {}) {
    super();
    const {
      conv_inplane, n_points, deform_num_heads, init_values, interaction_indexes, with_cffn, cffn_ratio, deform_ratio,
      add_vit_feature, use_extra_extractor, with_cp: withCp, ...config
    } = options;
    const adapter: AdapterKwargs = {
      conv_inplane, n_points, deform_num_heads, init_values, interaction_indexes, with_cffn, cffn_ratio, deform_ratio,
      add_vit_feature, use_extra_extractor,
    };
    this.beit3 = this.registerModule('beit3', new BEiT3({ ...config, checkpoint_activations: config.checkpoint_activations ?? withCp }));
    const D = (this.embedDim = this.beit3.embedDim);
    const depth = this.beit3.encoder.layers.length;
    this.addVitFeature = add_vit_feature ?? true;
    const idx = resolveInteractionIndexes('BEiT3Adapter', adapter.interaction_indexes, depth, `${depth} layers`);
    if (this.addVitFeature && idx.length !== 4) {
      throw new Error(`BEiT3Adapter: add_vit_feature needs 4 interactions (one per pyramid level), got ${idx.length}`);
    }
    this.interactionIndexes = idx;
    this.level_embed = this.registerParameter('level_embed', zeros([3, D]));
    this.spm = this.registerModule('spm', new SpatialPriorModule(adapter.conv_inplane ?? 64, D));
    this.interactions = this.registerModule('interactions', new ModuleList<InteractionBlock>(adapterInteractionBlocks(
      adapter, D, idx.length, { dropPath: config.drop_path_rate ?? 0, normEps: 1e-6, withCp: withCp ?? false })));
    this.up = this.registerModule('up', new ConvTranspose2d(D, D, 2, { stride: 2 }));
    this.norm1 = this.registerModule('norm1', new BatchNorm2d(D));
    this.norm2 = this.registerModule('norm2', new BatchNorm2d(D));
    this.norm3 = this.registerModule('norm3', new BatchNorm2d(D));
    this.norm4 = this.registerModule('norm4', new BatchNorm2d(D));
    initAdapterModules(this);
  }

  /** Runs encoder layers [from, to] (vision experts) on cls + patch tokens. */
  runBlocks(x: Tensor, from: number, to: number): Tensor {
    return scope(() => {
      let y = x;
      for (let i = from; i <= to; i++) y = this.beit3.encoder.layers.at(i).forward(y, -1, null);
      return y;
    });
  }

  /** Position rows for cls (1×1×D) and for an H×W patch grid (1×HW×D), from table A. */
  private positions(H: number, W: number): { cls: Tensor; grid: Tensor } {
    const table = this.beit3.encoder.embed_positions.A.weight;
    const D = this.embedDim;
    const n = this.beit3.vision_embed.numPatches;
    const s = Math.round(Math.sqrt(n));
    const cls = table.narrow(0, 2, 1).unsqueeze(0);
    let grid = table.narrow(0, 3, n);
    if (H !== s || W !== s) {
      const g = grid.reshape(1, s, s, D).permute(0, 3, 1, 2);
      grid = interpolate(g, { size: [H, W], mode: 'bicubic', alignCorners: false }).permute(0, 2, 3, 1).reshape(H * W, D);
    }
    return { cls, grid: grid.unsqueeze(0) };
  }

  /** Frees the cached deform inputs. */
  clearDeformCache(): void {
    this.deformCache.clear();
  }

  /** Frees parameters, buffers and cached deform inputs. */
  override dispose(): void {
    this.clearDeformCache();
    super.dispose();
  }

  /**
   * Four maps B×D×H/s×W/s for strides 4, 8, 16, 32 (with `add_vit_feature` off and fewer than four interactions,
   * the adapter levels only). `capture` receives `spm.c1..c4` and `interactions.{i}.x|c|cls`.
   */
  forward(x: Tensor, capture?: Capture): [Tensor, Tensor, Tensor, Tensor] {
    if (x.ndim !== 4 || x.shape[1] !== 3) throw new Error(`BEiT3Adapter: expected input B×3×H×W, got [${x.shape.join(', ')}]`);
    const [B, , h, w] = x.shape as [number, number, number, number];
    if (h % 32 || w % 32) throw new Error(`BEiT3Adapter: input height and width must be multiples of 32, got ${h}×${w}`);
    const d = this.deformCache.get(h, w, x.device);
    const spm = this.spm.forward(x);
    const c0 = adapterTokens(spm, this.level_embed, capture);
    const ve = this.beit3.vision_embed;
    const { tokens, H, W } = ve.patches(x);
    const pos = this.positions(H, W);
    const cls0 = ve.cls_token.add(pos.cls).expand(B, -1, -1);
    const { c, outs } = runInteractions(this, this, tokens.add(pos.grid), c0, cls0, d, H, W, true, capture);
    return adapterPyramid(this, c, spm.c1, this.addVitFeature ? outs : null, H, W);
  }
}

