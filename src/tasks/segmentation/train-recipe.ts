/**
 * The training part of a segmentation config (`SegConfig.train`): optimizer, schedule, run length, batch, train
 * pipeline, splits, checkpoint and evaluation intervals, in mmseg/mmcv terms (snake_case keys, mmcv names).
 *
 * {@link ADE20K_RECIPE} is the authors' ADE20K recipe as `upernet_deit_adapter_tiny_512_160k_ade20k.py` merged with
 * its `_base_` files runs it (`../shared/fixtures/training/recipe_tiny.json`).
 */
import type { LrConfig } from '../../train/schedule.js';
import { ADE20K_TRAIN_PIPELINE, type TrainPipelineCfg } from './pipeline-train.js';
import type { ImgNormCfg } from './configs.js';

/** mmseg `optimizer` (AdamW only) with the authors' constructor. */
export interface OptimizerCfg {
  type: 'AdamW';
  lr: number;
  betas: [number, number];
  weight_decay: number;
  eps?: number;
  /** `LayerDecayOptimizerConstructor` (the authors') or mmcv's default (one group, no decay exemptions). */
  constructor: 'LayerDecayOptimizerConstructor' | 'DefaultOptimizerConstructor';
  /** Layer decay settings (LayerDecayOptimizerConstructor only). */
  paramwise_cfg: { num_layers: number; layer_decay_rate: number } | null;
}

/** The train pipeline's settings (the rest — normalisation, reduce_zero_label, ignore — comes from the config). */
export interface TrainPipelineSettings {
  /** Resize `img_scale` (long, short) before the ratio. */
  img_scale: [number, number];
  /** Resize `ratio_range`, or null for none. */
  ratio_range: [number, number] | null;
  /** RandomCrop `crop_size` (h, w); also the Pad size. */
  crop_size: [number, number];
  cat_max_ratio: number;
  /** RandomFlip `prob`. */
  flip_prob: number;
  /** PhotoMetricDistortion with mmseg's defaults. */
  photo_metric_distortion: boolean;
}

/** A dataset split's folders, relative to the data root. */
export interface SplitCfg {
  img_dir: string;
  ann_dir: string;
}

/** `SegConfig.train`. */
export interface TrainRecipe {
  optimizer: OptimizerCfg;
  /** mmcv `optimizer_config`: gradient clipping (null: none) and gradient accumulation (micro-batches per iteration). */
  optimizer_config: { grad_clip: { max_norm: number } | null; cumulative_iters: number };
  /** mmcv `lr_config`. */
  lr_config: LrConfig;
  /** `runner.max_iters`. */
  max_iters: number;
  /**
   * Images per iteration on one device (`samples_per_gpu` × GPUs for the authors' 8-GPU runs: see `source`); in a
   * data-parallel run, per process (an iteration takes `samples_per_gpu` × world size images).
   */
  samples_per_gpu: number;
  /** Data-loading workers. */
  workers_per_gpu: number;
  /** `checkpoint_config.interval` and `max_keep_ckpts`. */
  checkpoint_interval: number;
  max_keep_ckpts: number;
  /** `evaluation.interval` (0: no evaluation during training). */
  eval_interval: number;
  pipeline: TrainPipelineSettings;
  train_split: SplitCfg;
  val_split: SplitCfg;
  /** Where the values come from. */
  source: string;
}

/** The authors' ADE20K recipe (ViT-Adapter-T UperNet; see the module notes). */
export const ADE20K_RECIPE: Readonly<TrainRecipe> = Object.freeze({
  optimizer: {
    type: 'AdamW', lr: 1.2e-4, betas: [0.9, 0.999], weight_decay: 0.01, constructor: 'LayerDecayOptimizerConstructor',
    paramwise_cfg: { num_layers: 12, layer_decay_rate: 0.95 },
  },
  optimizer_config: { grad_clip: null, cumulative_iters: 1 },
  lr_config: { policy: 'poly', warmup: 'linear', warmup_iters: 1500, warmup_ratio: 1e-6, power: 1.0, min_lr: 0.0, by_epoch: false },
  max_iters: 160000,
  samples_per_gpu: 2,
  workers_per_gpu: 4,
  checkpoint_interval: 1000,
  max_keep_ckpts: 1,
  eval_interval: 16000,
  pipeline: {
    img_scale: [2048, 512], ratio_range: [0.5, 2.0], crop_size: [512, 512], cat_max_ratio: 0.75, flip_prob: 0.5,
    photo_metric_distortion: true,
  },
  train_split: { img_dir: 'images/training', ann_dir: 'annotations/training' },
  val_split: { img_dir: 'images/validation', ann_dir: 'annotations/validation' },
  source: 'upernet_deit_adapter_tiny_512_160k_ade20k.py merged with its _base_ files (shared/fixtures/training/recipe_tiny.json); ' +
    'samples_per_gpu 2 on each of 8 GPUs (16 images per iteration with SyncBN)',
}) as TrainRecipe;

