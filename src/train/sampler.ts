/**
 * The iteration-based sampler of mmseg's training loop: a seeded shuffle of the dataset per epoch, cut into batches
 * with `drop_last` (as mmseg's `build_dataloader(shuffle=True, drop_last=True)` under `IterBasedRunner`'s
 * `IterLoader`, which starts a new epoch when one runs out), split between the processes of a data-parallel run
 * (`DistributedSampler` semantics). Its whole state is `(seed, epoch, offset)`, so a checkpoint stores it as a few
 * numbers and a resumed run continues with the same samples — with the same or another number of processes.
 *
 * The permutation of epoch `e` is a Fisher–Yates shuffle driven by a 32-bit generator seeded from `(seed, e)`; it
 * does not reproduce torch's `randperm` (nothing in the recipe depends on the exact order), only its properties:
 * every sample once per epoch, a new order each epoch, the same order for the same seed — on every rank, so the
 * ranks agree on the split without talking to each other.
 *
 * Data-parallel split (world size `W`, `b` samples per process, global batch `G = W·b`):
 * - Step `k` of an epoch consumes the global batch `perm[offset .. offset + G)`; rank `r` takes the contiguous part
 *   `perm[offset + r·b .. offset + (r+1)·b)`. The ranks' shards are disjoint, together they are exactly the batch a
 *   single process with batch `G` draws at the same step (in rank order), so a run on `W` processes × `b` is the same
 *   computation as one process × `G` (what the equivalence test checks).
 * - `dropLast` (the training default): a step needs a full global batch; the last `n mod G` samples of an epoch's
 *   order are not used in that epoch (a new shuffle next epoch gives them their turn).
 * - without `dropLast`: the last global batch of an epoch takes the `m < G` remaining samples, padded — as torch's
 *   `DistributedSampler` pads — to a multiple of `W` by repeating samples from the start of the epoch's order, so every
 *   rank gets `ceil(m / W)` samples; with one process the last batch is simply short.
 * - Each sample's augmentation draws come from a generator seeded from `(seed, epoch, index)` (the loader's task), so
 *   a sample is augmented identically whatever rank, worker thread or world size processes it.
 *
 * Resume semantics: the state records the **global sample position** — the epoch and `offset`, the number of samples
 * of that epoch's order that the whole job has consumed. A resume with another world size or per-process batch
 * continues at that same position (`perm[offset ..)`), so no sample is repeated or skipped in the interrupted epoch;
 * only the global batch of the following steps changes.
 */

import { mixSeed, mulberry32 } from './random.js';

export { mixSeed };

/** The permutation of `0..n-1` used in `epoch` (identity without shuffling). */
export function epochPermutation(n: number, seed: number, epoch: number, shuffle = true): Int32Array {
  const perm = new Int32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  if (!shuffle) return perm;
  const rnd = mulberry32(mixSeed(seed, epoch, 0x5a3b1e));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm;
}

/** The sampler's complete state (JSON). */
export interface SamplerState {
  /** Base seed of the shuffles. */
  seed: number;
  /** Epoch of the next batch (0-based). */
  epoch: number;
  /** Index of the next batch inside its epoch, in batches of this run's global size (informative; `offset` rules). */
  position: number;
  /**
   * The global sample position: samples of this epoch's order consumed by all ranks together (the next global batch
   * starts at `perm[offset]`). Absent in states written before data-parallel training: then `position × batchSize`.
   */
  offset?: number;
  /** Dataset size and per-process batch size the state was written with. */
  size: number;
  batchSize: number;
  /** Processes the state was written with (absent: 1). */
  worldSize?: number;
  shuffle: boolean;
  dropLast: boolean;
}

/** One batch of dataset indices (this rank's share of a global batch). */
export interface SampledBatch {
  epoch: number;
  /** Index of this batch inside its epoch (global batches since the epoch's start, counted in this run's size). */
  position: number;
  /** Offset of the global batch in the epoch's order. */
  offset: number;
  /** Dataset indices of this rank, in batch order. */
  indices: number[];
  /** The sampler state after this batch (what a checkpoint taken after consuming it stores). */
  after: SamplerState;
}

/** Options of {@link BatchSampler}. */
export interface BatchSamplerOptions {
  seed: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** Drop the last incomplete global batch of an epoch (default true, as the recipe). */
  dropLast?: boolean;
  /** This process's rank (default 0) and the number of processes (default 1). */
  rank?: number;
  worldSize?: number;
}

/** What {@link BatchSampler.setState} changed besides the position: a note for the user, or null. */
export interface SamplerResumeNote {
  /** Global batch of the run that wrote the state, and of this run. */
  fromGlobalBatch: number;
  toGlobalBatch: number;
  message: string;
}

/** Infinite, seeded, resumable, rank-aware batch sampler (see the module notes). */
export class BatchSampler {
  private epoch = 0;
  private offset = 0;
  private perm: Int32Array | null = null;
  private permEpoch = -1;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly seed: number;
  readonly rank: number;
  readonly worldSize: number;
  /** Samples per step over all ranks (`batchSize × worldSize`). */
  readonly globalBatch: number;
  /** Global batches in a full epoch. */
  readonly batchesPerEpoch: number;

