/**
 * Forward values of every engine operation on small cases whose expected values are derived by hand (closed forms,
 * or naive loops written from the definition in test/helpers/reference.ts) — never printed from the engine.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type DType, Tensor, adaptiveAvgPool2d, arange, attentionComposition, avgPool2d, backend, batchNorm,
  binaryCrossEntropyWithLogits, bmm, cat, conv2d, convTranspose2d, crossEntropy, dropout, einsum, empty, eye, fromBytes,
  full, fullLike, gelu, gridSample, groupNorm, interpolate, layerNorm, linear, linspace, logSoftmax, manualSeed, matmul,
  maxPool2d, ones, onesLike, pad, rand, randint, randn, relu, scalarTensor, scaledDotProductAttention, silu, softmax,
  sort, stack, tensor, topk, where, zeros, zerosLike,
} from '../../src/engine/index.js';
import { assertClose, assertTensorEqual, flat, uniform, values } from '../helpers/numeric.js';
import { refAdaptiveAvg, refBicubic, refConv2d, refConvTranspose2d } from '../helpers/reference.js';

const f64 = (data: unknown, shape?: number[]): Tensor =>
  tensor(data as number[], { dtype: 'float64', ...(shape ? { shape } : {}) });
const i64 = (data: unknown): Tensor => tensor(data as number[], { dtype: 'int64' });
const LN2 = Math.log(2);
const LN3 = Math.log(3);
/** x[i][j] = 4i + j on a 1×1×4×4 map. */
const grid4 = (): Tensor => arange(16, undefined, 1, { dtype: 'float64' }).reshape(1, 1, 4, 4);

