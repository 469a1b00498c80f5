/**
 * Named semantic-segmentation configurations: the ViT-Adapter authors' ADE20K configs as typed plain objects, and
 * {@link loadConfig} for presets or JSON files that override a preset.
 *
 * Preset names are the authors' config file names (`segmentation/configs/ade20k/<name>.py` in the ViT-Adapter
 * repository) where such a file exists. Every value that matters at inference is the authors' (backbone kwargs,
 * heads, normalisation, test pipeline, `test_cfg`); what follows from mmseg's `_base_` files (`upernet_r50.py`,
 * `ade20k.py`) is spelled out. Training-only settings (optimizer, schedule, train pipeline) are not represented.
 *
 * The Semantic FPN presets (`fpn_*`) are reconstructed: the paper reports Semantic FPN (80k) results on ADE20K, but
 * the authors published no config for them. They use mmseg's `fpn_r50.py` neck and head with `in_channels=[D]*4`
 * and the same data settings as the UperNet configs, and `test_cfg=whole` like `fpn_r50.py`.
 *
 * Config objects use the authors' / mmseg's snake_case keys so that a JSON override reads like an mmseg config.
 */
import { basename, extname } from 'node:path';
import { readRegularFile } from '../../io/files.js';
import { BACKBONE_PRESETS, backbonePreset } from '../../models/adapter/presets.js';
import type { ViTAdapterOptions } from '../../models/adapter/vit-adapter.js';
import type { BEiTAdapterOptions } from '../../models/adapter/beit-adapter.js';
import type { ViTBaselineOptions } from '../../models/vit-baseline.js';
import { ADE20K_CLASSES, ADE20K_PALETTE, type Palette, generatePalette, validatePalette } from './classes.js';
import { SYNTHETIC_CLASSES, SYNTHETIC_PALETTE } from './synthetic.js';
import { ADE20K_RECIPE, type TrainRecipe, validateRecipe } from './train-recipe.js';

/** A config dict passed to the head / neck builders (mmseg keys, verbatim; `type` names the class). */
export type ModuleDict = { type: string } & Record<string, unknown>;

/** `img_norm_cfg`: mean/std in the output channel order; `to_rgb` as mmseg (true = RGB planes). */
export interface ImgNormCfg {
  mean: [number, number, number];
  std: [number, number, number];
  to_rgb: boolean;
}

/**
 * The test pipeline (`MultiScaleFlipAug` with `Resize(keep_ratio)`, `ResizeToMultiple`, `RandomFlip`, `Normalize`).
 */
export interface TestPipelineCfg {
  /** `img_scale`: with keep_ratio, bounds `(long, short)` in either order; else the exact `(w, h)`. */
  img_scale: [number, number];
  /** `Resize(keep_ratio=...)`. */
  keep_ratio: boolean;
  /** `ResizeToMultiple(size_divisor=...)` after the resize (bilinear resize up to a multiple), or null for none. */
  size_divisor: number | null;
  /** `MultiScaleFlipAug(flip=...)`: also run the horizontally flipped image and average. */
  flip: boolean;
  /** `MultiScaleFlipAug(img_ratios=...)`: multi-scale test ratios, or null for the single scale `img_scale`. */
  img_ratios: number[] | null;
  /**
   * `SETR_Resize(keep_ratio=True, crop_size, setr_multi_scale=True)` in place of `Resize(keep_ratio)` (the authors'
   * 640 multi-scale Mask2Former configs): the short side becomes `max(crop_size[0], min(scale))` for the ratio's
   * scale, the long side follows the aspect ratio. Absent or null: `Resize`.
   */
  setr_crop_size?: [number, number] | null;
  /**
   * The authors' `PadShortSide(size)` after the flip: pad bottom/right to at least size×size with 0 — raw pixel value
   * 0 (`before_normalize`, i.e. −mean/std after normalisation) or normalised 0. As in mmseg, the logits of the padded
   * image are resized to the original size padding included. Absent or null: no padding.
   */
  pad_short_side?: { size: number; before_normalize: boolean } | null;
}

/** `model.test_cfg`. */
export interface TestCfg {
  mode: 'whole' | 'slide';
  /** `(h, w)` of a sliding window. */
  crop_size?: [number, number];
  /** `(h, w)` step of the sliding window. */
  stride?: [number, number];
}

/** Backbone types a config can name (`model.backbone.type`). */
export const BACKBONE_TYPES: readonly string[] = Object.freeze(['ViTAdapter', 'BEiTAdapter', 'ViTBaseline']);

/**
 * A backbone config: the class (`type`, default `ViTAdapter`; `ViTBaseline` is the plain-ViT ablation) and its
 * constructor kwargs (the authors' names).
 * `BEiTAdapter` configs may carry `pretrained` (a BEiT / BEiTv2 checkpoint loaded at construction, with the
 * authors' relative-position resizing); the presets leave it out.
 */
export type BackboneCfg = (ViTAdapterOptions & { type?: 'ViTAdapter' }) | (BEiTAdapterOptions & { type: 'BEiTAdapter' })
  | (ViTBaselineOptions & { type: 'ViTBaseline' });

/** The segmentor (`EncoderDecoder`) config. */
export interface ModelCfg {
  /** The backbone: `type` (ViTAdapter when absent, BEiTAdapter) and its kwargs (the authors' names). */
  backbone: BackboneCfg;
  /** Neck (Semantic FPN's `FPN`), or null. */
  neck: ModuleDict | null;
  decode_head: ModuleDict;
  /** Training-only head; kept so that checkpoints with `auxiliary_head.*` keys load strictly. Null for none. */
  auxiliary_head: ModuleDict | null;
  test_cfg: TestCfg;
  /** mmseg's `align_corners` of the final resizes (the decode head's; false in every config here). */
  align_corners?: boolean;
}

/** The evaluation dataset (mmseg dataset config, snake_case). */
export interface DatasetCfg {
  /** `ADE20KDataset` (the 150 ADE20K classes and palette) or `CustomDataset` (classes below). */
  type: 'ADE20KDataset' | 'CustomDataset';
  /** Default data root (the CLI's `--data` replaces it). */
  data_root: string;
  img_dir: string;
  ann_dir: string;
  img_suffix: string;
  seg_map_suffix: string;
  reduce_zero_label: boolean;
  ignore_index: number;
  /** Class names (null: the dataset type's own, i.e. ADE20K's). */
  classes: string[] | null;
  /** Colours (null: the dataset's own, or mmseg's seeded random palette for custom classes). */
  palette: [number, number, number][] | null;
}

