/**
 * Segmentation training (mmseg `train_segmentor` with the ViT-Adapter recipe): builds the config's segmentor, loads
 * pretrained ViT weights into its backbone, builds the authors' layer-decay parameter groups, AdamW and the lr
 * schedule from the config's `train` recipe, lists the train and val splits, and runs the generic loop of
 * `src/train/trainer.ts` with data decoded and augmented in worker threads (`train-worker.ts`).
 *
 * Data-parallel (`dist` with a world size above 1, one process per rank, started by `vit-adapter train --nproc N`
 * or by hand with torchrun's environment variables): the process group is created here (Gloo on CPU, NCCL on CUDA),
 * the ranks check that they run the same job, batch norms become {@link SyncBatchNorm2d} where the config says
 * `SyncBN` (the heads' `norm_cfg`) and in the backbone (the authors' adapter hard-codes `nn.SyncBatchNorm` in the
 * spatial prior module and the output norms `norm1..4`), `--batch` is per process (global batch = batch × world size), each rank draws its shard of
 * every global batch, gradients are averaged by {@link DistributedDataParallel}, and evaluation is sharded over the
 * ranks (image i on rank i mod W) with the per-class pixel counts gathered and summed, so the metrics equal a
 * single-process evaluation.
 */
import { mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { type Tensor, fromBytes, manualSeed } from '../../engine/index.js';
import { type DistBackend, type ProcessGroup, initProcessGroup } from '../../engine/dist.js';
import type { Module } from '../../nn/index.js';
import { convertSyncBatchNorm } from '../../nn/sync-batchnorm.js';
import { DistributedDataParallel } from '../../train/ddp.js';
import { readImage, readLabelMap } from '../../io/image.js';
import { type EvalMetrics, type IterationRecord, type TrainSummary, runTraining } from '../../train/trainer.js';
import { type LoadedBatch, Prefetcher, SampleLoader } from '../../train/loader.js';
import { BatchSampler } from '../../train/sampler.js';
import { latestCheckpoint } from '../../train/checkpoint.js';
import { type PretrainedReport, loadPretrainedViT } from '../../train/pretrained.js';
import { AdamW, buildParamGroups, buildPlainParamGroups, type ParamGroupSpec } from '../../train/index.js';
import { LrScheduler } from '../../train/schedule.js';
import { type SegConfig, classNamesOf, numClassesOf, paletteOf } from './configs.js';
import { type SegDatasetConfig, customDataset, listSamples } from './datasets.js';
import { evaluateDataset } from './evaluate.js';
import { buildSegmentor, segmentImage } from './inference.js';
import { SegEvaluator } from './metrics.js';
import type { EncoderDecoder } from './segmentor.js';
import { type SegSampleContext, type SegTrainSample, segSampleFn } from './train-data.js';
import { type TrainRecipe, trainPipelineCfg } from './train-recipe.js';

/** Options of {@link trainSegmentor} (CLI flags in comments). */
export interface SegTrainOptions {
  config: SegConfig;
  /** `--data`: the dataset root; the recipe's splits are relative to it. */
  dataRoot: string;
  /** `--work-dir`. */
  workDir: string;
  /** Split folders overriding the recipe's (relative to the root). */
  trainImgDir?: string;
  trainAnnDir?: string;
  valImgDir?: string;
  valAnnDir?: string;
  /** `--pretrained`: a timm/DeiT/AugReg ViT checkpoint for the backbone. */
  pretrained?: string | null;
  /** `--iters`, `--batch`, `--lr`: override the recipe. */
  iters?: number;
  batch?: number;
  lr?: number;
  /** `--device`. */
  device?: string;
  /** `--amp bf16|fp16`: autocast (bfloat16; float16 with loss scaling, CUDA only). */
  amp?: 'bf16' | 'fp16' | null;
  /** `--resume`: a checkpoint file, or true for the newest in the work dir. */
  resume?: string | true | null;
  /** `--eval-interval` (0: none), `--checkpoint-interval`, `--keep`. */
  evalInterval?: number;
  checkpointInterval?: number;
  keep?: number;
  /** Evaluate on at most this many val images. */
  evalLimit?: number;
  /** `--seed` (default 0): model init, shuffles and augmentation. */
  seed?: number;
  /** `--workers` (default: the recipe's `workers_per_gpu`). */
  workers?: number;
  /** Batches loaded ahead (default max(2, workers)). */
  prefetch?: number;
  /** `--skip-bad-samples`. */
  skipBadSamples?: boolean;
  /** `--freeze-backbone`: train only the heads (backbone parameters get no gradient and no optimizer state). */
  freezeBackbone?: boolean;
  /** `--with-cp`: gradient checkpointing in the backbone. */
  withCp?: boolean;
  /** `--accumulate`: micro-batches per iteration (overrides optimizer_config.cumulative_iters). */
  accumulate?: number;
  /** `--clip-grad`: max global gradient norm (overrides optimizer_config.grad_clip). */
  clipGrad?: number | null;
  onIteration?: (r: IterationRecord, it: { done: number; total: number; dataWaitShare: number }) => void;
  onEvaluation?: (iter: number, m: EvalMetrics) => void;
  onCheckpoint?: (path: string, iter: number) => void;
  onMessage?: (line: string) => void;
  handleSignals?: boolean;
  /** Data-parallel training: this process's place in the job (see the module notes); absent or world size 1: one process. */
  dist?: SegDistOptions | null;
  /**
   * Parameter dtype (default float32). float64 is for exact checks (data-parallel equivalence): slow, CPU, no amp.
   */
  dtype?: 'float32' | 'float64';
}

/** {@link SegTrainOptions.dist}. */
export interface SegDistOptions {
  /** `--dist-backend` (default gloo on CPU, nccl on CUDA). */
  backend?: DistBackend;
  rank: number;
  worldSize: number;
  /** Rank on this machine: the CUDA device index with `--device cuda`. */
  localRank: number;
  masterAddr: string;
  masterPort: number;
  /** `--dist-timeout` in milliseconds: rendezvous and every collective (default 300 000). */
  timeoutMs?: number;
  /** Gradient bucket size (MB, default DDP's). */
  bucketCapMb?: number;
}

/** {@link trainSegmentor}'s result. */
export interface SegTrainResult extends TrainSummary {
  config: string;
  mIoU: number | null;
  pretrained: PretrainedReport | null;
  train_samples: number;
  val_samples: number;
  num_parameters: number;
  /** Batch norms that became SyncBatchNorm (data-parallel runs). */
  sync_bn: number;
}

/** The config's recipe with the option overrides applied (throws when the config has none). */
export function effectiveRecipe(config: SegConfig, o: Pick<SegTrainOptions, 'iters' | 'batch' | 'lr' | 'evalInterval' | 'checkpointInterval' | 'keep' | 'accumulate' | 'clipGrad'> = {}): TrainRecipe {
  if (!config.train) throw new Error(`config ${config.name} has no training recipe (train section)`);
  const r = structuredClone(config.train);
  const posInt = (v: number | undefined, what: string): void => {
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new RangeError(`${what} must be a positive integer, got ${v}`);
  };
  posInt(o.iters, 'iterations');
  posInt(o.batch, 'batch size');
  posInt(o.checkpointInterval, 'checkpoint interval');
  posInt(o.keep, 'keep');
  posInt(o.accumulate, 'accumulate');
  if (o.lr !== undefined && !(o.lr > 0 && Number.isFinite(o.lr))) throw new RangeError(`lr must be a positive number, got ${o.lr}`);
  if (o.evalInterval !== undefined && !(Number.isInteger(o.evalInterval) && o.evalInterval >= 0)) throw new RangeError(`eval interval must be a non-negative integer, got ${o.evalInterval}`);
  if (o.iters !== undefined) r.max_iters = o.iters;
  if (o.batch !== undefined) r.samples_per_gpu = o.batch;
  if (o.lr !== undefined) r.optimizer.lr = o.lr;
  if (o.evalInterval !== undefined) r.eval_interval = o.evalInterval;
  if (o.checkpointInterval !== undefined) r.checkpoint_interval = o.checkpointInterval;
  if (o.keep !== undefined) r.max_keep_ckpts = o.keep;
  if (o.accumulate !== undefined) r.optimizer_config.cumulative_iters = o.accumulate;
  if (o.clipGrad !== undefined) r.optimizer_config.grad_clip = o.clipGrad === null ? null : { max_norm: o.clipGrad };
  return r;
}

/** The optimizer parameter groups a config's recipe builds for a model (what `--describe-params` prints). */
export function paramGroupsFor(model: EncoderDecoder, recipe: TrainRecipe, freeze: readonly string[] = []): ParamGroupSpec[] {
  const opt = recipe.optimizer;
  if (opt.constructor === 'LayerDecayOptimizerConstructor') {
    return buildParamGroups(model, {
      lr: opt.lr, weightDecay: opt.weight_decay, numLayers: opt.paramwise_cfg!.num_layers,
      layerDecayRate: opt.paramwise_cfg!.layer_decay_rate, freeze,
    });
  }
  return buildPlainParamGroups(model, { lr: opt.lr, weightDecay: opt.weight_decay, freeze });
}

function splitDataset(config: SegConfig, root: string, imgDir: string, annDir: string, name: string): SegDatasetConfig {
  const d = config.dataset;
  return customDataset({
    name, dataRoot: root, imgDir, annDir, imgSuffix: d.img_suffix, segMapSuffix: d.seg_map_suffix,
    classes: [...classNamesOf(config)], palette: paletteOf(config), reduceZeroLabel: d.reduce_zero_label, ignoreIndex: d.ignore_index,
  });
}

/** Default collective timeout of data-parallel training (ms). */
export const DEFAULT_DIST_TIMEOUT_MS = 300_000;

/**
 * The modules whose batch norms a data-parallel run synchronises: the heads whose `norm_cfg` is `SyncBN`, and the
 * backbone (ViT-Adapter / BEiT-Adapter: the authors build the spatial prior module's and the output norms
 * `norm1..norm4` with `nn.SyncBatchNorm`; the plain ViTs have no batch norm).
 */
export function syncBnTargets(model: EncoderDecoder, config: SegConfig): { name: string; module: Module }[] {
  const out: { name: string; module: Module }[] = [];
  const isSync = (h: unknown): boolean => {
    const n = (h as { norm_cfg?: { type?: string } | null } | null)?.norm_cfg;
    return Boolean(n && n.type === 'SyncBN');
  };
  out.push({ name: 'backbone', module: model.backbone as unknown as Module });
  if (isSync(config.model.decode_head)) out.push({ name: 'decode_head', module: model.decode_head as unknown as Module });
  const aux = config.model.auxiliary_head;
  const auxMod = model.auxiliary_head as unknown as Module | null;
  if (auxMod && Array.isArray(aux)) {
    aux.forEach((h, i) => {
      const m = (auxMod as unknown as { get?: (i: number) => Module }).get?.(i);
      if (isSync(h) && m) out.push({ name: `auxiliary_head.${i}`, module: m });
    });
  } else if (auxMod && isSync(aux)) {
    out.push({ name: 'auxiliary_head', module: auxMod });
  }
  return out;
}

/** What the ranks of one job must agree on (compared on rank 0's values right after the group forms). */
function jobFingerprint(parts: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, createHash('sha256').update(JSON.stringify(v) ?? 'undefined').digest('hex').slice(0, 16)]));
}

