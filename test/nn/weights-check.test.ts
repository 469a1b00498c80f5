/**
 * Loading weights refuses what would silently give wrong answers: NaN / ±Inf in floating tensors (unless
 * allowNonfinite), integer tensors where the model holds floating ones, and keys that collide after `strip`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Tensor, fromBytes, noGrad, scope, tensor } from '../../src/engine/index.js';
import { type LazyTensor, writeSafetensors } from '../../src/io/index.js';
import { Linear, Module, NonFiniteWeightsError, loadWeights, readStateDict } from '../../src/nn/index.js';

class Buffers extends Module {
  readonly fc: Linear;
  index: Tensor;
  constructor() {
    super();
    this.fc = this.registerModule('fc', new Linear(3, 2));
    this.index = this.registerBuffer('index', tensor([0, 1, 2], { dtype: 'int64' }));
  }
}

function raw(dtype: 'float32' | 'float64' | 'int64' | 'int32', shape: number[], values: number[]): LazyTensor {
  const t = dtype === 'float32' ? Float32Array.from(values) : dtype === 'float64' ? Float64Array.from(values)
    : dtype === 'int32' ? Int32Array.from(values) : BigInt64Array.from(values.map((v) => BigInt(v)));
  const bytes = new Uint8Array(t.buffer);
  return { dtype, shape, nbytes: bytes.length, read: () => new Uint8Array(bytes) };
}

function withDir(fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'vita-nn-'));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const good = (): Map<string, LazyTensor> => new Map<string, LazyTensor>([
  ['fc.weight', raw('float32', [2, 3], [1, 2, 3, 4, 5, 6])],
  ['fc.bias', raw('float32', [2], [0.5, -0.5])],
  ['index', raw('int64', [3], [2, 1, 0])],
]);

test('a checkpoint with a NaN or Inf weight is refused by default, naming the key and the count', () => {
  withDir((dir) => {
    for (const [label, bad] of [['NaN', NaN], ['+Inf', Infinity], ['-Inf', -Infinity]] as const) {
      const file = join(dir, `bad-${label}.safetensors`);
      const sd = good();
      sd.set('fc.bias', raw('float32', [2], [0.5, bad]));
      writeSafetensors(file, sd);
      const m = new Buffers();
      const e = (() => { try { loadWeights(m, file); } catch (err) { return err as Error; } return null; })();
      assert.ok(e instanceof NonFiniteWeightsError, `${label}: ${String(e)}`);
      assert.equal(e.key, 'fc.bias');
      assert.equal(e.count, 1);
      assert.match(e.message, /'fc\.bias' has 1 non-finite value\(s\) \(NaN or ±Infinity\) of 2/);
      assert.match(e.message, /allowNonfinite: true \(CLI: --allow-nonfinite\)/);
      // opting in loads it as it is
      const m2 = new Buffers();
      loadWeights(m2, file, { allowNonfinite: true });
      const b = Array.from(m2.fc.bias!.toTypedArray() as Float32Array);
      assert.equal(b[0], 0.5);
      assert.ok(label === 'NaN' ? Number.isNaN(b[1]) : b[1] === bad);
    }
  });
});

test('float64 values that overflow the model\'s float32 are refused too; finite checkpoints load unchanged', () => {
  withDir((dir) => {
    const file = join(dir, 'f64.safetensors');
    const sd = good();
    sd.set('fc.weight', raw('float64', [2, 3], [1, 2, 3, 4, 1e300, 6]));
    writeSafetensors(file, sd);
    assert.throws(() => loadWeights(new Buffers(), file), (e: unknown) => e instanceof NonFiniteWeightsError && e.key === 'fc.weight' && e.count === 1);
    const ok = join(dir, 'ok.safetensors');
    writeSafetensors(ok, good());
    const m = new Buffers();
    loadWeights(m, ok);
    assert.deepEqual(Array.from(m.fc.weight.toTypedArray() as Float32Array), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(Array.from(m.index.toTypedArray()), [2, 1, 0]);
  });
});

test('Module.loadStateDict checks in-memory tensors the same way', () => {
  scope(() => {
    const m = new Buffers();
    const before = Array.from(m.fc.weight.toTypedArray() as Float32Array);
    const sd = new Map<string, Tensor>([
      ['fc.weight', tensor([[1, 2, 3], [4, NaN, NaN]])], ['fc.bias', tensor([0, 0])], ['index', tensor([0, 1, 2], { dtype: 'int64' })],
    ]);
    assert.throws(() => m.loadStateDict(sd), /'fc\.weight' has 2 non-finite value\(s\)/);
    assert.deepEqual(Array.from(m.fc.weight.toTypedArray() as Float32Array), before, 'the refused tensor was not copied');
    m.loadStateDict(sd, { allowNonfinite: true });
    assert.ok(Number.isNaN((m.fc.weight.toTypedArray() as Float32Array)[4]));
  });
});

test('integer tensors for floating weights (and the reverse) are an error naming the key and both dtypes', () => {
  withDir((dir) => {
    const file = join(dir, 'int.safetensors');
    const sd = good();
    sd.set('fc.bias', raw('int32', [2], [1, 2]));
    writeSafetensors(file, sd);
    const m = new Buffers();
    const w0 = Array.from(m.fc.weight.toTypedArray() as Float32Array);
    assert.throws(() => loadWeights(m, file), /state dict tensor 'fc\.bias' is int32 \(integer\) but the model's tensor is float32 \(floating\)/);
    // checked before anything is copied (the checkpoint source declares its dtype)
    assert.deepEqual(Array.from(m.fc.weight.toTypedArray() as Float32Array), w0);
    const file2 = join(dir, 'float-index.safetensors');
    const sd2 = good();
    sd2.set('index', raw('float32', [3], [0, 1, 2]));
    writeSafetensors(file2, sd2);
    assert.throws(() => loadWeights(new Buffers(), file2), /'index' is float32 \(floating\) but the model's tensor is int64 \(integer\)/);
    // in-memory tensors too
    scope(() => {
      const e = noGrad(() => fromBytes(new Int32Array([1, 2]), 'int32', [2]));
      assert.throws(() => new Buffers().loadStateDict({ 'fc.weight': tensor([[1, 2, 3], [4, 5, 6]]), 'fc.bias': e, index: tensor([0, 1, 2], { dtype: 'int64' }) }),
        /'fc\.bias' is int32/);
    });
  });
});

test('readStateDict / loadWeights with strip refuse keys that collide (module.w and w), naming both', () => {
  withDir((dir) => {
    const file = join(dir, 'dup.safetensors');
    const sd = good();
    sd.set('module.fc.bias', raw('float32', [2], [9, 9]));
    writeSafetensors(file, sd);
    const pattern = /dup\.safetensors: tensors 'fc\.bias' and 'module\.fc\.bias' both map to 'fc\.bias'/;
    assert.throws(() => readStateDict(file, { strip: ['module.'] }), pattern);
    assert.throws(() => loadWeights(new Buffers(), file, { strip: ['module.'] }), pattern);
    // without the collision, strip works as before
    const file2 = join(dir, 'dp.safetensors');
    writeSafetensors(file2, new Map([...good()].map(([k, v]) => [`module.${k}`, v])));
    const m = new Buffers();
    loadWeights(m, file2, { strip: ['module.'] });
    assert.deepEqual(Array.from(m.fc.bias!.toTypedArray() as Float32Array), [0.5, -0.5]);
  });
});
