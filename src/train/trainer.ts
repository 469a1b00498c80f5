/**
 * The iteration-based training loop (mmcv `IterBasedRunner` with the hooks the ViT-Adapter recipe uses):
 *
 *   for iter = start .. max_iters-1:
 *     lr of every group set by the schedule for `iter` (before the forward, as mmcv's `before_train_iter`)
 *     `accumulate` micro-batches: forward, loss / accumulate, backward (gradients add up)
 *     optional clip of the global gradient norm, optimizer step, gradients cleared
 *     log (JSON lines), checkpoint every `checkpointInterval` iterations, evaluation every `evalInterval`
 *
 * Generic: the task supplies the model's loss on a batch, the data (a {@link Prefetcher}) and an optional evaluator;
 * nothing here knows about segmentation. Checkpoints ({@link ./checkpoint.ts}) hold the model, the optimizer, the
 * scheduler, the iteration, the CPU generator state and the sampler state, so that `resume` continues bit-exactly
 * (on CPU: N iterations straight = N/2, resume, N/2 — every parameter identical).
 *
 * Ctrl-C (SIGINT) finishes the current iteration, writes a checkpoint, stops the data workers and returns with
 * `interrupted: true`; a second Ctrl-C aborts at once (exit code 130).
 *
 * Data-parallel training (`dist`: a process group and a gradient reducer, one process per rank, every rank calling
 * this with the same options): each rank draws its own shard of every global batch (the sampler's rank), runs forward
 * and backward, and the reducer averages the gradients over the ranks — `prepareBackward(sync)` before each
 * micro-batch's backward (no collective on the non-final micro-batches of an accumulation), `finishBackward()` after
 * the last — so every rank applies the same optimizer step. Then:
 * - the logged losses are averaged over the ranks (one small all-reduce per iteration, as mmseg's `_parse_losses`),
 *   and the same all-reduce carries the ranks' stop flags, so an interrupt stops every rank after the same iteration;
 * - only rank 0 writes the log, reports progress and messages, and writes checkpoints; every rank sends its CPU
 *   generator state to rank 0 first (stored per rank), and a barrier after the write means that when any rank moves
 *   on, the checkpoint is complete on disk;
 * - evaluation runs on every rank (the task's evaluator shards the images and gathers the counts);
 * - a lost peer (a collective fails or times out) ends this rank with an error naming the lost rank when the
 *   transport knows it, the iteration and the last complete checkpoint.
 *
 * Resume with any number of processes: a checkpoint records the iteration, the world size and per-process batch it was
 * written with, and the sampler's global sample position (epoch and offset into that epoch's order, see
 * `sampler.ts`). Every rank reads the same file (on several machines it must be at the same path on each: shared
 * storage or a copy). The model, optimizer and scheduler state are those of the single logical model, so they load
 * whatever the new world size; the run continues at the same iteration and the same sample of the data order. With
 * another global batch (world size × batch), the following steps see more or fewer samples each; the lr schedule goes
 * by iteration and continues unchanged. Generator states: rank r gets its saved state when the checkpoint has one for
 * r, else a stream seeded from (seed, iteration, r).
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Tensor, autocast, fromBytes, getRngState, manualSeed, noGrad, scope, setRngState } from '../engine/index.js';
import type { Module, TensorSource } from '../nn/index.js';
import {
  TRAIN_CHECKPOINT_FORMAT, TRAIN_META_KEY, checkpointName, openTrainCheckpoint, pruneCheckpoints, removeStalePartials, writeAtomic,
  type CheckpointTensor,
} from './checkpoint.js';
import type { LoadedBatch, Prefetcher } from './loader.js';
import { type BatchSampler, type SamplerState, mixSeed } from './sampler.js';
import { type AdamW, flattenOptimizerState, unflattenOptimizerState, type OptimizerStateMeta } from './optim.js';
import type { LrScheduler, LrSchedulerState } from './schedule.js';
import { clipGradNorm } from './clip.js';
import { GradScaler, type GradScalerState } from './amp.js';

/** The loss of one micro-batch: the total to back-propagate and the terms to log (0-d tensors). */
export interface StepLoss {
  loss: Tensor;
  log: Record<string, Tensor>;
}

