/**
 * Seeded random sources for the training layer and the tasks. Everything here is plain JavaScript on numbers
 * (usable in worker threads, state is JSON-able) and gives the same values for the same seed on every platform.
 *
 * - {@link mulberry32} and {@link mixSeed}: a tiny 32-bit generator and an integer seed mixer (the sampler's
 *   epoch shuffles, the synthetic scenes).
 * - {@link SeededRandom}: a fast, seedable, serialisable generator (xoshiro128**) with the call semantics of
 *   numpy's legacy global RNG as mmseg 0.20.2 uses it (`np.random.random_sample()`, `rand()`,
 *   `randint(low[, high])`, `uniform(low, high)`), so each transform of the train pipeline makes exactly the calls,
 *   with exactly the arguments, that the authors' code makes. It does NOT reproduce numpy's Mersenne-Twister
 *   stream (nothing here depends on that); it reproduces itself: the same seed (or the same saved state) gives the
 *   same draws on every platform.
 * - {@link ForcedRandom}: replays a recorded list of draws (the fixtures' `draws`), checking that
 *   each call has the recorded function name and arguments; for parity tests.
 */

/**
 * mulberry32: a tiny 32-bit PRNG (good statistical quality for shuffles and synthetic data; not cryptographic).
 *
 * @param seed the 32-bit state (taken modulo 2^32)
 * @returns a function giving uniform doubles in [0, 1), 32 random bits each
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A 32-bit mix of integers (murmur3 finaliser over a running hash), e.g. a per-epoch seed from `(seed, epoch)`.
 *
 * @param parts non-negative integers up to 2^53 (the high 32 bits are mixed in too)
 * @returns an unsigned 32-bit hash
 */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    // high 32 bits of numbers up to 2^53 (seeds may exceed 32 bits)
    h = Math.imul(h ^ Math.floor(p / 4294967296), 0x27d4eb2d);
    h ^= h >>> 15;
  }
  return h >>> 0;
}

/**
 * The random calls the train pipeline makes (numpy legacy semantics).
 * Implementations must be deterministic given their state.
 */
export interface PipelineRandom {
  /** `np.random.random_sample()`: a float in [0, 1). */
  randomSample(): number;
  /** `np.random.rand()`: a float in [0, 1) (the same distribution as randomSample). */
  rand(): number;
  /**
   * `np.random.randint(low, high)`: an integer in [low, high); with one argument,
   * `randint(n)` is an integer in [0, n). Throws RangeError for an empty range.
   */
  randint(low: number, high?: number): number;
  /** `np.random.uniform(low, high)` = `low + (high - low) * random_sample()`. */
  uniform(low: number, high: number): number;
}

/** The saved state of a {@link SeededRandom}: four unsigned 32-bit words; JSON-able. */
export interface SeededRandomState {
  /** Algorithm tag, checked on restore. */
  algorithm: 'xoshiro128**';
  /** The 128-bit state as four uint32 words. */
  s: [number, number, number, number];
}

/** splitmix32 step: a good 32-bit integer mixer used for seeding and key derivation. */
function mix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function checkSeedPart(v: number, what: string): void {
  if (!Number.isSafeInteger(v)) throw new RangeError(`${what} must be a safe integer, got ${v}`);
}

