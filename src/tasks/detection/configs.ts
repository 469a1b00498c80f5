/**
 * Named detection configurations: the authors' COCO Mask R-CNN configs for ViT-Adapter-T/S/B
 * (`detection/configs/mask_rcnn/mask_rcnn_deit_adapter_{tiny,small,base}_fpn_3x_coco.py`) and a compact synthetic
 * preset, as typed plain objects; {@link loadDetConfig} for presets or JSON files that override a preset
 * (`{"base": "<preset>", ...overrides}`, deep-merged like the segmentation configs).
 *
 * A config holds the model (the detector preset's mmdetection dicts: backbone kwargs, `neck`, `rpn_head`,
 * `roi_head`, `test_cfg`), the classes and their COCO category ids, `img_norm_cfg`, the test pipeline (resize to
 * `img_scale` keeping the ratio, pad to `size_divisor`) and the default dataset layout (COCO root, annotation file,
 * image folder).
 */
import { basename, extname } from 'node:path';
import { readRegularFile } from '../../io/files.js';
import { DETECTOR_PRESETS } from '../../models/detectors/index.js';
import { BACKBONE_TYPES, type BackboneCfg, ConfigError, IMAGENET_NORM, type ImgNormCfg, deepMerge } from '../segmentation/configs.js';
import { COCO_CATEGORY_IDS, COCO_CLASSES, SYNTHETIC_THING_CLASSES } from './classes.js';
import type { DetTestPipelineCfg } from './pipeline.js';

/** The detector: `backbone` (type + kwargs, as segmentation configs) and the other mmdetection model dicts. */
export type DetModelCfg = { backbone: BackboneCfg } & Record<string, unknown>;

/** The evaluation dataset (mmdetection `CocoDataset`): paths relative to the data root. */
export interface DetDatasetCfg {
  type: 'CocoDataset';
  /** Default data root (the CLI's `--data` replaces it). */
  data_root: string;
  /** The COCO instances JSON, relative to the root (`--ann` replaces it). */
  ann_file: string;
  /** The image folder, relative to the root (`--img-dir` replaces it). */
  img_prefix: string;
}

/** A complete detection configuration. */
export interface DetConfig {
  /** The preset name (or the JSON file's name). */
  name: string;
  /** Always `detection` (tells detection configs from segmentation ones in listings). */
  task: 'detection';
  description: string;
  source: string;
  model: DetModelCfg;
  /** Class names by model label. */
  classes: string[];
  /** COCO category id of each label (results JSON `category_id`; evaluation matches categories by name). */
  category_ids: number[];
  img_norm_cfg: ImgNormCfg;
  test_pipeline: DetTestPipelineCfg;
  dataset: DetDatasetCfg;
}

const TOP_KEYS: readonly string[] = ['name', 'task', 'description', 'source', 'model', 'classes', 'category_ids', 'img_norm_cfg', 'test_pipeline', 'dataset'];
const PIPE_KEYS: readonly string[] = ['img_scale', 'keep_ratio', 'size_divisor'];
const DATASET_KEYS: readonly string[] = ['type', 'data_root', 'ann_file', 'img_prefix'];

const COCO_DATASET: DetDatasetCfg = { type: 'CocoDataset', data_root: 'data/coco', ann_file: 'annotations/instances_val2017.json', img_prefix: 'val2017' };

function cocoPreset(size: 'tiny' | 'small' | 'base'): DetConfig {
  const name = `mask_rcnn_deit_adapter_${size}_fpn_3x_coco`;
  const model = (DETECTOR_PRESETS as Record<string, unknown>)[name];
  if (!model) throw new ConfigError(`detector preset ${name} is missing from models/detectors`);
  return {
    name, task: 'detection',
    description: `Mask R-CNN + ViT-Adapter-${size[0]!.toUpperCase()} (DeiT init), COCO, 3x schedule, single-scale 1333×800 test`,
    source: `ViT-Adapter detection/configs/mask_rcnn/${name}.py (+ _base_/models/mask_rcnn_r50_fpn.py, _base_/datasets/coco_instance.py)`,
    model: structuredClone(model) as DetModelCfg,
    classes: [...COCO_CLASSES], category_ids: [...COCO_CATEGORY_IDS],
    img_norm_cfg: structuredClone(IMAGENET_NORM),
    test_pipeline: { img_scale: [1333, 800], keep_ratio: true, size_divisor: 32 },
    dataset: structuredClone(COCO_DATASET),
  };
}

