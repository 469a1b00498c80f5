import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DTYPES } from '../../src/engine/dtype.js';
import {
  bfloat16ToFloat32, byteSize, contiguousStrides, float16ToFloat32, float32ToBFloat16, float32ToFloat16,
  lazyFromRaw, materialize, numberToBFloat16Bits, numberToFloat16Bits, rawFromValues, stridedToContiguous,
  toFloat32Array, typedView,
} from '../../src/io/raw.js';

test('float16 rounding of known values', () => {
  assert.equal(numberToFloat16Bits(1), 0x3c00);
  assert.equal(numberToFloat16Bits(-2), 0xc000);
  assert.equal(numberToFloat16Bits(65504), 0x7bff);
  assert.equal(numberToFloat16Bits(65520), 0x7c00); // rounds up to infinity
  assert.equal(numberToFloat16Bits(2 ** -24), 0x0001);
  assert.equal(numberToFloat16Bits(2 ** -25), 0x0000); // tie to even (zero)
  assert.equal(numberToFloat16Bits(3 * 2 ** -25), 0x0002); // tie to even (2)
  assert.equal(numberToFloat16Bits(1 + 2 ** -11), 0x3c00); // tie to even
  assert.equal(numberToFloat16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(numberToFloat16Bits(-0), 0x8000);
  assert.equal(numberToFloat16Bits(-Infinity), 0xfc00);
  assert.equal(numberToFloat16Bits(NaN) & 0x7c00, 0x7c00);
  assert.notEqual(numberToFloat16Bits(NaN) & 0x3ff, 0);
});

test('float16 <-> float32 round trip of every non-NaN bit pattern', () => {
  const bits = new Uint16Array(65536).map((_, i) => i);
  const f = float16ToFloat32(bits);
  const back = float32ToFloat16(f);
  for (let i = 0; i < 65536; i++) {
    if (Number.isNaN(f[i])) continue;
    assert.equal(back[i], i, `bits 0x${i.toString(16)}`);
  }
  assert.equal(f[0x3c00], 1);
  assert.equal(f[0x0001], 2 ** -24);
  assert.ok(Number.isNaN(f[0x7e00]));
});

test('bfloat16 conversions', () => {
  assert.equal(numberToBFloat16Bits(1), 0x3f80);
  assert.equal(numberToBFloat16Bits(1 + 2 ** -8), 0x3f80); // tie to even
  assert.equal(numberToBFloat16Bits(1 + 3 * 2 ** -8), 0x3f82);
  assert.ok(Number.isNaN(bfloat16ToFloat32(Uint16Array.of(numberToBFloat16Bits(NaN)))[0]));
  const bits = new Uint16Array(65536).map((_, i) => i);
  const f = bfloat16ToFloat32(bits);
  const back = float32ToBFloat16(f);
  for (let i = 0; i < 65536; i++) if (!Number.isNaN(f[i])) assert.equal(back[i], i);
});

test('rawFromValues and typedView for every dtype', () => {
  for (const dtype of DTYPES) {
    const t = rawFromValues(dtype, [2, 2], [0, 1, 1, 0]);
    assert.equal(t.data.byteLength, byteSize(dtype, [2, 2]));
    const v = toFloat32Array(t);
    assert.deepEqual(Array.from(v), [0, 1, 1, 0], dtype);
  }
  const i64 = rawFromValues('int64', [2], [-(2n ** 62n), 5]);
  assert.deepEqual(Array.from(typedView({ dtype: 'int64' as const, data: i64.data })), [-(2n ** 62n), 5n]);
});

test('typedView shares aligned memory and copies misaligned data', () => {
  const t = rawFromValues('float32', [3], [1, 2, 3]);
  const v = typedView(t);
  v[0] = 7;
  assert.equal(new DataView(t.data.buffer).getFloat32(0, true), 7);
  const buf = new Uint8Array(13);
  buf.set(t.data, 1);
  const mis = { dtype: 'float32' as const, data: buf.subarray(1) };
  assert.deepEqual(Array.from(typedView(mis)), [7, 2, 3]);
});

test('stridedToContiguous materialises a transpose and an offset view', () => {
  const src = rawFromValues('int16', [6], [0, 1, 2, 3, 4, 5]).data;
  // 2x3 row-major viewed as its 3x2 transpose
  const tr = stridedToContiguous(src, 2, [3, 2], [1, 3], 0);
  assert.deepEqual(Array.from(typedView({ dtype: 'int16' as const, data: tr })), [0, 3, 1, 4, 2, 5]);
  const off = stridedToContiguous(src, 2, [2], [2], 1);
  assert.deepEqual(Array.from(typedView({ dtype: 'int16' as const, data: off })), [1, 3]);
  const scalar = stridedToContiguous(src, 2, [], [], 4);
  assert.deepEqual(Array.from(typedView({ dtype: 'int16' as const, data: scalar })), [4]);
  assert.deepEqual(contiguousStrides([2, 3, 4]), [12, 4, 1]);
});

test('lazyFromRaw / materialize', () => {
  const t = rawFromValues('bool', [3], [true, false, true]);
  const lazy = lazyFromRaw(t);
  assert.equal(lazy.nbytes, 3);
  const back = materialize(lazy);
  assert.deepEqual(back, { dtype: 'bool', shape: [3], data: Uint8Array.of(1, 0, 1) });
  assert.throws(() => lazyFromRaw({ dtype: 'float32', shape: [2], data: new Uint8Array(4) }), /expected 8/);
});