/** One iteration's record (also a JSON line of the log). */
export interface IterationRecord {
  iter: number;
  /** `param_groups[0].lr`, as mmcv logs it. */
  lr: number;
  /** Loss terms (mean over the micro-batches), e.g. `decode.loss_ce`, `aux.loss_ce`, `loss`. */
  losses: Record<string, number>;
  /** Global gradient norm before clipping (only when clipping). */
  grad_norm?: number;
  /** Seconds of the iteration, and the part spent waiting for data. */
  time: number;
  data_time: number;
  /** Epoch of the iteration's (last) batch. */
  epoch: number;
  /** float16 mixed precision: the loss scale after this iteration. */
  loss_scale?: number;
}

/**
 * The collectives the loop uses (what `ProcessGroup` of `src/engine/dist.ts` provides; structural so that the loop
 * does not depend on how the group was made).
 */
export interface TrainerGroup {
  readonly rank: number;
  readonly worldSize: number;
  allReduce(tensors: Tensor[], op?: 'sum' | 'avg' | 'max' | 'min'): void;
  allGatherObject<V>(value: V): V[];
  barrier(): void;
}

/** The gradient reducer the loop drives (what `DistributedDataParallel` of `ddp.ts` provides). */
export interface TrainerReducer {
  /** Before each micro-batch's backward; `sync` false on the non-final micro-batches of an accumulation. */
  prepareBackward(sync: boolean): void;
  /** After the final micro-batch's backward: gradients averaged over the ranks. */
  finishBackward(): void;
  /** Broadcasts rank 0's buffers (batch-norm running statistics), as torch's DDP before a forward. */
  syncBuffers(): void;
  /**
   * Time spent in collectives and how the buckets ran: `collectiveMs` of the last synchronising step and, when the
   * reducer keeps it, `totalCollectiveMs` over all steps.
   */
  stats(): { collectiveMs: number; totalCollectiveMs?: number; buckets: number; overlapped: boolean; bytes: number };
  /** Releases the gradient hooks (called when the loop ends). */
  dispose?(): void;
}

/** Data-parallel settings of {@link runTraining}. */
export interface TrainerDist {
  group: TrainerGroup;
  /**
   * Wraps the model for gradient averaging; called once the model holds its final starting weights (after a resume).
   * The reducer broadcasts rank 0's parameters and buffers, so all ranks start identical.
   */
  makeReducer: () => TrainerReducer;
}

/** Figures of a data-parallel run ({@link TrainSummary.dist}). */
export interface DistSummary {
  /** Milliseconds this rank spent in gradient collectives, and per iteration. */
  collective_ms: number;
  collective_ms_per_iter: number;
  /** Share of the loop's wall time spent in gradient collectives (rank 0). */
  collective_share: number;
  buckets: number;
  /** Whether the bucket all-reduces ran during the backward (overlapped) or after it. */
  overlapped: boolean;
  /** Gradient bytes all-reduced per step. */
  bytes: number;
  /** Samples per step over all ranks. */
  global_batch: number;
}

/** An evaluation's result (metric name → value in [0, 1], null for nan). */
export type EvalMetrics = Record<string, number | null>;