/** Folds a safe integer (any sign) into a running 32-bit hash. */
function absorb(h: number, v: number): number {
  const lo = v >>> 0; // low 32 bits (two's complement for negatives)
  const hi = Math.floor(v / 4294967296) >>> 0;
  h = mix32(h ^ lo);
  h = mix32(h ^ hi ^ 0x632be5ab);
  return h;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function rangeError(low: number, high: number): RangeError {
  return new RangeError(`randint: empty range [${low}, ${high}) (numpy: low >= high)`);
}

/**
 * A seedable generator with numpy-like call semantics: xoshiro128** (Blackman & Vigna; period
 * 2^128 − 1) on four uint32 words, seeded through splitmix32 hashing.
 *
 * - `randomSample()` takes two 32-bit outputs a, b and returns `((a >>> 5) · 2^26 + (b >>> 6)) / 2^53`
 *   (53 random bits, the construction numpy uses on its Mersenne-Twister words).
 * - `randint(low, high)` draws `next() & mask` (mask = the smallest 2^k − 1 ≥ high − low − 1) until
 *   the value is in range (unbiased; like numpy's legacy masked rejection, a range of one value
 *   consumes no output). Ranges up to 2^32 values.
 * - `uniform(low, high) = low + (high − low) · randomSample()`.
 *
 * Not numpy's stream: seeds are not interchangeable with `np.random.seed`. `getState()` /
 * `setState()` / `SeededRandom.fromState()` save and restore it exactly (bit-exact resume).
 */
export class SeededRandom implements PipelineRandom {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /**
   * @param seed a safe integer (any sign); further `keys` (safe integers) derive independent
   *   streams from the same seed, e.g. `new SeededRandom(seed, epoch, sampleIndex)` for a
   *   per-sample stream that does not depend on which worker thread processes the sample.
   */
  constructor(seed: number, ...keys: number[]) {
    checkSeedPart(seed, 'SeededRandom: seed');
    let h = absorb(0x3c6ef372, seed);
    for (let i = 0; i < keys.length; i++) {
      checkSeedPart(keys[i]!, `SeededRandom: key ${i}`);
      h = absorb(h ^ mix32(i + 1), keys[i]!);
    }
    // Four words from a splitmix32 sequence started at the hash; never all zero.
    let x = h;
    const w: number[] = [];
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      w.push(mix32(x ^ 0x7f4a7c15));
    }
    if ((w[0]! | w[1]! | w[2]! | w[3]!) === 0) w[0] = 1;
    this.s0 = w[0]!;
    this.s1 = w[1]!;
    this.s2 = w[2]!;
    this.s3 = w[3]!;
  }

  /**
   * A generator restored from a saved state.
   *
   * @param state a value returned by {@link getState} (possibly after a JSON round trip)
   */
  static fromState(state: SeededRandomState): SeededRandom {
    const r = new SeededRandom(0);
    r.setState(state);
    return r;
  }

  /** The current state (a fresh JSON-able object). */
  getState(): SeededRandomState {
    return { algorithm: 'xoshiro128**', s: [this.s0 >>> 0, this.s1 >>> 0, this.s2 >>> 0, this.s3 >>> 0] };
  }

  /**
   * Restores a state saved by {@link getState}.
   *
   * @param state the saved state; throws TypeError if it is not a valid xoshiro128** state
   */
  setState(state: SeededRandomState): void {
    const ok =
      state !== null &&
      typeof state === 'object' &&
      state.algorithm === 'xoshiro128**' &&
      Array.isArray(state.s) &&
      state.s.length === 4 &&
      state.s.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff) &&
      state.s.some((v) => v !== 0);
    if (!ok) {
      throw new TypeError(
        `SeededRandom.setState: expected {algorithm: 'xoshiro128**', s: [4 uint32, not all 0]}, got ${JSON.stringify(state)}`,
      );
    }
    [this.s0, this.s1, this.s2, this.s3] = state.s;
  }

  /** The next raw 32-bit output (unsigned). */
  nextUint32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    const s2 = this.s2;
    const s3 = this.s3;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    this.s1 = s1 ^ n2;
    this.s0 = s0 ^ n3;
    this.s2 = n2 ^ t;
    this.s3 = rotl(n3, 11);
    return result;
  }

  /** A float in [0, 1) with 53 random bits. */
  randomSample(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Same as {@link randomSample} (numpy's `rand()` with no arguments). */
  rand(): number {
    return this.randomSample();
  }

  /** An integer in [low, high), or [0, low) with one argument. */
  randint(low: number, high?: number): number {
    let lo = low;
    let hi = high;
    if (hi === undefined) {
      hi = lo;
      lo = 0;
    }
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi)) {
      throw new RangeError(`randint: bounds must be integers, got (${low}, ${high})`);
    }
    if (!(hi > lo)) throw rangeError(lo, hi);
    const span = hi - lo - 1; // largest offset
    if (span > 0xffffffff) throw new RangeError(`randint: range of ${span + 1} values exceeds 2^32`);
    if (span === 0) return lo;
    let mask = span;
    mask |= mask >>> 1;
    mask |= mask >>> 2;
    mask |= mask >>> 4;
    mask |= mask >>> 8;
    mask |= mask >>> 16;
    mask >>>= 0;
    for (;;) {
      const v = (this.nextUint32() & mask) >>> 0;
      if (v <= span) return lo + v;
    }
  }

  /** `low + (high - low) * randomSample()`. */
  uniform(low: number, high: number): number {
    return low + (high - low) * this.randomSample();
  }
}

