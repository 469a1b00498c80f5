import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BatchSampler, type SamplerState, epochPermutation } from '../../src/train/sampler.js';

/** The global batches of `steps` steps of W rank samplers, each rank's indices concatenated in rank order. */
function globalBatches(n: number, b: number, W: number, steps: number, seed = 4, dropLast = true): { epoch: number; indices: number[]; perRank: number[][] }[] {
  const ranks = Array.from({ length: W }, (_, r) => new BatchSampler(n, b, { seed, rank: r, worldSize: W, dropLast }));
  const out: { epoch: number; indices: number[]; perRank: number[][] }[] = [];
  for (let s = 0; s < steps; s++) {
    const got = ranks.map((x) => x.next());
    assert.ok(got.every((g) => g.epoch === got[0]!.epoch && g.offset === got[0]!.offset), 'the ranks agree on epoch and offset');
    out.push({ epoch: got[0]!.epoch, indices: got.flatMap((g) => g.indices), perRank: got.map((g) => g.indices) });
  }
  return out;
}

test('distributed sampler: rank shards are disjoint, cover each global batch, and equal one process with batch W·b', () => {
  for (const [n, b, W] of [[10, 1, 2], [10, 2, 2], [11, 1, 3], [9, 2, 3], [8, 4, 1]] as const) {
    const G = b * W;
    const steps = 3 * Math.floor(n / G);
    const multi = globalBatches(n, b, W, steps);
    const single = new BatchSampler(n, G, { seed: 4 });
    for (const [i, g] of multi.entries()) {
      for (const shard of g.perRank) assert.equal(shard.length, b);
      assert.equal(new Set(g.indices).size, G, `step ${i}: shards of the ranks overlap (${JSON.stringify(g.perRank)})`);
      const ref = single.next();
      assert.deepEqual(g.indices, ref.indices, `n ${n} b ${b} W ${W} step ${i}: the union of the shards is one process's batch of ${G}`);
      assert.equal(g.epoch, ref.epoch);
    }
    // per epoch: each sample at most once; all but n mod G of the epoch's order are used (drop_last)
    for (let e = 0; e < 3; e++) {
      const used = multi.filter((g) => g.epoch === e).flatMap((g) => g.indices);
      assert.equal(used.length, n - (n % G));
      assert.equal(new Set(used).size, used.length);
      assert.deepEqual(used, Array.from(epochPermutation(n, 4, e)).slice(0, used.length));
    }
  }
});

test('distributed sampler: without drop_last the last global batch is padded to a multiple of the world size from the epoch start', () => {
  // n 7, b 2, W 2: batches of 4 at offsets 0 and 4; the last has 3 real samples -> 2 per rank, the 4th repeats perm[0]
  const g = globalBatches(7, 2, 2, 3, 4, false);
  const perm = Array.from(epochPermutation(7, 4, 0));
  assert.deepEqual(g[0]!.indices, perm.slice(0, 4));
  assert.deepEqual(g[1]!.perRank, [[perm[4], perm[5]], [perm[6], perm[0]]]);
  assert.equal(g[2]!.epoch, 1, 'a new epoch after the padded batch');
  // one process: the last batch is simply short (the single-process behaviour is unchanged)
  const one = new BatchSampler(7, 4, { seed: 4, dropLast: false });
  one.next();
  assert.deepEqual(one.next().indices, perm.slice(4));
  // n 5, b 1, W 3: offsets 0, 3; the last global batch has 2 real samples -> 1 per rank, rank 2 repeats perm[0]
  const h = globalBatches(5, 1, 3, 2, 4, false);
  const p5 = Array.from(epochPermutation(5, 4, 0));
  assert.deepEqual(h[1]!.perRank, [[p5[3]], [p5[4]], [p5[0]]]);
});