// ---------------------------------------------------------------------------------------------------------------
describe('creation', () => {
  test('tensor() from nested arrays infers shape, defaults to float32', () => {
    const t = tensor([[1, 2, 3], [4, 5, 6]]);
    assert.deepEqual(t.shape, [2, 3]);
    assert.equal(t.ndim, 2);
    assert.equal(t.numel(), 6);
    assert.equal(t.dtype, 'float32');
    assert.equal(t.device, 'cpu');
    assert.deepEqual(t.toArray(), [[1, 2, 3], [4, 5, 6]]);
    assert.equal(t.size(-1), 3);
    assert.equal(t.size(0), 2);
    assert.throws(() => t.size(2), RangeError);
    assert.equal(t.toString(), 'Tensor(float32[2, 3], cpu)');
  });

  test('tensor() from a number is 0-d; booleans; explicit shape', () => {
    const s = tensor(5);
    assert.deepEqual(s.shape, []);
    assert.equal(s.item(), 5);
    assert.equal(s.toArray(), 5);
    const b = tensor([[true, false], [false, true]], { dtype: 'bool' });
    assert.equal(b.dtype, 'bool');
    assert.deepEqual(b.toArray(), [[1, 0], [0, 1]]);
    const r = tensor([1, 2, 3, 4, 5, 6], { shape: [3, 2] });
    assert.deepEqual(r.toArray(), [[1, 2], [3, 4], [5, 6]]);
    const e = tensor([]);
    assert.deepEqual(e.shape, [0]);
    assert.equal(e.numel(), 0);
  });

  test('tensor() rejects ragged arrays and wrong shapes', () => {
    assert.throws(() => tensor([[1, 2], [3]]), /ragged/);
    assert.throws(() => tensor([[1, 2], 3] as never), /ragged/);
    assert.throws(() => tensor([1, 2, 3], { shape: [2, 2] }), /does not match/);
    assert.throws(() => tensor(new Float32Array(3), { shape: [2, 2] }), /needs 4 elements/);
    assert.throws(() => tensor([1], { dtype: 'complex64' as DType }), /unknown dtype/);
  });

  test('tensor() from typed arrays takes their dtype', () => {
    const cases: [ArrayBufferView & ArrayLike<number | bigint>, DType][] = [
      [Float32Array.of(1.5, -2), 'float32'], [Float64Array.of(1.5, -2), 'float64'], [Int32Array.of(7, -8), 'int32'],
      [Int16Array.of(7, -8), 'int16'], [Int8Array.of(7, -8), 'int8'], [Uint8Array.of(7, 200), 'uint8'],
      [BigInt64Array.of(7n, -8n), 'int64'],
    ];
    for (const [data, dt] of cases) {
      const t = tensor(data as never);
      assert.equal(t.dtype, dt);
      assert.deepEqual(t.shape, [2]);
      assert.deepEqual(values(t), Array.from(data as ArrayLike<number | bigint>, Number));
    }
    const m = tensor(Float64Array.of(1, 2, 3, 4, 5, 6), { shape: [2, 3] });
    assert.deepEqual(m.toArray(), [[1, 2, 3], [4, 5, 6]]);
    const conv = tensor(Float32Array.of(1.75, -2.25), { dtype: 'int32' });
    assert.equal(conv.dtype, 'int32');
    assert.deepEqual(values(conv), [1, -2]); // truncation toward zero
    const big = tensor(BigInt64Array.of(2n ** 40n + 1n, -(2n ** 50n) - 3n));
    assert.deepEqual(values(big), [2 ** 40 + 1, -(2 ** 50) - 3]);
    assert.throws(() => tensor(new Uint16Array(2) as never), /unsupported typed array/);
  });

  test('tensor() copies its data', () => {
    const data = Float32Array.of(1, 2, 3);
    const t = tensor(data);
    data[0] = 100;
    assert.deepEqual(values(t), [1, 2, 3]);
  });

  test('fromBytes reads raw little-endian bytes', () => {
    const t = fromBytes(Uint8Array.of(1, 0, 0, 0, 0, 1, 0, 0), 'int32', [2]);
    assert.deepEqual(values(t), [1, 256]);
    assert.deepEqual(Array.from(t.toBytes()), [1, 0, 0, 0, 0, 1, 0, 0]);
    assert.throws(() => fromBytes(new Uint8Array(7), 'int32', [2]), /7 bytes given/);
  });

  test('zeros/ones/full/empty and *Like', () => {
    assertTensorEqual(zeros([2, 3]), [0, 0, 0, 0, 0, 0], [2, 3]);
    assert.equal(zeros([2]).dtype, 'float32');
    const o = ones([2, 2], { dtype: 'int64' });
    assert.equal(o.dtype, 'int64');
    assertTensorEqual(o, [1, 1, 1, 1], [2, 2]);
    assertTensorEqual(full([3], 7.5), [7.5, 7.5, 7.5], [3]);
    assertTensorEqual(full([2], -3, { dtype: 'int32' }), [-3, -3]);
    assert.deepEqual(empty([4, 5]).shape, [4, 5]);
    assert.deepEqual(zeros([]).shape, []);
    const ref = tensor([[1, 2]], { dtype: 'float64' });
    const z = zerosLike(ref);
    assert.equal(z.dtype, 'float64');
    assertTensorEqual(z, [0, 0], [1, 2]);
    assertTensorEqual(onesLike(ref, { dtype: 'int32' }), [1, 1], [1, 2]);
    assert.equal(onesLike(ref, { dtype: 'int32' }).dtype, 'int32');
    assertTensorEqual(fullLike(ref, 4), [4, 4], [1, 2]);
    const s = scalarTensor(2.5, { dtype: 'float64' });
    assert.deepEqual(s.shape, []);
    assert.equal(s.item(), 2.5);
  });

  test('arange/linspace/eye', () => {
    const a = arange(5);
    assert.equal(a.dtype, 'int64');
    assertTensorEqual(a, [0, 1, 2, 3, 4], [5]);
    assertTensorEqual(arange(2, 5), [2, 3, 4]);
    assertTensorEqual(arange(10, 0, -3), [10, 7, 4, 1]);
    const f = arange(1, 2, 0.25);
    assert.equal(f.dtype, 'float32');
    assertTensorEqual(f, [1, 1.25, 1.5, 1.75]);
    assert.equal(arange(3, undefined, 1, { dtype: 'float64' }).dtype, 'float64');
    assert.throws(() => arange(0, 1, 0), /non-zero/);
    assertClose(linspace(0, 1, 5), [0, 0.25, 0.5, 0.75, 1], { shape: [5] });
    assertClose(linspace(-1, 1, 3, { dtype: 'float64' }), [-1, 0, 1]);
    assert.deepEqual(linspace(3, 3, 1).toArray(), [3]);
    assert.deepEqual(eye(3).toArray(), [[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
    assert.deepEqual(eye(2, 3).toArray(), [[1, 0, 0], [0, 1, 0]]);
    assert.equal(eye(2, undefined, { dtype: 'int64' }).dtype, 'int64');
  });

  test('rand/randn/randint are deterministic under manualSeed and in range', () => {
    manualSeed(1234);
    const a = values(rand([1000]));
    const an = values(randn([1000]));
    const ai = values(randint(3, 7, [1000]));
    manualSeed(1234);
    const b = values(rand([1000]));
    const bn = values(randn([1000]));
    const bi = values(randint(3, 7, [1000]));
    assert.deepEqual(a, b);
    assert.deepEqual(an, bn);
    assert.deepEqual(ai, bi);
    manualSeed(1235);
    assert.notDeepEqual(values(rand([1000])), a);
    assert.ok(a.every((v) => v >= 0 && v < 1));
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05, `rand mean ${mean}`);
    assert.ok(ai.every((v) => Number.isInteger(v) && v >= 3 && v < 7));
    assert.deepEqual([...new Set(ai)].sort(), [3, 4, 5, 6]);
    assert.equal(randint(0, 2, [3]).dtype, 'int64');
    assert.equal(randint(0, 2, [3], { dtype: 'int32' }).dtype, 'int32');
    manualSeed(7);
    const n = values(randn([20000]));
    const m = n.reduce((s, v) => s + v, 0) / n.length;
    const sd = Math.sqrt(n.reduce((s, v) => s + (v - m) ** 2, 0) / (n.length - 1));
    assert.ok(Math.abs(m) < 0.03 && Math.abs(sd - 1) < 0.03, `randn mean ${m} std ${sd}`);
    assert.equal(rand([2], { dtype: 'float64' }).dtype, 'float64');
    assert.throws(() => manualSeed(-1), /non-negative integer/);
    assert.throws(() => manualSeed(1.5), /non-negative integer/);
  });

  test('requiresGrad option', () => {
    const t = zeros([2], { requiresGrad: true });
    assert.equal(t.requiresGrad, true);
    assert.equal(tensor([1, 2], { requiresGrad: true }).requiresGrad, true);
    assert.equal(zeros([2]).requiresGrad, false);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('data out and conversion', () => {
  test('toTypedArray types, item, toArray, toBytes', () => {
    assert.ok(tensor([1, 2]).toTypedArray() instanceof Float32Array);
    assert.ok(tensor([1, 2], { dtype: 'float64' }).toTypedArray() instanceof Float64Array);
    assert.ok(tensor([1, 2], { dtype: 'int64' }).toTypedArray() instanceof Float64Array);
    assert.ok(tensor([1, 2], { dtype: 'int32' }).toTypedArray() instanceof Int32Array);
    assert.ok(tensor([1, 0], { dtype: 'bool' }).toTypedArray() instanceof Uint8Array);
    assert.ok(tensor([1, 2], { dtype: 'float16' }).toTypedArray() instanceof Float32Array);
    assert.ok(tensor([1, 2], { dtype: 'bfloat16' }).toTypedArray() instanceof Float32Array);
    assert.equal(tensor([[3.5]]).item(), 3.5);
    assert.equal(tensor([7], { dtype: 'int64' }).item(), 7);
    assert.throws(() => tensor([1, 2]).item(), /2 elements/);
    const t = arange(24).reshape(2, 3, 4);
    assert.deepEqual(t.toArray(), [
      [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]],
      [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]],
    ]);
    // non-contiguous tensors come out in logical order
    assert.deepEqual(tensor([[1, 2, 3], [4, 5, 6]]).transpose(0, 1).toArray(), [[1, 4], [2, 5], [3, 6]]);
    assert.deepEqual(Array.from(tensor([1.5], { dtype: 'float64' }).toBytes()), Array.from(new Uint8Array(Float64Array.of(1.5).buffer)));
  });

  test('item() of a bool tensor is a number (1/0), as its type says', () => {
    // BUG (src/engine/tensor.ts item()): libtorch's item returns a C++ bool for bool tensors, which the addon turns
    // into a JS boolean; item() is typed number and passes it through, so it returns true/false.
    assert.equal(tensor([true], { dtype: 'bool' }).item(), 1);
    assert.equal(tensor([false], { dtype: 'bool' }).item(), 0);
  });

  test('to(dtype) converts values; to(device) and to({dtype, device})', () => {
    const x = tensor([1.7, -1.7, 2.5, 0]);
    assertTensorEqual(x.to('int32'), [1, -1, 2, 0]);
    assertTensorEqual(x.to('int64'), [1, -1, 2, 0]);
    assertTensorEqual(x.to('bool'), [1, 1, 1, 0]);
    assertTensorEqual(tensor([3.9, 255]).to('uint8'), [3, 255]);
    assert.equal(x.double().dtype, 'float64');
    assert.equal(x.long().dtype, 'int64');
    assert.equal(tensor([1], { dtype: 'int32' }).float().dtype, 'float32');
    assert.equal(x.to('cpu').device, 'cpu');
    const y = x.to({ dtype: 'float64', device: 'cpu' });
    assert.equal(y.dtype, 'float64');
    // float32 → float64 is exact: 1.7f = 1.7000000476837158
    assert.equal(values(y)[0], Math.fround(1.7));
    // same dtype: aliasing result; copy: true gives a separate buffer
    assert.ok(backend().sameData(x.to('float32').handle, x.handle));
    assert.ok(!backend().sameData(x.to('float32', { copy: true }).handle, x.handle));
  });

  test('half precision rounding by hand: 1/3 and overflow', () => {
    // float16: 1/3 = 1.0101010101|0101…₂ × 2⁻² → rounds down to 1.0101010101₂ × 2⁻² = 0.333251953125
    assert.equal(tensor([1 / 3], { dtype: 'float16' }).item(), 0.333251953125);
    // bfloat16: 1.0101010|1010…₂ → rounds up to 1.0101011₂ × 2⁻² = 0.333984375
    assert.equal(tensor([1 / 3], { dtype: 'bfloat16' }).item(), 0.333984375);
    // float16 max is 65504; 70000 overflows to +inf in a conversion (tensor() refuses it); bfloat16 has float32's range
    assert.equal(tensor([70000]).to('float16').item(), Infinity);
    assert.throws(() => tensor([70000], { dtype: 'float16' }), /out of range \(it would become Infinity\)/);
    assert.equal(tensor([65504], { dtype: 'float16' }).item(), 65504);
    assert.equal(tensor([70000], { dtype: 'bfloat16' }).item(), 70144); // 70000 = 1.0001000101110…₂·2¹⁶ → 1.0001001₂·2¹⁶
  });

  test('every dtype round-trips exactly representable values', () => {
    const vals = [0, 1, 2, 100, 7, 3, 127, 64];
    const all: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8'];
    for (const dt of all) {
      const t = tensor(vals, { dtype: dt, shape: [2, 4] });
      assert.equal(t.dtype, dt);
      assert.deepEqual(t.shape, [2, 4]);
      assert.deepEqual(values(t), vals, dt);
      // through every other dtype and back
      for (const other of all) {
        const back = t.to(other).to(dt);
        assert.equal(back.dtype, dt);
        assert.deepEqual(values(back), vals, `${dt} → ${other} → ${dt}`);
      }
      const b = t.to('bool');
      assert.deepEqual(values(b), vals.map((v) => (v ? 1 : 0)));
      assert.deepEqual(values(b.to(dt)), vals.map((v) => (v ? 1 : 0)));
    }
    const bool = tensor([true, false, true], { dtype: 'bool' });
    assert.deepEqual(values(bool.to('float16').to('bool')), [1, 0, 1]);
    // negative values in the signed and float types
    for (const dt of ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8'] as DType[]) {
      assert.deepEqual(values(tensor([-1, -128, 5], { dtype: dt })), [-1, -128, 5], dt);
    }
    // fractional values exact in each float type
    assert.deepEqual(values(tensor([0.5, -0.25, 1.75], { dtype: 'float16' })), [0.5, -0.25, 1.75]);
    assert.deepEqual(values(tensor([0.5, -0.25, 1.75], { dtype: 'bfloat16' })), [0.5, -0.25, 1.75]);
    assert.deepEqual(values(tensor([0.1], { dtype: 'float64' })), [0.1]);
    assert.deepEqual(values(tensor([0.1], { dtype: 'float32' })), [Math.fround(0.1)]);
  });

  test('clone/contiguous/detach/strides/sameData', () => {
    const x = tensor([[1, 2, 3], [4, 5, 6]]);
    assert.deepEqual(x.strides(), [3, 1]);
    const t = x.transpose(0, 1);
    assert.deepEqual(t.strides(), [1, 3]);
    assert.ok(backend().sameData(t.handle, x.handle));
    const c = t.contiguous();
    assert.deepEqual(c.strides(), [2, 1]);
    assert.deepEqual(c.toArray(), [[1, 4], [2, 5], [3, 6]]);
    assert.ok(!backend().sameData(x.clone().handle, x.handle));
    assert.ok(backend().sameData(x.detach().handle, x.handle));
    assert.ok(backend().sameData(x.view(6).handle, x.handle));
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('element-wise arithmetic', () => {
  test('broadcasting [2,1,3] + [4,3] → [2,4,3]', () => {
    // a[i][0][k] = 10i + k, b[j][k] = 100j
    const a = tensor([[[0, 1, 2]], [[10, 11, 12]]]);
    const b = tensor([[0, 0, 0], [100, 100, 100], [200, 200, 200], [300, 300, 300]]);
    const s = a.add(b);
    assert.deepEqual(s.shape, [2, 4, 3]);
    const exp: number[] = [];
    for (let i = 0; i < 2; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 3; k++) exp.push(10 * i + k + 100 * j);
    assertTensorEqual(s, exp);
    const d = b.sub(a);
    assert.deepEqual(d.shape, [2, 4, 3]);
    assertTensorEqual(d, exp.map((_, n) => 100 * Math.floor((n % 12) / 3) - (10 * Math.floor(n / 12) + (n % 3))));
    const p = a.mul(b);
    assertTensorEqual(p, exp.map((_, n) => (100 * Math.floor((n % 12) / 3)) * (10 * Math.floor(n / 12) + (n % 3))));
  });

  test('add/sub with alpha, scalars, rsub, mul, div', () => {
    const x = tensor([1, 2, 3], { dtype: 'float64' });
    const y = tensor([10, 20, 30], { dtype: 'float64' });
    assertTensorEqual(x.add(y, 2), [21, 42, 63]);
    assertTensorEqual(x.sub(y, 0.5), [-4, -8, -12]);
    assertTensorEqual(x.add(1.5), [2.5, 3.5, 4.5]);
    assertTensorEqual(x.add(1, 3), [4, 5, 6]);
    assertTensorEqual(x.sub(1), [0, 1, 2]);
    assertTensorEqual(x.rsub(10), [9, 8, 7]);
    assertTensorEqual(x.mul(y), [10, 40, 90]);
    assertTensorEqual(x.mul(-2), [-2, -4, -6]);
    assertTensorEqual(y.div(x), [10, 10, 10]);
    assertTensorEqual(x.div(4), [0.25, 0.5, 0.75]);
    assertTensorEqual(x.div(0), [Infinity, Infinity, Infinity]);
    // true division of integers gives float32
    const q = tensor([7, -7], { dtype: 'int64' }).div(tensor([2, 2], { dtype: 'int64' }));
    assert.equal(q.dtype, 'float32');
    assertTensorEqual(q, [3.5, -3.5]);
  });

  test('type promotion: int tensor with a float scalar/tensor', () => {
    const i = tensor([1, 2], { dtype: 'int64' });
    assert.equal(i.add(1).dtype, 'int64');
    const f = i.add(0.5);
    assert.equal(f.dtype, 'float32');
    assertTensorEqual(f, [1.5, 2.5]);
    assert.equal(i.add(tensor([1, 1], { dtype: 'float64' })).dtype, 'float64');
    assert.equal(tensor([1], { dtype: 'float16' }).add(tensor([1], { dtype: 'float32' })).dtype, 'float32');
  });

  test('divRound, remainder, pow, maximum/minimum', () => {
    const a = tensor([-7, 7, -7, 5.5], { dtype: 'float64' });
    const b = tensor([2, 2, -2, 2], { dtype: 'float64' });
    assertTensorEqual(a.divRound(b, 'floor'), [-4, 3, 3, 2]);
    assertTensorEqual(a.divRound(b, 'trunc'), [-3, 3, 3, 2]);
    // Python semantics: the remainder has the sign of the divisor
    assertTensorEqual(a.remainder(b), [1, 1, -1, 1.5]);
    assertTensorEqual(tensor([-3, 3], { dtype: 'float64' }).remainder(5), [2, 3]);
    assertTensorEqual(tensor([2, 3, 4], { dtype: 'float64' }).pow(2), [4, 9, 16]);
    assertTensorEqual(tensor([4, 9], { dtype: 'float64' }).pow(0.5), [2, 3]);
    assertTensorEqual(tensor([2, 3], { dtype: 'float64' }).pow(tensor([3, 2], { dtype: 'float64' })), [8, 9]);
    assertTensorEqual(tensor([2], { dtype: 'float64' }).pow(-1), [0.5]);
    assertTensorEqual(tensor([1, 5, 3]).maximum(tensor([4, 2, 3])), [4, 5, 3]);
    assertTensorEqual(tensor([1, 5, 3]).minimum(tensor([4, 2, 3])), [1, 2, 3]);
    assertTensorEqual(tensor([[1], [5]]).maximum(tensor([2, 3])), [2, 3, 5, 5], [2, 2]);
  });

  test('neg/abs/sign/floor/ceil/round/reciprocal/sin/cos', () => {
    const x = tensor([-1.5, -0.5, 0.5, 1.5, 2.5], { dtype: 'float64' });
    assertTensorEqual(x.neg(), [1.5, 0.5, -0.5, -1.5, -2.5]);
    assertTensorEqual(x.abs(), [1.5, 0.5, 0.5, 1.5, 2.5]);
    assertTensorEqual(x.sign(), [-1, -1, 1, 1, 1]);
    assertTensorEqual(x.floor(), [-2, -1, 0, 1, 2]);
    assertTensorEqual(x.ceil(), [-1, -0, 1, 2, 3]);
    assertTensorEqual(x.round(), [-2, -0, 0, 2, 2]); // half to even
    assertTensorEqual(tensor([2, -4, 0.5], { dtype: 'float64' }).reciprocal(), [0.5, -0.25, 2]);
    assertClose(tensor([0, Math.PI / 2, Math.PI / 6], { dtype: 'float64' }).sin(), [0, 1, 0.5], { atol: 1e-15 });
    assertClose(tensor([0, Math.PI / 3], { dtype: 'float64' }).cos(), [1, 0.5], { atol: 1e-15 });
  });

  test('exp/log/sqrt/rsqrt/erf/erfinv/tanh/sigmoid', () => {
    assertClose(f64([0, 1, -1, LN2]).exp(), [1, Math.E, 1 / Math.E, 2], { rtol: 1e-15 });
    assertClose(f64([1, Math.E, 0.5]).log(), [0, 1, -LN2], { rtol: 1e-15, atol: 1e-16 });
    assertTensorEqual(f64([0]).log(), [-Infinity]);
    assert.ok(Number.isNaN(values(f64([-1]).log())[0]!));
    assertTensorEqual(f64([4, 9, 0.25, 0]).sqrt(), [2, 3, 0.5, 0]);
    assertTensorEqual(f64([4, 0.25, 16]).rsqrt(), [0.5, 2, 0.25]);
    assertTensorEqual(f64([0]).rsqrt(), [Infinity]);
    // erf: odd, erf(0)=0, erf(±∞)=±1; erf(1) = (2/√π)·Σ (−1)ⁿ/(n!(2n+1)) = 0.8427007929497149
    let series = 0;
    let fact = 1;
    for (let n = 0; n < 30; n++) {
      if (n > 0) fact *= n;
      series += (n % 2 ? -1 : 1) / (fact * (2 * n + 1));
    }
    const erf1 = (2 / Math.sqrt(Math.PI)) * series;
    assertClose(f64([0, 1, -1, Infinity, -Infinity]).erf(), [0, erf1, -erf1, 1, -1], { rtol: 1e-14, atol: 0 });
    assertClose(f64([0, erf1, -erf1]).erfinv(), [0, 1, -1], { atol: 1e-12 });
    // tanh(ln 2) = (2 − ½)/(2 + ½) = 0.6; sigmoid(ln 3) = 3/4
    assertClose(f64([0, LN2, -LN2]).tanh(), [0, 0.6, -0.6], { rtol: 1e-15, atol: 1e-16 });
    assertClose(f64([0, LN3, -LN3, 1000, -1000]).sigmoid(), [0.5, 0.75, 0.25, 1, 0], { rtol: 1e-15, atol: 1e-300 });
    // float32 versions agree to float32 precision
    assertClose(tensor([LN3]).sigmoid(), [0.75], { rtol: 1e-6 });
  });

  test('clamp', () => {
    const x = tensor([-1, 0.5, 2]);
    assertTensorEqual(x.clamp(0, 1), [0, 0.5, 1]);
    assertTensorEqual(x.clamp(0), [0, 0.5, 2]);
    assertTensorEqual(x.clamp(null, 0), [-1, 0, 0]);
    assert.throws(() => x.clamp(null, null), /at least one/);
    assertTensorEqual(tensor([-5, 5], { dtype: 'int64' }).clamp(-2, 3), [-2, 3]);
  });

  test('in-place ops', () => {
    const x = tensor([1, 2, 3], { dtype: 'float64' });
    x.add_(tensor([1, 1, 1], { dtype: 'float64' }), 2).mul_(2);
    assertTensorEqual(x, [6, 8, 10]);
    x.add_(1).mul_(tensor([1, 0, 1], { dtype: 'float64' }));
    assertTensorEqual(x, [7, 0, 11]);
    x.addcmul_(f64([1, 2, 3]), f64([2, 2, 2]), 0.5);
    assertTensorEqual(x, [8, 2, 14]);
    x.addcdiv_(f64([4, 4, 4]), f64([2, 4, 8]), 2);
    assertTensorEqual(x, [12, 4, 15]);
    x.clamp_(5, 13);
    assertTensorEqual(x, [12, 5, 13]);
    x.lerp_(f64([0, 0, 0]), 0.25);
    assertTensorEqual(x, [9, 3.75, 9.75]);
    x.copy_(f64([4, 9, 16]));
    x.sqrt_();
    assertTensorEqual(x, [2, 3, 4]);
    x.fill_(3);
    assertTensorEqual(x, [3, 3, 3]);
    x.zero_();
    assertTensorEqual(x, [0, 0, 0]);
    x.erfinv_();
    assertTensorEqual(x, [0, 0, 0]);
    manualSeed(3);
    const u = zeros([1000]).uniform_(-2, -1);
    assert.ok(values(u).every((v) => v >= -2 && v < -1));
    const n = zeros([4000]).normal_(5, 0.5);
    const m = values(n).reduce((a, b) => a + b, 0) / 4000;
    assert.ok(Math.abs(m - 5) < 0.05, `normal_ mean ${m}`);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('comparison and selection', () => {
  test('eq/ne/lt/le/gt/ge with tensors, scalars and broadcasting', () => {
    const x = tensor([1, 2, 3]);
    const y = tensor([3, 2, 1]);
    const c = x.eq(y);
    assert.equal(c.dtype, 'bool');
    assertTensorEqual(c, [0, 1, 0]);
    assertTensorEqual(x.ne(y), [1, 0, 1]);
    assertTensorEqual(x.lt(y), [1, 0, 0]);
    assertTensorEqual(x.le(y), [1, 1, 0]);
    assertTensorEqual(x.gt(y), [0, 0, 1]);
    assertTensorEqual(x.ge(y), [0, 1, 1]);
    assertTensorEqual(x.eq(2), [0, 1, 0]);
    assertTensorEqual(x.gt(1.5), [0, 1, 1]);
    assertTensorEqual(x.le(1), [1, 0, 0]);
    assertTensorEqual(tensor([[1], [2]]).lt(tensor([1, 2, 3])), [0, 1, 1, 0, 0, 1], [2, 3]);
    assertTensorEqual(f64([NaN]).eq(f64([NaN])), [0]);
  });

  test('logical ops, all/any', () => {
    const a = tensor([true, true, false, false], { dtype: 'bool' });
    const b = tensor([true, false, true, false], { dtype: 'bool' });
    assertTensorEqual(a.logicalAnd(b), [1, 0, 0, 0]);
    assertTensorEqual(a.logicalOr(b), [1, 1, 1, 0]);
    assertTensorEqual(a.logicalNot(), [0, 0, 1, 1]);
    assertTensorEqual(tensor([0, 2]).logicalNot(), [1, 0]);
    assert.equal(a.any(), true);
    assert.equal(tensor([1, 2]).all(), true);
  });

  test('all()/any() are false when they should be', () => {
    // BUG (src/engine/tensor.ts all()/any()): they test `t.item() !== 0`, but item() of the bool result is `false`,
    // and `false !== 0` — so both always return true.
    const a = tensor([true, true, false, false], { dtype: 'bool' });
    assert.equal(a.all(), false, 'all() of [true, true, false, false]');
    assert.equal(tensor([0, 0]).any(), false, 'any() of [0, 0]');
    assert.equal(tensor([1, 0]).all(), false, 'all() of [1, 0]');
    assert.equal(tensor([false], { dtype: 'bool' }).any(), false, 'any() of [false]');
  });

  test('where with tensors and scalars', () => {
    const c = tensor([true, false, true], { dtype: 'bool' });
    assertTensorEqual(where(c, tensor([1, 2, 3]), tensor([10, 20, 30])), [1, 20, 3]);
    const w = where(c, f64([1, 2, 3]), 0);
    assert.equal(w.dtype, 'float64');
    assertTensorEqual(w, [1, 0, 3]);
    assertTensorEqual(where(c, -1, tensor([7, 8, 9], { dtype: 'int64' })), [-1, 8, -1]);
    assert.equal(where(c, 1, 2).dtype, 'float32');
    assertTensorEqual(where(c, 1, 2), [1, 2, 1]);
    // broadcasting: cond [2,1], values [3]
    const cb = tensor([[true], [false]], { dtype: 'bool' });
    assertTensorEqual(where(cb, tensor([1, 2, 3]), 0), [1, 2, 3, 0, 0, 0], [2, 3]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('reductions', () => {
  const x = (): Tensor => f64([[1, 2, 3], [4, 5, 6]]);

  test('sum/mean with dims and keepdim', () => {
    assertTensorEqual(x().sum(), [21], []);
    assertTensorEqual(x().sum(0), [5, 7, 9], [3]);
    assertTensorEqual(x().sum(1, true), [6, 15], [2, 1]);
    assertTensorEqual(x().sum(-1), [6, 15], [2]);
    assertTensorEqual(x().sum([0, 1]), [21], []);
    assertTensorEqual(x().sum([0, 1], true), [21], [1, 1]);
    const i = tensor([1, 2, 3], { dtype: 'int32' });
    assert.equal(i.sum().dtype, 'int64'); // integer sums accumulate in int64
    assert.equal(i.sum(undefined, false, 'float64').dtype, 'float64');
    assertTensorEqual(tensor([true, true, false], { dtype: 'bool' }).sum(), [2]);
    assertTensorEqual(x().mean(), [3.5], []);
    assertTensorEqual(x().mean(1), [2, 5]);
    assertTensorEqual(x().mean(0, true), [2.5, 3.5, 4.5], [1, 3]);
    assertTensorEqual(x().mean([0, 1]), [3.5]);
  });

  test('max/min/argmax/argmin/amax/amin', () => {
    const t = f64([[1, 5, 3], [4, 2, 6]]);
    assertTensorEqual(t.max(), [6], []);
    assertTensorEqual(t.min(), [1], []);
    const m1 = t.max(1);
    assertTensorEqual(m1.values, [5, 6], [2]);
    assertTensorEqual(m1.indices, [1, 2], [2]);
    assert.equal(m1.indices.dtype, 'int64');
    const m0 = t.max(0, true);
    assertTensorEqual(m0.values, [4, 5, 6], [1, 3]);
    assertTensorEqual(m0.indices, [1, 0, 1], [1, 3]);
    const n1 = t.min(1);
    assertTensorEqual(n1.values, [1, 2]);
    assertTensorEqual(n1.indices, [0, 1]);
    assertTensorEqual(t.min(-2, true).values, [1, 2, 3], [1, 3]);
    assertTensorEqual(t.argmax(), [5], []);
    assertTensorEqual(t.argmax(1), [1, 2]);
    assertTensorEqual(t.argmax(0, true), [1, 0, 1], [1, 3]);
    assertTensorEqual(t.argmin(), [0], []);
    assertTensorEqual(t.argmin(1), [0, 1]);
    assertTensorEqual(t.amax(1), [5, 6]);
    assertTensorEqual(t.amax([0, 1], true), [6], [1, 1]);
    assertTensorEqual(t.amin(0), [1, 2, 3]);
  });

  test('var/std (Bessel-corrected by default), norm, cumsum', () => {
    // all of 1..6: mean 3.5, Σ(x−m)² = 17.5 → unbiased 17.5/5 = 3.5, biased 17.5/6
    assertClose(x().var(), [3.5], { shape: [] });
    assertClose(x().var(undefined, { unbiased: false }), [17.5 / 6]);
    assertClose(x().std(), [Math.sqrt(3.5)]);
    assertClose(x().std(undefined, { unbiased: false }), [Math.sqrt(17.5 / 6)]);
    // rows [1,2,3], [4,5,6]: Σ(x−m)² = 2 → 1 (unbiased), 2/3 (biased)
    assertClose(x().var(1), [1, 1], { shape: [2] });
    assertClose(x().var(1, { unbiased: false, keepdim: true }), [2 / 3, 2 / 3], { shape: [2, 1] });
    // columns [1,4] etc: Σ(x−m)² = 4.5 → 4.5 unbiased
    assertClose(x().var(0, { keepdim: true }), [4.5, 4.5, 4.5], { shape: [1, 3] });
    assertClose(x().std(0), [Math.sqrt(4.5), Math.sqrt(4.5), Math.sqrt(4.5)]);
    assertClose(x().var([0, 1]), [3.5]);
    assertClose(f64([3, 4]).norm(), [5]);
    assertClose(f64([3, -4]).norm(1), [7]);
    assertClose(f64([[3, 4], [6, 8]]).norm(2, 1), [5, 10], { shape: [2] });
    assertClose(f64([[3, 4], [6, 8]]).norm(2, 1, true), [5, 10], { shape: [2, 1] });
    assertTensorEqual(f64([1, 2, 3, 4]).cumsum(0), [1, 3, 6, 10]);
    assertTensorEqual(f64([[1, 2], [3, 4]]).cumsum(1), [1, 3, 3, 7]);
    assertTensorEqual(f64([[1, 2], [3, 4]]).cumsum(0), [1, 2, 4, 6]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('shape operations', () => {
  const x23 = (): Tensor => f64([[0, 1, 2], [3, 4, 5]]);

  test('view/reshape/flatten/unflatten', () => {
    const a = arange(6, undefined, 1, { dtype: 'float64' });
    assert.deepEqual(a.view(2, 3).toArray(), [[0, 1, 2], [3, 4, 5]]);
    assert.deepEqual(a.view(-1, 2).shape, [3, 2]);
    assert.deepEqual(a.reshape(3, 2).toArray(), [[0, 1], [2, 3], [4, 5]]);
    assert.deepEqual(x23().view(-1).shape, [6]);
    // view needs compatible strides; reshape copies
    assert.throws(() => x23().transpose(0, 1).view(6), /view/);
    assertTensorEqual(x23().transpose(0, 1).reshape(6), [0, 3, 1, 4, 2, 5]);
    const b = arange(24).reshape(2, 3, 4);
    assert.deepEqual(b.flatten().shape, [24]);
    assert.deepEqual(b.flatten(1).shape, [2, 12]);
    assert.deepEqual(b.flatten(0, 1).shape, [6, 4]);
    assert.deepEqual(b.unflatten(2, [2, 2]).shape, [2, 3, 2, 2]);
    assert.deepEqual(b.unflatten(-1, [4, 1]).shape, [2, 3, 4, 1]);
    assertTensorEqual(b.flatten(1), values(b));
  });

  test('permute/transpose', () => {
    const b = arange(24).reshape(2, 3, 4); // b[i][j][k] = 12i + 4j + k
    const p = b.permute(2, 0, 1);
    assert.deepEqual(p.shape, [4, 2, 3]);
    const exp: number[] = [];
    for (let k = 0; k < 4; k++) for (let i = 0; i < 2; i++) for (let j = 0; j < 3; j++) exp.push(12 * i + 4 * j + k);
    assertTensorEqual(p, exp);
    assert.deepEqual(x23().transpose(0, 1).toArray(), [[0, 3], [1, 4], [2, 5]]);
    assert.deepEqual(x23().transpose(-1, -2).toArray(), [[0, 3], [1, 4], [2, 5]]);
    assert.deepEqual(b.transpose(0, 2).shape, [4, 3, 2]);
  });

  test('unsqueeze/squeeze/expand/repeat/flip', () => {
    assert.deepEqual(x23().unsqueeze(0).shape, [1, 2, 3]);
    assert.deepEqual(x23().unsqueeze(-1).shape, [2, 3, 1]);
    assert.deepEqual(x23().unsqueeze(1).shape, [2, 1, 3]);
    const s = zeros([1, 2, 1, 3]);
    assert.deepEqual(s.squeeze().shape, [2, 3]);
    assert.deepEqual(s.squeeze(0).shape, [2, 1, 3]);
    assert.deepEqual(s.squeeze(2).shape, [1, 2, 3]);
    assert.deepEqual(s.squeeze(1).shape, [1, 2, 1, 3]); // size 2: unchanged
    const c = tensor([[1], [2], [3]]);
    const e = c.expand(3, 4);
    assert.deepEqual(e.toArray(), [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]]);
    assert.deepEqual(e.strides(), [1, 0]);
    assert.deepEqual(c.expand(2, -1, 2).shape, [2, 3, 2]);
    assert.deepEqual(tensor([1, 2]).expandAs(zeros([3, 2])).toArray(), [[1, 2], [1, 2], [1, 2]]);
    assert.deepEqual(tensor([1, 2]).repeat(2, 2).toArray(), [[1, 2, 1, 2], [1, 2, 1, 2]]);
    assert.deepEqual(tensor([[1, 2]]).repeat(2, 1).toArray(), [[1, 2], [1, 2]]);
    assert.deepEqual(x23().flip(1).toArray(), [[2, 1, 0], [5, 4, 3]]);
    assert.deepEqual(x23().flip(0, 1).toArray(), [[5, 4, 3], [2, 1, 0]]);
  });

  test('cat/stack', () => {
    const a = tensor([[1, 2]]);
    const b = tensor([[3, 4], [5, 6]]);
    assert.deepEqual(cat([a, b]).toArray(), [[1, 2], [3, 4], [5, 6]]);
    assert.deepEqual(cat([b, b], 1).toArray(), [[3, 4, 3, 4], [5, 6, 5, 6]]);
    assert.deepEqual(cat([b, b], -1).shape, [2, 4]);
    assert.deepEqual(cat([a]).toArray(), [[1, 2]]);
    assert.throws(() => cat([]), /at least one/);
    const u = tensor([1, 2]);
    const v = tensor([3, 4]);
    assert.deepEqual(stack([u, v]).toArray(), [[1, 2], [3, 4]]);
    assert.deepEqual(stack([u, v], 1).toArray(), [[1, 3], [2, 4]]);
    assert.deepEqual(stack([u, v, u], -1).shape, [2, 3]);
    assert.throws(() => stack([]), /at least one/);
  });

  test('split/chunk/unbind', () => {
    const a = arange(5);
    assert.deepEqual(a.split(2).map((t) => t.toArray()), [[0, 1], [2, 3], [4]]);
    assert.deepEqual(a.split([1, 4]).map((t) => t.toArray()), [[0], [1, 2, 3, 4]]);
    assert.deepEqual(x23().split(1, 1).map((t) => t.toArray()), [[[0], [3]], [[1], [4]], [[2], [5]]]);
    assert.deepEqual(x23().split([2, 1], -1).map((t) => t.shape), [[2, 2], [2, 1]]);
    // chunk: chunks of ceil(n/k)
    assert.deepEqual(a.chunk(3).map((t) => t.toArray()), [[0, 1], [2, 3], [4]]);
    assert.deepEqual(arange(6).chunk(3).map((t) => t.toArray()), [[0, 1], [2, 3], [4, 5]]);
    assert.deepEqual(x23().chunk(2, 0).map((t) => t.toArray()), [[[0, 1, 2]], [[3, 4, 5]]]);
    assert.deepEqual(x23().unbind(1).map((t) => t.toArray()), [[0, 3], [1, 4], [2, 5]]);
    assert.deepEqual(x23().unbind().map((t) => t.shape), [[3], [3]]);
  });

  test('narrow/slice/select', () => {
    assert.deepEqual(x23().narrow(1, 1, 2).toArray(), [[1, 2], [4, 5]]);
    assert.deepEqual(x23().narrow(0, 1, 1).toArray(), [[3, 4, 5]]);
    assert.deepEqual(x23().slice(1, 0, null, 2).toArray(), [[0, 2], [3, 5]]);
    assert.deepEqual(x23().slice(0, -1).toArray(), [[3, 4, 5]]);
    assert.deepEqual(x23().slice(0, 0, -1).toArray(), [[0, 1, 2]]);
    assert.deepEqual(x23().slice(1, 1).toArray(), [[1, 2], [4, 5]]);
    assert.deepEqual(x23().slice(1, null, 2).toArray(), [[0, 1], [3, 4]]);
    assert.deepEqual(x23().slice(1, 5, 10).shape, [2, 0]); // out-of-range bounds clamp, as in Python
    assert.deepEqual(x23().select(1, 2).toArray(), [2, 5]);
    assert.deepEqual(x23().select(0, -1).toArray(), [3, 4, 5]);
    assert.deepEqual(x23().select(0, 0).shape, [3]);
  });

  test('indexSelect/gather/scatterAdd/maskedFill', () => {
    assert.deepEqual(x23().indexSelect(1, i64([2, 0])).toArray(), [[2, 0], [5, 3]]);
    assert.deepEqual(x23().indexSelect(0, i64([1, 1, 0])).toArray(), [[3, 4, 5], [3, 4, 5], [0, 1, 2]]);
    // gather dim 1: out[i][j] = x[i][idx[i][j]]
    assert.deepEqual(f64([[1, 2], [3, 4]]).gather(1, i64([[0, 0], [1, 0]])).toArray(), [[1, 1], [4, 3]]);
    // gather dim 0: out[i][j] = x[idx[i][j]][j]
    assert.deepEqual(f64([[1, 2], [3, 4]]).gather(0, i64([[1, 0], [1, 1]])).toArray(), [[3, 2], [3, 4]]);
    // scatterAdd: out[idx[i]] += src[i]
    assertTensorEqual(zeros([3], { dtype: 'float64' }).scatterAdd(0, i64([0, 1, 0, 2]), f64([1, 2, 3, 4])), [4, 2, 4]);
    const s2 = zeros([2, 3], { dtype: 'float64' }).scatterAdd(1, i64([[0, 0, 2], [1, 1, 1]]), f64([[1, 2, 3], [4, 5, 6]]));
    assert.deepEqual(s2.toArray(), [[3, 0, 3], [0, 15, 0]]);
    const base = f64([5, 5, 5]);
    base.scatterAdd(0, i64([0]), f64([1])); // out of place
    assertTensorEqual(base, [5, 5, 5]);
    const m = tensor([[true, false, true], [false, false, true]], { dtype: 'bool' });
    assert.deepEqual(x23().maskedFill(m, -1).toArray(), [[-1, 1, -1], [3, 4, -1]]);
    assert.deepEqual(x23().maskedFill(m, scalarTensor(9, { dtype: 'float64' })).toArray(), [[9, 1, 9], [3, 4, 9]]);
    assert.deepEqual(x23().maskedFill(tensor([true, false, false], { dtype: 'bool' }), -Infinity).toArray(),
      [[-Infinity, 1, 2], [-Infinity, 4, 5]]);
  });

  test('pad: constant, reflect, replicate', () => {
    const x = tensor([[1, 2], [3, 4]]);
    assert.deepEqual(pad(x, [1, 0], 'constant', 9).toArray(), [[9, 1, 2], [9, 3, 4]]);
    assert.deepEqual(pad(x, [0, 0, 1, 1]).toArray(), [[0, 0], [1, 2], [3, 4], [0, 0]]);
    assert.deepEqual(pad(x, [1, 2, 0, 1], 'constant', -1).toArray(),
      [[-1, 1, 2, -1, -1], [-1, 3, 4, -1, -1], [-1, -1, -1, -1, -1]]);
    // negative padding crops
    assert.deepEqual(pad(x, [-1, 0]).toArray(), [[2], [4]]);
    const r = tensor([[[1, 2, 3]]]);
    // reflect (no edge repeat): indices −2,−1 → 2,1; 3 → 1
    assert.deepEqual(pad(r, [2, 1], 'reflect').toArray(), [[[3, 2, 1, 2, 3, 2]]]);
    assert.deepEqual(pad(r, [2, 1], 'replicate').toArray(), [[[1, 1, 1, 2, 3, 3]]]);
    const q = tensor([[[[1, 2], [3, 4]]]]);
    assert.deepEqual(pad(q, [1, 1, 1, 1], 'reflect').toArray(),
      [[[[4, 3, 4, 3], [2, 1, 2, 1], [4, 3, 4, 3], [2, 1, 2, 1]]]]);
    assert.deepEqual(pad(q, [1, 0, 0, 1], 'replicate').toArray(), [[[[1, 1, 2], [3, 3, 4], [3, 3, 4]]]]);
    assert.throws(() => pad(q, [1, 1, 1, 1, 1, 1], 'reflect'), /2 or 4/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('linear algebra', () => {
  test('matmul (2-d, vector, broadcast batch), bmm', () => {
    const a = f64([[1, 2], [3, 4]]);
    const b = f64([[5, 6], [7, 8]]);
    assert.deepEqual(a.matmul(b).toArray(), [[19, 22], [43, 50]]);
    assert.deepEqual(matmul(a, f64([1, 1])).toArray(), [3, 7]);
    assert.deepEqual(matmul(f64([1, 1]), a).toArray(), [4, 6]);
    assert.deepEqual(matmul(f64([1, 2]), f64([3, 4])).toArray(), 11);
    const batch = stack([a, b]); // [2,2,2]
    const r = matmul(batch, f64([[1, 0], [0, 2]]));
    assert.deepEqual(r.toArray(), [[[1, 4], [3, 8]], [[5, 12], [7, 16]]]);
    const r2 = matmul(zeros([3, 1, 2, 4], { dtype: 'float64' }), zeros([5, 4, 6], { dtype: 'float64' }));
    assert.deepEqual(r2.shape, [3, 5, 2, 6]);
    const i2 = eye(2, undefined, { dtype: 'float64' });
    assert.deepEqual(bmm(stack([i2, i2.mul(2)]), stack([a, b])).toArray(), [[[1, 2], [3, 4]], [[10, 12], [14, 16]]]);
    // float32 matmul of a larger product vs a JS loop
    const n = 17;
    const x = uniform(n * n, 1);
    const y = uniform(n * n, 2);
    const exp: number[] = [];
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += Math.fround(x[i * n + k]!) * Math.fround(y[k * n + j]!);
      exp.push(s);
    }
    assertClose(tensor(x, { shape: [n, n] }).matmul(tensor(y, { shape: [n, n] })), exp, { atol: 1e-5, rtol: 1e-5 });
  });

  test('linear with and without bias', () => {
    const x = f64([[1, 2, 3], [0, 1, 0]]);
    const w = f64([[1, 0, 1], [0, 1, 0]]);
    assert.deepEqual(linear(x, w, f64([10, 20])).toArray(), [[14, 22], [10, 21]]);
    assert.deepEqual(linear(x, w).toArray(), [[4, 2], [0, 1]]);
    assert.deepEqual(linear(x, w, null).toArray(), [[4, 2], [0, 1]]);
    assert.deepEqual(linear(zeros([4, 5, 3], { dtype: 'float64' }), w).shape, [4, 5, 2]);
  });

  test('einsum', () => {
    const a = f64([[1, 2], [3, 4]]);
    const b = f64([[5, 6], [7, 8]]);
    assert.deepEqual(einsum('ij,jk->ik', a, b).toArray(), [[19, 22], [43, 50]]);
    assert.deepEqual(einsum('ii->', a).toArray(), 5);
    assert.deepEqual(einsum('ij->ji', a).toArray(), [[1, 3], [2, 4]]);
    assert.deepEqual(einsum('i,j->ij', f64([1, 2]), f64([3, 4, 5])).toArray(), [[3, 4, 5], [6, 8, 10]]);
    assert.deepEqual(einsum('bij,bjk->bik', stack([a, b]), stack([b, a])).toArray(),
      [[[19, 22], [43, 50]], [[23, 34], [31, 46]]]);
    assert.deepEqual(einsum('ij,ij->i', a, b).toArray(), [17, 53]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('convolution', () => {
  test('conv2d by hand: 2×2 ones kernel over x = 4i + j', () => {
    const w = ones([1, 1, 2, 2], { dtype: 'float64' });
    // out[i][j] = x[i][j] + x[i][j+1] + x[i+1][j] + x[i+1][j+1] = 16i + 4j + 10
    const o = conv2d(grid4(), w);
    assert.deepEqual(o.shape, [1, 1, 3, 3]);
    assertTensorEqual(o, [10, 14, 18, 26, 30, 34, 42, 46, 50]);
    // stride 2 picks (2i, 2j): 32i + 8j + 10; bias adds
    assertTensorEqual(conv2d(grid4(), w, f64([1]), { stride: 2 }), [11, 19, 43, 51], [1, 1, 2, 2]);
    // dilation 2: taps (i,j), (i,j+2), (i+2,j), (i+2,j+2) → 16i + 4j + 20
    assertTensorEqual(conv2d(grid4(), w, null, { dilation: 2 }), [20, 24, 36, 40], [1, 1, 2, 2]);
    // padding 1 with a 3×3 ones kernel on 1..9: centre 45, corner 1+2+4+5 = 12, edge 1+2+3+4+5+6 = 21
    const x3 = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], { dtype: 'float64', shape: [1, 1, 3, 3] });
    assertTensorEqual(conv2d(x3, ones([1, 1, 3, 3], { dtype: 'float64' }), null, { padding: 1 }),
      [12, 21, 16, 27, 45, 33, 24, 39, 28], [1, 1, 3, 3]);
    // asymmetric padding [0, 1]: only width is padded
    assert.deepEqual(conv2d(x3, ones([1, 1, 3, 3], { dtype: 'float64' }), null, { padding: [0, 1] }).shape, [1, 1, 1, 3]);
    // groups = 2, 1×1 kernels 2 and 3: each channel scaled separately
    const x2 = tensor([1, 2, 3, 4, 10, 20, 30, 40], { dtype: 'float64', shape: [1, 2, 2, 2] });
    const wg = tensor([2, 3], { dtype: 'float64', shape: [2, 1, 1, 1] });
    assertTensorEqual(conv2d(x2, wg, null, { groups: 2 }), [2, 4, 6, 8, 30, 60, 90, 120], [1, 2, 2, 2]);
    // groups = 1 with the same channels summed: weights [[2, 3]]
    assertTensorEqual(conv2d(x2, tensor([2, 3], { dtype: 'float64', shape: [1, 2, 1, 1] })), [32, 64, 96, 128], [1, 1, 2, 2]);
  });

  test('conv2d with stride, padding, dilation and groups together vs a naive loop', () => {
    const xs: [number, number, number, number] = [2, 4, 7, 6];
    const ws: [number, number, number, number] = [6, 2, 3, 2];
    const x = uniform(2 * 4 * 7 * 6, 11);
    const w = uniform(6 * 2 * 3 * 2, 12);
    const b = uniform(6, 13);
    const opts = { stride: [2, 1] as [number, number], padding: [1, 2] as [number, number], dilation: [1, 2] as [number, number], groups: 2 };
    const ref = refConv2d(x, xs, w, ws, b, opts);
    const out = conv2d(f64(x, xs), f64(w, ws), f64(b), opts);
    assertClose(out, ref.data, { shape: ref.shape, atol: 1e-12, rtol: 1e-12 });
    // float32
    const out32 = conv2d(tensor(x, { shape: xs }), tensor(w, { shape: ws }), tensor(b), opts);
    assert.equal(out32.dtype, 'float32');
    assertClose(out32, ref.data, { shape: ref.shape, atol: 1e-5, rtol: 1e-5 });
  });

  test('convTranspose2d by hand', () => {
    const x = tensor([1, 2, 3, 4], { dtype: 'float64', shape: [1, 1, 2, 2] });
    const w = ones([1, 1, 2, 2], { dtype: 'float64' });
    // stride 2: every input pixel becomes a 2×2 block
    assert.deepEqual(convTranspose2d(x, w, null, { stride: 2 }).toArray(),
      [[[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]]);
    // stride 1: overlapping blocks add
    assert.deepEqual(convTranspose2d(x, w).toArray(), [[[[1, 3, 2], [4, 10, 6], [3, 7, 4]]]]);
    // padding 1 crops one pixel on each side of the stride-1 result
    assert.deepEqual(convTranspose2d(x, w, null, { padding: 1 }).toArray(), [[[[10]]]]);
    // output padding adds a row and a column at the end (zeros here), bias everywhere
    const op = convTranspose2d(x, w, f64([0.5]), { stride: 2, outputPadding: 1 });
    assert.deepEqual(op.toArray(), [[[
      [1.5, 1.5, 2.5, 2.5, 0.5], [1.5, 1.5, 2.5, 2.5, 0.5], [3.5, 3.5, 4.5, 4.5, 0.5], [3.5, 3.5, 4.5, 4.5, 0.5],
      [0.5, 0.5, 0.5, 0.5, 0.5]]]]);
  });

  test('convTranspose2d with groups, stride, padding, dilation, output padding vs a naive loop', () => {
    const xs: [number, number, number, number] = [2, 4, 3, 4];
    const ws: [number, number, number, number] = [4, 3, 3, 2]; // C_in × C_out/groups × kH × kW
    const x = uniform(2 * 4 * 3 * 4, 21);
    const w = uniform(4 * 3 * 3 * 2, 22);
    const b = uniform(6, 23);
    const opts = {
      stride: [2, 3] as [number, number], padding: [1, 0] as [number, number], dilation: [1, 2] as [number, number],
      outputPadding: [1, 2] as [number, number], groups: 2,
    };
    const ref = refConvTranspose2d(x, xs, w, ws, b, opts);
    assertClose(convTranspose2d(f64(x, xs), f64(w, ws), f64(b), opts), ref.data, { shape: ref.shape, atol: 1e-12, rtol: 1e-12 });
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('normalisation', () => {
  // channel 0: [1, 2, 3] (mean 2, biased var 2/3, unbiased 1); channel 1: [2, 4, 6] (mean 4, 8/3, 4)
  const x = (): Tensor => f64([[1, 2], [2, 4], [3, 6]]);
  const eps = 1e-5;

  test('batchNorm in training: batch statistics, running stats updated with the unbiased variance', () => {
    const rm = f64([0, 0]);
    const rv = f64([1, 1]);
    const w = f64([1, 2]);
    const b = f64([0, 1]);
    const out = batchNorm(x(), rm, rv, w, b, true, 0.1, eps);
    const s0 = Math.sqrt(2 / 3 + eps);
    const s1 = Math.sqrt(8 / 3 + eps);
    assertClose(out, [-1 / s0, (-2 / s1) * 2 + 1, 0, 1, 1 / s0, (2 / s1) * 2 + 1], { shape: [3, 2], atol: 1e-12 });
    // running = (1 − m)·running + m·batch (unbiased variance)
    assertClose(rm, [0.2, 0.4], { atol: 1e-15 });
    assertClose(rv, [0.9 + 0.1 * 1, 0.9 + 0.1 * 4], { atol: 1e-15 });
    // without running stats (track_running_stats=False) and without affine
    const plain = batchNorm(x(), null, null, null, null, true, 0.1, eps);
    assertClose(plain, [-1 / s0, -2 / s1, 0, 0, 1 / s0, 2 / s1], { atol: 1e-12 });
  });

  test('batchNorm in eval uses the running statistics and leaves them alone', () => {
    const rm = f64([1, 2]);
    const rv = f64([4, 9]);
    const out = batchNorm(x(), rm, rv, f64([1, 2]), f64([0, 1]), false, 0.1, eps);
    const a = Math.sqrt(4 + eps);
    const c = Math.sqrt(9 + eps);
    assertClose(out, [0, 0 * 2 + 1, 1 / a, (2 / c) * 2 + 1, 2 / a, (4 / c) * 2 + 1], { atol: 1e-12 });
    assertTensorEqual(rm, [1, 2]);
    assertTensorEqual(rv, [4, 9]);
  });

  test('batchNorm on N×C×H×W normalises each channel over N, H, W', () => {
    // channel 0 = {0, 2, 4, 6} (mean 3, biased var 5), channel 1 = {1, 1, 1, 1} (var 0)
    const t = tensor([0, 2, 1, 1, 4, 6, 1, 1], { dtype: 'float64', shape: [2, 2, 1, 2] });
    const out = batchNorm(t, null, null, null, null, true, 0.1, eps);
    const s = Math.sqrt(5 + eps);
    assertClose(out, [-3 / s, -1 / s, 0, 0, 1 / s, 3 / s, 0, 0], { atol: 1e-12, shape: [2, 2, 1, 2] });
  });

  test('layerNorm over the last dim and over the last two dims', () => {
    const t = f64([[1, 2, 3], [2, 4, 6]]);
    const s0 = Math.sqrt(2 / 3 + eps);
    const s1 = Math.sqrt(8 / 3 + eps);
    assertClose(layerNorm(t, [3]), [-1 / s0, 0, 1 / s0, -2 / s1, 0, 2 / s1], { atol: 1e-12 });
    const w = f64([1, 2, 3]);
    const b = f64([0, 0, 1]);
    assertClose(layerNorm(t, [3], w, b), [-1 / s0, 0, 3 / s0 + 1, -2 / s1, 0, 6 / s1 + 1], { atol: 1e-12 });
    // over both dims: mean 3, Σ(x−3)² = 4+1+0+1+1+9 = 16 → biased var 16/6
    const s = Math.sqrt(16 / 6 + eps);
    assertClose(layerNorm(t, [2, 3]), [-2 / s, -1 / s, 0, -1 / s, 1 / s, 3 / s], { atol: 1e-12 });
    assertClose(layerNorm(t, [3], null, null, 0.5), [-1 / Math.sqrt(2 / 3 + 0.5), 0, 1 / Math.sqrt(2 / 3 + 0.5),
      -2 / Math.sqrt(8 / 3 + 0.5), 0, 2 / Math.sqrt(8 / 3 + 0.5)], { atol: 1e-12 });
  });

  test('groupNorm', () => {
    // 4 channels, 2 groups: {1, 3} (mean 2, var 1) and {5, 9} (mean 7, var 4)
    const t = tensor([1, 3, 5, 9], { dtype: 'float64', shape: [1, 4, 1, 1] });
    const a = 1 / Math.sqrt(1 + eps);
    const c = 2 / Math.sqrt(4 + eps);
    assertClose(groupNorm(t, 2), [-a, a, -c, c], { atol: 1e-12, shape: [1, 4, 1, 1] });
    assertClose(groupNorm(t, 2, f64([1, 2, 3, 4]), f64([0, 0, 0, 1])), [-a, 2 * a, -3 * c, 4 * c + 1], { atol: 1e-12 });
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('activations', () => {
  test('relu/gelu (erf and tanh)/silu', () => {
    assertTensorEqual(relu(tensor([-1, 0, 2])), [0, 0, 2]);
    // gelu(x) = x·Φ(x); Φ(1) = 0.8413447460685429, Φ(−1) = 1 − Φ(1)
    const phi1 = 0.8413447460685429;
    assertClose(gelu(f64([0, 1, -1, 10, -10])), [0, phi1, -(1 - phi1), 10, 0], { atol: 1e-15, rtol: 1e-14 });
    assertClose(gelu(f64([1]), 'erf'), [phi1], { rtol: 1e-14 });
    const tanhGelu = (v: number): number => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
    const xs = [-3, -1, -0.5, 0, 0.5, 1, 2];
    assertClose(gelu(f64(xs), 'tanh'), xs.map(tanhGelu), { atol: 1e-15, rtol: 1e-14 });
    // the two GELUs differ slightly
    assert.ok(Math.abs(values(gelu(f64([1]), 'tanh'))[0]! - phi1) > 1e-5);
    // silu(x) = x·σ(x): silu(ln 3) = ln 3 · 3/4
    assertClose(silu(f64([0, LN3, -LN3])), [0, LN3 * 0.75, -LN3 * 0.25], { rtol: 1e-15 });
  });

  test('softmax/logSoftmax', () => {
    // exp([0, ln2, ln3]) = [1, 2, 3] → [1/6, 1/3, 1/2]
    const t = f64([[0, LN2, LN3], [5, 5, 5]]);
    assertClose(softmax(t, 1), [1 / 6, 1 / 3, 1 / 2, 1 / 3, 1 / 3, 1 / 3], { rtol: 1e-15, shape: [2, 3] });
    assertClose(softmax(t, -1), [1 / 6, 1 / 3, 1 / 2, 1 / 3, 1 / 3, 1 / 3], { rtol: 1e-15 });
    assertClose(logSoftmax(t, 1), [-Math.log(6), -Math.log(3), -LN2, -Math.log(3), -Math.log(3), -Math.log(3)], { rtol: 1e-15 });
    // along dim 0: column [0, 5] → [1/(1+e⁵), e⁵/(1+e⁵)]
    const e5 = Math.exp(5);
    assertClose(softmax(f64([[0], [5]]), 0), [1 / (1 + e5), e5 / (1 + e5)], { rtol: 1e-14 });
    // numerically stable with large logits
    assertClose(softmax(tensor([1000, 1000]), 0), [0.5, 0.5]);
    assertClose(logSoftmax(tensor([1000, 0]), 0), [0, -1000], { atol: 1e-3 });
    assertClose(softmax(tensor([0, -Infinity]), 0), [1, 0]);
  });

  test('dropout: eval identity; training zeros a fraction p and scales by 1/(1−p)', () => {
    const x = ones([20000]);
    const e = dropout(x, 0.5, false);
    assertTensorEqual(e, values(x));
    manualSeed(99);
    for (const p of [0.5, 0.2]) {
      const d = values(dropout(x, p, true));
      const zeros = d.filter((v) => v === 0).length / d.length;
      assert.ok(Math.abs(zeros - p) < 0.02, `p=${p}: zero fraction ${zeros}`);
      const kept = d.filter((v) => v !== 0);
      const scale = Math.fround(1 / (1 - p));
      assert.ok(kept.every((v) => Math.abs(v - scale) < 1e-6), `p=${p}: kept values scaled by 1/(1-p)`);
    }
    assertTensorEqual(dropout(tensor([1, 2, 3]), 0, true), [1, 2, 3]);
    assertTensorEqual(dropout(tensor([1, 2, 3]), 1, true), [0, 0, 0]);
    assert.throws(() => dropout(x, 1.5, true), /p must be in/);
    assert.throws(() => dropout(x, -0.1, false), /p must be in/);
    // deterministic under manualSeed
    manualSeed(5);
    const a = values(dropout(ones([100]), 0.5, true));
    manualSeed(5);
    assert.deepEqual(values(dropout(ones([100]), 0.5, true)), a);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('interpolate', () => {
  const x22 = (): Tensor => tensor([1, 2, 3, 4], { dtype: 'float64', shape: [1, 1, 2, 2] });

  test('nearest up and down', () => {
    assert.deepEqual(interpolate(x22(), { size: 4 }).toArray(),
      [[[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]]);
    assert.deepEqual(interpolate(x22(), { scaleFactor: 2 }).toArray(),
      [[[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]]]);
    // down: src = floor(dst · in/out) = 2·dst → rows/cols 0 and 2 of x = 4i + j
    assert.deepEqual(interpolate(grid4(), { size: 2 }).toArray(), [[[[0, 2], [8, 10]]]]);
    // non-square size [1, 3] from 2×2: rows floor(0·2) = 0; cols floor(dst·2/3) = 0, 0, 1
    assert.deepEqual(interpolate(x22(), { size: [1, 3] }).toArray(), [[[[1, 1, 2]]]]);
  });

  test('bilinear 2×2 → 4×4, half-pixel centres (alignCorners false)', () => {
    // src = (dst + ½)/2 − ½ = dst/2 − ¼, clamped at 0 → 0, ¼, ¾, 1¼ (→ last pixel)
    // 1-d weights for [a, b]: [a, ¾a + ¼b, ¼a + ¾b, b]
    const r0 = [1, 1.25, 1.75, 2];
    const exp = [r0, r0.map((v) => v + 0.5), r0.map((v) => v + 1.5), r0.map((v) => v + 2)];
    assertClose(interpolate(x22(), { size: 4, mode: 'bilinear' }), exp, { shape: [1, 1, 4, 4], atol: 1e-15 });
    assertClose(interpolate(x22(), { size: [4, 4], mode: 'bilinear', alignCorners: false }), exp, { atol: 1e-15 });
    assertClose(interpolate(x22(), { scaleFactor: 2, mode: 'bilinear' }), exp, { atol: 1e-15 });
  });

  test('bilinear alignCorners true', () => {
    // src = dst·(in−1)/(out−1) = dst/3 → row k = [1, 4/3, 5/3, 2] + 2k/3
    const r0 = [1, 4 / 3, 5 / 3, 2];
    const exp = [0, 1, 2, 3].map((k) => r0.map((v) => v + (2 * k) / 3));
    assertClose(interpolate(x22(), { size: 4, mode: 'bilinear', alignCorners: true }), exp, { atol: 1e-15 });
  });

  test('bilinear: scaleFactor scales coordinates by 1/s, size by in/out', () => {
    // on x[j] = j linear interpolation returns the (clamped) source coordinate itself
    const ramp = tensor([0, 1, 2], { dtype: 'float64', shape: [1, 1, 1, 3] });
    // scaleFactor 1.5: out = floor(4.5) = 4; src = (d + ½)/1.5 − ½ = −1/6→0, ½, 7/6, 11/6
    assertClose(interpolate(ramp, { scaleFactor: [1, 1.5], mode: 'bilinear' }), [0, 0.5, 7 / 6, 11 / 6],
      { shape: [1, 1, 1, 4], atol: 1e-15 });
    // size 4: src = (d + ½)·¾ − ½ = −⅛→0, ⅝, 1⅜, 2⅛→2
    assertClose(interpolate(ramp, { size: [1, 4], mode: 'bilinear' }), [0, 0.625, 1.375, 2], { atol: 1e-15 });
    // downsampling 4 → 2 with alignCorners false: src = 2d + ½ → 0.5, 2.5
    const ramp4 = tensor([0, 1, 2, 3], { dtype: 'float64', shape: [1, 1, 1, 4] });
    assertClose(interpolate(ramp4, { size: [1, 2], mode: 'bilinear' }), [0.5, 2.5], { atol: 1e-15 });
    assertClose(interpolate(ramp4, { size: [1, 3], mode: 'bilinear', alignCorners: true }), [0, 1.5, 3], { atol: 1e-15 });
  });

  test('bicubic (A = −0.75) vs the cubic-convolution definition', () => {
    const src = uniform(3 * 4, 31);
    const x = tensor(src, { dtype: 'float64', shape: [1, 1, 3, 4] });
    for (const ac of [false, true]) {
      assertClose(interpolate(x, { size: [5, 7], mode: 'bicubic', alignCorners: ac }), refBicubic(src, 3, 4, 5, 7, ac),
        { shape: [1, 1, 5, 7], atol: 1e-12, msg: `alignCorners ${ac}` });
      assertClose(interpolate(x, { size: [2, 3], mode: 'bicubic', alignCorners: ac }), refBicubic(src, 3, 4, 2, 3, ac),
        { atol: 1e-12, msg: `down, alignCorners ${ac}` });
    }
    assertClose(interpolate(x, { scaleFactor: 1.5, mode: 'bicubic' }), refBicubic(src, 3, 4, 4, 6, false, [1 / 1.5, 1 / 1.5]),
      { shape: [1, 1, 4, 6], atol: 1e-12 });
    // hand check: a constant image stays constant (the weights sum to 1); with alignCorners on a 2× grid of
    // 2 → 3 the middle sample is at t = ½ where the weights are [−0.09375, 0.59375, 0.59375, −0.09375]
    assertClose(interpolate(full([1, 1, 2, 2], 3, { dtype: 'float64' }), { size: 5, mode: 'bicubic' }), new Array(25).fill(3), { atol: 1e-14 });
    const line = tensor([0, 1], { dtype: 'float64', shape: [1, 1, 1, 2] });
    // taps at −1, 0, 1, 2 clamp to values 0, 0, 1, 1 → −0.09375·0 + 0.59375·0 + 0.59375·1 − 0.09375·1 = ½
    assertClose(interpolate(line, { size: [1, 3], mode: 'bicubic', alignCorners: true }), [0, 0.5, 1], { atol: 1e-15 });
    // without alignCorners 2 → 4: src = −¼ (not clamped for bicubic), floor −1: taps −2, −1, 0, 1 clamp to values
    // 0, 0, 0, 1; the tap at +1 is 1¼ away: A(1.25³ − 5·1.25² + 8·1.25 − 4) = −0.75 · 0.140625 = −0.10546875
    assertClose(values(interpolate(line, { size: [1, 4], mode: 'bicubic' }))[0]!, -0.10546875, { atol: 1e-15 });
  });

  test('options are validated', () => {
    assert.throws(() => interpolate(x22(), {}), /exactly one/);
    assert.throws(() => interpolate(x22(), { size: 2, scaleFactor: 2 }), /exactly one/);
    assert.throws(() => interpolate(zeros([2, 2]), { size: 4 }), /N×C×H×W/);
    assert.throws(() => interpolate(x22(), { size: 4, alignCorners: true }), /alignCorners/);
    assert.throws(() => interpolate(x22(), { size: 4, mode: 'area' as never }), /unknown mode/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('pooling', () => {
  test('maxPool2d: kernel, stride, padding, dilation, ceilMode', () => {
    // x = 4i + j: the max of a window is its bottom-right element
    assertTensorEqual(maxPool2d(grid4(), 2), [5, 7, 13, 15], [1, 1, 2, 2]);
    assertTensorEqual(maxPool2d(grid4(), 2, { stride: 1 }), [5, 6, 7, 9, 10, 11, 13, 14, 15], [1, 1, 3, 3]);
    // kernel 3, stride 2, padding 1: windows rows/cols [−1, 1] and [1, 3]
    assertTensorEqual(maxPool2d(grid4(), 3, { stride: 2, padding: 1 }), [5, 7, 13, 15], [1, 1, 2, 2]);
    // kernel 3, stride 2: floor mode 1 window; ceil mode 2 (the second clipped to [2, 3])
    assertTensorEqual(maxPool2d(grid4(), 3, { stride: 2 }), [10], [1, 1, 1, 1]);
    assertTensorEqual(maxPool2d(grid4(), 3, { stride: 2, ceilMode: true }), [10, 11, 14, 15], [1, 1, 2, 2]);
    // dilation 2, kernel 2, stride 1: taps (i, j) … (i+2, j+2) → max x[i+2][j+2]
    assertTensorEqual(maxPool2d(grid4(), 2, { stride: 1, dilation: 2 }), [10, 11, 14, 15], [1, 1, 2, 2]);
    // rectangular kernel [1, 4]
    assertTensorEqual(maxPool2d(grid4(), [1, 4]), [3, 7, 11, 15], [1, 1, 4, 1]);
    // negative values with padding: padding is −∞, not 0
    // windows rows/cols [−1, 0], [1, 2], [3, 4]: max of −x is −(min of x in the window)
    assertClose(maxPool2d(grid4().neg(), 2, { padding: 1 }), [0, -1, -3, -4, -5, -7, -12, -13, -15], { shape: [1, 1, 3, 3], atol: 0 });
  });

  test('avgPool2d: padding with and without countIncludePad, divisorOverride, ceilMode', () => {
    // mean of block (a, b) of x = 4i + j: 8a + 2b + 2.5
    assertTensorEqual(avgPool2d(grid4(), 2), [2.5, 4.5, 10.5, 12.5], [1, 1, 2, 2]);
    const x = tensor([1, 2, 3, 4], { dtype: 'float64', shape: [1, 1, 2, 2] });
    // kernel 2, stride 2, padding 1: each window holds one pixel and three pads
    assertTensorEqual(avgPool2d(x, 2, { padding: 1 }), [0.25, 0.5, 0.75, 1], [1, 1, 2, 2]);
    assertTensorEqual(avgPool2d(x, 2, { padding: 1, countIncludePad: false }), [1, 2, 3, 4]);
    assertTensorEqual(avgPool2d(x, 2, { padding: 1, divisorOverride: 2 }), [0.5, 1, 1.5, 2]);
    // 3×3 input, kernel 2, stride 2, ceil mode: the clipped windows divide by their in-bounds size
    const x3 = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9], { dtype: 'float64', shape: [1, 1, 3, 3] });
    assertTensorEqual(avgPool2d(x3, 2, { ceilMode: true }), [3, 4.5, 7.5, 9], [1, 1, 2, 2]);
    assertTensorEqual(avgPool2d(x3, 2, { stride: 1 }), [3, 4, 6, 7], [1, 1, 2, 2]);
  });

  test('adaptiveAvgPool2d with non-divisible sizes uses bins [floor(iL/s), ceil((i+1)L/s))', () => {
    // L = 5, s = 3: [0, 2), [1, 4), [3, 5) over 1..5 → 1.5, 3, 4.5
    const r = tensor([1, 2, 3, 4, 5], { dtype: 'float64', shape: [1, 1, 1, 5] });
    assertTensorEqual(adaptiveAvgPool2d(r, [1, 3]), [1.5, 3, 4.5], [1, 1, 1, 3]);
    const src = uniform(5 * 7, 41);
    const x = tensor(src, { dtype: 'float64', shape: [1, 1, 5, 7] });
    for (const [oh, ow] of [[3, 2], [2, 3], [4, 5], [5, 7], [1, 1], [6, 9]] as [number, number][]) {
      assertClose(adaptiveAvgPool2d(x, [oh, ow]), refAdaptiveAvg(src, 5, 7, oh, ow), { shape: [1, 1, oh, ow], atol: 1e-14, msg: `${oh}×${ow}` });
    }
    // divisible sizes equal plain average pooling; output size 1 is the global mean
    assertTensorEqual(adaptiveAvgPool2d(grid4(), 2), [2.5, 4.5, 10.5, 12.5]);
    assertTensorEqual(adaptiveAvgPool2d(grid4(), 1), [7.5], [1, 1, 1, 1]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('gridSample', () => {
  // input [[1, 2], [3, 4]]; grid points (x, y)
  const img = (): Tensor => tensor([1, 2, 3, 4], { dtype: 'float64', shape: [1, 1, 2, 2] });
  const g = (pts: [number, number][]): Tensor => tensor(pts.flat(), { dtype: 'float64', shape: [1, 1, pts.length, 2] });

  test('bilinear, alignCorners false (pixel = ((g + 1)·size − 1)/2), zeros and border padding', () => {
    const pts: [number, number][] = [[0, 0], [-0.5, -0.5], [-1, -1], [1, 0], [0.5, -0.5], [-3, 0], [0.5, 0.5]];
    // (0,0)→(½,½): mean 2.5; (−½,−½)→(0,0): 1; (−1,−1)→(−½,−½): ¼ of pixel (0,0) = 0.25;
    // (1,0)→(1½,½): ½·½·(2 + 4) = 1.5; (½,−½)→(1,0): 2; (−3,0)→(−2.5,½): 0; (½,½)→(1,1): 4
    assertClose(gridSample(img(), g(pts)), [2.5, 1, 0.25, 1.5, 2, 0, 4], { shape: [1, 1, 1, 7], atol: 1e-15 });
    assertClose(gridSample(img(), g(pts), { mode: 'bilinear', paddingMode: 'zeros', alignCorners: false }),
      [2.5, 1, 0.25, 1.5, 2, 0, 4], { atol: 1e-15 });
    // border: coordinates clamp to [0, size − 1] first: (−½,−½)→(0,0): 1; (1½,½)→(1,½): 3; (−2.5,½)→(0,½): 2
    assertClose(gridSample(img(), g(pts), { paddingMode: 'border' }), [2.5, 1, 1, 3, 2, 2, 4], { atol: 1e-15 });
  });

  test('bilinear, alignCorners true (pixel = (g + 1)/2·(size − 1))', () => {
    const pts: [number, number][] = [[-1, -1], [1, 1], [0, 0], [0, -1], [1, 0], [2, 0], [-2, -2]];
    // (−1,−1)→(0,0): 1; (1,1)→(1,1): 4; (0,0)→(½,½): 2.5; (0,−1)→(½,0): 1.5; (1,0)→(1,½): 3;
    // (2,0)→(1½,½): zeros ½·(2+4)/2 = 1.5, border (1,½) = 3; (−2,−2)→(−½,−½): zeros ¼, border 1
    assertClose(gridSample(img(), g(pts), { alignCorners: true }), [1, 4, 2.5, 1.5, 3, 1.5, 0.25], { atol: 1e-15 });
    assertClose(gridSample(img(), g(pts), { alignCorners: true, paddingMode: 'border' }), [1, 4, 2.5, 1.5, 3, 3, 1], { atol: 1e-15 });
  });

  test('nearest', () => {
    // alignCorners false: (0.2, −0.2) → (0.7, 0.3) → pixel (1, 0) = 2; (−0.9, 0.9) → (−0.4, 1.4) → (0, 1) = 3;
    // (−1.2, 0.1) → (−0.7, 0.6) → x rounds to −1: zeros 0, border (0, 1) = 3
    const pts: [number, number][] = [[0.2, -0.2], [-0.9, 0.9], [-1.2, 0.1]];
    assertTensorEqual(gridSample(img(), g(pts), { mode: 'nearest' }), [2, 3, 0]);
    assertTensorEqual(gridSample(img(), g(pts), { mode: 'nearest', paddingMode: 'border' }), [2, 3, 3]);
    // alignCorners true: (0.2, −0.2) → (0.6, 0.4) → (1, 0) = 2; (−0.9, 0.9) → (0.05, 0.95) → (0, 1) = 3
    assertTensorEqual(gridSample(img(), g(pts.slice(0, 2)), { mode: 'nearest', alignCorners: true }), [2, 3]);
  });

  test('several channels, batch and an output grid of 2×2', () => {
    const x = tensor([1, 2, 3, 4, 10, 20, 30, 40, -1, -2, -3, -4, 0, 0, 0, 0], { dtype: 'float64', shape: [2, 2, 2, 2] });
    const grid = tensor([0, 0, -0.5, -0.5, 0.5, 0.5, 0.5, -0.5, 0, 0, 0, 0, 0, 0, 0, 0], { dtype: 'float64', shape: [2, 2, 2, 2] });
    const out = gridSample(x, grid);
    assert.deepEqual(out.shape, [2, 2, 2, 2]);
    assertClose(out, [2.5, 1, 4, 2, 25, 10, 40, 20, -2.5, -2.5, -2.5, -2.5, 0, 0, 0, 0], { atol: 1e-14 });
    assert.throws(() => gridSample(x, grid, { mode: 'linear' as never }), /unknown mode/);
    assert.throws(() => gridSample(x, grid, { paddingMode: 'wrap' as never }), /unknown paddingMode/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('topk/sort', () => {
  test('topk largest and smallest', () => {
    const x = f64([3, 1, 4, 1, 5, 9, 2, 6]);
    const t = topk(x, 3);
    assertTensorEqual(t.values, [9, 6, 5]);
    assertTensorEqual(t.indices, [5, 7, 4]);
    const s = topk(x, 2, -1, false);
    assertTensorEqual(s.values, [1, 1]);
    assert.deepEqual(values(s.indices).sort(), [1, 3]);
    const m = topk(f64([[1, 9, 3], [8, 2, 7]]), 1, 0);
    assertTensorEqual(m.values, [8, 9, 7], [1, 3]);
    assertTensorEqual(m.indices, [1, 0, 1]);
  });

  test('sort ascending and descending, along a dim', () => {
    const x = f64([3, 1, 4, 1, 5, 9, 2, 6]);
    const a = sort(x);
    assertTensorEqual(a.values, [1, 1, 2, 3, 4, 5, 6, 9]);
    const ia = values(a.indices);
    assert.deepEqual(ia.slice(2), [6, 0, 2, 4, 7, 5]);
    assert.deepEqual(ia.slice(0, 2).sort(), [1, 3]);
    const d = sort(x, 0, true);
    assertTensorEqual(d.values, [9, 6, 5, 4, 3, 2, 1, 1]);
    assert.deepEqual(values(d.indices).slice(0, 6), [5, 7, 4, 2, 0, 6]);
    const m = sort(f64([[3, 1], [1, 2], [2, 0]]), 0);
    assertTensorEqual(m.values, [1, 0, 2, 1, 3, 2], [3, 2]);
    assertTensorEqual(m.indices, [1, 2, 2, 0, 0, 1]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('losses', () => {
  // row 0 logits [0, ln2, ln3] → p = [1/6, 1/3, 1/2]; row 1 [ln3, 0, 0] → p = [3/5, 1/5, 1/5]
  const logits = (): Tensor => f64([[0, LN2, LN3], [LN3, 0, 0]]);
  const l0 = LN2; // −ln p[0][2]
  const l1 = Math.log(5 / 3); // −ln p[1][0]

  test('crossEntropy reductions', () => {
    const t = i64([2, 0]);
    assertClose(crossEntropy(logits(), t), [(l0 + l1) / 2], { shape: [], rtol: 1e-14 });
    assertClose(crossEntropy(logits(), t, { reduction: 'sum' }), [l0 + l1], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), t, { reduction: 'none' }), [l0, l1], { shape: [2], rtol: 1e-14 });
    assert.throws(() => crossEntropy(logits(), t, { reduction: 'avg' as never }), /unknown reduction/);
  });

  test('crossEntropy ignoreIndex (default −100 and custom)', () => {
    assertClose(crossEntropy(logits(), i64([2, -100])), [l0], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), i64([2, -100]), { reduction: 'none' }), [l0, 0], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), i64([2, 0]), { ignoreIndex: 0 }), [l0], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), i64([2, 0]), { ignoreIndex: 0, reduction: 'sum' }), [l0], { rtol: 1e-14 });
    // everything ignored: mean is 0/0
    assert.ok(Number.isNaN(crossEntropy(logits(), i64([-100, -100])).item()));
  });

  test('crossEntropy class weights: the mean divides by the sum of the targets\' weights', () => {
    const w = f64([1, 2, 3]);
    const t = i64([2, 0]);
    assertClose(crossEntropy(logits(), t, { weight: w }), [(3 * l0 + 1 * l1) / 4], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), t, { weight: w, reduction: 'sum' }), [3 * l0 + l1], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), t, { weight: w, reduction: 'none' }), [3 * l0, l1], { rtol: 1e-14 });
    assertClose(crossEntropy(logits(), i64([2, -100]), { weight: w }), [l0], { rtol: 1e-14 });
  });

  test('crossEntropy label smoothing and spatial N×C×H×W targets', () => {
    // (1 − ε)·nll + ε·mean_c(−ln p_c); row 0: −ln p = [ln6, ln3, ln2]; row 1: [ln(5/3), ln5, ln5]
    const eps = 0.1;
    const r0 = (1 - eps) * l0 + (eps * (Math.log(6) + Math.log(3) + LN2)) / 3;
    const r1 = (1 - eps) * l1 + (eps * (Math.log(5 / 3) + 2 * Math.log(5))) / 3;
    assertClose(crossEntropy(logits(), i64([2, 0]), { labelSmoothing: eps }), [(r0 + r1) / 2], { rtol: 1e-14 });
    // spatial: the two rows as two pixels of a 1×3×1×2 map
    const sp = logits().transpose(0, 1).reshape(1, 3, 1, 2);
    assertClose(crossEntropy(sp, tensor([[[2, 0]]], { dtype: 'int64' })), [(l0 + l1) / 2], { rtol: 1e-14 });
    assertClose(crossEntropy(sp, tensor([[[2, 0]]], { dtype: 'int64' }), { reduction: 'none' }), [l0, l1], { shape: [1, 1, 2], rtol: 1e-14 });
  });

  test('binaryCrossEntropyWithLogits', () => {
    // x = [0, ln3], y = [1, 0]: −ln σ(0) = ln2; −ln(1 − σ(ln3)) = −ln ¼ = ln4
    const x = f64([0, LN3]);
    const y = f64([1, 0]);
    assertClose(binaryCrossEntropyWithLogits(x, y), [1.5 * LN2], { shape: [], rtol: 1e-14 });
    assertClose(binaryCrossEntropyWithLogits(x, y, { reduction: 'sum' }), [3 * LN2], { rtol: 1e-14 });
    assertClose(binaryCrossEntropyWithLogits(x, y, { reduction: 'none' }), [LN2, 2 * LN2], { rtol: 1e-14 });
    // posWeight multiplies the positive term; weight multiplies each element
    assertClose(binaryCrossEntropyWithLogits(x, y, { posWeight: f64([2, 2]), reduction: 'none' }), [2 * LN2, 2 * LN2], { rtol: 1e-14 });
    assertClose(binaryCrossEntropyWithLogits(x, y, { weight: f64([3, 0.5]), reduction: 'sum' }), [3 * LN2 + LN2], { rtol: 1e-14 });
    // soft target ½ at x = 0: ln2
    assertClose(binaryCrossEntropyWithLogits(f64([0]), f64([0.5])), [LN2], { rtol: 1e-14 });
    // stable for large logits
    assertClose(binaryCrossEntropyWithLogits(tensor([100, -100]), tensor([0, 1]), { reduction: 'none' }), [100, 100], { rtol: 1e-6 });
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('attention', () => {
  test('attentionComposition by hand', () => {
    const q = f64([[[1, 0], [0, 1]]]);
    const k = f64([[[1, 0], [0, 1]]]);
    const v = f64([[[1, 2], [3, 4]]]);
    // scores = I·ln3 → softmax rows [¾, ¼] and [¼, ¾]
    assertClose(attentionComposition(q, k, v, LN3), [1.5, 2.5, 2.5, 3.5], { shape: [1, 2, 2], rtol: 1e-14 });
    // bool mask: true = attend; row 0 only key 0
    const mask = tensor([[true, false], [true, true]], { dtype: 'bool' });
    assertClose(attentionComposition(q, k, v, LN3, mask), [1, 2, 2.5, 3.5], { rtol: 1e-14 });
    // additive float mask: −ln3 on (1, 1) cancels the score → row 1 softmax [½, ½]
    const add = f64([[0, 0], [0, -LN3]]);
    assertClose(attentionComposition(q, k, v, LN3, add), [1.5, 2.5, 2, 3], { rtol: 1e-14 });
  });

  test('scaledDotProductAttention equals the composition (default scale 1/√E, custom scale, masks)', () => {
    const B = 2;
    const H = 3;
    const L = 5;
    const S = 4;
    const E = 8;
    const q = tensor(uniform(B * H * L * E, 51), { dtype: 'float64', shape: [B, H, L, E] });
    const k = tensor(uniform(B * H * S * E, 52), { dtype: 'float64', shape: [B, H, S, E] });
    const v = tensor(uniform(B * H * S * E, 53), { dtype: 'float64', shape: [B, H, S, E] });
    const ref = attentionComposition(q, k, v, 1 / Math.sqrt(E));
    assertClose(scaledDotProductAttention(q, k, v), values(ref), { shape: [B, H, L, E], atol: 1e-14 });
    assertClose(scaledDotProductAttention(q, k, v, { scale: 0.3 }), values(attentionComposition(q, k, v, 0.3)), { atol: 1e-14 });
    const mask = tensor(uniform(L * S, 54).map((x, i) => x > -0.3 || i % S === 0), { dtype: 'bool', shape: [L, S] });
    assertClose(scaledDotProductAttention(q, k, v, { attnMask: mask }),
      values(attentionComposition(q, k, v, 1 / Math.sqrt(E), mask)), { atol: 1e-14 });
    // composition against a JS loop for one (b, h)
    const qa = values(q);
    const ka = values(k);
    const va = values(v);
    const outRef: number[] = [];
    for (let i = 0; i < L; i++) {
      const sc = Array.from({ length: S }, (_, j) => {
        let s = 0;
        for (let e = 0; e < E; e++) s += qa[i * E + e]! * ka[j * E + e]!;
        return s / Math.sqrt(E);
      });
      const mx = Math.max(...sc);
      const ex = sc.map((s) => Math.exp(s - mx));
      const z = ex.reduce((a, b) => a + b, 0);
      for (let e = 0; e < E; e++) outRef.push(ex.reduce((acc, w, j) => acc + (w / z) * va[j * E + e]!, 0));
    }
    assertClose(values(ref).slice(0, L * E), outRef, { atol: 1e-14 });
    assert.deepEqual(flat(ref.shape), [B, H, L, E]);
  });
});