/** A complete configuration. */
export interface SegConfig {
  /** The preset name (or the JSON file's name). */
  name: string;
  /** One line for listings. */
  description: string;
  /** Where the values come from. */
  source: string;
  model: ModelCfg;
  img_norm_cfg: ImgNormCfg;
  test_pipeline: TestPipelineCfg;
  dataset: DatasetCfg;
  /** The training recipe (optimizer, schedule, pipeline, ...; see `train-recipe.ts`), or absent/null for none. */
  train?: TrainRecipe | null;
}

/** Recursively optional, for overrides. Arrays are replaced, not merged. */
export type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> | null } : T;

/** What a JSON config file may contain: `base` (a preset name) plus overrides of any {@link SegConfig} field. */
export type ConfigOverrides = DeepPartial<SegConfig> & { base?: string };

const TOP_KEYS: readonly string[] = ['name', 'description', 'source', 'model', 'img_norm_cfg', 'test_pipeline', 'dataset', 'train'];
const MODEL_KEYS: readonly string[] = ['backbone', 'neck', 'decode_head', 'auxiliary_head', 'test_cfg', 'align_corners'];
const NORM_KEYS: readonly string[] = ['mean', 'std', 'to_rgb'];
const PIPE_KEYS: readonly string[] = ['img_scale', 'keep_ratio', 'size_divisor', 'flip', 'img_ratios', 'setr_crop_size', 'pad_short_side'];
const TEST_CFG_KEYS: readonly string[] = ['mode', 'crop_size', 'stride'];
const DATASET_KEYS: readonly string[] = [
  'type', 'data_root', 'img_dir', 'ann_dir', 'img_suffix', 'seg_map_suffix', 'reduce_zero_label', 'ignore_index', 'classes', 'palette',
];

// ---- building blocks ------------------------------------------------------------------------------------------

const SYNC_BN = { type: 'SyncBN', requires_grad: true } as const;

/** ImageNet mean/std (DeiT and the DeiT-initialised adapters). */
export const IMAGENET_NORM: ImgNormCfg = { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true };
/** AugReg (timm `vit_*_augreg`) normalisation: mean = std = 127.5. */
export const AUGREG_NORM: ImgNormCfg = { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], to_rgb: true };

/** mmseg's `ade20k.py` test pipeline as ViT-Adapter's configs use it (plus `ResizeToMultiple(32)`). */
const ADE_TEST_PIPELINE: TestPipelineCfg = { img_scale: [2048, 512], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null };

/** The multi-scale ratios the authors' configs list (commented out) for MS testing. */
export const MS_RATIOS: readonly number[] = Object.freeze([0.5, 0.75, 1.0, 1.25, 1.5, 1.75]);

/** mmseg `ade20k.py` dataset (ADEChallengeData2016, validation split). */
const ADE_DATASET: DatasetCfg = {
  type: 'ADE20KDataset', data_root: 'data/ade/ADEChallengeData2016', img_dir: 'images/validation',
  ann_dir: 'annotations/validation', img_suffix: '.jpg', seg_map_suffix: '.png', reduce_zero_label: true, ignore_index: 255,
  classes: null, palette: null,
};

/** `upernet_r50.py`'s UPerHead with ViT-Adapter's overrides (`in_channels=[D]*4`, `num_classes`). */
export function uperHeadCfg(D: number, numClasses = 150, channels = 512): ModuleDict {
  return {
    type: 'UPerHead', in_channels: [D, D, D, D], in_index: [0, 1, 2, 3], pool_scales: [1, 2, 3, 6], channels,
    dropout_ratio: 0.1, num_classes: numClasses, norm_cfg: { ...SYNC_BN }, align_corners: false,
    loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 1.0 },
  };
}

/** `upernet_r50.py`'s auxiliary FCNHead with `in_channels=D`. */
export function auxHeadCfg(D: number, numClasses = 150, channels = 256): ModuleDict {
  return {
    type: 'FCNHead', in_channels: D, in_index: 2, channels, num_convs: 1, concat_input: false, dropout_ratio: 0.1,
    num_classes: numClasses, norm_cfg: { ...SYNC_BN }, align_corners: false,
    loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 0.4 },
  };
}

/** `fpn_r50.py`'s neck with `in_channels=[D]*4`. */
export function fpnNeckCfg(D: number): ModuleDict {
  return { type: 'FPN', in_channels: [D, D, D, D], out_channels: 256, num_outs: 4 };
}

/** `fpn_r50.py`'s FPNHead. */
export function fpnHeadCfg(numClasses = 150): ModuleDict {
  return {
    type: 'FPNHead', in_channels: [256, 256, 256, 256], in_index: [0, 1, 2, 3], feature_strides: [4, 8, 16, 32],
    channels: 128, dropout_ratio: 0.1, num_classes: numClasses, norm_cfg: { ...SYNC_BN }, align_corners: false,
    loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 1.0 },
  };
}

/** Options of {@link mask2formerHeadCfg}. */
export interface Mask2FormerHeadCfgOptions {
  /** Backbone width (the four maps' channels). */
  inChannels: number;
  /** feat_channels = out_channels = decoder width (1024 in the authors' large configs). */
  channels: number;
  /** 100 (640 configs) or 200 (896 configs). */
  numQueries: number;
  numThings: number;
  numStuff: number;
  /** Heads of the encoder's deformable attention and of the decoder's attention (32 in the large configs). */
  heads: number;
  /** FFN width of encoder and decoder (4096 in the large configs). */
  ffn: number;
  encoderLayers?: number;
  decoderLayers?: number;
  /** The configs' FFN `with_cp` flags (activation checkpointing in training; no effect here). */
  withCp?: boolean;
}

/**
 * The authors' Mask2Former decode head as their large configs spell it (`_base_/models/mask2former_beit.py` merged
 * with the config's `decode_head`): deformable pixel decoder (6 layers, 3 levels, 4 points, GN 32), 9 decoder
 * layers, sine encodings of num_feats = channels / 2, and the (training-only) losses with class weight 0.1 for
 * "no object".
 */
