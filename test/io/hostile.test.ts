/**
 * Hostile checkpoint files, built by hand in the test: a pickle DAG of shared references (exponential when
 * expanded), a million nested lists, decompression bombs, a storage shared by many tensors, duplicate zip entry
 * names, and a deeply nested .npy header. Each must end in a clear error or a bounded amount of work, never an
 * out-of-memory abort or a stack overflow. Checks whose failure mode is a process abort run in a child process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { CheckpointError } from '../../src/io/errors.js';
import { JSON_SAFE_BUDGET_NOTE, loadCheckpoint, toJsonSafe } from '../../src/io/checkpoint.js';
import { inspectFile } from '../../src/io/inspect.js';
import { parseNpy } from '../../src/io/npz.js';
import { MAX_PICKLE_DEPTH, unpickle } from '../../src/io/pickle.js';
import { ZipReader, zipStats } from '../../src/io/zip.js';
import { PickleWriter, buildZip, repoRoot, tempDir, thrown } from './helpers.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * Writes `{'state_dict': {<tensors>}, 'meta': <meta>}` the way torch.save does: each tensor is a view
 * `(offset, [size])` of the FloatStorage '0' of `numel` elements. `meta(w)` writes the meta value (memo ids from 100
 * are free). Returns the pickle bytes; `metaBytes` (raw opcodes) replaces `meta` when given.
 */
function statePickle(views: [string, number, number][], numel: number, meta: ((w: PickleWriter) => void) | Uint8Array): Uint8Array {
  const w = new PickleWriter().proto(2);
  w.emptyDict().put(0).mark().str('state_dict');
  w.emptyDict().put(1).mark();
  w.global('torch._utils', '_rebuild_tensor_v2').put(2).pop();
  w.global('collections', 'OrderedDict').put(3).pop();
  views.forEach(([name, offset, size], i) => {
    w.str(name);
    w.get(2).mark();
    if (i === 0) {
      w.mark().str('storage').global('torch', 'FloatStorage').str('0').str('cpu').int(numel).tuple().put(4);
    } else {
      w.get(4);
    }
    w.binpersid().int(offset);
    w.mark().int(size).tuple();
    w.mark().int(1).tuple();
    w.bool(false).get(3).emptyTuple().reduce();
    w.tuple().reduce();
  });
  w.setitems();
  w.str('meta');
  if (typeof meta === 'function') {
    meta(w);
    return w.setitems().stop().done();
  }
  return concat(w.done(), meta, new PickleWriter().setitems().stop().done());
}

function floatBytes(n: number, f: (i: number) => number): Uint8Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = f(i);
  return new Uint8Array(a.buffer);
}

/** A checkpoint zip: data.pkl, the storage '0' (optionally deflated), version. */
function pthZip(pkl: Uint8Array, storage: Uint8Array, o: { deflateStorage?: boolean } = {}): Uint8Array {
  return buildZip([
    { name: 'archive/data.pkl', data: pkl },
    { name: 'archive/data/0', data: storage, deflate: o.deflateStorage },
    { name: 'archive/version', data: enc('3\n') },
  ]);
}

/** Sets the uncompressed size the central directory declares for `name` (to build a lying archive). */
function patchCentralSize(zip: Uint8Array, name: string, size: number): void {
  const dv = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const nameBytes = enc(name);
  for (let p = 0; p + 46 <= zip.length; p++) {
    if (dv.getUint32(p, true) !== 0x02014b50) continue;
    const n = dv.getUint16(p + 28, true);
    if (n === nameBytes.length && nameBytes.every((b, i) => zip[p + 46 + i] === b)) {
      dv.setUint32(p + 24, size, true);
      return;
    }
  }
  throw new Error(`no central directory entry ${name}`);
}

