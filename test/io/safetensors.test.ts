import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DTYPES, DTYPE_SIZE } from '../../src/engine/dtype.js';
import { CheckpointError } from '../../src/io/errors.js';
import { rawFromValues, type LazyTensor, type RawTensor } from '../../src/io/raw.js';
import {
  openSafetensors, parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors,
} from '../../src/io/safetensors.js';
import { fixtureOptions, fixturesDir, tempDir, thrown } from './helpers.js';

function sample(): Map<string, RawTensor> {
  const m = new Map<string, RawTensor>();
  for (const [i, dtype] of DTYPES.entries()) {
    const vals = [0, 1, 2, 3, 4, 5].map((v) => (dtype === 'bool' ? v % 2 === 1 : v - 2 * i));
    m.set(`t.${dtype}`, rawFromValues(dtype, [2, 3], dtype === 'uint8' ? [0, 1, 2, 3, 4, 250] : vals));
  }
  m.set('scalar', rawFromValues('float64', [], [Math.PI]));
  m.set('empty', rawFromValues('float32', [0, 3], []));
  return m;
}

/** Builds a safetensors file from a hand-written header and data. */
function handMade(header: unknown, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

test('safetensors round trip for every dtype (file, lazy reads)', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = sample();
    const path = join(dir, 'all.safetensors');
    writeSafetensors(path, src, { origin: 'test' });
    const f = openSafetensors(path);
    try {
      assert.deepEqual([...f.tensors.keys()].sort(), [...src.keys()].sort());
      for (const [k, t] of src) {
        const got = f.tensors.get(k)!;
        assert.equal(got.dtype, t.dtype, k);
        assert.deepEqual(got.shape, t.shape, k);
        assert.equal(got.nbytes, t.data.byteLength, k);
        assert.deepEqual(got.read(), t.data, k);
      }
      assert.deepEqual(f.metadata, { origin: 'test' });
      assert.equal((8 + f.headerSize) % 8, 0, 'header padded to 8 bytes');
    } finally {
      f.close();
    }
    const eager = readSafetensors(path);
    assert.deepEqual(eager.tensors.get('t.bfloat16'), src.get('t.bfloat16'));
    // header padding is spaces
    const bytes = readFileSync(path);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = bytes.subarray(8, 8 + n).toString('utf8');
    assert.match(header, /^\{.*\} *$/);
    assert.match(header, /"dtype":"BF16"/);
  } finally {
    cleanup();
  }
});

test('safetensors in-memory serialize/parse and metadata round trip', () => {
  const meta = { format: 'pt', 'ünïcode key': 'välue ✓', quote: '"\\\n', __proto__x: 'y' };
  const weird: Record<string, string> = { ...meta };
  Object.defineProperty(weird, '__proto__', { value: 'not a prototype', enumerable: true });
  const bytes = serializeSafetensors(sample(), weird);
  const f = parseSafetensors(bytes, 'mem');
  assert.deepEqual(Object.keys(f.metadata).sort(), Object.keys(weird).sort());
  for (const k of Object.keys(weird)) assert.equal(f.metadata[k], weird[k]);
  assert.equal(Object.getPrototypeOf(f.metadata), Object.prototype);
  assert.deepEqual(f.tensors.get('t.int64')!.read(), sample().get('t.int64')!.data);
  // no metadata -> empty map, no __metadata__ key written
  const plain = serializeSafetensors([['x', rawFromValues('int8', [1], [-1])]]);
  assert.deepEqual(parseSafetensors(plain).metadata, {});
  assert.doesNotMatch(new TextDecoder().decode(plain), /__metadata__/);
});

test('writeSafetensors streams lazy tensors, reading each once', () => {
  const { dir, cleanup } = tempDir();
  try {
    const reads: string[] = [];
    const lazy = (name: string, n: number): [string, LazyTensor] => [name, {
      dtype: 'float32', shape: [n], nbytes: 4 * n,
      read: () => { reads.push(name); return rawFromValues('float32', [n], Array.from({ length: n }, (_, i) => i)).data; },
    }];
    const path = join(dir, 'lazy.safetensors');
    const written = writeSafetensors(path, [lazy('a', 3), lazy('b', 5)]);
    assert.deepEqual(reads, ['a', 'b']);
    assert.equal(written, readFileSync(path).length);
    const f = openSafetensors(path);
    assert.deepEqual([...f.tensors.keys()], ['a', 'b']);
    f.close();
    // reading after close reopens the file
    assert.equal(f.tensors.get('b')!.read().byteLength, 20);
    f.close();
    // a lazy tensor returning the wrong size is refused, and no file is left behind
    const bad: LazyTensor = { dtype: 'float32', shape: [2], nbytes: 8, read: () => new Uint8Array(4) };
    const err = thrown(() => writeSafetensors(join(dir, 'bad.safetensors'), [['bad', bad]]));
    assert.match(err.message, /bad\.safetensors.*'bad'.*4 bytes, expected 8/);
  } finally {
    cleanup();
  }
});