export function mask2formerHeadCfg(o: Mask2FormerHeadCfgOptions): ModuleDict {
  const C = o.channels;
  const cp = o.withCp ? { with_cp: true } : {};
  const numClasses = o.numThings + o.numStuff;
  return {
    type: 'Mask2FormerHead', in_channels: [o.inChannels, o.inChannels, o.inChannels, o.inChannels], feat_channels: C,
    out_channels: C, in_index: [0, 1, 2, 3], num_things_classes: o.numThings, num_stuff_classes: o.numStuff,
    num_queries: o.numQueries, num_transformer_feat_level: 3,
    pixel_decoder: {
      type: 'MSDeformAttnPixelDecoder', num_outs: 3, norm_cfg: { type: 'GN', num_groups: 32 }, act_cfg: { type: 'ReLU' },
      encoder: {
        type: 'DetrTransformerEncoder', num_layers: o.encoderLayers ?? 6,
        transformerlayers: {
          type: 'BaseTransformerLayer',
          attn_cfgs: {
            type: 'MultiScaleDeformableAttention', embed_dims: C, num_heads: o.heads, num_levels: 3, num_points: 4,
            im2col_step: 64, dropout: 0.0, batch_first: false, norm_cfg: null, init_cfg: null,
          },
          ffn_cfgs: {
            type: 'FFN', embed_dims: C, feedforward_channels: o.ffn, num_fcs: 2, ffn_drop: 0.0, ...cp,
            act_cfg: { type: 'ReLU', inplace: true },
          },
          operation_order: ['self_attn', 'norm', 'ffn', 'norm'],
        },
        init_cfg: null,
      },
      positional_encoding: { type: 'SinePositionalEncoding', num_feats: C / 2, normalize: true },
      init_cfg: null,
    },
    enforce_decoder_input_project: false,
    positional_encoding: { type: 'SinePositionalEncoding', num_feats: C / 2, normalize: true },
    transformer_decoder: {
      type: 'DetrTransformerDecoder', return_intermediate: true, num_layers: o.decoderLayers ?? 9,
      transformerlayers: {
        type: 'DetrTransformerDecoderLayer',
        attn_cfgs: {
          type: 'MultiheadAttention', embed_dims: C, num_heads: o.heads, attn_drop: 0.0, proj_drop: 0.0,
          dropout_layer: null, batch_first: false,
        },
        ffn_cfgs: {
          embed_dims: C, feedforward_channels: o.ffn, num_fcs: 2, act_cfg: { type: 'ReLU', inplace: true }, ffn_drop: 0.0,
          dropout_layer: null, ...cp, add_identity: true,
        },
        feedforward_channels: o.ffn,
        operation_order: ['cross_attn', 'norm', 'self_attn', 'norm', 'ffn', 'norm'],
      },
      init_cfg: null,
    },
    loss_cls: {
      type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 2.0, reduction: 'mean',
      class_weight: [...Array<number>(numClasses).fill(1.0), 0.1],
    },
    loss_mask: { type: 'CrossEntropyLoss', use_sigmoid: true, reduction: 'mean', loss_weight: 5.0 },
    loss_dice: {
      type: 'DiceLoss', use_sigmoid: true, activate: true, reduction: 'mean', naive_dice: true, eps: 1.0, loss_weight: 5.0,
    },
  };
}

const SLIDE_512: TestCfg = { mode: 'slide', crop_size: [512, 512], stride: [341, 341] };

type Size = 'tiny' | 'small' | 'base' | 'large';

function backbone(size: Size, extra: ViTAdapterOptions = {}): ModelCfg['backbone'] {
  return { type: 'ViTAdapter', ...backbonePreset(size, { window_attn: false, ...extra }) };
}

function upernet(name: string, size: Size, o: { norm: ImgNormCfg; backbone?: ViTAdapterOptions; description: string }): SegConfig {
  const D = BACKBONE_PRESETS[size].embed_dim;
  return {
    name, description: o.description, source: `ViT-Adapter segmentation/configs/ade20k/${name}.py`,
    model: {
      backbone: backbone(size, o.backbone), neck: null, decode_head: uperHeadCfg(D), auxiliary_head: auxHeadCfg(D),
      test_cfg: structuredClone(SLIDE_512), align_corners: false,
    },
    img_norm_cfg: structuredClone(o.norm), test_pipeline: structuredClone(ADE_TEST_PIPELINE), dataset: structuredClone(ADE_DATASET),
    train: adeRecipe(size),
  };
}

/**
 * The authors' ADE20K recipe for a size: the values of the T config (checked against the fixture); for S/B/L the
 * same values with `num_layers` = the backbone's depth (their files were not available to check here).
 */
function adeRecipe(size: Size): TrainRecipe {
  const r = structuredClone(ADE20K_RECIPE) as TrainRecipe;
  if (size !== 'tiny') {
    r.optimizer.paramwise_cfg = { num_layers: BACKBONE_PRESETS[size].depth, layer_decay_rate: 0.95 };
    r.source = `${r.source}; ${size}: the T recipe with num_layers ${BACKBONE_PRESETS[size].depth} (the authors' ${size} file was not checked)`;
  }
  return r;
}

function semanticFpn(name: string, size: Size, description: string): SegConfig {
  const D = BACKBONE_PRESETS[size].embed_dim;
  return {
    name, description,
    source: 'reconstructed (no published config): mmseg fpn_r50.py neck/head with in_channels=[D]*4, ViT-Adapter ADE20K data settings',
    model: {
      backbone: backbone(size), neck: fpnNeckCfg(D), decode_head: fpnHeadCfg(), auxiliary_head: null,
      test_cfg: { mode: 'whole' }, align_corners: false,
    },
    img_norm_cfg: structuredClone(IMAGENET_NORM), test_pipeline: structuredClone(ADE_TEST_PIPELINE), dataset: structuredClone(ADE_DATASET),
  };
}

/**
 * A tiny model for the synthetic scenes of `synthetic.ts` (9 classes): ViT-Adapter-T with UPerHead and the auxiliary
 * FCNHead, whole-image inference at the scene's own size. The `demo` fallback (random weights) when the trained
 * `upernet_vit_adapter_synth` checkpoint is missing.
 */
