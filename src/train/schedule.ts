/**
 * Learning-rate schedules with mmcv 1.4.2 `LrUpdaterHook` semantics (config keys as in mmcv's `lr_config`):
 *
 * - `poly`: `regular = (base_lr - min_lr) * (1 - progress / max_progress) ** power + min_lr`;
 * - `step`: `regular = base_lr * gamma ** n` (n = number of milestones `<= progress`, or `progress // step` for an
 *   integer step), then `max(regular, min_lr)` when `min_lr` is set;
 * - `fixed`: `regular = base_lr`;
 *
 * where `progress` is the iteration (`by_epoch: false`) or the epoch (`by_epoch: true`, mmcv's default) and
 * `base_lr` is each group's initial lr (so layer-wise decay carries through). Warmup counts iterations: for
 * `iter < warmup_iters`, `linear`: `k = (1 - iter / warmup_iters) * (1 - warmup_ratio)`, `lr = regular * (1 - k)`;
 * `constant`: `regular * warmup_ratio`; `exp`: `regular * warmup_ratio ** (1 - iter / warmup_iters)`. Everything is
 * evaluated in float64 in mmcv's order with Python's `pow`, so the values equal mmcv's bit for bit.
 */
import { pyPow } from './pow.js';

/** Warmup of every policy (mmcv `LrUpdaterHook` arguments). */
export interface WarmupConfig {
  /** `linear`, `constant`, `exp`, or null/absent for none. */
  warmup?: 'linear' | 'constant' | 'exp' | null;
  /** Iterations of warmup (global iterations, also for epoch-based schedules). */
  warmup_iters?: number;
  /** Starting fraction (mmcv default 0.1). */
  warmup_ratio?: number;
  /** Progress measured in epochs (mmcv default true) or iterations. */
  by_epoch?: boolean;
}

/** mmcv `PolyLrUpdaterHook`. */
export interface PolyLrConfig extends WarmupConfig {
  policy: 'poly';
  /** Default 1.0. */
  power?: number;
  /** Default 0. */
  min_lr?: number;
}

/** mmcv `StepLrUpdaterHook`. */
export interface StepLrConfig extends WarmupConfig {
  policy: 'step';
  /** Milestones (progress values where the lr is multiplied by gamma), or a period. */
  step: number | number[];
  /** Default 0.1. */
  gamma?: number;
  /** Lower bound, or null (default). */
  min_lr?: number | null;
}

/** mmcv `FixedLrUpdaterHook` (constant lr, warmup allowed). */
export interface FixedLrConfig extends WarmupConfig {
  policy: 'fixed';
}

/** An `lr_config`. */
export type LrConfig = PolyLrConfig | StepLrConfig | FixedLrConfig;

/** Run length: `maxIters` for iteration-based progress, `maxEpochs` for epoch-based poly. */
export interface RunLength {
  maxIters?: number;
  maxEpochs?: number;
}

/** Where training is: `iter` = iterations done (0-based, mmcv `runner.iter`), `epoch` = epochs done (`runner.epoch`). */
export interface Progress {
  iter: number;
  epoch?: number;
}

const KEYS: Record<LrConfig['policy'], string[]> = {
  poly: ['power', 'min_lr'],
  step: ['step', 'gamma', 'min_lr'],
  fixed: [],
};
const WARMUP_KEYS = ['policy', 'warmup', 'warmup_iters', 'warmup_ratio', 'by_epoch'];

type Warm = { warmup: 'linear' | 'constant' | 'exp' | null; warmup_iters: number; warmup_ratio: number; by_epoch: boolean };
/** An `lr_config` with mmcv's defaults filled in. */
export type NormalizedLrConfig =
  | (Warm & { policy: 'poly'; power: number; min_lr: number })
  | (Warm & { policy: 'step'; step: number | number[]; gamma: number; min_lr: number | null })
  | (Warm & { policy: 'fixed' });

