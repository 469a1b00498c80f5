/**
 * `cuda.memoryStats()`: the caching allocator's current / peak bytes (the GPU training benchmark's peak-memory figure).
 * Without CUDA it must fail with a clear error, not crash; with CUDA the figures must follow an allocation and a reset.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backend, cuda, scope, zeros } from '../../src/engine/index.js';

const hasCuda = cuda.isAvailable();

test('cuda.memoryStats without CUDA throws a clear error', { skip: hasCuda ? 'CUDA is available here' : false }, () => {
  assert.throws(() => cuda.memoryStats(0), (e: unknown) => {
    assert.ok(e instanceof Error);
    assert.match(e.message, /cuda\.memoryStats.*(without CUDA|not available|no CUDA memory statistics)/);
    return true;
  });
});

test('the addon exposes cudaMemoryStats', () => {
  assert.equal(typeof backend().cudaMemoryStats, 'function', 'rebuild the addon: npm run build:native');
});

test('cuda.memoryStats follows an allocation and a peak reset', { skip: hasCuda ? false : 'no CUDA device' }, () => {
  cuda.synchronize();
  const before = cuda.memoryStats(0, true);
  const bytes = 64 << 20;
  scope(() => {
    const t = zeros([bytes / 4], { device: 'cuda' });
    cuda.synchronize();
    const during = cuda.memoryStats(0);
    assert.ok(during.allocated >= before.allocated + bytes, `allocated ${during.allocated} < ${before.allocated} + ${bytes}`);
    assert.ok(during.peakAllocated >= during.allocated);
    assert.ok(during.reserved >= during.allocated);
    t.dispose();
  });
  cuda.synchronize();
  const after = cuda.memoryStats(0, true);
  assert.ok(after.peakAllocated >= before.allocated + bytes, 'the peak keeps the freed allocation until a reset');
  const reset = cuda.memoryStats(0);
  assert.ok(reset.peakAllocated < after.peakAllocated, `peak not reset: ${reset.peakAllocated} >= ${after.peakAllocated}`);
  assert.throws(() => cuda.memoryStats(cuda.deviceCount()), /out of range/);
});