function syntheticTiny(): SegConfig {
  const n = SYNTHETIC_CLASSES.length;
  return {
    name: 'upernet_deit_adapter_tiny_synthetic',
    description: `ViT-Adapter-T + UperNet for the ${n} synthetic-scene classes (untrained; the trained model is upernet_vit_adapter_synth)`,
    source: 'this project (synthetic scenes of synthetic.ts)',
    model: {
      backbone: backbone('tiny'), neck: null, decode_head: uperHeadCfg(192, n), auxiliary_head: auxHeadCfg(192, n),
      test_cfg: { mode: 'whole' }, align_corners: false,
    },
    img_norm_cfg: structuredClone(IMAGENET_NORM),
    test_pipeline: { img_scale: [2048, 512], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null },
    dataset: {
      type: 'CustomDataset', data_root: 'data/synthetic', img_dir: 'img_dir', ann_dir: 'ann_dir', img_suffix: '.png',
      seg_map_suffix: '.png', reduce_zero_label: false, ignore_index: 255, classes: [...SYNTHETIC_CLASSES],
      palette: SYNTHETIC_PALETTE.map((c) => [c[0], c[1], c[2]]),
    },
  };
}

/**
 * The BEiT-Adapter-L backbone of the authors' UperNet and Mask2Former configs (BEiT-L init,
 * `beit_large_patch16_224_pt22k_ft22k.pth`): 1024 wide, 24 blocks, 16 heads, q/v bias, per-block relative position
 * bias for the `img_size` grid, layer scale 1e-6, 16 deformable heads, deform_ratio 0.5. `pretrained` is left out
 * (a segmentor checkpoint holds the backbone); set it in a JSON override to start from BEiT weights.
 */
export function beitAdapterLargeBackbone(imgSize: number, extra: BEiTAdapterOptions = {}): BEiTAdapterOptions & { type: 'BEiTAdapter' } {
  return {
    type: 'BEiTAdapter', img_size: imgSize, patch_size: 16, embed_dim: 1024, depth: 24, num_heads: 16, mlp_ratio: 4,
    qkv_bias: true, use_abs_pos_emb: false, use_rel_pos_bias: true, init_values: 1e-6, drop_path_rate: 0.3,
    conv_inplane: 64, n_points: 4, deform_num_heads: 16, cffn_ratio: 0.25, deform_ratio: 0.5,
    interaction_indexes: [[0, 5], [6, 11], [12, 17], [18, 23]], ...extra,
  };
}

/** The authors' `upernet_beit_adapter_large_640_160k_ade20k_ss`: UperNet (1024 channels) + BEiT-Adapter-L, ADE20K 640×640. */
function upernetBeitAdapterLarge640Ade(): SegConfig {
  const name = 'upernet_beit_adapter_large_640_160k_ade20k_ss';
  return {
    name, description: 'UperNet + BEiT-Adapter-L (BEiT-L init), ADE20K 640×640, 160k, single-scale test',
    source: `ViT-Adapter segmentation/configs/ade20k/${name}.py (+ _base_/models/upernet_beit.py)`,
    model: {
      backbone: beitAdapterLargeBackbone(640, { with_cp: true }), neck: null,
      decode_head: uperHeadCfg(1024, 150, 1024), auxiliary_head: auxHeadCfg(1024, 150),
      test_cfg: { mode: 'slide', crop_size: [640, 640], stride: [426, 426] }, align_corners: false,
    },
    img_norm_cfg: structuredClone(IMAGENET_NORM),
    test_pipeline: { img_scale: [2048, 640], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null },
    dataset: structuredClone(ADE_DATASET),
  };
}

/**
 * The authors' ADE20K BEiT-Adapter-L + Mask2Former configs (`segmentation/configs/ade20k/<name>.py`): 640 crops with
 * 100 queries (160k) or 896 crops with 200 queries (80k / 160k), slide inference, ImageNet mean/std; the `_ms`
 * variants' test-time augmentation as their files spell it.
 */
function mask2formerBeit(name: string, crop: 640 | 896, pipeline: TestPipelineCfg, description: string): SegConfig {
  const large = crop === 896;
  return {
    name, description, source: `ViT-Adapter segmentation/configs/ade20k/${name}.py`,
    model: {
      backbone: beitAdapterLargeBackbone(crop, { with_cp: true }),
      neck: null,
      decode_head: mask2formerHeadCfg({
        inChannels: 1024, channels: 1024, numQueries: large ? 200 : 100, numThings: 100, numStuff: 50, heads: 32, ffn: 4096,
        withCp: true,
      }),
      auxiliary_head: null,
      test_cfg: { mode: 'slide', crop_size: [crop, crop], stride: large ? [512, 512] : [426, 426] },
      align_corners: false,
    },
    img_norm_cfg: structuredClone(IMAGENET_NORM), test_pipeline: pipeline, dataset: structuredClone(ADE_DATASET),
  };
}

const M2F_640_SS: TestPipelineCfg = { img_scale: [2048, 640], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null };
const M2F_896_SS: TestPipelineCfg = { img_scale: [3584, 896], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null };

/** Side of the compact synthetic presets' crops and scenes. */
export const SYNTH_SIZE = 128;

/**
 * The compact models trained on CPU on the synthetic scenes (`vit-adapter synth`): a 96-wide, 8-block ViT (3 heads)
 * with the adapter (4 interactions of 2 blocks, 3 deformable heads, conv_inplane 16) or, for the ablation, the
 * plain-ViT baseline pyramid; UperNet with 64 channels and the auxiliary FCN head with 32; 128×128 crops; a short
 * poly schedule. The dataset is the `custom` layout `synth` writes (`img_dir/{train,val}`, `ann_dir/{train,val}`).
 */