/**
 * Sharded evaluation: rank r segments val images r, r+W, ...; the per-class areas are gathered and summed, so the
 * metrics are those of one process evaluating every image.
 */
async function evaluateSharded(model: EncoderDecoder, config: SegConfig, dataset: SegDatasetConfig, pg: ProcessGroup, device: string,
  limit: number | undefined): Promise<EvalMetrics> {
  let samples = listSamples(dataset);
  if (limit !== undefined) samples = samples.slice(0, limit);
  const ev = new SegEvaluator({ numClasses: numClassesOf(config), ignoreIndex: dataset.ignoreIndex, reduceZeroLabel: dataset.reduceZeroLabel });
  let error: string | null = null;
  for (let i = pg.rank; i < samples.length && !error; i += pg.worldSize) {
    const s = samples[i]!;
    try {
      const [image, label] = await Promise.all([readImage(s.image), readLabelMap(s.label!)]);
      if (image.height !== label.height || image.width !== label.width) {
        throw new Error(`${s.label}: label is ${label.width}x${label.height} but image ${s.image} is ${image.width}x${image.height}`);
      }
      ev.add(segmentImage(model, image, config, { device }).labels, label.data);
    } catch (e) {
      error = `evaluation on rank ${pg.rank}, sample ${s.name}: ${(e as Error).message}`;
    }
  }
  // every rank reaches the gather, also after an error, so that all of them fail with the message instead of a timeout
  const t = ev.totals;
  const all = pg.allGatherObject({
    error, images: ev.count,
    areas: [Array.from(t.areaIntersect), Array.from(t.areaUnion), Array.from(t.areaPredLabel), Array.from(t.areaLabel)],
  });
  const failed = all.find((a) => a.error);
  if (failed) throw new Error(failed.error!);
  const total = new SegEvaluator({ numClasses: numClassesOf(config), ignoreIndex: dataset.ignoreIndex, reduceZeroLabel: dataset.reduceZeroLabel });
  for (const a of all) {
    total.addAreas({
      areaIntersect: Float64Array.from(a.areas[0]!), areaUnion: Float64Array.from(a.areas[1]!),
      areaPredLabel: Float64Array.from(a.areas[2]!), areaLabel: Float64Array.from(a.areas[3]!),
    });
  }
  const sum = total.summary();
  const fin = (x: number): number | null => (Number.isFinite(x) ? x : null);
  return { mIoU: fin(sum.mIoU), aAcc: fin(sum.aAcc), mAcc: fin(sum.mAcc) };
}