test('distributed sampler: deterministic for a seed, another split for another seed, clear errors', () => {
  assert.deepEqual(globalBatches(12, 2, 2, 8, 7), globalBatches(12, 2, 2, 8, 7));
  assert.notDeepEqual(globalBatches(12, 2, 2, 8, 7).map((g) => g.indices), globalBatches(12, 2, 2, 8, 8).map((g) => g.indices));
  assert.throws(() => new BatchSampler(10, 2, { seed: 0, rank: 2, worldSize: 2 }), /rank must be an integer in 0\.\.1, got 2/);
  assert.throws(() => new BatchSampler(10, 2, { seed: 0, worldSize: 0 }), /world size must be a positive integer/);
  assert.throws(() => new BatchSampler(5, 2, { seed: 0, worldSize: 3 }), /fewer than one global batch of 6 \(2 per process × 3 processes\)/);
});

test('distributed sampler: resume continues at the global sample position, with the same or another world size', () => {
  const n = 13;
  const perm0 = Array.from(epochPermutation(n, 4, 0));
  // 2 ranks × 2: three steps consume perm[0..12) of epoch 0
  const ranks = [0, 1].map((r) => new BatchSampler(n, 2, { seed: 4, rank: r, worldSize: 2 }));
  let state: SamplerState | null = null;
  for (let s = 0; s < 2; s++) state = ranks.map((x) => x.next())[0]!.after;
  assert.equal(state!.offset, 8);
  assert.equal(state!.epoch, 0);
  assert.equal(state!.worldSize, 2);
  // same world size: the continuation equals the uninterrupted run
  const again = [0, 1].map((r) => new BatchSampler(n, 2, { seed: 4, rank: r, worldSize: 2 }));
  for (const x of again) assert.equal(x.setState(state!), null, 'no note when the global batch stays');
  assert.deepEqual(again.map((x) => x.next().indices), ranks.map((x) => x.next().indices));
  // one process with batch 4 (the same global batch): the same samples
  const one = new BatchSampler(n, 4, { seed: 4 });
  assert.equal(one.setState(state!), null);
  assert.deepEqual(one.next().indices, perm0.slice(8, 12));
  // three processes × 1: the next global batch starts at sample 8 of epoch 0
  const three = [0, 1, 2].map((r) => new BatchSampler(n, 1, { seed: 4, rank: r, worldSize: 3 }));
  const notes = three.map((x) => x.setState(state!));
  assert.match(notes[0]!.message, /global batch changes from 4 \(2 × 2 processes\) to 3 \(1 × 3\).*epoch 0, sample 8/);
  assert.deepEqual(three.flatMap((x) => x.next().indices), perm0.slice(8, 11));
  // then 11 + 3 > 13: the epoch is over, the next batch opens epoch 1
  const next = three.map((x) => x.next());
  assert.equal(next[0]!.epoch, 1);
  assert.deepEqual(next.flatMap((x) => x.indices), Array.from(epochPermutation(n, 4, 1)).slice(0, 3));
  // a larger global batch that no longer fits the rest of the epoch starts the next epoch
  const big = new BatchSampler(n, 6, { seed: 4 });
  big.setState(state!);
  const bb = big.next();
  assert.equal(bb.epoch, 1);
  assert.deepEqual(bb.indices, Array.from(epochPermutation(n, 4, 1)).slice(0, 6));
  // a state of the single-process format (no offset, no world size) still loads: offset = position × batch
  const old: SamplerState = { seed: 4, epoch: 0, position: 2, size: n, batchSize: 3, shuffle: true, dropLast: true };
  const s2 = new BatchSampler(n, 3, { seed: 4 });
  s2.setState(old);
  assert.deepEqual(s2.next().indices, perm0.slice(6, 9));
  // another dataset or seed: refused
  assert.throws(() => new BatchSampler(n + 1, 2, { seed: 4 }).setState(state!), /dataset size 13 \(now 14\)/);
  assert.throws(() => new BatchSampler(n, 2, { seed: 5 }).setState(state!), /seed 4 \(now 5\)/);
  assert.throws(() => new BatchSampler(n, 2, { seed: 4 }).setState({ ...state!, offset: 99 }), /out of range.*offset 99/);
});