/** Checks an `lr_config` (unknown keys, types, ranges) and returns it with mmcv's defaults filled in. */
export function normalizeLrConfig(cfg: LrConfig): NormalizedLrConfig {
  const where = 'lr_config';
  if (!cfg || typeof cfg !== 'object') throw new Error(`${where} must be an object`);
  const policy = cfg.policy;
  if (!(policy in KEYS)) throw new Error(`${where}: policy ${JSON.stringify(policy)} is not supported; expected poly, step or fixed`);
  for (const k of Object.keys(cfg)) {
    if (!WARMUP_KEYS.includes(k) && !KEYS[policy].includes(k)) {
      throw new Error(`${where}: unknown key ${JSON.stringify(k)} for policy ${policy}; allowed: ${[...WARMUP_KEYS, ...KEYS[policy]].join(', ')}`);
    }
  }
  const warmup = cfg.warmup ?? null;
  if (warmup !== null && !['linear', 'constant', 'exp'].includes(warmup)) {
    throw new Error(`${where}: warmup ${JSON.stringify(warmup)} is not one of linear, constant, exp`);
  }
  const warmupIters = cfg.warmup_iters ?? 0;
  if (!Number.isInteger(warmupIters) || warmupIters < 0) throw new Error(`${where}: warmup_iters must be a non-negative integer, got ${JSON.stringify(cfg.warmup_iters)}`);
  if (warmup !== null && warmupIters === 0) throw new Error(`${where}: warmup ${warmup} needs warmup_iters > 0`);
  const warmupRatio = cfg.warmup_ratio ?? 0.1;
  if (typeof warmupRatio !== 'number' || !(warmupRatio > 0 && warmupRatio <= 1)) throw new Error(`${where}: warmup_ratio must be in (0, 1], got ${JSON.stringify(cfg.warmup_ratio)}`);
  const byEpoch = cfg.by_epoch ?? true;
  if (typeof byEpoch !== 'boolean') throw new Error(`${where}: by_epoch must be a boolean`);
  const base = { warmup, warmup_iters: warmupIters, warmup_ratio: warmupRatio, by_epoch: byEpoch };
  if (policy === 'poly') {
    const c = cfg as PolyLrConfig;
    const power = c.power ?? 1;
    const minLr = c.min_lr ?? 0;
    if (typeof power !== 'number' || !Number.isFinite(power)) throw new Error(`${where}: power must be a number`);
    if (typeof minLr !== 'number' || !(minLr >= 0)) throw new Error(`${where}: min_lr must be a number >= 0`);
    return { policy, ...base, power, min_lr: minLr };
  }
  if (policy === 'step') {
    const c = cfg as StepLrConfig;
    const step: unknown = c.step;
    const okList = Array.isArray(step) && step.length > 0 && step.every((s) => Number.isInteger(s) && s > 0);
    if (!(okList || (Number.isInteger(step) && (step as number) > 0))) throw new Error(`${where}: step must be a positive integer or a list of them, got ${JSON.stringify(step)}`);
    const gamma = c.gamma ?? 0.1;
    if (typeof gamma !== 'number' || !(gamma > 0)) throw new Error(`${where}: gamma must be a positive number`);
    const minLr = c.min_lr ?? null;
    if (minLr !== null && (typeof minLr !== 'number' || !(minLr >= 0))) throw new Error(`${where}: min_lr must be a number >= 0 or null`);
    return { policy, ...base, step: Array.isArray(step) ? [...(step as number[])] : (step as number), gamma, min_lr: minLr };
  }
  return { policy, ...base };
}

/** mmcv `get_regular_lr` of one group: the schedule without warmup. */
export function regularLr(cfg: LrConfig, baseLr: number, p: Progress, run: RunLength): number {
  const c = normalizeLrConfig(cfg);
  const progress = c.by_epoch ? (p.epoch ?? 0) : p.iter;
  if (c.policy === 'fixed') return baseLr;
  if (c.policy === 'poly') {
    const max = c.by_epoch ? run.maxEpochs : run.maxIters;
    if (max === undefined || !(max > 0)) throw new Error(`poly lr: ${c.by_epoch ? 'maxEpochs' : 'maxIters'} must be a positive number`);
    const coeff = pyPow(1 - progress / max, c.power);
    return (baseLr - c.min_lr) * coeff + c.min_lr;
  }
  let exp: number;
  if (typeof c.step === 'number') {
    exp = Math.floor(progress / c.step);
  } else {
    exp = c.step.length;
    for (let i = 0; i < c.step.length; i++) {
      if (progress < c.step[i]!) { exp = i; break; }
    }
  }
  let lr = baseLr * pyPow(c.gamma, exp);
  if (c.min_lr !== null) lr = Math.max(lr, c.min_lr);
  return lr;
}

/**
 * The lr mmcv's hook has set for one group before iteration `p.iter` (epoch `p.epoch`): the regular lr, or its
 * warmup value while `iter < warmup_iters`.
 */