function synthCompact(kind: 'adapter' | 'baseline'): SegConfig {
  const n = SYNTHETIC_CLASSES.length;
  const D = 96;
  const depth = 8;
  const vit = {
    embed_dim: D, depth, num_heads: 3, mlp_ratio: 4, qkv_bias: true, layer_scale: true, drop_path_rate: 0.1,
    pretrain_size: SYNTH_SIZE, patch_size: 16, interaction_indexes: [[0, 1], [2, 3], [4, 5], [6, 7]] as [number, number][],
  };
  const backbone: ModelCfg['backbone'] = kind === 'adapter'
    ? {
      type: 'ViTAdapter', ...vit, conv_inplane: 16, n_points: 4, deform_num_heads: 3, cffn_ratio: 0.25, deform_ratio: 1.0,
      with_cffn: true, add_vit_feature: true, use_extra_extractor: true, init_values: 0, window_attn: false,
    }
    : { type: 'ViTBaseline', ...vit };
  const name = kind === 'adapter' ? 'upernet_vit_adapter_synth' : 'upernet_vit_baseline_synth';
  return {
    name,
    description: kind === 'adapter'
      ? `compact ViT-Adapter (96-wide, 8 blocks) + UperNet for the ${n} synthetic-scene classes, ${SYNTH_SIZE}×${SYNTH_SIZE}; trained checkpoint shipped (assets/)`
      : `ablation: the same ViT without the adapter (simple pyramid from 4 stages) + UperNet, synthetic scenes`,
    source: 'this project (trained on CPU on `vit-adapter synth` scenes)',
    model: {
      backbone, neck: null, decode_head: uperHeadCfg(D, n, 64), auxiliary_head: auxHeadCfg(D, n, 32),
      test_cfg: { mode: 'whole' }, align_corners: false,
    },
    img_norm_cfg: structuredClone(IMAGENET_NORM),
    test_pipeline: { img_scale: [4 * SYNTH_SIZE, SYNTH_SIZE], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null },
    dataset: {
      type: 'CustomDataset', data_root: 'data/synthetic', img_dir: 'img_dir/val', ann_dir: 'ann_dir/val', img_suffix: '.png',
      seg_map_suffix: '.png', reduce_zero_label: false, ignore_index: 255, classes: [...SYNTHETIC_CLASSES],
      palette: SYNTHETIC_PALETTE.map((c) => [c[0], c[1], c[2]]),
    },
    train: {
      optimizer: {
        type: 'AdamW', lr: 1.2e-3, betas: [0.9, 0.999], weight_decay: 0.01, constructor: 'LayerDecayOptimizerConstructor',
        paramwise_cfg: { num_layers: depth, layer_decay_rate: 1.0 },
      },
      optimizer_config: { grad_clip: null, cumulative_iters: 1 },
      lr_config: { policy: 'poly', warmup: 'linear', warmup_iters: 50, warmup_ratio: 1e-6, power: 1.0, min_lr: 0.0, by_epoch: false },
      max_iters: 350,
      samples_per_gpu: 4,
      workers_per_gpu: 1,
      checkpoint_interval: 50,
      max_keep_ckpts: 2,
      eval_interval: 50,
      pipeline: {
        img_scale: [4 * SYNTH_SIZE, SYNTH_SIZE], ratio_range: [0.5, 2.0], crop_size: [SYNTH_SIZE, SYNTH_SIZE], cat_max_ratio: 0.75,
        flip_prob: 0.5, photo_metric_distortion: true,
      },
      train_split: { img_dir: 'img_dir/train', ann_dir: 'ann_dir/train' },
      val_split: { img_dir: 'img_dir/val', ann_dir: 'ann_dir/val' },
      source: 'this project: the authors\' recipe shape (AdamW, layer-decay groups, poly with linear warmup, mmseg augmentation) ' +
        'scaled to a from-scratch CPU run of about 20 minutes (lr 1.2e-3, decay rate 1.0, 350 iterations, batch 4, 128 px)',
    },
  };
}