/** The full {@link TrainPipelineCfg} of a recipe and config. */
export function trainPipelineCfg(r: TrainRecipe, norm: ImgNormCfg, reduceZeroLabel: boolean, ignoreIndex: number): TrainPipelineCfg {
  const p = r.pipeline;
  return {
    ...ADE20K_TRAIN_PIPELINE,
    reduceZeroLabel,
    imgScale: [p.img_scale[0], p.img_scale[1]],
    ratioRange: p.ratio_range ? [p.ratio_range[0], p.ratio_range[1]] : null,
    cropSize: [p.crop_size[0], p.crop_size[1]],
    catMaxRatio: p.cat_max_ratio,
    ignoreIndex,
    flipProb: p.flip_prob,
    photoMetric: p.photo_metric_distortion ? ADE20K_TRAIN_PIPELINE.photoMetric : null,
    mean: [...norm.mean],
    std: [...norm.std],
    toRgb: norm.to_rgb,
    padSize: [p.crop_size[0], p.crop_size[1]],
    padVal: 0,
    segPadVal: 255,
  };
}

/** Checks a recipe's shape and values; throws naming the first bad field. */
export function validateRecipe(where: string, r: TrainRecipe): void {
  const bad = (m: string): never => { throw new Error(`${where}: train.${m}`); };
  const pos = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v > 0;
  const posInt = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v > 0;
  if (typeof r !== 'object' || r === null) bad('must be an object');
  const o = r.optimizer;
  if (!o || o.type !== 'AdamW') bad('optimizer.type must be AdamW');
  if (!pos(o.lr)) bad(`optimizer.lr must be a positive number, got ${JSON.stringify(o.lr)}`);
  if (typeof o.weight_decay !== 'number' || o.weight_decay < 0) bad('optimizer.weight_decay must be a non-negative number');
  if (o.constructor !== 'LayerDecayOptimizerConstructor' && o.constructor !== 'DefaultOptimizerConstructor') {
    bad('optimizer.constructor must be LayerDecayOptimizerConstructor or DefaultOptimizerConstructor');
  }
  if (o.constructor === 'LayerDecayOptimizerConstructor' && (!o.paramwise_cfg || !posInt(o.paramwise_cfg.num_layers) || !pos(o.paramwise_cfg.layer_decay_rate))) {
    bad('optimizer.paramwise_cfg needs num_layers (positive integer) and layer_decay_rate (positive number)');
  }
  if (!posInt(r.max_iters)) bad('max_iters must be a positive integer');
  if (!posInt(r.samples_per_gpu)) bad('samples_per_gpu must be a positive integer');
  if (!posInt(r.optimizer_config?.cumulative_iters)) bad('optimizer_config.cumulative_iters must be a positive integer');
  if (!posInt(r.checkpoint_interval) || !posInt(r.max_keep_ckpts)) bad('checkpoint_interval and max_keep_ckpts must be positive integers');
  const p = r.pipeline;
  if (!p || !Array.isArray(p.crop_size) || p.crop_size.length !== 2 || !p.crop_size.every(posInt)) bad('pipeline.crop_size must be [h, w]');
  if (p.crop_size.some((v) => v % 32 !== 0)) bad(`pipeline.crop_size must be multiples of 32 (ViT-Adapter), got ${JSON.stringify(p.crop_size)}`);
  if (!Array.isArray(p.img_scale) || p.img_scale.length !== 2 || !p.img_scale.every(posInt)) bad('pipeline.img_scale must be [long, short]');
  if (!r.train_split?.img_dir || !r.train_split?.ann_dir || !r.val_split?.img_dir || !r.val_split?.ann_dir) bad('train_split / val_split need img_dir and ann_dir');
}