/** Creates the process group of a data-parallel run, with errors that say what to check. */
function joinGroup(d: SegDistOptions, device: string): ProcessGroup {
  const backend: DistBackend = d.backend ?? (device.startsWith('cuda') ? 'nccl' : 'gloo');
  if (backend === 'nccl' && !device.startsWith('cuda')) throw new Error('--dist-backend nccl needs --device cuda (NCCL is GPU-only); use gloo on CPU');
  const timeoutMs = d.timeoutMs ?? DEFAULT_DIST_TIMEOUT_MS;
  try {
    return initProcessGroup({ backend, rank: d.rank, worldSize: d.worldSize, masterAddr: d.masterAddr, masterPort: d.masterPort, timeoutMs });
  } catch (e) {
    throw new Error(`rank ${d.rank} of ${d.worldSize}: could not form the process group at ${d.masterAddr}:${d.masterPort} ` +
      `(${backend}, timeout ${timeoutMs / 1000} s): ${(e as Error).message}. Check that all ${d.worldSize} processes were started with ` +
      'the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT, that each RANK is used once, and that rank 0\'s port is free and reachable', { cause: e });
  }
}

/** Builds everything from a config and trains (see the module notes). */
export async function trainSegmentor(o: SegTrainOptions): Promise<SegTrainResult> {
  const distOpts = o.dist && o.dist.worldSize > 1 ? o.dist : null;
  if (!distOpts) return trainOne(o, null);
  let device = o.device ?? 'cpu';
  if (device === 'cuda') device = `cuda:${distOpts.localRank}`;
  const pg = joinGroup(distOpts, device);
  try {
    return await trainOne({ ...o, device }, pg);
  } finally {
    try {
      pg.destroy();
    } catch {
      // a group whose peers are gone: nothing left to release
    }
  }
}