const PRESET_BUILDERS: Record<string, () => SegConfig> = {
  upernet_deit_adapter_tiny_512_160k_ade20k: () => upernet('upernet_deit_adapter_tiny_512_160k_ade20k', 'tiny', {
    norm: IMAGENET_NORM, backbone: { drop_path_rate: 0.1 }, description: 'UperNet + ViT-Adapter-T (DeiT-T init), ADE20K 512×512, 160k',
  }),
  upernet_deit_adapter_small_512_160k_ade20k: () => upernet('upernet_deit_adapter_small_512_160k_ade20k', 'small', {
    norm: IMAGENET_NORM, backbone: { drop_path_rate: 0.2 }, description: 'UperNet + ViT-Adapter-S (DeiT-S init), ADE20K 512×512, 160k',
  }),
  upernet_deit_adapter_base_512_160k_ade20k: () => upernet('upernet_deit_adapter_base_512_160k_ade20k', 'base', {
    norm: IMAGENET_NORM, backbone: { drop_path_rate: 0.3 }, description: 'UperNet + ViT-Adapter-B (DeiT-B init), ADE20K 512×512, 160k',
  }),
  upernet_augreg_adapter_tiny_512_160k_ade20k: () => upernet('upernet_augreg_adapter_tiny_512_160k_ade20k', 'tiny', {
    // The authors' file keeps the DeiT mean/std for the AugReg-T backbone.
    norm: IMAGENET_NORM, backbone: { drop_path_rate: 0.1 }, description: 'UperNet + ViT-Adapter-T (AugReg-T init), ADE20K 512×512, 160k',
  }),
  upernet_augreg_adapter_base_512_160k_ade20k: () => upernet('upernet_augreg_adapter_base_512_160k_ade20k', 'base', {
    norm: AUGREG_NORM, backbone: { drop_path_rate: 0.3, img_size: 384, pretrain_size: 384 },
    description: 'UperNet + ViT-Adapter-B (AugReg-B/384 init), ADE20K 512×512, 160k',
  }),
  upernet_augreg_adapter_large_512_160k_ade20k: () => upernet('upernet_augreg_adapter_large_512_160k_ade20k', 'large', {
    norm: AUGREG_NORM, backbone: { drop_path_rate: 0.4, img_size: 384, pretrain_size: 384, with_cp: true },
    description: 'UperNet + ViT-Adapter-L (AugReg-L/384 init), ADE20K 512×512, 160k',
  }),
  fpn_deit_adapter_tiny_512_80k_ade20k: () => semanticFpn('fpn_deit_adapter_tiny_512_80k_ade20k', 'tiny',
    'Semantic FPN + ViT-Adapter-T, ADE20K 512×512, 80k (reconstructed config)'),
  fpn_deit_adapter_small_512_80k_ade20k: () => semanticFpn('fpn_deit_adapter_small_512_80k_ade20k', 'small',
    'Semantic FPN + ViT-Adapter-S, ADE20K 512×512, 80k (reconstructed config)'),
  fpn_deit_adapter_base_512_80k_ade20k: () => semanticFpn('fpn_deit_adapter_base_512_80k_ade20k', 'base',
    'Semantic FPN + ViT-Adapter-B, ADE20K 512×512, 80k (reconstructed config)'),
  upernet_deit_adapter_tiny_synthetic: syntheticTiny,
  upernet_beit_adapter_large_640_160k_ade20k_ss: upernetBeitAdapterLarge640Ade,
  mask2former_beit_adapter_large_640_160k_ade20k_ss: () => mask2formerBeit640('ss'),
  mask2former_beit_adapter_large_640_160k_ade20k_ms: () => mask2formerBeit640('ms'),
  mask2former_beit_adapter_large_896_80k_ade20k_ss: () => mask2formerBeit('mask2former_beit_adapter_large_896_80k_ade20k_ss', 896,
    { ...M2F_896_SS }, 'Mask2Former + BEiT-Adapter-L (BEiT-L init, COCO-Stuff-164k pre-trained), ADE20K 896×896, 80k'),
  mask2former_beit_adapter_large_896_80k_ade20k_ms: () => mask2formerBeit('mask2former_beit_adapter_large_896_80k_ade20k_ms', 896,
    // MultiScaleFlipAug(ratios 640/896, 768/896, 1) with flip; PadShortSide(896) before Normalize
    { ...M2F_896_SS, flip: true, img_ratios: [640 / 896, 768 / 896, 1.0], pad_short_side: { size: 896, before_normalize: true } },
    'Mask2Former + BEiT-Adapter-L, ADE20K 896×896, 80k, multi-scale + flip test'),
  mask2former_beitv2_adapter_large_896_80k_ade20k_ss: () => mask2formerBeit('mask2former_beitv2_adapter_large_896_80k_ade20k_ss', 896,
    // this file's "single-scale" test pipeline flips (flip=True)
    { ...M2F_896_SS, flip: true }, 'Mask2Former + BEiT-Adapter-L (BEiTv2-L init, COCO-Stuff-164k pre-trained), ADE20K 896×896, 80k'),
  mask2former_beitv2_adapter_large_896_80k_ade20k_ms: () => mask2formerBeit('mask2former_beitv2_adapter_large_896_80k_ade20k_ms', 896,
    // ratios 800..896/896 with flip; PadShortSide(896) after Normalize
    { ...M2F_896_SS, flip: true, img_ratios: [800 / 896, 832 / 896, 864 / 896, 1.0], pad_short_side: { size: 896, before_normalize: false } },
    'Mask2Former + BEiT-Adapter-L (BEiTv2-L init), ADE20K 896×896, 80k, multi-scale + flip test'),
  mask2former_beitv2_adapter_large_896_160k_ade20k_ss: () => mask2formerBeit('mask2former_beitv2_adapter_large_896_160k_ade20k_ss', 896,
    { ...M2F_896_SS }, 'Mask2Former + BEiT-Adapter-L (BEiTv2-L init), ADE20K 896×896, 160k'),
  upernet_vit_adapter_synth: () => synthCompact('adapter'),
  upernet_vit_baseline_synth: () => synthCompact('baseline'),
};

function mask2formerBeit640(mode: 'ss' | 'ms'): SegConfig {
  const name = `mask2former_beit_adapter_large_640_160k_ade20k_${mode}`;
  return mode === 'ss'
    ? mask2formerBeit(name, 640, { ...M2F_640_SS }, 'Mask2Former + BEiT-Adapter-L (BEiT-L init), ADE20K 640×640, 160k')
    // SETR_Resize(crop 640) instead of Resize + ResizeToMultiple; 6 ratios with flip
    : mask2formerBeit(name, 640, { img_scale: [2048, 640], keep_ratio: true, size_divisor: null, flip: true, img_ratios: [...MS_RATIOS],
      setr_crop_size: [640, 640] }, 'Mask2Former + BEiT-Adapter-L (BEiT-L init), ADE20K 640×640, 160k, multi-scale + flip test');
}

/** Preset names, in listing order. */
export const PRESET_NAMES: readonly string[] = Object.freeze(Object.keys(PRESET_BUILDERS));

/** One row of {@link listConfigs}. */
export interface ConfigSummary {
  name: string;
  description: string;
  source: string;
  backbone: string;
  embed_dim: number;
  depth: number;
  decode_head: string;
  neck: string | null;
  auxiliary_head: string | null;
  num_classes: number;
  test_mode: string;
  img_scale: [number, number];
}

/** The presets with a short summary each. */
export function listConfigs(): ConfigSummary[] {
  return PRESET_NAMES.map((name) => {
    const c = getPreset(name);
    const b = c.model.backbone;
    const t = c.model.test_cfg;
    return {
      name, description: c.description, source: c.source,
      backbone: `${b.type === 'BEiTAdapter' ? 'BEiT-Adapter' : b.type === 'ViTBaseline' ? 'plain ViT' : 'ViT-Adapter'} (${b.embed_dim}-wide, ${b.depth} blocks)`, embed_dim: b.embed_dim ?? 0, depth: b.depth ?? 0,
      decode_head: c.model.decode_head.type, neck: c.model.neck?.type ?? null, auxiliary_head: c.model.auxiliary_head?.type ?? null,
      num_classes: numClassesOf(c),
      test_mode: t.mode === 'slide' ? `slide ${t.crop_size?.join('×')} stride ${t.stride?.join('×')}` : 'whole',
      img_scale: [...c.test_pipeline.img_scale],
    };
  });
}

/** A fresh copy of a preset. Throws for an unknown name, listing the known ones. */
export function getPreset(name: string): SegConfig {
  const b = PRESET_BUILDERS[name];
  if (!b) throw new ConfigError(`unknown config ${JSON.stringify(name)}; presets: ${PRESET_NAMES.join(', ')}`);
  return b();
}

/** Error for an unknown preset, a malformed JSON config or an invalid value. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

// ---- merging and validation ---------------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null);
}

/**
 * Deep merge: plain objects merge key by key (recursively); anything else (arrays, numbers, null) in `over` replaces
 * the value in `base`. Neither argument is modified.
 */
