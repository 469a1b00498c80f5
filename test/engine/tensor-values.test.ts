/**
 * tensor() refuses values its dtype cannot hold instead of converting them silently (strings → NaN, null → 0,
 * 2^40 as int32 → 0, −1 as uint8 → 255), and counts non-finite elements.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type NestedArray, countNonFinite, scope, tensor } from '../../src/engine/index.js';
import { values } from '../helpers/numeric.js';

const bad = (x: unknown): NestedArray => x as NestedArray;

test('tensor() refuses non-numbers, naming the value, its index and the dtype', () => {
  assert.throws(() => tensor(bad([1, 'a', 3])), /tensor\(\): element \[1\] is "a": not a number \(dtype float32\)/);
  assert.throws(() => tensor(bad([[1, 2], [null, 4]])), /element \[1, 0\] is null: not a number \(dtype float32\)/);
  assert.throws(() => tensor(bad([[1, 2], [3, undefined]]), { dtype: 'int32' }), /element \[1, 1\] is undefined: not a number \(dtype int32\)/);
  assert.throws(() => tensor(bad([{}, 1])), /element \[0\] is an object \(Object\): not a number/);
  assert.throws(() => tensor(bad('7')), /element \[\] is "7": not a number/);
  assert.throws(() => tensor(bad(null)), /element \[\] is null/);
  // a hole in a sparse array
  // eslint-disable-next-line no-sparse-arrays
  assert.throws(() => tensor(bad([1, , 3])), /element \[1\] is undefined/);
  assert.throws(() => tensor(bad([1, 'x']), { dtype: 'bool' }), /element \[1\] is "x": not a boolean or number \(dtype bool\)/);
  assert.throws(() => tensor(bad([2n]), { dtype: 'float32' }), /element \[0\] is 2n: a bigint is only accepted for integer dtypes/);
});

test('tensor() refuses integers out of range and non-integers for integer dtypes', () => {
  assert.throws(() => tensor([1, 2 ** 40], { dtype: 'int32' }), /element \[1\] is 1099511627776: out of range for int32 \[-2147483648, 2147483647\]/);
  assert.throws(() => tensor([-1], { dtype: 'uint8' }), /element \[0\] is -1: out of range for uint8 \[0, 255\]/);
  assert.throws(() => tensor([256], { dtype: 'uint8' }), /out of range for uint8/);
  assert.throws(() => tensor([128], { dtype: 'int8' }), /out of range for int8 \[-128, 127\]/);
  assert.throws(() => tensor([-32769], { dtype: 'int16' }), /out of range for int16/);
  assert.throws(() => tensor([[0, 1.5]], { dtype: 'int64' }), /element \[0, 1\] is 1.5: not an integer \(dtype int64\)/);
  assert.throws(() => tensor([NaN], { dtype: 'int32' }), /is NaN: not an integer/);
  assert.throws(() => tensor([2 ** 53], { dtype: 'int64' }), /beyond ±\(2\^53 − 1\).*pass a bigint \(dtype int64\)/);
  assert.throws(() => tensor([2n ** 63n], { dtype: 'int64' }), /is 9223372036854775808n: out of range for int64/);
  assert.throws(() => tensor([300n], { dtype: 'uint8' }), /out of range for uint8/);
  assert.throws(() => tensor([NaN], { dtype: 'bool' }), /not a boolean or number/);
});

test('tensor() refuses finite values that would overflow a floating dtype to ±Infinity', () => {
  assert.throws(() => tensor([1e39]), /element \[0\] is 1e\+39: out of range \(it would become Infinity\) \(dtype float32\)/);
  assert.throws(() => tensor([70000], { dtype: 'float16' }), /out of range.*float16/);
  assert.throws(() => tensor([-65520], { dtype: 'float16' }), /out of range.*float16/);
  assert.throws(() => tensor([3.4e38], { dtype: 'bfloat16' }), /out of range.*bfloat16/);
});

test('tensor() keeps what the dtype holds: edge values, explicit NaN / ±Infinity, bigints, booleans', () => {
  scope(() => {
    assert.deepEqual(values(tensor([-2147483648, 2147483647], { dtype: 'int32' })), [-2147483648, 2147483647]);
    assert.deepEqual(values(tensor([0, 255], { dtype: 'uint8' })), [0, 255]);
    assert.deepEqual(values(tensor([-128, 127], { dtype: 'int8' })), [-128, 127]);
    const b = tensor([2n ** 62n + 1n, -(2n ** 63n), 5], { dtype: 'int64' }).toBytes();
    assert.deepEqual(Array.from(new BigInt64Array(b.buffer, b.byteOffset, 3)), [2n ** 62n + 1n, -(2n ** 63n), 5n]);
    assert.deepEqual(values(tensor([Number.MAX_SAFE_INTEGER], { dtype: 'int64' })), [Number.MAX_SAFE_INTEGER]);
    const f = values(tensor([NaN, Infinity, -Infinity, 3.4e38]));
    assert.ok(Number.isNaN(f[0]));
    assert.deepEqual(f.slice(1, 3), [Infinity, -Infinity]);
    assert.ok(Number.isFinite(f[3]));
    assert.deepEqual(values(tensor([65504], { dtype: 'float16' }).float()), [65504]);
    assert.deepEqual(values(tensor([true, false, 2], { dtype: 'bool' })), [1, 0, 1]);
    assert.deepEqual(values(tensor([true, false], { dtype: 'int32' })), [1, 0]);
    assert.deepEqual(values(tensor([1e300], { dtype: 'float64' })), [1e300]);
    // typed arrays are taken as they are
    assert.deepEqual(values(tensor(new Int32Array([2 ** 31 - 1]))), [2 ** 31 - 1]);
  });
});

test('countNonFinite counts NaN and ±Infinity (0 for integer tensors)', () => {
  scope(() => {
    assert.equal(countNonFinite(tensor([1, NaN, Infinity, -Infinity, 0])), 3);
    assert.equal(countNonFinite(tensor([1, 2], { dtype: 'float64' })), 0);
    assert.equal(countNonFinite(tensor([1, 2], { dtype: 'int64' })), 0);
    assert.equal(countNonFinite(tensor([NaN], { dtype: 'bfloat16' })), 1);
  });
});