/** One recorded draw: the numpy function, its arguments and the value it returned. */
export interface RecordedDraw {
  /** `random_sample`, `rand`, `randint` or `uniform`. */
  fn: string;
  /** The arguments as passed (e.g. `[2]` for `randint(2)`, `[0, 9]` for `randint(0, 9)`). */
  args: readonly number[];
  /** The value to return. */
  value: number;
  /** Who made the call (for messages only). */
  caller?: string;
}

/**
 * Replays recorded draws in order. Each call must match the next record's function name and
 * arguments exactly, otherwise an Error names the position, the expected call and the actual one.
 * Calling past the end throws too; {@link assertDone} checks that every record was consumed.
 */
export class ForcedRandom implements PipelineRandom {
  private pos = 0;
  private readonly draws: readonly RecordedDraw[];

  /** @param draws the records, in call order */
  constructor(draws: readonly RecordedDraw[]) {
    this.draws = draws;
  }

  /** How many records have been consumed. */
  get consumed(): number {
    return this.pos;
  }

  /** How many records are left. */
  get remaining(): number {
    return this.draws.length - this.pos;
  }

  /** Throws unless every record has been consumed. */
  assertDone(): void {
    if (this.pos !== this.draws.length) {
      const d = this.draws[this.pos]!;
      throw new Error(
        `ForcedRandom: ${this.remaining} of ${this.draws.length} draws unused; next is ${d.fn}(${d.args.join(', ')})` +
          (d.caller ? ` from ${d.caller}` : ''),
      );
    }
  }

  private take(fn: string, args: readonly number[]): number {
    const call = `${fn}(${args.join(', ')})`;
    if (this.pos >= this.draws.length) {
      throw new Error(`ForcedRandom: call ${this.pos + 1} ${call} but only ${this.draws.length} draws were recorded`);
    }
    const d = this.draws[this.pos]!;
    const same = d.fn === fn && d.args.length === args.length && d.args.every((a, i) => a === args[i]);
    if (!same) {
      throw new Error(
        `ForcedRandom: call ${this.pos + 1} is ${call}, recorded ${d.fn}(${d.args.join(', ')})` +
          (d.caller ? ` from ${d.caller}` : ''),
      );
    }
    this.pos++;
    return d.value;
  }

  /** Returns the next record's value; it must be `random_sample()`. */
  randomSample(): number {
    return this.take('random_sample', []);
  }

  /** Returns the next record's value; it must be `rand()`. */
  rand(): number {
    return this.take('rand', []);
  }

  /** Returns the next record's value; it must be `randint` with the same arguments. */
  randint(low: number, high?: number): number {
    return this.take('randint', high === undefined ? [low] : [low, high]);
  }

  /** Returns the next record's value; it must be `uniform(low, high)`. */
  uniform(low: number, high: number): number {
    return this.take('uniform', [low, high]);
  }
}