export function deepMerge<T>(base: T, over: unknown): T {
  if (!isPlainObject(base) || !isPlainObject(over)) return structuredClone(over === undefined ? base : over) as T;
  const out: Record<string, unknown> = structuredClone(base);
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = isPlainObject(out[k]) && isPlainObject(v) ? deepMerge(out[k], v) : structuredClone(v);
  }
  return out as T;
}

function checkKeys(where: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  const bad = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (bad.length) throw new ConfigError(`${where}: unknown key(s) ${bad.join(', ')}; allowed: ${allowed.join(', ')}`);
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

function pairOf(where: string, v: unknown, test: (x: unknown) => boolean = isPosInt): [number, number] {
  if (!Array.isArray(v) || v.length !== 2 || !v.every(test)) throw new ConfigError(`${where} must be a pair of positive integers, got ${JSON.stringify(v)}`);
  return [v[0] as number, v[1] as number];
}

/**
 * Checks a config's structure and values (the keys of every section this module interprets; backbone and head keys
 * are checked by their constructors). Throws {@link ConfigError}. Returns the config.
 */
export function validateConfig(c: SegConfig): SegConfig {
  const where = `config ${JSON.stringify(c?.name ?? '?')}`;
  if (!isPlainObject(c)) throw new ConfigError('config must be an object');
  checkKeys(where, c as unknown as Record<string, unknown>, TOP_KEYS);
  for (const k of TOP_KEYS) if (k !== 'train' && (c as unknown as Record<string, unknown>)[k] === undefined) throw new ConfigError(`${where}: missing ${k}`);
  if (typeof c.name !== 'string' || !c.name) throw new ConfigError(`${where}: name must be a non-empty string`);
  const m = c.model;
  if (!isPlainObject(m)) throw new ConfigError(`${where}: model must be an object`);
  checkKeys(`${where}: model`, m as unknown as Record<string, unknown>, MODEL_KEYS);
  if (!isPlainObject(m.backbone)) throw new ConfigError(`${where}: model.backbone must be an object`);
  const btype: unknown = (m.backbone as { type?: unknown }).type;
  if (btype !== undefined && (typeof btype !== 'string' || !BACKBONE_TYPES.includes(btype))) {
    throw new ConfigError(`${where}: model.backbone.type must be one of ${BACKBONE_TYPES.join(', ')}, got ${JSON.stringify(btype)}`);
  }
  for (const k of ['decode_head', 'neck', 'auxiliary_head'] as const) {
    const h = m[k];
    if (h === null && k !== 'decode_head') continue;
    if (!isPlainObject(h) || typeof h.type !== 'string') throw new ConfigError(`${where}: model.${k} must be an object with a type${k === 'decode_head' ? '' : ', or null'}`);
  }
  const headClasses = headNumClasses(m.decode_head);
  if (!isPosInt(headClasses)) {
    throw new ConfigError(`${where}: model.decode_head.num_classes (for a Mask2FormerHead: num_things_classes + num_stuff_classes) must be a positive integer`);
  }
  if (m.auxiliary_head && m.auxiliary_head.num_classes !== headClasses) {
    throw new ConfigError(`${where}: auxiliary_head.num_classes (${String(m.auxiliary_head.num_classes)}) differs from decode_head's ${headClasses}`);
  }
  if (m.align_corners !== undefined && typeof m.align_corners !== 'boolean') throw new ConfigError(`${where}: model.align_corners must be a boolean`);
  const t = m.test_cfg;
  if (!isPlainObject(t)) throw new ConfigError(`${where}: model.test_cfg must be an object`);
  checkKeys(`${where}: model.test_cfg`, t as unknown as Record<string, unknown>, TEST_CFG_KEYS);
  if (t.mode !== 'whole' && t.mode !== 'slide') throw new ConfigError(`${where}: test_cfg.mode must be whole or slide, got ${JSON.stringify(t.mode)}`);
  if (t.mode === 'slide') {
    pairOf(`${where}: test_cfg.crop_size`, t.crop_size);
    pairOf(`${where}: test_cfg.stride`, t.stride);
  }
  const n = c.img_norm_cfg;
  if (!isPlainObject(n)) throw new ConfigError(`${where}: img_norm_cfg must be an object`);
  checkKeys(`${where}: img_norm_cfg`, n as unknown as Record<string, unknown>, NORM_KEYS);
  for (const k of ['mean', 'std'] as const) {
    if (!Array.isArray(n[k]) || n[k].length !== 3 || !n[k].every(isNum)) throw new ConfigError(`${where}: img_norm_cfg.${k} must be 3 numbers`);
  }
  if (n.std.some((s) => s === 0)) throw new ConfigError(`${where}: img_norm_cfg.std must be non-zero`);
  if (typeof n.to_rgb !== 'boolean') throw new ConfigError(`${where}: img_norm_cfg.to_rgb must be a boolean`);
  const p = c.test_pipeline;
  if (!isPlainObject(p)) throw new ConfigError(`${where}: test_pipeline must be an object`);
  checkKeys(`${where}: test_pipeline`, p as unknown as Record<string, unknown>, PIPE_KEYS);
  pairOf(`${where}: test_pipeline.img_scale`, p.img_scale);
  if (typeof p.keep_ratio !== 'boolean' || typeof p.flip !== 'boolean') throw new ConfigError(`${where}: test_pipeline.keep_ratio and flip must be booleans`);
  if (p.size_divisor !== null && !isPosInt(p.size_divisor)) throw new ConfigError(`${where}: test_pipeline.size_divisor must be a positive integer or null`);
  if (p.img_ratios !== null && (!Array.isArray(p.img_ratios) || p.img_ratios.length === 0 || !p.img_ratios.every((r) => isNum(r) && r > 0))) {
    throw new ConfigError(`${where}: test_pipeline.img_ratios must be a non-empty list of positive numbers, or null`);
  }
  if (p.setr_crop_size !== undefined && p.setr_crop_size !== null) {
    pairOf(`${where}: test_pipeline.setr_crop_size`, p.setr_crop_size);
    if (!p.keep_ratio) throw new ConfigError(`${where}: test_pipeline.setr_crop_size needs keep_ratio (SETR_Resize keeps the aspect ratio)`);
  }
  if (p.pad_short_side !== undefined && p.pad_short_side !== null) {
    const ps = p.pad_short_side;
    if (!isPlainObject(ps) || !isPosInt(ps.size) || typeof ps.before_normalize !== 'boolean') {
      throw new ConfigError(`${where}: test_pipeline.pad_short_side must be {size: positive integer, before_normalize: boolean} or null`);
    }
    checkKeys(`${where}: test_pipeline.pad_short_side`, ps as unknown as Record<string, unknown>, ['size', 'before_normalize']);
  }
  const d = c.dataset;
  if (!isPlainObject(d)) throw new ConfigError(`${where}: dataset must be an object`);
  checkKeys(`${where}: dataset`, d as unknown as Record<string, unknown>, DATASET_KEYS);
  if (d.type !== 'ADE20KDataset' && d.type !== 'CustomDataset') throw new ConfigError(`${where}: dataset.type must be ADE20KDataset or CustomDataset`);
  if (d.classes !== null && (!Array.isArray(d.classes) || !d.classes.every((s) => typeof s === 'string'))) {
    throw new ConfigError(`${where}: dataset.classes must be a list of names or null`);
  }
  if (d.type === 'CustomDataset' && d.classes === null) throw new ConfigError(`${where}: a CustomDataset needs dataset.classes`);
  const classes = classNamesOf(c);
  if (classes.length !== headClasses) {
    const what = m.decode_head.type === 'Mask2FormerHead' ? 'num_things_classes + num_stuff_classes' : 'num_classes';
    throw new ConfigError(`${where}: the dataset has ${classes.length} classes but decode_head.${what} is ${headClasses}`);
  }
  if (d.palette !== null) {
    try {
      validatePalette(d.palette, classes.length);
    } catch (e) {
      throw new ConfigError(`${where}: dataset.palette: ${(e as Error).message}`);
    }
  }
  if (c.train !== undefined && c.train !== null) {
    try {
      validateRecipe(where, c.train);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  return c;
}

/**
 * The classes a decode-head config predicts: `num_classes`, or `num_things_classes + num_stuff_classes` for a
 * `Mask2FormerHead` (undefined when not integers).
 */
export function headNumClasses(h: ModuleDict): number | undefined {
  if (h.type === 'Mask2FormerHead') {
    const t = h.num_things_classes;
    const st = h.num_stuff_classes;
    return Number.isInteger(t) && Number.isInteger(st) ? (t as number) + (st as number) : undefined;
  }
  return Number.isInteger(h.num_classes) ? (h.num_classes as number) : undefined;
}

/** Number of classes the model predicts. */
export function numClassesOf(c: SegConfig): number {
  return headNumClasses(c.model.decode_head) as number;
}

/** The class names of a config's dataset. */
export function classNamesOf(c: SegConfig): readonly string[] {
  if (c.dataset.classes) return c.dataset.classes;
  return ADE20K_CLASSES;
}

/** The palette of a config's dataset (ADE20K's, the configured one, or mmseg's seeded random palette). */
export function paletteOf(c: SegConfig): Palette {
  if (c.dataset.palette) return c.dataset.palette;
  if (c.dataset.type === 'ADE20KDataset' && c.dataset.classes === null) return ADE20K_PALETTE;
  return generatePalette(classNamesOf(c).length);
}

/**
 * Overrides that turn an ADE20K dataset into a custom one get mmseg's `CustomDataset` default
 * (`reduce_zero_label: false`) unless they set the convention themselves: ADE20K's must not be inherited silently.
 */
function customDatasetDefaults<T extends { dataset?: unknown }>(start: Partial<SegConfig>, over: T): T {
  const ds = over.dataset;
  if (isPlainObject(ds) && ds.type === 'CustomDataset' && start.dataset?.type === 'ADE20KDataset' && ds.reduce_zero_label === undefined) {
    return { ...over, dataset: { ...ds, reduce_zero_label: false } };
  }
  return over;
}

/**
 * A configuration by preset name, or from a JSON file: `{"base": "<preset>", ...overrides}`, deep-merged (objects
 * key by key, arrays and scalars replaced). A JSON file without `base` must hold a complete config. `overrides` are
 * merged last. Unknown keys at the top level (and in the sections this module interprets) are errors.
 *
 * @param nameOrPath a preset name (see {@link listConfigs}) or a path ending in `.json`
 * @param overrides extra overrides (same shape as the JSON file, without `base`)
 */
export function loadConfig(nameOrPath: string, overrides?: ConfigOverrides): SegConfig {
  let cfg: SegConfig;
  if (PRESET_BUILDERS[nameOrPath]) {
    cfg = getPreset(nameOrPath);
  } else if (nameOrPath.toLowerCase().endsWith('.json')) {
    let raw: unknown;
    try {
      // A regular file of at most 16 MiB: a FIFO or device named *.json must not hang or exhaust memory.
      raw = JSON.parse(new TextDecoder().decode(readRegularFile(nameOrPath, { maxBytes: 16 * 2 ** 20, what: 'config file' })));
    } catch (e) {
      throw new ConfigError(`cannot read config ${nameOrPath}: ${(e as Error).message}`);
    }
    if (!isPlainObject(raw)) throw new ConfigError(`config ${nameOrPath}: expected a JSON object`);
    checkKeys(`config ${nameOrPath}`, raw, ['base', ...TOP_KEYS]);
    const { base, ...rest } = raw as ConfigOverrides;
    if (base !== undefined && typeof base !== 'string') throw new ConfigError(`config ${nameOrPath}: base must be a preset name`);
    const start = base === undefined ? ({} as SegConfig) : getPreset(base);
    cfg = deepMerge(start, { name: basename(nameOrPath, extname(nameOrPath)), ...customDatasetDefaults(start, rest) });
    if (rest.name === undefined) cfg.name = basename(nameOrPath, extname(nameOrPath));
    if (base !== undefined && rest.source === undefined) cfg.source = `${nameOrPath} (based on ${base})`;
  } else {
    throw new ConfigError(`unknown config ${JSON.stringify(nameOrPath)}: not a preset and not a .json file; presets: ${PRESET_NAMES.join(', ')}`);
  }
  if (overrides) {
    if (!isPlainObject(overrides)) throw new ConfigError('overrides must be an object');
    checkKeys('overrides', overrides as Record<string, unknown>, TOP_KEYS);
    cfg = deepMerge(cfg, customDatasetDefaults(cfg, overrides));
  }
  return validateConfig(cfg);
}
