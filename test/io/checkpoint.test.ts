import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { detectFormat, loadCheckpoint, toJsonSafe } from '../../src/io/checkpoint.js';
import { convertToSafetensors, inspectFile } from '../../src/io/inspect.js';
import { addPrefix, compareKeys, formatKeyReport, renameKeys, selectPrefix, stripPrefix } from '../../src/io/keys.js';
import { rawFromValues, type LazyTensor } from '../../src/io/raw.js';
import { openSafetensors, serializeSafetensors } from '../../src/io/safetensors.js';
import { fixtureOptions, fixturesDir, tempDir, thrown } from './helpers.js';
import { T, torchZip, type StorageDesc } from './torchfile.js';

const sto: Record<string, StorageDesc> = {
  0: { type: 'FloatStorage', numel: 6, data: rawFromValues('float32', [6], [1, 2, 3, 4, 5, 6]).data },
  1: { type: 'LongStorage', numel: 1, data: rawFromValues('int64', [1], [10]).data },
};

test('format detection uses magic bytes, not extensions', () => {
  const { dir, cleanup } = tempDir();
  try {
    const st = join(dir, 'really-safetensors.pth');
    writeFileSync(st, serializeSafetensors([['a', rawFromValues('float32', [1], [1])]]));
    const pth = join(dir, 'really-pth.safetensors');
    writeFileSync(pth, torchZip('archive', { a: T('0', [6]) }, sto));
    assert.equal(detectFormat(st), 'safetensors');
    assert.equal(detectFormat(pth), 'pth');
    const junk = join(dir, 'junk.bin');
    writeFileSync(junk, new TextEncoder().encode('this is not a checkpoint at all'));
    assert.match(thrown(() => detectFormat(junk)).message, /junk\.bin: unrecognised checkpoint format/);
    const empty = join(dir, 'empty.pth');
    writeFileSync(empty, new Uint8Array(0));
    assert.match(thrown(() => loadCheckpoint(empty)).message, /empty\.pth: .*(empty|truncated)/);
    const legacy = join(dir, 'legacy.pth');
    writeFileSync(legacy, Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e));
    assert.match(thrown(() => loadCheckpoint(legacy)).message, /legacy\.pth: .*legacy.*torch\.save\(torch\.load/);
    assert.match(thrown(() => loadCheckpoint(join(dir, 'missing.pth'))).message, /missing\.pth: cannot open file/);
    const full = serializeSafetensors([['a', rawFromValues('float32', [64], new Array(64).fill(1))]]);
    const cutHeader = join(dir, 'cut-header.safetensors');
    writeFileSync(cutHeader, full.subarray(0, 40));
    assert.match(thrown(() => loadCheckpoint(cutHeader)).message, /cut-header\.safetensors: .*header length exceeds the file: truncated/);
    const cutData = join(dir, 'cut-data.safetensors');
    writeFileSync(cutData, full.subarray(0, full.length - 8));
    assert.match(thrown(() => loadCheckpoint(cutData)).message, /cut-data\.safetensors: entry 'a': data_offsets \[0, 256\] out of bounds/);
  } finally {
    cleanup();
  }
});

