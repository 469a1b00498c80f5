import { test } from 'node:test';
import assert from 'node:assert/strict';
import { distAvailable } from '../../src/engine/index.js';
import { describe, runRanks } from './harness.js';

const gloo = distAvailable().gloo;
const skip = gloo ? false : 'the addon was built without Gloo (libgloo-dev)';

test('collectives over 2 Gloo processes: all-reduce (sum/avg/max/min, coalesced lists), broadcast, all-gather, objects, barrier, differentiable all-reduce', { skip }, async () => {
  // Rank 1 exits without destroy(): its process must still end by itself.
  const rs = await runRanks('collectives', { worldSize: 2, args: { noDestroy: true }, limitMs: 20_000 });
  for (const r of rs) assert.ok(r.code === 0 && r.result && !r.result.error && !r.killed, describe(rs));
  for (const { rank, result } of rs) {
    const o = result!;
    assert.equal(o.rank, rank);
    assert.equal(o.worldSize, 2);
    assert.equal(o.backend, 'gloo');
    // rank 0 [[1,0],[.5,0]] + rank 1 [[2,2],[.5,-1]]; float32 10+11; int64 [1,7]+[4,7]
    assert.deepEqual(o.sum, [[3, 2, 1, -1], [21], [5, 14]]);
    assert.deepEqual(o.avg, [[1.5, 3], [1]]);
    assert.deepEqual(o.max, [1, 5, 0]);
    assert.deepEqual(o.min, [0, 4]);
    assert.match((o.avgInt as { message: string }).message, /avg needs floating-point tensors/);
    // broadcast from rank 1: p = [1,1,1]; q = transpose([[1,2],[3,4]])
    assert.deepEqual(o.broadcast, [[1, 1, 1], [1, 3, 2, 4]]);
    assert.deepEqual(o.allGather, [{ shape: [1, 2], v: [0, 0] }, { shape: [1, 2], v: [1, 10] }]);
    const mm = o.allGatherMismatch as { message: string; isDistError: boolean };
    assert.ok(mm.isDistError);
    assert.match(mm.message, /tensors differ between ranks: rank \d has Float\[\d\], rank \d has Float\[\d\]/);
    assert.deepEqual(o.objects, [{ rank: 0, text: '', list: [0, null] }, { rank: 1, text: 'éé', list: [1, null] }]);
    // rank 1 sleeps 400 ms before the barrier: rank 0 waits for it
    if (rank === 0) assert.ok((o.barrierMs as number) >= 350, `barrier waited ${o.barrierMs} ms`);
    // y = x·1 + x·2; loss_r = Σ y·[r+1, 1] → dL/dy summed over ranks [3, 2]; dx_r = (r+1)·[3, 2]
    assert.deepEqual(o.autograd, { y: [3, 6], grad: rank === 0 ? [3, 2] : [6, 4] });
  }
  const after = rs[0]!.result!.afterDestroy as { message: string; isDistError: boolean };
  assert.ok(after.isDistError);
  assert.match(after.message, /destroyed/);
});