/** Options of {@link runTraining}. */
export interface TrainerOptions<T> {
  model: Module;
  optimizer: AdamW;
  scheduler: LrScheduler;
  sampler: BatchSampler;
  /** Creates the prefetcher once the sampler is positioned (after a resume). */
  makeData: () => { prefetcher: Prefetcher<T>; close: () => Promise<void> };
  /** Forward + loss of one micro-batch (called inside a tensor scope, model in training mode). */
  loss: (batch: LoadedBatch<T>) => StepLoss;
  /** Total iterations (`runner.max_iters`). */
  maxIters: number;
  /** Micro-batches per iteration (gradient accumulation; default 1). */
  accumulate?: number;
  /** Clip the global gradient 2-norm to this (null: no clipping, as the recipe). */
  clipGrad?: number | null;
  /** Work dir: checkpoints and `log.jsonl`. */
  workDir: string;
  /** Save every N iterations (and at the end). */
  checkpointInterval: number;
  /** Keep this many newest checkpoints. */
  keep: number;
  /** Evaluate every N iterations (and at the end); 0 = never. */
  evalInterval?: number;
  evaluate?: (iter: number) => Promise<EvalMetrics>;
  /** The run's configuration: stored in checkpoints and compared on resume (see `resumeKey`). */
  config: unknown;
  /** The part of the configuration a resume must match (default: all of `config`). */
  resumeKey?: unknown;
  /** Free-form metadata stored in checkpoints. */
  meta?: Record<string, unknown>;
  /** Resume from this training checkpoint. */
  resume?: string | null;
  /** Extra tensors to save with the model weights? (not used by segmentation) */
  /** Called after every iteration. */
  onIteration?: (r: IterationRecord, it: { done: number; total: number; dataWaitShare: number }) => void;
  onEvaluation?: (iter: number, m: EvalMetrics) => void;
  onCheckpoint?: (path: string, iter: number) => void;
  /** Messages for the user (resume, interrupt). */
  onMessage?: (line: string) => void;
  /** Device the model is on (RNG state saved is the CPU generator's either way). */
  device?: string;
  /** Handle SIGINT (default true). */
  handleSignals?: boolean;
  /**
   * Mixed precision: the forward pass and the loss run under autocast in this dtype on `device` (bfloat16 on CPU or
   * CUDA; float16 on CUDA, with a dynamic loss scaler). Null: float32.
   */
  amp?: 'bfloat16' | 'float16' | null;
  /** The loss scaler's initial scale for float16 (default 2^16, torch's). */
  ampInitScale?: number;
  /** Data-parallel training (see the module notes); absent: one process. */
  dist?: TrainerDist | null;
}

/** What {@link runTraining} returns. */
export interface TrainSummary {
  /** Iterations done in total (including those before a resume). */
  iterations: number;
  /** Iterations run by this call. */
  ran: number;
  /** Processes that trained together. */
  world_size: number;
  /** Data-parallel figures (null with one process). */
  dist: DistSummary | null;
  /** The last iteration's loss terms. */
  losses: Record<string, number>;
  /** The last checkpoint written (or resumed from), or null. */
  checkpoint: string | null;
  /** Last evaluation, or null. */
  eval: EvalMetrics | null;
  /** Evaluations by iteration. */
  evals: { iter: number; metrics: EvalMetrics }[];
  seconds: number;
  it_per_s: number;
  /** Share of the loop's wall time spent waiting for data. */
  data_wait_share: number;
  interrupted: boolean;
  resumed_from: string | null;
}

/** A resume file that does not belong to this run. */
export class ResumeMismatchError extends Error {
  constructor(readonly file: string, readonly differences: string[]) {
    super(`${file} was written by another configuration; differences (checkpoint vs now):\n  ${differences.join('\n  ')}`);
    this.name = 'ResumeMismatchError';
  }
}

/** Dotted-path differences between two JSON values (at most `limit`). */
export function jsonDiff(a: unknown, b: unknown, path = '', out: string[] = [], limit = 12): string[] {
  if (out.length >= limit) return out;
  const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
  if (isObj(a) && isObj(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) jsonDiff(a[k], b[k], path ? `${path}.${k}` : k, out, limit);
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) {
    a.forEach((x, i) => jsonDiff(x, b[i], `${path}[${i}]`, out, limit));
    return out;
  }
  if (JSON.stringify(a) !== JSON.stringify(b)) out.push(`${path || '(root)'}: ${JSON.stringify(a) ?? 'absent'} vs ${JSON.stringify(b) ?? 'absent'}`);
  return out;
}

interface SavedState {
  format: string;
  iteration: number;
  /** Processes and per-process batch of the run that wrote it (absent before data-parallel training: 1). */
  world_size?: number;
  batch_per_process?: number;
  config: unknown;
  resume_key: unknown;
  optimizer: OptimizerStateMeta;
  scheduler: LrSchedulerState;
  sampler: SamplerState;
  rng: { torch_cpu: string; note: string; ranks?: Record<string, string> };
  grad_scaler?: GradScalerState | null;
  meta: Record<string, unknown>;
  saved_at: string;
}