test('pth flattening: state_dict / model / module keys, nested dicts, metadata', () => {
  const { dir, cleanup } = tempDir();
  try {
    const cases: [string, Record<string, unknown>, string | null][] = [
      ['state_dict', { meta: { epoch: 3 }, state_dict: { 'backbone.w': T('0', [2, 3]), 'backbone.n': T('1', []) } }, 'state_dict'],
      ['model', { epoch: 5, model: { backbone: { w: T('0', [2, 3]) }, 'backbone.n': T('1', []) } }, 'model'],
      ['module', { module: { 'backbone.w': T('0', [2, 3]), 'backbone.n': T('1', []) } }, 'module'],
      ['plain', { 'backbone.w': T('0', [2, 3]), 'backbone.n': T('1', []), version: 'v1' }, null],
    ];
    for (const [label, root, key] of cases) {
      const path = join(dir, `${label}.pth`);
      writeFileSync(path, torchZip(label, root as never, sto));
      const ck = loadCheckpoint(path);
      try {
        assert.equal(ck.format, 'pth');
        assert.equal(ck.stateDictKey, key, label);
        assert.deepEqual([...ck.tensors.keys()].sort(), ['backbone.n', 'backbone.w'], label);
        assert.deepEqual(ck.tensors.get('backbone.w')!.shape, [2, 3]);
        if (label === 'state_dict') assert.deepEqual(ck.metadata, { meta: { epoch: 3 } });
        if (label === 'model') assert.deepEqual(ck.metadata, { epoch: 5 });
        if (label === 'plain') assert.deepEqual(ck.metadata, { version: 'v1' });
      } finally {
        ck.close();
      }
    }
    // explicit key; tensors elsewhere in metadata become descriptors
    const path = join(dir, 'ema.pth');
    writeFileSync(path, torchZip('x', { state_dict: { a: T('0', [6]) }, ema: { a: T('0', [3], { offset: 3 }) } }, sto));
    const ck = loadCheckpoint(path, { stateDictKey: 'ema' });
    assert.equal(ck.stateDictKey, 'ema');
    assert.deepEqual([...ck.tensors.keys()], ['a']);
    assert.deepEqual(ck.tensors.get('a')!.read(), rawFromValues('float32', [3], [4, 5, 6]).data);
    assert.deepEqual(ck.metadata, { state_dict: { a: { __tensor__: { dtype: 'float32', shape: [6] } } } });
    ck.close();
  } finally {
    cleanup();
  }
});

test('toJsonSafe handles bigint, bytes, NaN, Maps, Sets, long strings, cycles', () => {
  const cyc: unknown[] = [];
  cyc.push(cyc);
  const v = toJsonSafe({
    big: 2n ** 70n, nan: NaN, inf: -Infinity, bytes: Uint8Array.of(1, 2), set: new Set([1]),
    map: new Map<unknown, unknown>([[1, 'a']]), smap: new Map([['k', 1]]), long: 'x'.repeat(5000), cyc,
  }, { maxString: 10 }) as Record<string, unknown>;
  assert.deepEqual(v, {
    big: '1180591620717411303424', nan: 'NaN', inf: '-Infinity', bytes: { __bytes__: 2 }, set: [1],
    map: [[1, 'a']], smap: { k: 1 }, long: 'xxxxxxxxxx... [truncated, 5000 chars]', cyc: ['[circular]'],
  });
  assert.doesNotThrow(() => JSON.stringify(v));
});

test('key utilities', () => {
  const m = new Map<string, number>([['module.backbone.a', 1], ['module.backbone.b', 2], ['module.head.c', 3], ['d', 4]]);
  assert.deepEqual([...stripPrefix(m, 'module.').keys()], ['backbone.a', 'backbone.b', 'head.c', 'd']);
  assert.deepEqual([...selectPrefix(stripPrefix(m, 'module.'), 'backbone')], [['a', 1], ['b', 2]]);
  assert.deepEqual([...addPrefix(new Map([['x', 1]]), 'backbone.').keys()], ['backbone.x']);
  const renamed = renameKeys(new Map([['blocks.0.attn.qkv.weight', 1], ['blocks.1.gamma_1', 2]]), [
    [/^blocks\.(\d+)\.attn\./, 'layers.$1.attention.'],
    ['gamma_1', 'gamma1'],
  ]);
  assert.deepEqual([...renamed.keys()], ['layers.0.attention.qkv.weight', 'blocks.1.gamma1']);
  assert.throws(() => stripPrefix(new Map([['a.x', 1], ['x', 2]]), 'a.'), /key collision: 'x'/);

  const expected = new Map<string, number[]>([['a', [2, 3]], ['b', [4]], ['c', [1]]]);
  const got = new Map<string, number[] | LazyTensor>([
    ['a', [2, 3]],
    ['b', { dtype: 'float32', shape: [5], nbytes: 20, read: () => new Uint8Array(20) }],
    ['z', [1]],
  ]);
  const r = compareKeys(expected, got);
  assert.deepEqual(r, {
    matched: ['a'], missing: ['c'], unexpected: ['z'], mismatched: [{ key: 'b', expected: [4], got: [5] }],
  });
  assert.match(formatKeyReport(r), /1 matched\n1 missing: c\n1 unexpected: z\n1 shape mismatches: b expected \[4\] got \[5\]/);
});