test('a 2 kB pickle DAG of shared references (10^30 nodes when expanded) loads and inspects in bounded memory', () => {
  const { dir, cleanup } = tempDir();
  try {
    // level 0 = [], level k = [level k-1] * 10 through the memo: tiny on disk, 10^30 leaves as a tree
    const width = 10;
    const depth = 30;
    // meta = {'list': <DAG of lists>, <DAG of tuples>: 1} (a tuple is a valid dict key: its name must not expand)
    const pkl = statePickle([['w', 0, 4]], 4, (w) => {
      w.emptyList().put(100).pop();
      for (let k = 1; k <= depth; k++) {
        w.emptyList().mark();
        for (let j = 0; j < width; j++) w.get(100 + k - 1);
        w.appends().put(100 + k).pop();
      }
      w.emptyTuple().put(200).pop();
      for (let k = 1; k <= depth; k++) {
        w.mark();
        for (let j = 0; j < width; j++) w.get(200 + k - 1);
        w.tuple().put(200 + k).pop();
      }
      w.emptyDict().mark().str('list').get(100 + depth).get(200 + depth).int(1).setitems();
    });
    const file = join(dir, 'dag.pth');
    const bytes = pthZip(pkl, floatBytes(4, (i) => i + 1));
    assert.ok(bytes.length < 2500, `the bomb is ${bytes.length} bytes`);
    writeFileSync(file, bytes);
    // The real loaders, in a child process with a small heap: before the fix this aborted (V8 heap OOM, SIGABRT).
    // (The io layer only, so that the child does not load libtorch: loadCheckpoint + read() is what readStateDict
    // and loadWeights do before handing bytes to the engine.)
    const io = pathToFileURL(join(repoRoot(), 'dist/src/io/index.js')).href;
    const code = `
      import { inspectFile, loadCheckpoint } from ${JSON.stringify(io)};
      const file = ${JSON.stringify(file)};
      const ck = loadCheckpoint(file);
      const b = ck.tensors.get('w').read();
      const w = Array.from(new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4));
      ck.close();
      const r = inspectFile(file);
      const text = JSON.stringify(r);
      console.log(JSON.stringify({ w, tensors: r.tensors.map((t) => t.name), length: text.length,
        truncated: text.includes(${JSON.stringify(JSON_SAFE_BUDGET_NOTE)}) }));`;
    const r = spawnSync(process.execPath, ['--max-old-space-size=128', '--input-type=module', '-e', code], {
      encoding: 'utf8', timeout: 60_000,
    });
    assert.equal(r.signal, null, `child killed by ${r.signal}: ${r.stderr.slice(-2000)}`);
    assert.equal(r.status, 0, r.stderr.slice(-2000));
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { w: number[]; tensors: string[]; length: number; truncated: boolean };
    assert.deepEqual(out.w, [1, 2, 3, 4]);
    assert.deepEqual(out.tensors, ['w']);
    assert.ok(out.truncated, 'the metadata says where it was cut');
    assert.ok(out.length < 4_000_000, `inspect output is ${out.length} chars`);
  } finally {
    cleanup();
  }
});

test('toJsonSafe bounds what it writes whatever the sharing: long strings and keys referenced many times', () => {
  // Sized so that a regression (no budget) fails the assertion instead of exhausting memory: 729 references to one
  // dict with a 20 000-character key and value would be 29 MB of JSON.
  const long = 'k'.repeat(20_000);
  let level: unknown = Object.fromEntries([[long, long]]);
  for (let i = 0; i < 6; i++) level = [level, level, level]; // 3^6 references to one dict
  const text = JSON.stringify(toJsonSafe(level, { maxString: 50_000 }));
  // the default budget is 10^6 string characters (keys included) and 10^5 values
  assert.ok(text.length < 1_300_000, `${text.length} chars written`);
  assert.ok(text.includes(JSON_SAFE_BUDGET_NOTE));
});

