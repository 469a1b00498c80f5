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
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Tensor, autocast, fromBytes, getRngState, noGrad, scope, setRngState } from '../engine/index.js';
import type { Module, TensorSource } from '../nn/index.js';
import {
  TRAIN_CHECKPOINT_FORMAT, TRAIN_META_KEY, checkpointName, openTrainCheckpoint, pruneCheckpoints, removeStalePartials, writeAtomic,
  type CheckpointTensor,
} from './checkpoint.js';
import type { LoadedBatch, Prefetcher } from './loader.js';
import type { BatchSampler, SamplerState } from './sampler.js';
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
}

/** What {@link runTraining} returns. */
export interface TrainSummary {
  /** Iterations done in total (including those before a resume). */
  iterations: number;
  /** Iterations run by this call. */
  ran: number;
  world_size: 1;
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
  config: unknown;
  resume_key: unknown;
  optimizer: OptimizerStateMeta;
  scheduler: LrSchedulerState;
  sampler: SamplerState;
  rng: { torch_cpu: string; note: string };
  grad_scaler?: GradScalerState | null;
  meta: Record<string, unknown>;
  saved_at: string;
}

function saveCheckpoint<T>(o: TrainerOptions<T>, iteration: number, sampler: SamplerState, scaler: GradScaler | null): string {
  const tensors: [string, CheckpointTensor][] = [];
  const sd = o.model.stateDict();
  for (const [k, t] of sd) tensors.push([k, t]);
  const opt = flattenOptimizerState(o.optimizer.stateDict(), 'optimizer.');
  for (const [k, t] of Object.entries(opt.tensors)) tensors.push([k, t]);
  const rng = getRngState();
  tensors.push(['rng.torch_cpu', { dtype: 'uint8', shape: [rng.length], nbytes: rng.length, read: () => rng }]);
  const state: SavedState = {
    format: TRAIN_CHECKPOINT_FORMAT, iteration, config: o.config, resume_key: o.resumeKey ?? o.config, optimizer: opt.meta,
    scheduler: o.scheduler.stateDict(), sampler,
    rng: {
      torch_cpu: 'tensor rng.torch_cpu',
      note: 'augmentation draws use a per-sample generator seeded from (seed, epoch, index): the sampler state determines them',
    },
    grad_scaler: scaler ? scaler.stateDict() : null,
    meta: o.meta ?? {}, saved_at: new Date().toISOString(),
  };
  const path = join(o.workDir, checkpointName(iteration));
  writeAtomic(path, tensors, { [TRAIN_META_KEY]: JSON.stringify(state), format: 'pt' });
  pruneCheckpoints(o.workDir, o.keep);
  return path;
}

function restore<T>(o: TrainerOptions<T>, file: string, scaler: GradScaler | null): { iteration: number; sampler: SamplerState } {
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
    setRngState(rng);
    o.sampler.setState(state.sampler);
    if (scaler && state.grad_scaler) scaler.loadStateDict(state.grad_scaler);
    return { iteration: state.iteration, sampler: state.sampler };
  } finally {
    checkpoint.close();
  }
}

/** Runs (or resumes) training; see the module notes. */
export async function runTraining<T>(o: TrainerOptions<T>): Promise<TrainSummary> {
  const accumulate = o.accumulate ?? 1;
  if (!Number.isInteger(accumulate) || accumulate < 1) throw new RangeError(`accumulate must be a positive integer, got ${accumulate}`);
  if (!Number.isInteger(o.maxIters) || o.maxIters < 1) throw new RangeError(`max iterations must be a positive integer, got ${o.maxIters}`);
  if (!Number.isInteger(o.checkpointInterval) || o.checkpointInterval < 1) throw new RangeError(`checkpoint interval must be a positive integer, got ${o.checkpointInterval}`);
  const msg = o.onMessage ?? (() => {});
  mkdirSync(o.workDir, { recursive: true });
  removeStalePartials(o.workDir);
  const logPath = join(o.workDir, 'log.jsonl');
  const log = (obj: Record<string, unknown>): void => appendFileSync(logPath, `${JSON.stringify(obj)}\n`);

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
    log({ event: 'resume', file: o.resume, iter: start });
    if (start >= o.maxIters) msg(`the checkpoint is already at iteration ${start} of ${o.maxIters}: nothing to do`);
  } else {
    log({ event: 'start', max_iters: o.maxIters, config: o.config, meta: o.meta ?? {} });
  }

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
      o.onEvaluation?.(at, m);
    } finally {
      o.model.train();
    }
  };
  try {
    o.model.train();
    while (iter < o.maxIters && !stop) {
      const itStart = performance.now();
      let itWait = 0;
      o.scheduler.step(iter);
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
          l.backward();
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
      iter++;
      losses = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / accumulate]));
      const now = performance.now();
      waitMs += itWait;
      const rec: IterationRecord = {
        iter, lr: o.optimizer.paramGroups[0]!.lr, losses, ...(gradNorm !== undefined ? { grad_norm: gradNorm } : {}),
        time: (now - itStart) / 1000, data_time: itWait / 1000, epoch, ...(scaler ? { loss_scale: scaler.getScale() } : {}),
      };
      log({ event: 'iter', ...rec });
      o.onIteration?.(rec, { done: iter, total: o.maxIters, dataWaitShare: waitMs / (now - t0) });
      if (iter % o.checkpointInterval === 0 || iter === o.maxIters || stop) {
        lastCkpt = saveCheckpoint(o, iter, samplerState, scaler);
        savedAt = iter;
        log({ event: 'checkpoint', iter, file: lastCkpt });
        o.onCheckpoint?.(lastCkpt, iter);
      }
      if (!stop && evalInterval > 0 && (iter % evalInterval === 0 || iter === o.maxIters)) await runEval(iter);
    }
  } finally {
    if (handle) process.off('SIGINT', onSigint);
    await data?.close();
  }
  if (savedAt !== iter && iter > start) {
    lastCkpt = saveCheckpoint(o, iter, samplerState, scaler);
    o.onCheckpoint?.(lastCkpt, iter);
  }
  const seconds = (performance.now() - t0) / 1000;
  const ran = iter - start;
  const summary: TrainSummary = {
    iterations: iter, ran, world_size: 1, losses, checkpoint: lastCkpt, eval: lastEval, evals, seconds,
    it_per_s: seconds > 0 ? ran / seconds : 0, data_wait_share: seconds > 0 ? waitMs / 1000 / seconds : 0,
    interrupted: stop, resumed_from: o.resume ?? null,
  };
  log({ event: stop ? 'interrupted' : 'end', iter, seconds, data_wait_share: summary.data_wait_share });
  return summary;
}
