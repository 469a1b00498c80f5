/**
 * The iteration-based sampler of mmseg's training loop: a seeded shuffle of the dataset per epoch, cut into batches
 * with `drop_last` (as mmseg's `build_dataloader(shuffle=True, drop_last=True)` under `IterBasedRunner`'s
 * `IterLoader`, which starts a new epoch when one runs out). Its whole state is `(seed, epoch, position)`, so a
 * checkpoint stores it as three numbers and a resumed run continues with the same batches.
 *
 * The permutation of epoch `e` is a Fisher–Yates shuffle driven by a 32-bit generator seeded from `(seed, e)`; it
 * does not reproduce torch's `randperm` (nothing in the recipe depends on the exact order), only its properties:
 * every sample once per epoch, a new order each epoch, the same order for the same seed.
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
  /** Index of the next batch inside its epoch. */
  position: number;
  /** Dataset size and batch size the state belongs to (checked on restore). */
  size: number;
  batchSize: number;
  shuffle: boolean;
  dropLast: boolean;
}

/** One batch of dataset indices. */
export interface SampledBatch {
  epoch: number;
  /** Index of this batch inside its epoch. */
  position: number;
  /** Dataset indices, in batch order. */
  indices: number[];
  /** The sampler state after this batch (what a checkpoint taken after consuming it stores). */
  after: SamplerState;
}

/** Options of {@link BatchSampler}. */
export interface BatchSamplerOptions {
  seed: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  /** Drop the last incomplete batch of an epoch (default true, as the recipe). */
  dropLast?: boolean;
}

/** Infinite, seeded, resumable batch sampler (see the module notes). */
export class BatchSampler {
  private epoch = 0;
  private position = 0;
  private perm: Int32Array | null = null;
  private permEpoch = -1;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly seed: number;
  /** Batches per epoch. */
  readonly batchesPerEpoch: number;

  constructor(readonly size: number, readonly batchSize: number, o: BatchSamplerOptions) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`sampler: the dataset is empty (size ${size})`);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`sampler: batch size must be a positive integer, got ${batchSize}`);
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw new RangeError(`sampler: seed must be a non-negative integer, got ${o.seed}`);
    this.seed = o.seed;
    this.shuffle = o.shuffle ?? true;
    this.dropLast = o.dropLast ?? true;
    this.batchesPerEpoch = this.dropLast ? Math.floor(size / batchSize) : Math.ceil(size / batchSize);
    if (this.batchesPerEpoch === 0) {
      throw new RangeError(`sampler: the dataset has ${size} sample(s), fewer than one batch of ${batchSize} (drop_last); ` +
        'lower --batch or add samples');
    }
  }

  /** The next batch (advances the state). */
  next(): SampledBatch {
    if (this.permEpoch !== this.epoch) {
      this.perm = epochPermutation(this.size, this.seed, this.epoch, this.shuffle);
      this.permEpoch = this.epoch;
    }
    const start = this.position * this.batchSize;
    const end = Math.min(start + this.batchSize, this.size);
    const indices = Array.from(this.perm!.subarray(start, end));
    const epoch = this.epoch;
    const position = this.position;
    this.position++;
    if (this.position >= this.batchesPerEpoch) {
      this.position = 0;
      this.epoch++;
    }
    return { epoch, position, indices, after: this.state() };
  }

  /** The current state. */
  state(): SamplerState {
    return {
      seed: this.seed, epoch: this.epoch, position: this.position, size: this.size, batchSize: this.batchSize,
      shuffle: this.shuffle, dropLast: this.dropLast,
    };
  }

  /** Restores a state saved by {@link state}; throws when it belongs to another dataset size or batch size. */
  setState(s: SamplerState): void {
    const diffs: string[] = [];
    if (s.size !== this.size) diffs.push(`dataset size ${s.size} (now ${this.size})`);
    if (s.batchSize !== this.batchSize) diffs.push(`batch size ${s.batchSize} (now ${this.batchSize})`);
    if (s.seed !== this.seed) diffs.push(`seed ${s.seed} (now ${this.seed})`);
    if (s.shuffle !== this.shuffle || s.dropLast !== this.dropLast) diffs.push('shuffle/drop_last settings');
    if (diffs.length) throw new Error(`sampler state from another run: ${diffs.join(', ')}`);
    if (!Number.isInteger(s.epoch) || s.epoch < 0 || !Number.isInteger(s.position) || s.position < 0 || s.position >= this.batchesPerEpoch) {
      throw new Error(`sampler state out of range: epoch ${s.epoch}, position ${s.position} (of ${this.batchesPerEpoch} batches per epoch)`);
    }
    this.epoch = s.epoch;
    this.position = s.position;
  }
}