test('checkpoint metadata is converted only when read (loading tensors never touches it)', () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, 'm.pth');
    writeFileSync(file, pthZip(statePickle([['w', 0, 2]], 2, (w) => { w.str('hello'); }), floatBytes(2, (i) => i)));
    const ck = loadCheckpoint(file);
    try {
      const d = Object.getOwnPropertyDescriptor(ck, 'metadata');
      assert.ok(d && typeof d.get === 'function' && d.value === undefined, 'metadata is a lazy getter');
      assert.deepEqual(ck.metadata, { meta: 'hello' });
      assert.equal(ck.metadata, ck.metadata, 'computed once');
    } finally {
      ck.close();
    }
  } finally {
    cleanup();
  }
});

/** n nested lists: `]` × n then `a` × (n − 1) (EMPTY_LIST + APPEND), or `(` × n then `l` × n (MARK + LIST). */
function nestedOps(n: number, how: 'append' | 'mark'): Uint8Array {
  const out = new Uint8Array(2 * n - (how === 'append' ? 1 : 0));
  out.fill(how === 'append' ? 0x5d : 0x28, 0, n);
  out.fill(how === 'append' ? 0x61 : 0x6c, n);
  return out;
}

for (const how of ['append', 'mark'] as const) {
  test(`200 000 nested lists (${how === 'append' ? 'EMPTY_LIST + APPEND' : 'MARK + LIST'}) are refused with a clear error, no stack overflow`, () => {
    const { dir, cleanup } = tempDir();
    try {
      // 200× the bound and 20× what overflows the JS stack in a recursive walk; a million behaves the same (the cost
      // is building the objects: ~2 s per million here, so the test uses fewer)
      const n = 200_000;
      const pkl = statePickle([['w', 0, 2]], 2, nestedOps(n, how));
      const file = join(dir, 'deep.pth');
      writeFileSync(file, pthZip(pkl, floatBytes(2, (i) => i)));
      const deep = new RegExp(`nested more than ${MAX_PICKLE_DEPTH} levels deep`);
      {
        const e = thrown(() => inspectFile(file));
        assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
        assert.match(e.message, deep);
        assert.match(e.message, /deep\.pth/);
      }
      // the raw reader too, in both dict modes (the map mode returned the whole deep tree before)
      const raw = concat(new PickleWriter().proto(2).done(), nestedOps(n, how), new PickleWriter().stop().done());
      for (const dicts of ['object', 'map'] as const) {
        const e = thrown(() => unpickle(raw, { dicts }));
        assert.ok(e instanceof CheckpointError, `${dicts}: ${e.name}: ${e.message}`);
        assert.match(e.message, deep);
      }
      // just under the bound is fine
      const ok = concat(new PickleWriter().proto(2).done(), nestedOps(MAX_PICKLE_DEPTH, how), new PickleWriter().stop().done());
      let v = unpickle(ok) as unknown[];
      let levels = 1;
      while (v.length) { v = v[0] as unknown[]; levels++; }
      assert.equal(levels, MAX_PICKLE_DEPTH);
    } finally {
      cleanup();
    }
  });
}

test('decompression bomb: inflating stops at the central directory size with an error', () => {
  const { dir, cleanup } = tempDir();
  try {
    const pkl = statePickle([['w', 0, 2]], 2, (w) => { w.none(); });
    // data.pkl's deflate stream holds the pickle and then 16 MiB more; the directory declares the pickle's size
    const zip = buildZip([
      { name: 'archive/data.pkl', data: concat(pkl, new Uint8Array(16 << 20)), deflate: true },
      { name: 'archive/data/0', data: floatBytes(2, (i) => i) },
    ]);
    patchCentralSize(zip, 'archive/data.pkl', pkl.length);
    assert.ok(zip.length < 64 * 1024, `${zip.length} bytes`);
    const file = join(dir, 'bomb.pth');
    writeFileSync(file, zip);
    const before = zipStats.inflatedBytes;
    const e = thrown(() => loadCheckpoint(file));
    assert.ok(e instanceof CheckpointError);
    assert.match(e.message, /entry 'archive\/data\.pkl'.*inflates to more than the \d+ bytes the central directory declares/);
    assert.equal(zipStats.inflatedBytes, before, 'nothing was produced beyond the limit');
    // the same through ZipReader directly, whole-entry and prefix reads
    const z = ZipReader.fromBuffer(zip, 'bomb.zip');
    assert.throws(() => z.read('archive/data.pkl'), /inflates to more than/);
    assert.throws(() => z.readPrefix('archive/data.pkl', 16), /inflate|declares/);
  } finally {
    cleanup();
  }
});