async function trainOne(o: SegTrainOptions, pg: ProcessGroup | null): Promise<SegTrainResult> {
  const rank = pg?.rank ?? 0;
  const world = pg?.worldSize ?? 1;
  const msg = rank === 0 ? (o.onMessage ?? (() => {})) : () => {};
  const recipe = effectiveRecipe(o.config, o);
  const config: SegConfig = structuredClone(o.config);
  config.train = recipe;
  if (o.withCp) config.model.backbone.with_cp = true;
  const seed = o.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
  const workers = o.workers ?? recipe.workers_per_gpu;
  if (!Number.isInteger(workers) || workers < 0) throw new RangeError(`workers must be a non-negative integer, got ${workers}`);
  const device = o.device ?? 'cpu';
  const dtype = o.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float64') throw new RangeError(`dtype must be float32 or float64, got ${String(dtype)}`);
  if (dtype === 'float64' && o.amp) throw new Error('dtype float64 and --amp exclude each other');

  const trainSet = splitDataset(config, o.dataRoot, o.trainImgDir ?? recipe.train_split.img_dir, o.trainAnnDir ?? recipe.train_split.ann_dir, 'train');
  const trainSamples = listSamples(trainSet);
  const evalInterval = recipe.eval_interval;
  const valSet = splitDataset(config, o.dataRoot, o.valImgDir ?? recipe.val_split.img_dir, o.valAnnDir ?? recipe.val_split.ann_dir, 'val');
  const valCount = evalInterval > 0 ? listSamples(valSet).length : 0;

  let resume: string | null = null;
  if (o.resume === true) {
    resume = latestCheckpoint(o.workDir);
    if (!resume) throw new Error(`--resume: no checkpoint (iter_*.safetensors) in ${o.workDir}`);
  } else if (o.resume) {
    resume = o.resume;
  }

  manualSeed(seed);
  const model = buildSegmentor(config);
  let pretrained: PretrainedReport | null = null;
  if (o.pretrained && !resume) {
    pretrained = loadPretrainedViT(model.backbone, o.pretrained);
  } else if (o.pretrained && resume) {
    msg(`note: --pretrained ${o.pretrained} is not loaded when resuming (the checkpoint holds the weights)`);
  }
  if (device !== 'cpu') model.to(device);
  if (dtype === 'float64') model.to('float64');
  let syncBn = 0;
  if (pg) {
    for (const t of syncBnTargets(model, config)) syncBn += convertSyncBatchNorm(t.module, pg);
  }
  model.train();
  const groups = paramGroupsFor(model, recipe, o.freezeBackbone ? ['backbone.'] : []);
  const optimizer = new AdamW(groups, { betas: recipe.optimizer.betas, ...(recipe.optimizer.eps !== undefined ? { eps: recipe.optimizer.eps } : {}) });
  const scheduler = new LrScheduler(optimizer, recipe.lr_config, { maxIters: recipe.max_iters });
  const batch = recipe.samples_per_gpu;
  const sampler = new BatchSampler(trainSamples.length, batch, { seed, shuffle: true, dropLast: true, rank, worldSize: world });

  const ctx: SegSampleContext = {
    samples: trainSamples.map((s) => ({ image: s.image, label: s.label! })),
    pipeline: trainPipelineCfg(recipe, config.img_norm_cfg, config.dataset.reduce_zero_label, config.dataset.ignore_index),
    numClasses: numClassesOf(config),
    ignoreIndex: config.dataset.ignore_index,
    reduceZeroLabel: config.dataset.reduce_zero_label,
  };
  const makeData = (): { prefetcher: Prefetcher<SegTrainSample>; close: () => Promise<void> } => {
    const loader = new SampleLoader<SegTrainSample>({
      workers, workerUrl: new URL('./train-worker.js', import.meta.url), workerData: ctx, inProcess: segSampleFn(ctx),
    });
    const prefetcher = new Prefetcher(sampler, loader, {
      // every rank reports its own skipped samples (the launcher prefixes the other ranks' lines)
      prefetch: o.prefetch ?? Math.max(2, workers), skipBad: o.skipBadSamples ?? false, onWarn: o.onMessage ?? (() => {}),
    });
    return { prefetcher, close: () => loader.close() };
  };

  const loss = (b: LoadedBatch<SegTrainSample>): { loss: Tensor; log: Record<string, Tensor> } => {
    const s0 = b.samples[0]!;
    const { height: H, width: W } = s0;
    const n = b.samples.length;
    const img = new Float32Array(n * 3 * H * W);
    const lab = new Uint8Array(n * H * W);
    b.samples.forEach((s, i) => {
      if (s.height !== H || s.width !== W) throw new Error(`batch of mixed sizes: ${s.width}x${s.height} vs ${W}x${H}`);
      img.set(s.img, i * 3 * H * W);
      lab.set(s.label, i * H * W);
    });
    let x = fromBytes(img, 'float32', [n, 3, H, W], device);
    if (dtype === 'float64') x = x.to('float64');
    const y = fromBytes(lab, 'uint8', [n, 1, H, W], device).to('int64');
    const out = model.forwardTrain(x, y);
    return { loss: out.loss, log: out.log };
  };

  const evaluate = async (): Promise<EvalMetrics> => {
    if (pg) return evaluateSharded(model, config, valSet, pg, device, o.evalLimit);
    const r = await evaluateDataset(model, config, valSet, { device, ...(o.evalLimit ? { limit: o.evalLimit } : {}) });
    return { mIoU: r.mIoU, aAcc: r.aAcc, mAcc: r.mAcc };
  };

  mkdirSync(o.workDir, { recursive: true });
  const resumeKey = {
    model: config.model, img_norm_cfg: config.img_norm_cfg, dataset: { classes: classNamesOf(config), reduce_zero_label: config.dataset.reduce_zero_label },
    train: {
      optimizer: recipe.optimizer, optimizer_config: recipe.optimizer_config, lr_config: recipe.lr_config, max_iters: recipe.max_iters,
      pipeline: recipe.pipeline,
    },
    seed, freeze_backbone: Boolean(o.freezeBackbone), train_samples: trainSamples.length, amp: o.amp ?? null,
    ...(dtype !== 'float32' ? { dtype } : {}),
  };
  if (pg) {
    // the ranks must run the same job: compare what decides the computation with rank 0's
    const mine = jobFingerprint({
      resume_key: resumeKey, batch, world_size: world, resume: resume ?? null, max_iters: recipe.max_iters,
      checkpoint_interval: recipe.checkpoint_interval, eval_interval: evalInterval, val_samples: valCount, device_type: device.split(':')[0],
    });
    const all = pg.allGatherObject(mine);
    for (let r = 1; r < all.length; r++) {
      const diff = Object.keys(mine).filter((k) => all[r]![k] !== all[0]![k]);
      if (diff.length) {
        throw new Error(`rank ${r} runs another job than rank 0: ${diff.join(', ')} differ (start every rank with the same ` +
          'command line, config and data; the per-process batch is --batch)');
      }
    }
  }
  const summary = await runTraining<SegTrainSample>({
    model, optimizer, scheduler, sampler, makeData, loss, maxIters: recipe.max_iters,
    accumulate: recipe.optimizer_config.cumulative_iters, clipGrad: recipe.optimizer_config.grad_clip?.max_norm ?? null,
    workDir: o.workDir, checkpointInterval: recipe.checkpoint_interval, keep: recipe.max_keep_ckpts,
    evalInterval, ...(evalInterval > 0 ? { evaluate } : {}), config, resumeKey,
    meta: {
      seed, workers, device, pretrained: o.pretrained ?? null, data_root: o.dataRoot, train_samples: trainSamples.length,
      val_samples: valCount, world_size: world, batch_per_process: batch, global_batch: batch * world,
      ...(pg ? { dist_backend: pg.backend, sync_bn: syncBn } : {}),
    },
    resume, device, amp: o.amp === 'bf16' ? 'bfloat16' : o.amp === 'fp16' ? 'float16' : null,
    ...(o.onIteration ? { onIteration: o.onIteration } : {}),
    ...(o.onEvaluation ? { onEvaluation: o.onEvaluation } : {}),
    ...(o.onCheckpoint ? { onCheckpoint: o.onCheckpoint } : {}),
    onMessage: msg, handleSignals: o.handleSignals ?? true,
    ...(pg ? {
      dist: {
        group: pg,
        makeReducer: () => new DistributedDataParallel(model, pg, {
          broadcastBuffers: true, ...(o.dist?.bucketCapMb !== undefined ? { bucketCapMb: o.dist.bucketCapMb } : {}),
        }),
      },
    } : {}),
  });
  const mIoU = summary.eval && typeof summary.eval.mIoU === 'number' ? summary.eval.mIoU : null;
  const result: SegTrainResult = {
    ...summary, config: config.name, mIoU, pretrained, train_samples: trainSamples.length, val_samples: valCount,
    num_parameters: model.numParameters(), sync_bn: syncBn,
  };
  model.dispose();
  return result;
}
