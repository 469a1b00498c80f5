import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { encode as encodePng } from 'fast-png';
import sharp from 'sharp';
import { ensureDir, readRegularFile, writeFileAtomic } from '../../src/io/files.js';
import { decodeImage, readImage, readLabelMap, writeLabelPng } from '../../src/io/image.js';
import { outputNames } from '../../src/cli/segment.js';
import { loadConfig } from '../../src/tasks/segmentation/configs.js';
import { runBin, writeScenePng, writeTinyWholeConfig } from './helpers.js';

/** Inverts 30 % of a JPEG's bytes from 40 % on (entropy-coded data): libjpeg decodes it with a "Corrupt JPEG data" warning. */
function damageJpeg(jpg: Uint8Array): Buffer {
  const b = Buffer.from(jpg);
  const from = Math.floor(b.length * 0.4);
  for (let i = from; i < from + Math.floor(b.length * 0.3); i++) b[i] = 0xff ^ b[i]!;
  return b;
}

interface SegJson {
  seed: number | null;
  images: { input: string; labels: string; overlay: string; warnings: string[] }[];
  failures: { input: string; error: string }[];
}

test('readRegularFile / readImage refuse devices, FIFOs and folders at once; size and pixel limits are checked before decoding', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-files-'));
  try {
    const t0 = Date.now();
    assert.throws(() => readRegularFile('/dev/zero'), /is a character device, expected a regular file/);
    await assert.rejects(readImage('/dev/zero'), /\/dev\/zero: is a character device, expected a regular image file/);
    await assert.rejects(readImage(dir), /is a folder/);
    const fifo = join(dir, 'fifo');
    if (spawnSync('mkfifo', [fifo]).status === 0 && spawnSync('mkfifo', [`${fifo}.json`]).status === 0) {
      await assert.rejects(readImage(fifo), /named pipe \(FIFO\)/);
      assert.throws(() => loadConfig(`${fifo}.json`), /cannot read config .*named pipe \(FIFO\), expected a regular config file/);
    } else {
      t.diagnostic('mkfifo not available: FIFO case not checked');
    }
    assert.ok(Date.now() - t0 < 5000, 'refused without reading or blocking');
    const png = join(dir, 'a.png');
    await writeScenePng(png, 1);
    await assert.rejects(readImage(png, { maxBytes: 100 }), /image file is .* above the limit of 100 B/);
    await assert.rejects(readImage(png, { maxPixels: 4000 }), /image is 64x64 = 0\.00 megapixels|image is 64x64 = .* above the limit/);
    const lab = join(dir, 'l.png');
    await writeLabelPng(lab, new Uint8Array(64 * 64), 64, 64);
    await assert.rejects(readLabelMap(lab, { maxPixels: 4000 }), /image is 64x64 .* above the limit/);
    // A PNG whose header says 20000×20000 (a few bytes of data) is refused from its header, before any decoding.
    const bomb = Buffer.from(encodePng({ width: 1, height: 1, data: new Uint8Array(3), depth: 8, channels: 3 }));
    bomb.writeUInt32BE(20000, 16);
    bomb.writeUInt32BE(20000, 20);
    bomb.writeUInt32BE(crc32(bomb.subarray(12, 29)), 29);
    await assert.rejects(decodeImage(new Uint8Array(bomb), 'bomb.png'), /bomb\.png: image is 20000x20000 = 400\.0 megapixels, above the limit of 250\.0 megapixels/);
    // Dangling symbolic link: says so.
    symlinkSync(join(dir, 'gone.png'), join(dir, 'dangling.png'));
    await assert.rejects(readImage(join(dir, 'dangling.png')), /dangling symbolic link/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ensureDir fails clearly (no spin) where mkdir -p would loop; writeFileAtomic replaces, never writes through', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-dirs-'));
  try {
    const t0 = Date.now();
    assert.throws(() => ensureDir('/proc/vit-adapter-test/out'), /cannot create output folder: \/proc\/vit-adapter-test/);
    writeFileSync(join(dir, 'file'), 'x');
    assert.throws(() => ensureDir(join(dir, 'file', 'sub')), /file exists and is a file, not a folder/);
    assert.ok(Date.now() - t0 < 2000);
    ensureDir(join(dir, 'a', 'b', 'c'));
    assert.ok(existsSync(join(dir, 'a', 'b', 'c')));
    // Atomic: a hard link to the target keeps the old contents (a plain write would truncate the shared inode).
    const target = join(dir, 'out.json');
    writeFileSync(target, 'old');
    linkSync(target, join(dir, 'other-link'));
    writeFileAtomic(target, 'new');
    assert.equal(readFileSync(target, 'utf8'), 'new');
    assert.equal(readFileSync(join(dir, 'other-link'), 'utf8'), 'old');
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), [], 'no temporary file left');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('label and overlay PNGs are written atomically (temp file + rename): a hard-linked old output is not written through', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-atomic-'));
  try {
    const p = join(dir, 'x_labels.png');
    await writeLabelPng(p, new Uint8Array(16).fill(1), 4, 4);
    linkSync(p, join(dir, 'keep.png'));
    await writeLabelPng(p, new Uint8Array(16).fill(2), 4, 4);
    assert.equal((await readLabelMap(p)).data[0], 2);
    assert.equal((await readLabelMap(join(dir, 'keep.png'))).data[0], 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('outputNames: unique, independent of input order, unique stems unchanged', () => {
  const inputs = ['x/a.png', 'x/a.jpg', 'x/a_2.png', 'y/a.png', 'b.png', '-'];
  const names = outputNames(inputs);
  assert.equal(new Set(names).size, names.length);
  assert.equal(names[2], 'a_2');
  assert.equal(names[4], 'b');
  assert.equal(names[5], 'stdin');
  // Shared stem 'a': the extension is appended; the same name in two folders gets a counter in path order.
  assert.deepEqual([names[0], names[1], names[3]], ['a_png', 'a_jpg', 'a_png_2']);
  const rev = [...inputs].reverse();
  const revNames = outputNames(rev);
  const map = new Map(inputs.map((f, i) => [f, names[i]]));
  rev.forEach((f, i) => assert.equal(revNames[i], map.get(f), `${f} gets the same name in any order`));
  // A stem that collides with a generated name is not reused.
  const tricky = outputNames(['a.png', 'a.jpg', 'a_png.png']);
  assert.equal(new Set(tricky).size, 3);
  assert.equal(tricky[2], 'a_png');
});

test('segment: special files, a dangling link, corrupt files and colliding names in one run — the rest is processed, failures reported, exit 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-batch-'));
  try {
    const cfg = writeTinyWholeConfig(dir);
    const inDir = join(dir, 'in');
    mkdirSync(inDir);
    await writeScenePng(join(inDir, 'a.png'), 1);
    const jpg = await sharp(readFileSync(join(inDir, 'a.png'))).jpeg({ quality: 90 }).toBuffer();
    writeFileSync(join(inDir, 'a.jpg'), jpg);
    await writeScenePng(join(inDir, 'a_2.png'), 2);
    // A JPEG with damaged entropy-coded data decodes with artefacts: processed, with the decoder's warning.
    writeFileSync(join(inDir, 'c.jpg'), damageJpeg(jpg));
    writeFileSync(join(inDir, 'broken.png'), 'this is not an image');
    symlinkSync(join(dir, 'missing.png'), join(inDir, 'dangling.png'));
    const out = join(dir, 'out');
    const r = runBin(['segment', inDir, '/dev/zero', '--config', cfg, '--out', out, '--json', '--threads', '1']);
    assert.equal(r.code, 1, r.stderr);
    const j = JSON.parse(r.stdout) as SegJson;
    assert.equal(j.images.length, 4, 'a.png, a.jpg, a_2.png, c.jpg processed');
    const labels = j.images.map((i) => i.labels);
    assert.equal(new Set(labels).size, 4, `distinct outputs: ${labels.join(', ')}`);
    assert.deepEqual(j.images.map((i) => i.labels.slice(out.length + 1)).sort(),
      ['a_2_labels.png', 'a_jpg_labels.png', 'a_png_labels.png', 'c_labels.png']);
    const warned = j.images.find((i) => i.input.endsWith('c.jpg'))!.warnings;
    assert.ok(warned.some((x) => /corrupt jpeg/i.test(x)), JSON.stringify(warned));
    assert.ok(j.images.filter((i) => !i.input.endsWith('c.jpg')).every((i) => i.warnings.length === 0));
    assert.match(r.stderr, /warning: .*c\.jpg: decoder: .*Corrupt JPEG/i);
    for (const im of j.images) assert.ok(existsSync(im.labels) && existsSync(im.overlay));
    const failed = new Map(j.failures.map((f) => [f.input, f.error]));
    assert.equal(j.failures.length, 3, JSON.stringify(j.failures));
    assert.match(failed.get('/dev/zero')!, /character device/);
    assert.match(failed.get(join(inDir, 'dangling.png'))!, /dangling symbolic link/);
    assert.match(failed.get(join(inDir, 'broken.png'))!, /cannot decode image/);
    assert.match(r.stderr, /broken\.png/);
    assert.deepEqual(readdirSync(out).filter((f) => f.includes('.tmp-')), []);

    // --fail-fast stops at the first failure (the dangling link is known before any image is read).
    const ff = runBin(['segment', inDir, '--config', cfg, '--out', join(dir, 'out-ff'), '--json', '--fail-fast']);
    assert.equal(ff.code, 1);
    const jf = JSON.parse(ff.stdout) as SegJson;
    assert.equal(jf.images.length, 0);
    assert.equal(jf.failures.length, 1);

    // --out under /proc: a clear error, promptly.
    const t0 = Date.now();
    const proc = runBin(['segment', join(inDir, 'a.png'), '--config', cfg, '--out', '/proc/vit-adapter-test/x'], { timeoutMs: 30_000 });
    assert.equal(proc.code, 1);
    assert.match(proc.stderr, /cannot create output folder: \/proc\/vit-adapter-test/);
    assert.ok(Date.now() - t0 < 30_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('segment -: reads the image from stdin; random weights are seeded, so runs agree; readImage reports a corrupt JPEG', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-stdin-'));
  try {
    const cfg = writeTinyWholeConfig(dir);
    const png = join(dir, 'p.png');
    await writeScenePng(png, 3);
    const r1 = runBin(['segment', '-', '--config', cfg, '--out', join(dir, 'o1'), '--json'], { input: readFileSync(png) });
    assert.equal(r1.code, 0, r1.stderr);
    const j1 = JSON.parse(r1.stdout) as SegJson;
    assert.equal(j1.seed, 0);
    assert.match(r1.stderr, /seeded \(--seed 0\)/);
    assert.equal(j1.images[0]!.input, '-');
    assert.equal(j1.images[0]!.labels, join(dir, 'o1', 'stdin_labels.png'));
    const r2 = runBin(['segment', png, '--config', cfg, '--out', join(dir, 'o2'), '--json']);
    assert.equal(r2.code, 0, r2.stderr);
    const a = await readLabelMap(join(dir, 'o1', 'stdin_labels.png'));
    const b = await readLabelMap(join(dir, 'o2', 'p_labels.png'));
    assert.deepEqual(a.data, b.data, 'same seed, same input: same labels');
    const r3 = runBin(['segment', png, '--config', cfg, '--out', join(dir, 'o3'), '--json', '--seed', '5']);
    assert.equal((JSON.parse(r3.stdout) as SegJson).seed, 5);
    const c = await readLabelMap(join(dir, 'o3', 'p_labels.png'));
    assert.notDeepEqual(c.data, a.data, 'another seed, other random weights');

    // A JPEG with damaged entropy-coded data decodes with artefacts: the warning reaches stderr and the JSON.
    const bad = join(dir, 'bad.jpg');
    writeFileSync(bad, damageJpeg(await sharp(readFileSync(png)).jpeg({ quality: 90 }).toBuffer()));
    const lib = await readImage(bad);
    assert.ok(lib.warnings && lib.warnings.length > 0, 'library reports the decoder warning');
    assert.equal((await readImage(png)).warnings, undefined, 'a clean file has none');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
