/** nn.Module: PyTorch names and order, state-dict round trips through safetensors, strict loading, freezing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Tensor, manualSeed, noGrad, randn, scope } from '../../src/engine/index.js';
import {
  BatchNorm2d, Conv2d, LayerNorm, Linear, Module, ModuleList, ReLU, Sequential, StateDictError, loadWeights,
  readStateDict, saveSafetensors,
} from '../../src/nn/index.js';

class Net extends Module {
  readonly stem: Sequential;
  readonly blocks: ModuleList<Linear>;
  readonly norm: LayerNorm;
  scale: Tensor;
  constructor() {
    super();
    this.stem = this.registerModule('stem', new Sequential(new Conv2d(3, 4, 3, { padding: 1, bias: false }), new BatchNorm2d(4), new ReLU()));
    this.blocks = this.registerModule('blocks', new ModuleList([new Linear(4, 4), new Linear(4, 2)]));
    this.norm = this.registerModule('norm', new LayerNorm(2, 1e-6));
    this.scale = this.registerParameter('scale', randn([2]));
  }
  forward(x: Tensor): Tensor {
    let y = this.stem.forward(x).mean([2, 3]);
    for (const b of this.blocks) y = b.forward(y);
    return this.norm.forward(y).mul(this.scale);
  }
}

test('state-dict keys and order follow PyTorch (own params, buffers, then children; numeric child names)', () => {
  const net = new Net();
  assert.deepEqual([...net.stateDict().keys()], [
    'scale',
    'stem.0.weight', 'stem.1.weight', 'stem.1.bias', 'stem.1.running_mean', 'stem.1.running_var', 'stem.1.num_batches_tracked',
    'blocks.0.weight', 'blocks.0.bias', 'blocks.1.weight', 'blocks.1.bias',
    'norm.weight', 'norm.bias',
  ]);
  assert.equal(net.numParameters(), 1 * 2 + 4 * 3 * 9 + 4 + 4 + 16 + 4 + 8 + 2 + 2 + 2);
  assert.deepEqual(net.namedModules().map(([n]) => n), ['', 'stem', 'stem.0', 'stem.1', 'stem.2', 'blocks', 'blocks.0', 'blocks.1', 'norm']);
  net.dispose();
});

test('stateDict → safetensors → loadStateDict round trip gives identical outputs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vita-nn-'));
  try {
    manualSeed(1);
    const a = new Net().eval();
    // non-trivial running statistics, so the round trip covers buffers too
    noGrad(() => { (a.stem.at(1) as BatchNorm2d).running_mean!.uniform_(-1, 1); (a.stem.at(1) as BatchNorm2d).running_var!.uniform_(0.5, 2); });
    const file = join(dir, 'net.safetensors');
    saveSafetensors(a, file, { note: 'test' });
    manualSeed(2);
    const b = new Net().eval();
    const r = loadWeights(b, file);
    assert.deepEqual(r, { missing: [], unexpected: [], mismatched: [] });
    scope(() => {
      const x = randn([2, 3, 6, 6]);
      assert.equal(noGrad(() => a.forward(x).sub(b.forward(x)).abs().max().item()), 0);
    });
    const sd = readStateDict(file);
    assert.equal(sd.get('stem.1.num_batches_tracked')!.dtype, 'int64');
    a.dispose();
    b.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('strict loading lists missing, unexpected and mismatched keys with shapes; non-strict loads the rest', () => {
  const net = new Net();
  const sd = new Map(net.stateDict());
  sd.delete('norm.bias');
  sd.set('extra.weight', randn([3]));
  sd.set('blocks.1.weight', randn([3, 4]));
  sd.delete('stem.1.num_batches_tracked'); // optional, as in PyTorch
  assert.throws(() => net.loadStateDict(sd), (e: unknown) => {
    assert.ok(e instanceof StateDictError);
    assert.match(e.message, /missing keys \(1\): norm\.bias/);
    assert.match(e.message, /unexpected keys \(1\): extra\.weight/);
    assert.match(e.message, /size mismatch for blocks\.1\.weight: checkpoint has \[3, 4\], the model has \[2, 4\]/);
    assert.doesNotMatch(e.message, /num_batches_tracked/);
    return true;
  });
  const r = net.loadStateDict(sd, { strict: false });
  assert.deepEqual(r.missing, ['norm.bias']);
  assert.deepEqual(r.unexpected, ['extra.weight']);
  assert.equal(r.mismatched.length, 1);
  net.dispose();
});

test('freeze/unfreeze by glob or RegExp, to(dtype) keeps fields and requiresGrad, train/eval propagate', () => {
  const net = new Net();
  net.freeze('stem.*');
  assert.deepEqual(net.namedParameters().filter(([, p]) => !p.requiresGrad).map(([n]) => n), ['stem.0.weight', 'stem.1.weight', 'stem.1.bias']);
  net.unfreeze(/^stem\.1\./);
  assert.deepEqual(net.namedParameters().filter(([, p]) => !p.requiresGrad).map(([n]) => n), ['stem.0.weight']);
  net.to('float64');
  assert.equal(net.scale.dtype, 'float64');
  assert.equal(net.blocks.at(0).weight.dtype, 'float64');
  assert.equal((net.stem.at(1) as BatchNorm2d).num_batches_tracked!.dtype, 'int64');
  assert.equal(net.stateDict().get('blocks.0.weight'), net.blocks.at(0).weight);
  assert.equal(net.blocks.at(0).weight.requiresGrad, true);
  assert.equal((net.stem.at(0) as Conv2d).weight.requiresGrad, false);
  net.eval();
  assert.ok(net.namedModules().every(([, m]) => !m.training));
  net.train();
  assert.ok(net.namedModules().every(([, m]) => m.training));
  net.dispose();
});
