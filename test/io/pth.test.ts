import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError } from '../../src/io/errors.js';
import { openPth, parsePth, PthTensor } from '../../src/io/pth.js';
import { openSafetensors } from '../../src/io/safetensors.js';
import { float16ToFloat32, rawFromValues, toFloat64Array, typedView } from '../../src/io/raw.js';
import { fixtureOptions, fixturesDir, PickleWriter, tempDir, thrown } from './helpers.js';
import { T, torchPickle, torchZip, type StorageDesc } from './torchfile.js';

const floats = (n: number): Uint8Array => rawFromValues('float32', [n], Array.from({ length: n }, (_, i) => i)).data;

function storages(): Record<string, StorageDesc> {
  return {
    0: { type: 'FloatStorage', numel: 24, data: floats(24) },
    1: { type: 'HalfStorage', numel: 4, data: rawFromValues('float16', [4], [0.5, -1, 2, 65504]).data },
    2: { type: 'BoolStorage', numel: 3, data: Uint8Array.of(1, 0, 1) },
    3: { type: 'LongStorage', numel: 2, data: rawFromValues('int64', [2], [-(2n ** 40n), 7]).data },
    4: { type: 'DoubleStorage', numel: 2, data: rawFromValues('float64', [2], [0.25, 1e300]).data },
    5: { type: 'BFloat16Storage', numel: 2, data: rawFromValues('bfloat16', [2], [1, -3]).data },
    6: { type: 'FloatStorage', numel: 1, data: floats(1) },
  };
}

const root = {
  meta: { epoch: 3, name: 'x' },
  state_dict: {
    w: T('0', [2, 3]),
    wt: T('0', [3, 2], { stride: [1, 3] }),
    view: T('0', [2, 2], { offset: 7, stride: [6, 2] }),
    h: T('1', [4]),
    b: T('2', [3]),
    l: T('3', [2]),
    p: T('4', [2], { parameter: true }),
    bf: T('5', [2]),
    scalar: T('6', []),
    empty: T('0', [0, 3]),
  },
};

const values = (t: PthTensor): number[] => Array.from(toFloat64Array({ dtype: t.dtype, data: t.read() }));

test('hand-built pth: strided views, shared storage, every storage type', () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'model.weights'); // extension is irrelevant
    writeFileSync(path, torchZip('my_ckpt', root, storages()));
    const f = openPth(path);
    try {
      assert.equal(f.folder, 'my_ckpt');
      const sd = (f.root as Record<string, Record<string, PthTensor>>)['state_dict']!;
      assert.deepEqual((f.root as Record<string, unknown>)['meta'], { epoch: 3, name: 'x' });
      const { w, wt, view, h, b, l, p, bf, scalar, empty } = sd as Record<string, PthTensor>;
      assert.ok(w instanceof PthTensor && wt instanceof PthTensor && view instanceof PthTensor);
      assert.deepEqual(values(w!), [0, 1, 2, 3, 4, 5]);
      assert.ok(w!.isContiguous());
      assert.ok(!wt!.isContiguous());
      assert.deepEqual(values(wt!), [0, 3, 1, 4, 2, 5]);
      assert.equal(w!.storage, wt!.storage, 'two tensors share one storage');
      assert.equal(w!.storage, view!.storage);
      assert.equal(f.storages.size, 7);
      assert.equal(view!.storageOffset, 7);
      assert.deepEqual(values(view!), [7, 9, 13, 15]);
      assert.equal(h!.dtype, 'float16');
      assert.deepEqual(Array.from(float16ToFloat32(typedView({ dtype: 'float16' as const, data: h!.read() }))), [0.5, -1, 2, 65504]);
      assert.equal(b!.dtype, 'bool');
      assert.deepEqual(b!.read(), Uint8Array.of(1, 0, 1));
      assert.equal(l!.dtype, 'int64');
      assert.deepEqual(Array.from(typedView({ dtype: 'int64' as const, data: l!.read() })), [-(2n ** 40n), 7n]);
      assert.equal(p!.dtype, 'float64');
      assert.deepEqual(values(p!), [0.25, 1e300]);
      assert.equal(bf!.dtype, 'bfloat16');
      assert.deepEqual(values(bf!), [1, -3]);
      assert.deepEqual(scalar!.shape, []);
      assert.deepEqual(values(scalar!), [0]);
      assert.equal(empty!.read().byteLength, 0);
      assert.equal(view!.nbytes, 16);
    } finally {
      f.close();
    }
  } finally {
    cleanup();
  }
});