/** Scene side of the synthetic preset (the `synth` default). */
const SYNTH_SIZE = 128;

/**
 * A compact Mask R-CNN for the synthetic instance scenes (`synth --coco`): ViT-Adapter 96 wide with 8 blocks (the
 * segmentation synth preset's backbone, detection variant), FPN 64 channels, box head 256, mask head 64, the 5
 * object classes, scenes tested at their own size. Not trained: it runs the chain end to end, with random weights
 * unless a checkpoint is given.
 */
function synthPreset(): DetConfig {
  const base = cocoPreset('tiny');
  const K = SYNTHETIC_THING_CLASSES.length;
  const D = 96;
  const model = deepMerge(base.model, {
    backbone: {
      embed_dim: D, depth: 8, num_heads: 3, deform_num_heads: 3, conv_inplane: 16, drop_path_rate: 0.1, pretrain_size: SYNTH_SIZE,
      interaction_indexes: [[0, 1], [2, 3], [4, 5], [6, 7]], window_attn: false, window_size: 14,
    },
    neck: { in_channels: [D, D, D, D], out_channels: 64 },
    rpn_head: { in_channels: 64, feat_channels: 64 },
    roi_head: {
      bbox_roi_extractor: { out_channels: 64 }, mask_roi_extractor: { out_channels: 64 },
      bbox_head: { in_channels: 64, fc_out_channels: 256, num_classes: K },
      mask_head: { in_channels: 64, conv_out_channels: 64, num_classes: K },
    },
  }) as DetModelCfg;
  return {
    name: 'mask_rcnn_vit_adapter_synth', task: 'detection',
    description: `compact Mask R-CNN + ViT-Adapter (96-wide, 8 blocks) for the ${K} synthetic object classes, ${SYNTH_SIZE}×${SYNTH_SIZE} scenes (untrained)`,
    source: 'this project (the authors\' Mask R-CNN config at a reduced width for `synth --coco` scenes)',
    model, classes: [...SYNTHETIC_THING_CLASSES], category_ids: SYNTHETIC_THING_CLASSES.map((_, i) => i + 1),
    img_norm_cfg: structuredClone(IMAGENET_NORM),
    test_pipeline: { img_scale: [4 * SYNTH_SIZE, SYNTH_SIZE], keep_ratio: true, size_divisor: 32 },
    dataset: { type: 'CocoDataset', data_root: 'data/synth', ann_file: 'annotations/instances_val.json', img_prefix: 'img_dir/val' },
  };
}

const DET_PRESET_BUILDERS: Record<string, () => DetConfig> = {
  mask_rcnn_deit_adapter_tiny_fpn_3x_coco: () => cocoPreset('tiny'),
  mask_rcnn_deit_adapter_small_fpn_3x_coco: () => cocoPreset('small'),
  mask_rcnn_deit_adapter_base_fpn_3x_coco: () => cocoPreset('base'),
  mask_rcnn_vit_adapter_synth: synthPreset,
};

/** Detection preset names, in listing order. */
export const DET_PRESET_NAMES: readonly string[] = Object.freeze(Object.keys(DET_PRESET_BUILDERS));

/** Whether `name` is a detection preset. */
export function isDetPreset(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(DET_PRESET_BUILDERS, name);
}

/** A fresh copy of a detection preset; an unknown name is a {@link ConfigError} listing the presets. */
export function getDetPreset(name: string): DetConfig {
  const b = isDetPreset(name) ? DET_PRESET_BUILDERS[name] : undefined;
  if (!b) throw new ConfigError(`unknown detection config ${JSON.stringify(name)}; presets: ${DET_PRESET_NAMES.join(', ')}`);
  return b();
}

/** One row of {@link listDetConfigs}. */
export interface DetConfigSummary {
  name: string;
  task: 'detection';
  description: string;
  source: string;
  backbone: string;
  embed_dim: number;
  depth: number;
  detector: string;
  num_classes: number;
  img_scale: [number, number];
}