test('64 tensors viewing one deflated 4 MiB storage inflate it once per load', async () => {
  const { readStateDict } = await import('../../src/nn/serialization.js');
  const { dir, cleanup } = tempDir();
  try {
    const numel = 1 << 20; // 4 MiB of float32 (the count, not the size, is what the test checks)
    const per = numel / 64;
    const views: [string, number, number][] = Array.from({ length: 64 }, (_, i) => [`t${i}`, i * per, per]);
    const file = join(dir, 'shared.pth');
    // zeros with a marker at each tensor's first and last element (zeros deflate fast: the test stays quick)
    const data = new Float32Array(numel);
    for (let i = 0; i < 64; i++) { data[i * per] = i + 1; data[i * per + per - 1] = -(i + 1); }
    writeFileSync(file, pthZip(statePickle(views, numel, (w) => { w.none(); }), new Uint8Array(data.buffer), { deflateStorage: true }));
    const before = zipStats.inflations;
    const sd = readStateDict(file);
    try {
      // before the fix: one inflation of the whole storage per tensor (64)
      assert.equal(zipStats.inflations - before, 1, 'inflations of the shared storage');
      assert.equal(sd.size, 64);
      const t9 = sd.get('t9')!.toTypedArray() as Float32Array;
      assert.equal(t9.length, per);
      assert.equal(t9[0], 10);
      assert.equal(t9[per - 1], -10);
      assert.equal(t9[1], 0);
    } finally {
      for (const t of sd.values()) t.dispose();
    }
    // a second load inflates again (the cache lives for one load only)
    const again = readStateDict(file);
    for (const t of again.values()) t.dispose();
    assert.equal(zipStats.inflations - before, 2);
  } finally {
    cleanup();
  }
});

test('a zip with two entries of the same name is refused, naming the entry', () => {
  const { dir, cleanup } = tempDir();
  try {
    const good = statePickle([['w', 0, 2]], 2, (w) => { w.str('first'); });
    const evil = statePickle([['w', 0, 2]], 2, (w) => { w.str('second'); });
    const file = join(dir, 'dup.pth');
    writeFileSync(file, buildZip([
      { name: 'archive/data.pkl', data: good },
      { name: 'archive/data/0', data: floatBytes(2, (i) => i) },
      { name: 'archive/data.pkl', data: evil },
    ]));
    for (const load of [() => loadCheckpoint(file), () => inspectFile(file), () => ZipReader.open(file)]) {
      const e = thrown(load);
      assert.ok(e instanceof CheckpointError, e.message);
      assert.match(e.message, /entry 'archive\/data\.pkl': the archive has two entries with the same name \(central directory entries 0 and 2\)/);
    }
  } finally {
    cleanup();
  }
});

test('a .npy header nested 100 000 brackets deep is a clear error, not a stack overflow', () => {
  const n = 100_000;
  const header = `{'descr': '<f4', 'fortran_order': False, 'shape': ${'('.repeat(n)}${')'.repeat(n)}, }`;
  const text = enc(`${header}\n`);
  const npy = new Uint8Array(12 + text.length);
  npy.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 2, 0]);
  new DataView(npy.buffer).setUint32(8, text.length, true);
  npy.set(text, 12);
  const e = thrown(() => parseNpy(npy, 'deep.npy'));
  assert.ok(e instanceof CheckpointError, `${e.name}: ${e.message}`);
  assert.match(e.message, /brackets nested more than 32 levels deep/);
  assert.ok(e.message.length < 1000, 'the header is not echoed whole');
});