  /**
   * @param size dataset size
   * @param batchSize samples per process per step
   * @param o seed, shuffle / drop_last, rank and world size
   */
  constructor(readonly size: number, readonly batchSize: number, o: BatchSamplerOptions) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`sampler: the dataset is empty (size ${size})`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`sampler: batch size must be a positive integer, got ${batchSize}`);
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw new RangeError(`sampler: seed must be a non-negative integer, got ${o.seed}`);
    const W = o.worldSize ?? 1;
    const r = o.rank ?? 0;
    if (!Number.isInteger(W) || W < 1) throw new RangeError(`sampler: world size must be a positive integer, got ${W}`);
    if (!Number.isInteger(r) || r < 0 || r >= W) throw new RangeError(`sampler: rank must be an integer in 0..${W - 1}, got ${r}`);
    this.seed = o.seed;
    this.shuffle = o.shuffle ?? true;
    this.dropLast = o.dropLast ?? true;
    this.rank = r;
    this.worldSize = W;
    this.globalBatch = batchSize * W;
    const G = this.globalBatch;
    this.batchesPerEpoch = this.dropLast ? Math.floor(size / G) : Math.ceil(size / G);
    if (this.batchesPerEpoch === 0) {
      const what = W > 1 ? `one global batch of ${G} (${batchSize} per process × ${W} processes)` : `one batch of ${batchSize}`;
      throw new RangeError(`sampler: the dataset has ${size} sample(s), fewer than ${what} (drop_last); ` +
        `lower --batch${W > 1 ? ' or the number of processes' : ''}, or add samples`);
    }
  }

  /** Whether a global batch starts at `offset` of the current epoch. */
  private hasBatchAt(offset: number): boolean {
    return this.dropLast ? offset + this.globalBatch <= this.size : offset < this.size;
  }

  /** The next batch of this rank (advances the state). */
  next(): SampledBatch {
    if (!this.hasBatchAt(this.offset)) {
      this.epoch++;
      this.offset = 0;
    }
    if (this.permEpoch !== this.epoch) {
      this.perm = epochPermutation(this.size, this.seed, this.epoch, this.shuffle);
      this.permEpoch = this.epoch;
    }
    const perm = this.perm!;
    const n = this.size;
    const W = this.worldSize;
    const o = this.offset;
    // Samples of this global batch: a full one, or (no drop_last) the remainder padded to a multiple of W.
    const remaining = Math.min(this.globalBatch, n - o);
    const per = remaining === this.globalBatch ? this.batchSize : Math.ceil(remaining / W);
    const indices: number[] = [];
    for (let j = 0; j < per; j++) {
      const k = o + this.rank * per + j;
      // padding repeats the epoch's order from its start (torch DistributedSampler's rule)
      indices.push(perm[k < n ? k : (k - n) % n]!);
    }
    const epoch = this.epoch;
    const position = Math.floor(o / this.globalBatch);
    this.offset = o + remaining;
    // an exhausted epoch rolls over lazily (in the next call), but the saved state already points at the next one
    if (!this.hasBatchAt(this.offset)) {
      this.epoch++;
      this.offset = 0;
    }
    return { epoch, position, offset: o, indices, after: this.state() };
  }

  /** The current state. */
  state(): SamplerState {
    return {
      seed: this.seed, epoch: this.epoch, position: Math.floor(this.offset / this.globalBatch), offset: this.offset,
      size: this.size, batchSize: this.batchSize, worldSize: this.worldSize, shuffle: this.shuffle, dropLast: this.dropLast,
    };
  }

  /**
   * Restores a state saved by {@link state} — possibly by a run with another world size or per-process batch: the
   * job continues at the same global sample position (see the module notes). Throws when the state belongs to another
   * dataset size, seed or shuffle/drop_last setting. Returns a note when the global batch changes, else null.
   */
  setState(s: SamplerState): SamplerResumeNote | null {
    const diffs: string[] = [];
    if (s.size !== this.size) diffs.push(`dataset size ${s.size} (now ${this.size})`);
    if (s.seed !== this.seed) diffs.push(`seed ${s.seed} (now ${this.seed})`);
    if (s.shuffle !== this.shuffle || s.dropLast !== this.dropLast) diffs.push('shuffle/drop_last settings');
    if (diffs.length) throw new Error(`sampler state from another run: ${diffs.join(', ')}`);
    const oldW = s.worldSize ?? 1;
    if (!Number.isInteger(oldW) || oldW < 1 || !Number.isInteger(s.batchSize) || s.batchSize < 1) {
      throw new Error(`sampler state invalid: batch size ${s.batchSize}, world size ${oldW}`);
    }
    const offset = s.offset ?? s.position * s.batchSize;
    if (!Number.isInteger(s.epoch) || s.epoch < 0 || !Number.isInteger(offset) || offset < 0 || offset >= this.size) {
      throw new Error(`sampler state out of range: epoch ${s.epoch}, sample offset ${offset} (dataset of ${this.size})`);
    }
    this.epoch = s.epoch;
    this.offset = offset;
    // with a larger global batch the rest of the epoch may hold no full batch: the next call starts the next epoch
    const fromG = s.batchSize * oldW;
    if (fromG === this.globalBatch) return null;
    return {
      fromGlobalBatch: fromG, toGlobalBatch: this.globalBatch,
      message: `the global batch changes from ${fromG} (${s.batchSize} × ${oldW} process${oldW > 1 ? 'es' : ''}) to ` +
        `${this.globalBatch} (${this.batchSize} × ${this.worldSize}); training continues at epoch ${s.epoch}, sample ${offset} of ` +
        'the epoch\'s order (the iteration count and the lr schedule continue unchanged)',
    };
  }
}