const b64 = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('base64');

/**
 * Writes a checkpoint (rank 0; every rank calls it: the ranks' generator states are gathered first, and a barrier
 * after the write holds every rank until the file is complete). Returns the path (on every rank).
 */
function saveCheckpoint<T>(o: TrainerOptions<T>, iteration: number, sampler: SamplerState, scaler: GradScaler | null): string {
  const group = o.dist?.group ?? null;
  const path = join(o.workDir, checkpointName(iteration));
  let ranks: Record<string, string> | undefined;
  if (group) {
    const states = group.allGatherObject(b64(getRngState()));
    ranks = Object.fromEntries(states.map((s, r) => [String(r), s]));
    if (group.rank !== 0) {
      group.barrier();
      return path;
    }
  }
  try {
    writeCheckpointFile(o, path, iteration, sampler, scaler, ranks);
  } finally {
    // release the other ranks even when the write failed (the error surfaces here, on rank 0)
    group?.barrier();
  }
  return path;
}

function writeCheckpointFile<T>(o: TrainerOptions<T>, path: string, iteration: number, sampler: SamplerState, scaler: GradScaler | null,
  ranks: Record<string, string> | undefined): void {
  const tensors: [string, CheckpointTensor][] = [];
  const sd = o.model.stateDict();
  for (const [k, t] of sd) tensors.push([k, t]);
  const opt = flattenOptimizerState(o.optimizer.stateDict(), 'optimizer.');
  for (const [k, t] of Object.entries(opt.tensors)) tensors.push([k, t]);
  const rng = getRngState();
  tensors.push(['rng.torch_cpu', { dtype: 'uint8', shape: [rng.length], nbytes: rng.length, read: () => rng }]);
  const state: SavedState = {
    format: TRAIN_CHECKPOINT_FORMAT, iteration, world_size: o.dist?.group.worldSize ?? 1, batch_per_process: o.sampler.batchSize,
    config: o.config, resume_key: o.resumeKey ?? o.config, optimizer: opt.meta,
    scheduler: o.scheduler.stateDict(), sampler,
    rng: {
      torch_cpu: 'tensor rng.torch_cpu',
      note: 'augmentation draws use a per-sample generator seeded from (seed, epoch, index): the sampler state determines them' +
        (ranks ? '; ranks: the CPU generator state of every rank (base64), rank 0\'s is also rng.torch_cpu' : ''),
      ...(ranks ? { ranks } : {}),
    },
    grad_scaler: scaler ? scaler.stateDict() : null,
    meta: o.meta ?? {}, saved_at: new Date().toISOString(),
  };
  writeAtomic(path, tensors, { [TRAIN_META_KEY]: JSON.stringify(state), format: 'pt' });
  pruneCheckpoints(o.workDir, o.keep);
}