export function scheduledLr(cfg: LrConfig, baseLr: number, p: Progress, run: RunLength): number {
  const c = normalizeLrConfig(cfg);
  const regular = regularLr(c, baseLr, p, run);
  if (c.warmup === null || p.iter >= c.warmup_iters) return regular;
  const i = p.iter;
  if (c.warmup === 'constant') return regular * c.warmup_ratio;
  if (c.warmup === 'linear') {
    const k = (1 - i / c.warmup_iters) * (1 - c.warmup_ratio);
    return regular * (1 - k);
  }
  const k = pyPow(c.warmup_ratio, 1 - i / c.warmup_iters);
  return regular * k;
}

/** What the scheduler sets: any object with parameter groups carrying `lr` and `initialLr` (e.g. {@link AdamW}). */
export interface ScheduledOptimizer {
  paramGroups: { lr: number; initialLr: number; groupName?: string }[];
}

/** {@link LrScheduler.stateDict}: JSON-able. */
export interface LrSchedulerState {
  lr_config: LrConfig;
  run: RunLength;
  base_lrs: number[];
  last_iter: number | null;
  last_epoch: number | null;
}

/**
 * Sets every group's lr from its initial lr before each iteration (mmcv's `before_train_epoch` +
 * `before_train_iter`). Stateless apart from the base lrs: resuming at iteration i gives the same lrs as running
 * straight through.
 */
export class LrScheduler {
  readonly config: NormalizedLrConfig;
  readonly run: RunLength;
  /** Base lr of every group (their `initialLr` when the scheduler was made). */
  baseLrs: number[];
  lastIter: number | null = null;
  lastEpoch: number | null = null;

  constructor(readonly optimizer: ScheduledOptimizer, config: LrConfig, run: RunLength) {
    this.config = normalizeLrConfig(config);
    this.run = { ...run };
    const needs = this.config.policy === 'poly' ? (this.config.by_epoch ? 'maxEpochs' : 'maxIters') : null;
    if (needs && !(typeof run[needs] === 'number' && run[needs]! > 0)) throw new Error(`LrScheduler: poly by ${this.config.by_epoch ? 'epoch' : 'iteration'} needs ${needs} > 0`);
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr);
  }

  /** The lrs for iteration `iter` (epoch `epoch`), without setting them. */
  lrsAt(iter: number, epoch = 0): number[] {
    if (!Number.isInteger(iter) || iter < 0) throw new Error(`LrScheduler: iteration must be a non-negative integer, got ${iter}`);
    return this.baseLrs.map((b) => scheduledLr(this.config, b, { iter, epoch }, this.run));
  }

  /** Sets every group's lr for iteration `iter` (iterations already done) of epoch `epoch`; returns the lrs. */
  step(iter: number, epoch = 0): number[] {
    const lrs = this.lrsAt(iter, epoch);
    this.optimizer.paramGroups.forEach((g, i) => { g.lr = lrs[i]!; });
    this.lastIter = iter;
    this.lastEpoch = epoch;
    return lrs;
  }

  /** JSON-able state. */
  stateDict(): LrSchedulerState {
    return { lr_config: structuredClone(this.config), run: { ...this.run }, base_lrs: [...this.baseLrs], last_iter: this.lastIter, last_epoch: this.lastEpoch };
  }

  /** Restores {@link stateDict}; throws naming the difference when the saved schedule or group count differs. */
  loadStateDict(s: LrSchedulerState): void {
    const problems: string[] = [];
    const saved = JSON.stringify(normalizeLrConfig(s.lr_config));
    const mine = JSON.stringify(this.config);
    if (saved !== mine) problems.push(`lr_config differs: saved ${saved}, now ${mine}`);
    if (JSON.stringify(s.run) !== JSON.stringify(this.run)) problems.push(`run length differs: saved ${JSON.stringify(s.run)}, now ${JSON.stringify(this.run)}`);
    if (!Array.isArray(s.base_lrs) || s.base_lrs.length !== this.baseLrs.length) problems.push(`${s.base_lrs?.length} base lrs saved, the optimizer has ${this.baseLrs.length} groups`);
    if (problems.length) throw new Error(`lr scheduler state does not match:\n  ${problems.join('\n  ')}`);
    this.baseLrs = [...s.base_lrs];
    this.lastIter = s.last_iter;
    this.lastEpoch = s.last_epoch;
    if (s.last_iter !== null) this.step(s.last_iter, s.last_epoch ?? 0);
  }
}
