import { test } from 'node:test';
import assert from 'node:assert/strict';
import { distAvailable } from '../../src/engine/index.js';
import { assertClose, values } from '../helpers/numeric.js';
import { describe, runRanks, type RankResult } from './harness.js';
import { type Net, loss, makeNet } from './common.js';

const skip = distAvailable().gloo ? false : 'the addon was built without Gloo (libgloo-dev)';
const tol = { atol: 1e-13, rtol: 1e-12 };

type Grads = Record<string, number[] | null>;

/** Single-process gradients of the steps `batches` (accumulated in that order) on rank 0's initial network. */
function reference(withUnused: boolean, batches: [number, boolean][]): { net: Net; grads: Grads } {
  const net = makeNet(11, withUnused);
  for (const [i, useExtra] of batches) loss(net, i, useExtra).backward();
  return { net, grads: Object.fromEntries(net.namedParameters().map(([n, p]) => [n, p.grad ? values(p.grad) : null])) };
}

function average(a: Grads, b: Grads, name: string): number[] | null {
  const x = a[name] ?? null;
  const y = b[name] ?? null;
  if (!x && !y) return null;
  const n = (x ?? y)!.length;
  return Array.from({ length: n }, (_, i) => ((x?.[i] ?? 0) + (y?.[i] ?? 0)) / 2);
}

async function run(mode: string, bucketCapMb: number): Promise<RankResult[]> {
  const rs = await runRanks('ddp', { worldSize: 2, args: { mode, bucketCapMb }, limitMs: 20_000 });
  for (const r of rs) assert.ok(r.code === 0 && r.result, describe(rs));
  return rs;
}

function checkGrads(rs: RankResult[], expected: (name: string) => number[] | null, names: string[]): void {
  for (const r of rs) {
    const grads = r.result!.grads as Grads;
    for (const n of names) {
      const e = expected(n);
      if (e === null) assert.equal(grads[n], null, `rank ${r.rank} ${n}: a parameter no rank used keeps a null gradient`);
      else assertClose(grads[n]!, e, { ...tol, msg: `rank ${r.rank} ${n}` });
    }
  }
}

test('DDP over 2 ranks: rank 0 parameters broadcast, gradients = average of the single-process gradients, several buckets overlapped with backward', { skip }, async () => {
  const rs = await run('basic', 0.0002);  // 210 bytes: fc2's 27 float64 values fill the first bucket
  const r0 = reference(false, [[0, false]]);
  const r1 = reference(false, [[1, false]]);
  const names = r0.net.namedParameters().map(([n]) => n);
  for (const r of rs) {
    assert.ok(!r.result!.error, describe(rs));
    const p0 = r.result!.params0 as Record<string, number[]>;
    for (const [n, p] of r0.net.namedParameters()) assert.deepEqual(p0[n], values(p), `rank ${r.rank} ${n} after the broadcast`);
    const buckets = r.result!.buckets as number[];
    assert.ok(buckets.length > 1, `several buckets with a small cap: ${JSON.stringify(buckets)}`);
    assert.equal(buckets.reduce((s, v) => s + v, 0), names.length);
    const st = r.result!.stats as { buckets: number; overlapped: boolean; bytes: number; overlappedBuckets: number; syncSteps: number };
    assert.equal(st.buckets, buckets.length);
    assert.equal(st.bytes, (4 * 8 + 8 + 8 * 3 + 3) * 8, 'every float64 gradient once');
    assert.equal(st.syncSteps, 1);
    // The bucket of the last layer is complete before the first layer's gradients exist: it starts during backward.
    assert.ok(st.overlapped && st.overlappedBuckets >= 1, JSON.stringify(st));
  }
  checkGrads(rs, (n) => average(r0.grads, r1.grads, n), names);
});

test('DDP gradient accumulation: prepareBackward(false) runs no collective (only rank 0 takes the extra micro-step); default cap = 1 bucket', { skip }, async () => {
  const rs = await run('accum', 25);
  const r0 = reference(false, [[2, false], [0, false]]);
  const r1 = reference(false, [[1, false]]);
  for (const r of rs) {
    assert.ok(!r.result!.error, describe(rs));
    assert.deepEqual(r.result!.buckets, [4]);
  }
  assert.equal((rs[0]!.result!.noSyncStats as { syncSteps: number }).syncSteps, 0);
  checkGrads(rs, (n) => average(r0.grads, r1.grads, n), r0.net.namedParameters().map(([n]) => n));
});

test('DDP with findUnusedParameters: a parameter used on one rank is averaged with zeros, one used nowhere keeps a null gradient', { skip }, async () => {
  const rs = await run('unused', 0.0002);
  const r0 = reference(true, [[0, true]]);
  const r1 = reference(true, [[1, false]]);
  for (const r of rs) assert.ok(!r.result!.error, describe(rs));
  checkGrads(rs, (n) => (n.startsWith('never.') ? null : average(r0.grads, r1.grads, n)), r0.net.namedParameters().map(([n]) => n));
});

test('DDP without findUnusedParameters: an unused parameter is a clear error on every rank (after the collectives, no hang)', { skip }, async () => {
  const rs = await run('unused-error', 25);
  for (const r of rs) {
    const e = r.result!.error as { message: string; isDistError: boolean };
    assert.ok(e?.isDistError, describe(rs));
    assert.match(e.message, /parameters received no gradient in this step: extra\.weight, extra\.bias, never\.weight, never\.bias\. Pass findUnusedParameters: true/);
    const grads = r.result!.grads as Grads;
    assert.equal(grads['never.weight'], null, 'no zero gradient left behind');
  }
});

test('DDP construction: rank 0 buffers are broadcast (and by syncBuffers), a model that differs between ranks is refused', { skip }, async () => {
  const rs = await runRanks('ddpInit', { worldSize: 2, limitMs: 20_000 });
  for (const r of rs) {
    assert.ok(r.code === 0 && r.result && !r.result.error, describe(rs));
    assert.deepEqual(r.result!.afterInit, { mean: [1, 1], tracked: [3] });
    assert.deepEqual(r.result!.afterSync, [5, 5]);
    const e = r.result!.mismatch as { message: string; isDistError: boolean };
    assert.ok(e.isDistError, describe(rs));
    assert.match(e.message, /the model differs between ranks: rank \d has (4|8) parameters and buffers, rank \d has (4|8); first difference at entry 4: rank \d has (nothing|extra\.weight:float64\[3,3\]), rank \d has (nothing|extra\.weight:float64\[3,3\])/);
  }
});