/** The detection presets with a short summary each. */
export function listDetConfigs(): DetConfigSummary[] {
  return DET_PRESET_NAMES.map((name) => {
    const c = getDetPreset(name);
    const b = c.model.backbone;
    return {
      name, task: 'detection', description: c.description, source: c.source,
      backbone: `${b.type === 'BEiTAdapter' ? 'BEiT-Adapter' : b.type === 'ViTBaseline' ? 'plain ViT' : 'ViT-Adapter'} (${b.embed_dim}-wide, ${b.depth} blocks)`,
      embed_dim: b.embed_dim ?? 0, depth: b.depth ?? 0, detector: 'MaskRCNN (FPN, RPN, StandardRoIHead with mask head)',
      num_classes: c.classes.length, img_scale: [...c.test_pipeline.img_scale],
    };
  });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null);
}

function checkKeys(where: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  const bad = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (bad.length) throw new ConfigError(`${where}: unknown key(s) ${bad.join(', ')}; allowed: ${allowed.join(', ')}`);
}

const isPosInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;

/** The `num_classes` of the box head (`model.roi_head.bbox_head.num_classes`), or undefined. */
export function detNumClasses(model: DetModelCfg): number | undefined {
  const roi = model.roi_head as { bbox_head?: { num_classes?: unknown } } | undefined;
  const n = roi?.bbox_head?.num_classes;
  return Number.isInteger(n) ? (n as number) : undefined;
}

/**
 * Checks a detection config's structure and the values this layer interprets (model dicts are checked by the model
 * constructors). Throws {@link ConfigError}; returns the config.
 */
export function validateDetConfig(c: DetConfig): DetConfig {
  const where = `config ${JSON.stringify((c as { name?: unknown })?.name ?? '?')}`;
  if (!isPlainObject(c)) throw new ConfigError('config must be an object');
  checkKeys(where, c as unknown as Record<string, unknown>, TOP_KEYS);
  for (const k of TOP_KEYS) if ((c as unknown as Record<string, unknown>)[k] === undefined) throw new ConfigError(`${where}: missing ${k}`);
  if (c.task !== 'detection') throw new ConfigError(`${where}: task must be "detection", got ${JSON.stringify(c.task)}`);
  if (typeof c.name !== 'string' || !c.name) throw new ConfigError(`${where}: name must be a non-empty string`);
  if (!isPlainObject(c.model) || !isPlainObject(c.model.backbone)) throw new ConfigError(`${where}: model.backbone must be an object`);
  const btype: unknown = (c.model.backbone as { type?: unknown }).type;
  if (btype !== undefined && (typeof btype !== 'string' || !BACKBONE_TYPES.includes(btype))) {
    throw new ConfigError(`${where}: model.backbone.type must be one of ${BACKBONE_TYPES.join(', ')}, got ${JSON.stringify(btype)}`);
  }
  if (!Array.isArray(c.classes) || c.classes.length === 0 || !c.classes.every((s) => typeof s === 'string' && s !== '')) {
    throw new ConfigError(`${where}: classes must be a non-empty list of names`);
  }
  if (new Set(c.classes).size !== c.classes.length) throw new ConfigError(`${where}: classes has duplicate names`);
  const k = detNumClasses(c.model);
  if (k === undefined) throw new ConfigError(`${where}: model.roi_head.bbox_head.num_classes must be a positive integer`);
  if (k !== c.classes.length) throw new ConfigError(`${where}: ${c.classes.length} classes but model.roi_head.bbox_head.num_classes is ${k}`);
  if (!Array.isArray(c.category_ids) || c.category_ids.length !== c.classes.length || !c.category_ids.every(isPosInt)) {
    throw new ConfigError(`${where}: category_ids must hold one positive integer per class (${c.classes.length})`);
  }
  if (new Set(c.category_ids).size !== c.category_ids.length) throw new ConfigError(`${where}: category_ids has duplicates`);
  const n = c.img_norm_cfg;
  if (!isPlainObject(n)) throw new ConfigError(`${where}: img_norm_cfg must be an object`);
  checkKeys(`${where}: img_norm_cfg`, n as unknown as Record<string, unknown>, ['mean', 'std', 'to_rgb']);
  for (const key of ['mean', 'std'] as const) {
    if (!Array.isArray(n[key]) || n[key].length !== 3 || !n[key].every((x) => typeof x === 'number' && Number.isFinite(x))) {
      throw new ConfigError(`${where}: img_norm_cfg.${key} must be 3 numbers`);
    }
  }
  if (n.std.some((s) => s === 0)) throw new ConfigError(`${where}: img_norm_cfg.std must be non-zero`);
  if (typeof n.to_rgb !== 'boolean') throw new ConfigError(`${where}: img_norm_cfg.to_rgb must be a boolean`);
  const p = c.test_pipeline;
  if (!isPlainObject(p)) throw new ConfigError(`${where}: test_pipeline must be an object`);
  checkKeys(`${where}: test_pipeline`, p as unknown as Record<string, unknown>, PIPE_KEYS);
  if (!Array.isArray(p.img_scale) || p.img_scale.length !== 2 || !p.img_scale.every(isPosInt)) {
    throw new ConfigError(`${where}: test_pipeline.img_scale must be a pair of positive integers, got ${JSON.stringify(p.img_scale)}`);
  }
  if (typeof p.keep_ratio !== 'boolean') throw new ConfigError(`${where}: test_pipeline.keep_ratio must be a boolean`);
  if (!isPosInt(p.size_divisor)) throw new ConfigError(`${where}: test_pipeline.size_divisor must be a positive integer`);
  const d = c.dataset;
  if (!isPlainObject(d)) throw new ConfigError(`${where}: dataset must be an object`);
  checkKeys(`${where}: dataset`, d as unknown as Record<string, unknown>, DATASET_KEYS);
  if (d.type !== 'CocoDataset') throw new ConfigError(`${where}: dataset.type must be CocoDataset`);
  for (const key of ['data_root', 'ann_file', 'img_prefix'] as const) {
    if (typeof d[key] !== 'string') throw new ConfigError(`${where}: dataset.${key} must be a string`);
  }
  return c;
}

