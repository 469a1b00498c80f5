import { test } from 'node:test';
import { distAvailable, noGrad } from '../../src/engine/index.js';
import { BatchNorm2d } from '../../src/nn/index.js';
import { assertClose, values } from '../helpers/numeric.js';
import { describe, runRanks } from './harness.js';
import { loadBn, syncBnCase } from './common.js';
import assert from 'node:assert/strict';

const skip = distAvailable().gloo ? false : 'the addon was built without Gloo (libgloo-dev)';
const tol = { atol: 1e-12, rtol: 1e-12 };

test('SyncBatchNorm2d over 2 ranks equals BatchNorm2d on the concatenated batch (float64): output, running stats, gradients', { skip }, async () => {
  const rs = await runRanks('syncbn', { worldSize: 2, limitMs: 20_000 });
  for (const r of rs) assert.ok(r.code === 0 && r.result && !r.result.error, describe(rs));
  const [a, b] = rs.map((r) => r.result!) as [Record<string, number[]>, Record<string, number[]>];
  // Reference: one process, the whole batch.
  const k = syncBnCase();
  const bn = new BatchNorm2d(3).to('float64');
  loadBn(bn, k);
  const x = k.x.clone().requiresGrad_();
  const y = bn.forward(x);
  y.mul(k.c).sum().backward();
  const y2 = noGrad(() => bn.forward(x.detach().mul(0.5)));
  bn.eval();
  const yEval = noGrad(() => bn.forward(x.detach()));
  for (const o of [a, b]) {
    assert.equal(o.converted as unknown as number, 1);
    assert.equal(o.isSync as unknown, true);
    assert.equal(o.sameWeight as unknown, true, 'converted in place');
    assertClose(o.runningMean!, values(bn.running_mean!), { ...tol, msg: 'running_mean' });
    assertClose(o.runningVar!, values(bn.running_var!), { ...tol, msg: 'running_var (unbiased)' });
    assert.deepEqual(o.tracked, [2]);
  }
  assertClose([...a.y!, ...b.y!], values(y), { ...tol, msg: 'forward' });
  assertClose([...a.xGrad!, ...b.xGrad!], values(x.grad!), { ...tol, msg: 'input gradient' });
  // Each rank holds the gradient of its own loss; their sum is the whole batch's (DDP then averages).
  assertClose(a.wGrad!.map((v, i) => v + b.wGrad![i]!), values(bn.weight!.grad!), { ...tol, msg: 'weight gradient' });
  assertClose(a.bGrad!.map((v, i) => v + b.bGrad![i]!), values(bn.bias!.grad!), { ...tol, msg: 'bias gradient' });
  assertClose([...a.y2!, ...b.y2!], values(y2), { ...tol, msg: 'second step' });
  assertClose([...a.yEval!, ...b.yEval!], values(yEval), { ...tol, msg: 'eval mode (running statistics)' });
});