function restore<T>(o: TrainerOptions<T>, file: string, scaler: GradScaler | null): { iteration: number; sampler: SamplerState; notes: string[] } {
  const { state: raw, checkpoint } = openTrainCheckpoint(file);
  const state = raw as unknown as SavedState;
  try {
    const diffs = jsonDiff(state.resume_key, o.resumeKey ?? o.config);
    if (diffs.length) throw new ResumeMismatchError(file, diffs);
    const model = new Map<string, TensorSource>();
    const optTensors = new Map<string, Tensor>();
    let rng: Uint8Array | null = null;
    for (const [k, t] of checkpoint.tensors) {
      if (k.startsWith('optimizer.')) {
        optTensors.set(k, fromBytes(t.read(), t.dtype, t.shape, o.device).keep());
      } else if (k === 'rng.torch_cpu') {
        rng = t.read().slice();
      } else {
        model.set(k, { shape: t.shape, materialize: () => fromBytes(t.read(), t.dtype, t.shape) });
      }
    }
    try {
      o.model.loadStateDict(model, { strict: true });
    } catch (e) {
      throw new Error(`${file}: the model weights do not fit this model: ${(e as Error).message}`);
    }
    try {
      o.optimizer.loadStateDict(unflattenOptimizerState(optTensors, state.optimizer, 'optimizer.'));
    } finally {
      for (const t of optTensors.values()) t.dispose();
    }
    o.scheduler.loadStateDict(state.scheduler);
    if (!rng) throw new Error(`${file}: no rng.torch_cpu tensor (the CPU generator state)`);
    const notes: string[] = [];
    const rank = o.dist?.group.rank ?? 0;
    const saved = rank === 0 ? null : state.rng.ranks?.[String(rank)];
    if (rank === 0) setRngState(rng);
    else if (saved) setRngState(new Uint8Array(Buffer.from(saved, 'base64')));
    else manualSeed(rankSeed(o.sampler.seed, state.iteration, rank));
    const savedWorld = state.world_size ?? 1;
    const world = o.dist?.group.worldSize ?? 1;
    if (savedWorld !== world) {
      notes.push(`${file} was written by ${savedWorld} process${savedWorld > 1 ? 'es' : ''}; continuing with ${world}`);
    }
    const note = o.sampler.setState(state.sampler);
    if (note) notes.push(note.message);
    if (scaler && state.grad_scaler) scaler.loadStateDict(state.grad_scaler);
    return { iteration: state.iteration, sampler: o.sampler.state(), notes };
  } finally {
    checkpoint.close();
  }
}

/** Seed of rank `rank`'s CPU generator (ranks above 0; rank 0 keeps the task's seeding). */
export function rankSeed(seed: number, iteration: number, rank: number): number {
  return mixSeed(seed, iteration, rank, 0x3d15) >>> 1;
}

/** A failed collective: rethrown with this rank, the lost rank (when known), the iteration and the last checkpoint. */
function distFailure(e: unknown, rank: number, iter: number, lastCkpt: string | null): Error {
  const err = e as Error & { rank?: number };
  if (!(err instanceof Error)) return err as Error;
  // a DistError, or a collective that failed inside autograd's backward (SyncBatchNorm), which arrives as a plain Error
  const m = /lost rank (\d+)/.exec(err.message);
  if (err.name !== 'DistError' && !m) return err;
  const lostRank = typeof err.rank === 'number' ? err.rank : m ? Number(m[1]) : null;
  const lost = lostRank !== null ? `lost rank ${lostRank} during` : 'a collective failed in';
  const out = new Error(`rank ${rank}: ${lost} iteration ${iter + 1}: ${err.message}; ` +
    `the last complete checkpoint is ${lastCkpt ?? 'none'} (resume with --resume)`, { cause: err });
  out.name = 'DistError';
  return out;
}