/**
 * A detection configuration by preset name, or from a JSON file `{"base": "<preset>", ...overrides}` (objects merged
 * key by key, arrays and scalars replaced; a file without `base` must hold a complete config). Changing `classes`
 * without `category_ids` numbers the categories 1..K.
 *
 * @param nameOrPath a detection preset name (see {@link listDetConfigs}) or a path ending in `.json`
 */
export function loadDetConfig(nameOrPath: string): DetConfig {
  let cfg: DetConfig;
  if (isDetPreset(nameOrPath)) {
    cfg = getDetPreset(nameOrPath);
  } else if (nameOrPath.toLowerCase().endsWith('.json')) {
    let raw: unknown;
    try {
      raw = JSON.parse(new TextDecoder().decode(readRegularFile(nameOrPath, { maxBytes: 16 * 2 ** 20, what: 'config file' })));
    } catch (e) {
      throw new ConfigError(`cannot read config ${nameOrPath}: ${(e as Error).message}`);
    }
    if (!isPlainObject(raw)) throw new ConfigError(`config ${nameOrPath}: expected a JSON object`);
    checkKeys(`config ${nameOrPath}`, raw, ['base', ...TOP_KEYS]);
    const { base, ...rest } = raw as Partial<DetConfig> & { base?: unknown };
    if (base !== undefined && (typeof base !== 'string' || !isDetPreset(base))) {
      throw new ConfigError(`config ${nameOrPath}: base must be a detection preset (${DET_PRESET_NAMES.join(', ')}), got ${JSON.stringify(base)}`);
    }
    const start = base === undefined ? ({ task: 'detection' } as DetConfig) : getDetPreset(base);
    if (rest.classes !== undefined && rest.category_ids === undefined && Array.isArray(rest.classes)) {
      rest.category_ids = rest.classes.map((_, i) => i + 1);
    }
    cfg = deepMerge(start, rest);
    if (rest.name === undefined) cfg.name = basename(nameOrPath, extname(nameOrPath));
    if (base !== undefined && rest.source === undefined) cfg.source = `${nameOrPath} (based on ${base})`;
  } else {
    throw new ConfigError(`unknown detection config ${JSON.stringify(nameOrPath)}: not a preset and not a .json file; presets: ${DET_PRESET_NAMES.join(', ')}`);
  }
  return validateDetConfig(cfg);
}
