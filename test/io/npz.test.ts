import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { openNpz, parseNpy, parseNpz } from '../../src/io/npz.js';
import { rawFromValues, toFloat64Array } from '../../src/io/raw.js';
import { buildNpy, buildZip, bytesOf, tempDir, thrown } from './helpers.js';

const vals = (dtype: Parameters<typeof rawFromValues>[0], data: Uint8Array): number[] => Array.from(toFloat64Array({ dtype, data }));

function sampleNpz(deflate: boolean): Uint8Array {
  const f4 = rawFromValues('float32', [2, 3], [0, 1, 2, 3, 4, 5]).data;
  // Fortran order: column-major storage of [[0, 1, 2], [3, 4, 5]]
  const fortran = rawFromValues('float64', [6], [0, 3, 1, 4, 2, 5]).data;
  const be = new Uint8Array(8);
  new DataView(be.buffer).setFloat32(0, 1.25, false);
  new DataView(be.buffer).setFloat32(4, -7, false);
  return buildZip([
    { name: 'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel.npy', data: buildNpy('<f4', [2, 3], f4), deflate },
    { name: 'fortran.npy', data: buildNpy('<f8', [2, 3], fortran, { fortran: true }), deflate },
    { name: 'half.npy', data: buildNpy('<f2', [2], rawFromValues('float16', [2], [0.5, 3]).data), deflate },
    { name: 'i8.npy', data: buildNpy('<i8', [2], rawFromValues('int64', [2], [-5, 9]).data, { version: 2 }), deflate },
    { name: 'i4.npy', data: buildNpy('<i4', [1], bytesOf(Int32Array.of(-3))), deflate },
    { name: 'u1.npy', data: buildNpy('|u1', [3], Uint8Array.of(0, 128, 255)), deflate },
    { name: 'b1.npy', data: buildNpy('|b1', [2], Uint8Array.of(1, 0)), deflate },
    { name: 'big_endian.npy', data: buildNpy('>f4', [2], be), deflate },
    { name: 'scalar.npy', data: buildNpy('<f8', [], rawFromValues('float64', [], [2.5]).data), deflate },
  ]);
}

for (const deflate of [false, true]) {
  test(`npz reader (${deflate ? 'deflated' : 'stored'} entries)`, () => {
    const { dir, cleanup } = tempDir();
    try {
      const path = join(dir, 'weights.npz');
      writeFileSync(path, sampleNpz(deflate));
      const f = openNpz(path);
      try {
        const t = (n: string) => f.tensors.get(n)!;
        assert.deepEqual([...f.tensors.keys()][0], 'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel');
        const k = t('Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel');
        assert.equal(k.dtype, 'float32');
        assert.deepEqual(k.shape, [2, 3]);
        assert.deepEqual(vals('float32', k.read()), [0, 1, 2, 3, 4, 5]);
        assert.equal(t('fortran').header.fortranOrder, true);
        assert.deepEqual(vals('float64', t('fortran').read()), [0, 1, 2, 3, 4, 5], 'Fortran order transposed to C order');
        assert.deepEqual(vals('float16', t('half').read()), [0.5, 3]);
        assert.deepEqual(vals('int64', t('i8').read()), [-5, 9]);
        assert.deepEqual(vals('int32', t('i4').read()), [-3]);
        assert.deepEqual(vals('uint8', t('u1').read()), [0, 128, 255]);
        assert.equal(t('b1').dtype, 'bool');
        assert.deepEqual(t('b1').read(), Uint8Array.of(1, 0));
        assert.deepEqual(vals('float32', t('big_endian').read()), [1.25, -7]);
        assert.deepEqual(t('scalar').shape, []);
        assert.deepEqual(vals('float64', t('scalar').read()), [2.5]);
      } finally {
        f.close();
      }
      const ck = loadCheckpoint(path);
      assert.equal(ck.format, 'npz');
      assert.equal(ck.tensors.size, 9);
      ck.close();
    } finally {
      cleanup();
    }
  });
}

test('npz: unsupported dtypes and truncated arrays are refused', () => {
  const complex = buildZip([{ name: 'c.npy', data: buildNpy('<c8', [1], new Uint8Array(8)) }]);
  assert.match(thrown(() => parseNpz(complex, 'c.npz')).message, /^c\.npz: entry 'c\.npy': unsupported \.npy dtype '<c8'/);
  const strs = buildZip([{ name: 's.npy', data: buildNpy('<U3', [1], new Uint8Array(12)) }]);
  assert.match(thrown(() => parseNpz(strs, 's.npz')).message, /unsupported \.npy dtype '<U3'/);
  const full = buildNpy('<f4', [4], new Uint8Array(16));
  const short = buildZip([{ name: 'x.npy', data: full.subarray(0, full.length - 4) }]);
  assert.match(thrown(() => parseNpz(short, 'short.npz')).message, /entry 'x\.npy': array data truncated: <f4\[4\] needs 16 bytes, the entry has 12/);
  const other = buildZip([{ name: 'readme.txt', data: new Uint8Array(3) }]);
  assert.match(thrown(() => parseNpz(other, 'o.npz')).message, /not a \.npy array/);
  assert.deepEqual(parseNpy(buildNpy('|u1', [2], Uint8Array.of(4, 5))), { dtype: 'uint8', shape: [2], data: Uint8Array.of(4, 5) });
});