test('big-endian archives are byte-swapped', () => {
  const be = new Uint8Array(8);
  new DataView(be.buffer).setFloat32(0, 1.5, false);
  new DataView(be.buffer).setFloat32(4, -2, false);
  const bytes = torchZip('archive', { x: T('0', [2]) }, { 0: { type: 'FloatStorage', numel: 2, data: be } }, { byteorder: 'big' });
  const f = parsePth(bytes, 'be.pth');
  assert.deepEqual(values((f.root as Record<string, PthTensor>)['x']!), [1.5, -2]);
});

test('legacy (pre-1.6) checkpoints get a conversion hint', () => {
  // what torch.save(_use_new_zipfile_serialization=False) starts with: PROTO 2, LONG1 magic number
  const legacy = Uint8Array.of(0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e);
  const err = thrown(() => parsePth(legacy, 'old.pth'));
  assert.ok(err instanceof CheckpointError);
  assert.match(err.message, /^old\.pth: .*legacy \(pre-1\.6\)/);
  assert.match(err.message, /torch\.save\(torch\.load\(/);
  assert.match(err.message, /_use_new_zipfile_serialization=True/);
  const tar = new Uint8Array(1024);
  tar.set(new TextEncoder().encode('ustar'), 257);
  assert.match(thrown(() => parsePth(tar, 'older.pth')).message, /legacy/);
});

test('malicious data.pkl inside a checkpoint is refused', () => {
  const evil = new PickleWriter().proto(2).global('os', 'system').str('touch /tmp/pwned').tuple1().reduce().stop().done();
  const bytes = torchZip('archive', {}, {}, { pkl: evil });
  const err = thrown(() => parsePth(bytes, 'evil.pth'));
  assert.match(err.message, /^evil\.pth: entry 'archive\/data\.pkl': pickle: global 'os\.system' is not on the allow list/);
});

test('inconsistent checkpoints are refused: missing storage, wrong size, view out of bounds, truncated zip', () => {
  const sto = storages();
  const pkl = torchPickle({ x: T('9', [1]) }, { ...sto, 9: { type: 'FloatStorage', numel: 1, data: floats(1) } });
  const noData = torchZip('a', {}, sto, { pkl });
  assert.match(thrown(() => parsePth(noData, 'nodata.pth')).message, /nodata\.pth: entry 'a\/data\/9': storage entry is missing/);

  const wrongSize = torchZip('a', { x: T('0', [2]) }, { 0: { type: 'FloatStorage', numel: 3, data: floats(2) } });
  assert.match(thrown(() => parsePth(wrongSize, 'size.pth')).message, /entry 'a\/data\/0': storage has 8 bytes but 3 elements of float32 need 12/);

  const oob = torchZip('a', { x: T('0', [3, 3], { offset: 20 }) }, sto);
  assert.match(thrown(() => parsePth(oob, 'oob.pth')).message, /oob\.pth: entry 'a\/data\/0': tensor view .* reaches element 28 but the storage has 24 elements/);

  const good = torchZip('a', root, sto);
  const cut = good.subarray(0, good.length - 30);
  assert.match(thrown(() => parsePth(cut, 'cut.pth')).message, /cut\.pth: end of central directory record not found.*truncated/);

  const notZip = new TextEncoder().encode('hello world, not a checkpoint');
  assert.match(thrown(() => parsePth(notZip, 'x.pth')).message, /not a PyTorch zip checkpoint/);
});

test('reference vit_adapter_micro.pth equals its safetensors twin', fixtureOptions('vit_adapter_micro.pth', 'vit_adapter_micro.weights.safetensors'), () => {
  const dir = fixturesDir()!;
  const pth = openPth(join(dir, 'vit_adapter_micro.pth'));
  const st = openSafetensors(join(dir, 'vit_adapter_micro.weights.safetensors'));
  try {
    const sd = (pth.root as Record<string, Record<string, PthTensor>>)['state_dict']!;
    const names = Object.keys(sd);
    assert.ok(names.every((n) => n.startsWith('backbone.')));
    const stripped = names.map((n) => n.slice('backbone.'.length));
    assert.deepEqual([...stripped].sort(), [...st.tensors.keys()].sort());
    for (const n of names) {
      const a = sd[n]!;
      const b = st.tensors.get(n.slice('backbone.'.length))!;
      assert.equal(a.dtype, b.dtype, n);
      assert.deepEqual(a.shape, b.shape, n);
      assert.deepEqual(a.read(), b.read(), n);
    }
  } finally {
    pth.close();
    st.close();
  }
});