/** Runs (or resumes) training; see the module notes. */
export async function runTraining<T>(o: TrainerOptions<T>): Promise<TrainSummary> {
  const accumulate = o.accumulate ?? 1;
  if (!Number.isInteger(accumulate) || accumulate < 1) throw new RangeError(`accumulate must be a positive integer, got ${accumulate}`);
  if (!Number.isInteger(o.maxIters) || o.maxIters < 1) throw new RangeError(`max iterations must be a positive integer, got ${o.maxIters}`);
  if (!Number.isInteger(o.checkpointInterval) || o.checkpointInterval < 1) throw new RangeError(`checkpoint interval must be a positive integer, got ${o.checkpointInterval}`);
  const group = o.dist?.group ?? null;
  const rank = group?.rank ?? 0;
  const world = group?.worldSize ?? 1;
  const main = rank === 0;
  if (group && o.sampler.worldSize !== world) {
    throw new Error(`the sampler is split for ${o.sampler.worldSize} process(es) but the process group has ${world}`);
  }
  if (group && o.sampler.rank !== rank) throw new Error(`the sampler is for rank ${o.sampler.rank} but this process is rank ${rank}`);
  // rank 0 reports and writes; the other ranks only compute (their errors surface as exceptions)
  const msg = main ? (o.onMessage ?? (() => {})) : () => {};
  const onIteration = main ? o.onIteration : undefined;
  const onEvaluation = main ? o.onEvaluation : undefined;
  const onCheckpoint = main ? o.onCheckpoint : undefined;
  mkdirSync(o.workDir, { recursive: true });
  if (main) removeStalePartials(o.workDir);
  const logPath = join(o.workDir, 'log.jsonl');
  const log = (obj: Record<string, unknown>): void => {
    if (main) appendFileSync(logPath, `${JSON.stringify(obj)}\n`);
  };

  const amp = o.amp ?? null;
  const device = o.device ?? 'cpu';
  if (amp === 'float16' && !device.startsWith('cuda')) throw new Error('mixed precision float16 needs a CUDA device (use bfloat16 on CPU)');
  const scaler = amp === 'float16' ? new GradScaler({ ...(o.ampInitScale !== undefined ? { initScale: o.ampInitScale } : {}) }) : null;
  let start = 0;
  let lastCkpt: string | null = null;
  let samplerState = o.sampler.state();
  if (o.resume) {
    const r = restore(o, o.resume, scaler);
    start = r.iteration;
    samplerState = r.sampler;
    lastCkpt = o.resume;
    msg(`resumed from ${o.resume} at iteration ${start}`);
    for (const n of r.notes) msg(`note: ${n}`);
    log({ event: 'resume', file: o.resume, iter: start, world_size: world, notes: r.notes });
    if (start >= o.maxIters) msg(`the checkpoint is already at iteration ${start} of ${o.maxIters}: nothing to do`);
  } else {
    // ranks above 0 draw their own dropout / drop-path masks (rank 0 keeps the task's seeding, as one process)
    if (rank > 0) manualSeed(rankSeed(o.sampler.seed, 0, rank));
    log({ event: 'start', max_iters: o.maxIters, config: o.config, meta: o.meta ?? {}, world_size: world });
  }
  const reducer = o.dist ? o.dist.makeReducer() : null;

  let stop = false;
  let signals = 0;
  const onSigint = (): void => {
    signals++;
    if (signals === 1) {
      stop = true;
      msg('\ninterrupt: finishing this iteration, saving a checkpoint and stopping (Ctrl-C again to abort now)');
    } else {
      msg('\naborted (the last complete checkpoint is kept)');
      process.exit(130);
    }
  };
  const handle = o.handleSignals ?? true;
  if (handle) process.on('SIGINT', onSigint);

  const data = start < o.maxIters ? o.makeData() : null;
  const t0 = performance.now();
  let waitMs = 0;
  let losses: Record<string, number> = {};
  let lastEval: EvalMetrics | null = null;
  const evals: { iter: number; metrics: EvalMetrics }[] = [];
  let iter = start;
  let savedAt = o.resume ? start : -1;
  const evalInterval = o.evalInterval ?? 0;
  const runEval = async (at: number): Promise<void> => {
    if (!o.evaluate) return;
    o.model.eval();
    try {
      const m = await o.evaluate(at);
      lastEval = m;
      evals.push({ iter: at, metrics: m });
      log({ event: 'eval', iter: at, ...m });
      onEvaluation?.(at, m);
    } finally {
      o.model.train();
    }
  };
  let collectiveMs = 0;
  try {
    o.model.train();
    while (iter < o.maxIters && !stop) {
      const itStart = performance.now();
      let itWait = 0;
      o.scheduler.step(iter);
      reducer?.syncBuffers();
      const sums: Record<string, number> = {};
      let epoch = 0;
      for (let k = 0; k < accumulate; k++) {
        const w0 = performance.now();
        const batch = await data!.prefetcher.next();
        itWait += performance.now() - w0;
        epoch = batch.sampled.epoch;
        samplerState = batch.sampled.after;
        scope(() => {
          const out = amp ? autocast(amp, device, () => o.loss(batch)) : o.loss(batch);
          let l = accumulate === 1 ? out.loss : out.loss.div(accumulate);
          if (scaler) l = scaler.scale(l);
          reducer?.prepareBackward(k === accumulate - 1);
          l.backward();
          if (reducer && k === accumulate - 1) reducer.finishBackward();
          noGrad(() => {
            for (const [name, t] of Object.entries(out.log)) sums[name] = (sums[name] ?? 0) + t.item();
            sums.loss = (sums.loss ?? 0) + out.loss.item();
          });
        });
      }
      let gradNorm: number | undefined;
      if (scaler) {
        if (o.clipGrad) {
          scaler.unscale(o.optimizer);
          gradNorm = clipGradNorm(o.optimizer.params(), o.clipGrad);
        }
        scaler.step(o.optimizer);
        scaler.update();
      } else {
        if (o.clipGrad) gradNorm = clipGradNorm(o.optimizer.params(), o.clipGrad);
        o.optimizer.step();
      }
      o.optimizer.zeroGrad();
      if (group) {
        // losses averaged over the ranks for the log, and the ranks' stop flags: everyone stops after the same iteration
        const keys = Object.keys(sums).sort();
        const buf = new Float64Array(keys.length + 1);
        keys.forEach((k, i) => { buf[i] = sums[k]!; });
        buf[keys.length] = stop ? 1 : 0;
        scope(() => {
          const t = fromBytes(buf, 'float64', [buf.length]);
          group.allReduce([t], 'sum');
          const r = t.toTypedArray();
          keys.forEach((k, i) => { sums[k] = r[i]! / world; });
          stop = r[keys.length]! > 0;
        });
      }
      iter++;
      losses = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / accumulate]));
      const now = performance.now();
      waitMs += itWait;
      const rec: IterationRecord = {
        iter, lr: o.optimizer.paramGroups[0]!.lr, losses, ...(gradNorm !== undefined ? { grad_norm: gradNorm } : {}),
        time: (now - itStart) / 1000, data_time: itWait / 1000, epoch, ...(scaler ? { loss_scale: scaler.getScale() } : {}),
      };
      log({ event: 'iter', ...rec });
      onIteration?.(rec, { done: iter, total: o.maxIters, dataWaitShare: waitMs / (now - t0) });
      if (iter % o.checkpointInterval === 0 || iter === o.maxIters || stop) {
        lastCkpt = saveCheckpoint(o, iter, samplerState, scaler);
        savedAt = iter;
        log({ event: 'checkpoint', iter, file: lastCkpt });
        onCheckpoint?.(lastCkpt, iter);
      }
      if (!stop && evalInterval > 0 && (iter % evalInterval === 0 || iter === o.maxIters)) await runEval(iter);
    }
  } catch (e) {
    throw group ? distFailure(e, rank, iter, lastCkpt) : e;
  } finally {
    if (handle) process.off('SIGINT', onSigint);
    await data?.close();
  }
  const st = reducer?.stats() ?? null;
  reducer?.dispose?.();
  if (savedAt !== iter && iter > start) {
    try {
      lastCkpt = saveCheckpoint(o, iter, samplerState, scaler);
    } catch (e) {
      throw group ? distFailure(e, rank, iter, lastCkpt) : e;
    }
    onCheckpoint?.(lastCkpt, iter);
  }
  const seconds = (performance.now() - t0) / 1000;
  const ran = iter - start;
  let dist: DistSummary | null = null;
  if (reducer && st) {
    collectiveMs = st.totalCollectiveMs ?? st.collectiveMs * ran;
    dist = {
      collective_ms: collectiveMs, collective_ms_per_iter: ran > 0 ? collectiveMs / ran : 0,
      collective_share: seconds > 0 ? collectiveMs / 1000 / seconds : 0, buckets: st.buckets, overlapped: st.overlapped,
      bytes: st.bytes, global_batch: o.sampler.globalBatch,
    };
  }
  const summary: TrainSummary = {
    iterations: iter, ran, world_size: world, dist, losses, checkpoint: lastCkpt, eval: lastEval, evals, seconds,
    it_per_s: seconds > 0 ? ran / seconds : 0, data_wait_share: seconds > 0 ? waitMs / 1000 / seconds : 0,
    interrupted: stop, resumed_from: o.resume ?? null,
  };
  log({ event: stop ? 'interrupted' : 'end', iter, seconds, data_wait_share: summary.data_wait_share });
  return summary;
}