test('writer refuses duplicate names, wrong sizes and __metadata__', () => {
  const t = rawFromValues('float32', [2], [1, 2]);
  assert.throws(() => serializeSafetensors([['a', t], ['a', t]]), /duplicate/);
  assert.throws(() => serializeSafetensors([['a', { ...t, shape: [3] }]]), /8 bytes but float32\[3\] needs 12/);
  assert.throws(() => serializeSafetensors([['__metadata__', t]]), /__metadata__/);
});

test('truncated safetensors files are refused with a clear error', () => {
  const { dir, cleanup } = tempDir();
  try {
    const full = serializeSafetensors(sample());
    const headerLen = Number(new DataView(full.buffer).getBigUint64(0, true));
    const cutHeader = join(dir, 'cut-header.safetensors');
    writeFileSync(cutHeader, full.subarray(0, 8 + Math.floor(headerLen / 2)));
    const e1 = thrown(() => openSafetensors(cutHeader));
    assert.ok(e1 instanceof CheckpointError);
    assert.match(e1.message, /cut-header\.safetensors/);
    assert.match(e1.message, /header length \d+ exceeds.*truncated/);

    const cutData = join(dir, 'cut-data.safetensors');
    writeFileSync(cutData, full.subarray(0, full.length - 5));
    const e2 = thrown(() => openSafetensors(cutData));
    assert.match(e2.message, /cut-data\.safetensors: entry '[^']+': data_offsets \[\d+, \d+\] out of bounds.*truncated/);

    const tiny = join(dir, 'tiny.safetensors');
    writeFileSync(tiny, Uint8Array.of(1, 2, 3));
    assert.match(thrown(() => openSafetensors(tiny)).message, /tiny\.safetensors: file is 3 bytes, too short/);
  } finally {
    cleanup();
  }
});

test('corrupt headers are refused: bounds, overlap, size, dtype, JSON', () => {
  const data = new Uint8Array(16);
  const oob = handMade({ a: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, data);
  assert.match(thrown(() => parseSafetensors(oob, 'oob')).message, /^oob: entry 'a': data_offsets \[8, 24\] out of bounds: the data section has 16 bytes/);
  const overlap = handMade({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, data);
  assert.match(thrown(() => parseSafetensors(overlap, 'ov')).message, /entry 'b': data overlaps that of tensor 'a'/);
  const size = handMade({ a: { dtype: 'F64', shape: [3], data_offsets: [0, 16] } }, data);
  assert.match(thrown(() => parseSafetensors(size, 'sz')).message, /span 16 bytes but F64\[3\] needs 24/);
  const dtype = handMade({ a: { dtype: 'C64', shape: [2], data_offsets: [0, 16] } }, data);
  assert.match(thrown(() => parseSafetensors(dtype, 'dt')).message, /unsupported dtype "C64"/);
  const shape = handMade({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, data);
  assert.match(thrown(() => parseSafetensors(shape, 'sh')).message, /invalid shape/);
  const meta = handMade({ __metadata__: { a: 1 } }, data);
  assert.match(thrown(() => parseSafetensors(meta, 'md')).message, /__metadata__ value for 'a' is not a string/);
  const badJson = handMade({}, data);
  badJson[9] = 0x7b; // '{{'
  badJson[8] = 0x7b;
  assert.match(thrown(() => parseSafetensors(badJson, 'js')).message, /header is not valid JSON/);
  // zero-sized tensors may share offsets; holes are tolerated
  const ok = handMade({
    e1: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
    e2: { dtype: 'F32', shape: [0, 2], data_offsets: [4, 4] },
    x: { dtype: 'I32', shape: [1], data_offsets: [4, 8] },
  }, data);
  const f = parseSafetensors(ok);
  assert.deepEqual([...f.tensors.keys()], ['e1', 'e2', 'x']);
  assert.equal(f.tensors.get('e1')!.read().byteLength, 0);
});

test('reads the reference fixture header and data', fixtureOptions('vit_adapter_micro.weights.safetensors'), () => {
  const f = openSafetensors(join(fixturesDir()!, 'vit_adapter_micro.weights.safetensors'));
  try {
    const level = f.tensors.get('level_embed')!;
    assert.equal(level.dtype, 'float32');
    assert.deepEqual(level.shape, [3, 64]);
    assert.equal(level.read().byteLength, 3 * 64 * DTYPE_SIZE.float32);
    let total = 0;
    for (const t of f.tensors.values()) total += t.nbytes;
    assert.equal(8 + f.headerSize + total, readFileSync(f.path).length);
  } finally {
    f.close();
  }
});