test('inspectFile lists tensors without reading data', () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'm.pth');
    writeFileSync(path, torchZip('m', { meta: { note: 'hi' }, state_dict: { w: T('0', [2, 3]), n: T('1', []) } }, sto));
    const info = inspectFile(path);
    assert.deepEqual(info.tensors, [{ name: 'w', dtype: 'float32', shape: [2, 3] }, { name: 'n', dtype: 'int64', shape: [] }]);
    assert.equal(info.num_parameters, 7);
    assert.equal(info.total_bytes, 32);
    assert.equal(info.format, 'pth');
    assert.deepEqual(info.metadata, { meta: { note: 'hi' } });
    assert.doesNotThrow(() => JSON.stringify(info));
  } finally {
    cleanup();
  }
});

test('convertToSafetensors: prefix, strip, overwrite in place', () => {
  const { dir, cleanup } = tempDir();
  try {
    const src = join(dir, 'm.pth');
    writeFileSync(src, torchZip('m', {
      state_dict: { 'module.backbone.w': T('0', [2, 3]), 'module.backbone.n': T('1', []), 'module.head.b': T('0', [2], { offset: 4 }) },
    }, sto));
    const out = join(dir, 'backbone.safetensors');
    const r = convertToSafetensors(src, out, { strip: ['module.'], prefix: '' });
    assert.deepEqual(r.names, ['backbone.w', 'backbone.n', 'head.b']);
    const r2 = convertToSafetensors(src, out, { prefix: 'module.backbone' });
    assert.deepEqual(r2.names, ['w', 'n']);
    const f = openSafetensors(out);
    assert.deepEqual(f.tensors.get('w')!.read(), sto['0']!.data);
    assert.deepEqual(f.metadata, { format: 'pt', source: 'm.pth' });
    f.close();
    // rewriting a file onto itself works (temporary file + rename)
    convertToSafetensors(out, out, { strip: [] });
    const g = openSafetensors(out);
    assert.deepEqual([...g.tensors.keys()].sort(), ['n', 'w']);
    assert.deepEqual(g.tensors.get('w')!.read(), sto['0']!.data);
    g.close();
    assert.match(thrown(() => convertToSafetensors(src, out, { prefix: 'nothing' })).message, /no tensor name starts with 'nothing\.'/);
  } finally {
    cleanup();
  }
});

test('reference pth converts to the reference safetensors', fixtureOptions('vit_adapter_micro.pth', 'vit_adapter_micro.weights.safetensors'), () => {
  const { dir, cleanup } = tempDir();
  try {
    const fx = fixturesDir()!;
    const ck = loadCheckpoint(join(fx, 'vit_adapter_micro.pth'));
    const ref = loadCheckpoint(join(fx, 'vit_adapter_micro.weights.safetensors'));
    try {
      assert.equal(ck.stateDictKey, 'state_dict');
      assert.deepEqual(ck.metadata, { meta: { note: 'mmseg-style checkpoint' } });
      const stripped = stripPrefix(ck.tensors, 'backbone.');
      const report = compareKeys(new Map([...ref.tensors].map(([k, t]) => [k, t.shape])), stripped);
      assert.equal(report.missing.length + report.unexpected.length + report.mismatched.length, 0);
      const out = join(dir, 'converted.safetensors');
      const r = convertToSafetensors(join(fx, 'vit_adapter_micro.pth'), out, { prefix: 'backbone' });
      assert.equal(r.tensors, ref.tensors.size);
      const conv = openSafetensors(out);
      for (const [k, t] of ref.tensors) assert.deepEqual(conv.tensors.get(k)!.read(), t.read(), k);
      conv.close();
      const info = inspectFile(join(fx, 'vit_adapter_micro.weights.safetensors'));
      assert.equal(info.num_parameters, [...ref.tensors.values()].reduce((s, t) => s + t.nbytes / 4, 0));
    } finally {
      ck.close();
      ref.close();
    }
  } finally {
    cleanup();
  }
});
