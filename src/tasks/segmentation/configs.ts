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
import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { BACKBONE_PRESETS, backbonePreset } from '../../models/adapter/presets.js';
import type { ViTAdapterOptions } from '../../models/adapter/vit-adapter.js';
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
}

/** `model.test_cfg`. */
export interface TestCfg {
  mode: 'whole' | 'slide';
  /** `(h, w)` of a sliding window. */
  crop_size?: [number, number];
  /** `(h, w)` step of the sliding window. */
  stride?: [number, number];
}

/** The segmentor (`EncoderDecoder`) config. */
export interface ModelCfg {
  /** ViT-Adapter kwargs (the authors' names); `type` is informational. */
  backbone: ViTAdapterOptions & { type?: 'ViTAdapter' | 'ViTBaseline' };
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
const PIPE_KEYS: readonly string[] = ['img_scale', 'keep_ratio', 'size_divisor', 'flip', 'img_ratios'];
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
  upernet_vit_adapter_synth: () => synthCompact('adapter'),
  upernet_vit_baseline_synth: () => synthCompact('baseline'),
};

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
      backbone: `${b.type === 'ViTBaseline' ? 'plain ViT' : 'ViT-Adapter'} (${b.embed_dim}-wide, ${b.depth} blocks)`, embed_dim: b.embed_dim ?? 0, depth: b.depth ?? 0,
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
  if (m.backbone.type !== undefined && m.backbone.type !== 'ViTAdapter' && m.backbone.type !== 'ViTBaseline') {
    throw new ConfigError(`${where}: model.backbone.type must be ViTAdapter (or ViTBaseline, the plain-ViT ablation), got ${JSON.stringify(m.backbone.type)}`);
  }
  for (const k of ['decode_head', 'neck', 'auxiliary_head'] as const) {
    const h = m[k];
    if (h === null && k !== 'decode_head') continue;
    if (!isPlainObject(h) || typeof h.type !== 'string') throw new ConfigError(`${where}: model.${k} must be an object with a type${k === 'decode_head' ? '' : ', or null'}`);
  }
  if (!isPosInt(m.decode_head.num_classes)) throw new ConfigError(`${where}: model.decode_head.num_classes must be a positive integer`);
  if (m.auxiliary_head && m.auxiliary_head.num_classes !== m.decode_head.num_classes) {
    throw new ConfigError(`${where}: auxiliary_head.num_classes (${String(m.auxiliary_head.num_classes)}) differs from decode_head.num_classes (${m.decode_head.num_classes})`);
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
  const d = c.dataset;
  if (!isPlainObject(d)) throw new ConfigError(`${where}: dataset must be an object`);
  checkKeys(`${where}: dataset`, d as unknown as Record<string, unknown>, DATASET_KEYS);
  if (d.type !== 'ADE20KDataset' && d.type !== 'CustomDataset') throw new ConfigError(`${where}: dataset.type must be ADE20KDataset or CustomDataset`);
  if (d.classes !== null && (!Array.isArray(d.classes) || !d.classes.every((s) => typeof s === 'string'))) {
    throw new ConfigError(`${where}: dataset.classes must be a list of names or null`);
  }
  if (d.type === 'CustomDataset' && d.classes === null) throw new ConfigError(`${where}: a CustomDataset needs dataset.classes`);
  const classes = classNamesOf(c);
  if (classes.length !== m.decode_head.num_classes) {
    throw new ConfigError(`${where}: the dataset has ${classes.length} classes but decode_head.num_classes is ${m.decode_head.num_classes}`);
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

/** Number of classes the model predicts. */
export function numClassesOf(c: SegConfig): number {
  return c.model.decode_head.num_classes as number;
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
      raw = JSON.parse(readFileSync(nameOrPath, 'utf8'));
    } catch (e) {
      throw new ConfigError(`cannot read config ${nameOrPath}: ${(e as Error).message}`);
    }
    if (!isPlainObject(raw)) throw new ConfigError(`config ${nameOrPath}: expected a JSON object`);
    checkKeys(`config ${nameOrPath}`, raw, ['base', ...TOP_KEYS]);
    const { base, ...rest } = raw as ConfigOverrides;
    if (base !== undefined && typeof base !== 'string') throw new ConfigError(`config ${nameOrPath}: base must be a preset name`);
    const start = base === undefined ? ({} as SegConfig) : getPreset(base);
    cfg = deepMerge(start, { name: basename(nameOrPath, extname(nameOrPath)), ...rest });
    if (rest.name === undefined) cfg.name = basename(nameOrPath, extname(nameOrPath));
    if (base !== undefined && rest.source === undefined) cfg.source = `${nameOrPath} (based on ${base})`;
  } else {
    throw new ConfigError(`unknown config ${JSON.stringify(nameOrPath)}: not a preset and not a .json file; presets: ${PRESET_NAMES.join(', ')}`);
  }
  if (overrides) {
    if (!isPlainObject(overrides)) throw new ConfigError('overrides must be an object');
    checkKeys('overrides', overrides as Record<string, unknown>, TOP_KEYS);
    cfg = deepMerge(cfg, overrides);
  }
  return validateConfig(cfg);
}
