import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { encode as encodePng } from 'fast-png';
import {
  readImage,
  readLabelMap,
  writeLabelPng,
  writeRgbPng,
  writeRgbJpeg,
  blendOverlay,
  decodeLabelPng,
  encodeLabelPng,
  ImageIoError,
} from '../../src/io/image.js';
import { ADE20K_PALETTE } from '../../src/tasks/segmentation/classes.js';

const dir = mkdtempSync(join(tmpdir(), 'vit-adapter-imgio-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function gradient(w: number, h: number): Uint8Array {
  const d = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      d[i] = (x * 255) / (w - 1);
      d[i + 1] = (y * 255) / (h - 1);
      d[i + 2] = 128;
    }
  }
  return d;
}

test('palette label PNG round trip keeps indices (including 255)', async () => {
  const w = 7;
  const h = 5;
  const labels = new Uint8Array(w * h);
  for (let i = 0; i < labels.length; i++) labels[i] = i === 3 ? 255 : (i * 37) % 150;
  const path = join(dir, 'sub', 'label.png');
  await writeLabelPng(path, labels, h, w, ADE20K_PALETTE);
  const back = await readLabelMap(path);
  assert.equal(back.width, w);
  assert.equal(back.height, h);
  assert.deepEqual([...back.data], [...labels]);
  // sharp sees a colour image: the palette really is in the file
  const { data } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([...data.subarray(3, 6)], [...ADE20K_PALETTE[labels[1]!]!]);
});

test('grayscale label PNG round trip, and 16-bit values are range-checked', async () => {
  const labels = Uint8Array.from([0, 1, 2, 254, 255, 7]);
  const back = decodeLabelPng(encodeLabelPng(labels, 2, 3));
  assert.deepEqual([...back.data], [...labels]);
  const ok16 = encodePng({ width: 2, height: 1, data: Uint16Array.from([3, 255]), depth: 16, channels: 1 });
  assert.deepEqual([...decodeLabelPng(ok16).data], [3, 255]);
  const bad16 = encodePng({ width: 2, height: 1, data: Uint16Array.from([3, 256]), depth: 16, channels: 1 });
  assert.throws(() => decodeLabelPng(bad16, 'x.png'), /x\.png: 16-bit label value 256 at \(x=1, y=0\)/);
});

test('label maps: clear errors for RGB PNGs, non-PNG files and missing files', async () => {
  const rgb = join(dir, 'rgb.png');
  await writeRgbPng(rgb, gradient(4, 3), 3, 4);
  await assert.rejects(readLabelMap(rgb), (e: unknown) => e instanceof ImageIoError && e.file === rgb && /RGB/.test(e.problem));
  const txt = join(dir, 'not-a-png.png');
  writeFileSync(txt, 'hello');
  await assert.rejects(readLabelMap(txt), /not a PNG file/);
  await assert.rejects(readLabelMap(join(dir, 'missing.png')), /missing\.png: file not found/);
  await assert.rejects(readImage(txt), /not-a-png\.png: cannot decode image/);
  await assert.rejects(writeLabelPng(join(dir, 'bad.png'), [300], 1, 1), /bad\.png: label value 300/);
});

test('readImage: PNG exact, JPEG close, alpha dropped, grey expanded', async () => {
  const w = 16;
  const h = 12;
  const px = gradient(w, h);
  const png = join(dir, 'img.png');
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(png);
  const a = await readImage(png);
  assert.deepEqual([a.width, a.height, a.channels], [w, h, 3]);
  assert.deepEqual([...a.data], [...px]);

  const jpg = join(dir, 'img.jpg');
  await writeRgbJpeg(jpg, px, h, w, 95);
  const b = await readImage(jpg);
  assert.deepEqual([b.width, b.height], [w, h]);
  // lossy (and 4:2:0 chroma subsampled): only close on average
  let sumErr = 0;
  for (let i = 0; i < px.length; i++) sumErr += Math.abs(b.data[i]! - px[i]!);
  assert.ok(sumErr / px.length < 4, `mean JPEG error ${sumErr / px.length}`);

  const rgba = join(dir, 'rgba.png');
  await sharp(Uint8Array.from([10, 20, 30, 0, 40, 50, 60, 255]), { raw: { width: 2, height: 1, channels: 4 } }).png().toFile(rgba);
  assert.deepEqual([...(await readImage(rgba)).data], [10, 20, 30, 40, 50, 60]);

  const grey = join(dir, 'grey.png');
  await sharp(Uint8Array.from([5, 250]), { raw: { width: 2, height: 1, channels: 1 } }).png().toFile(grey);
  assert.deepEqual([...(await readImage(grey)).data], [5, 5, 5, 250, 250, 250]);
});

test('readImage applies EXIF orientation like cv2.IMREAD_COLOR', async () => {
  // 3 wide × 2 high, tagged "rotate 90° clockwise" (orientation 6) → decoded as 2 wide × 3 high.
  const px = new Uint8Array(3 * 2 * 3);
  px.set([255, 0, 0], 0); // top-left pixel is red
  const path = join(dir, 'exif6.png');
  await sharp(px, { raw: { width: 3, height: 2, channels: 3 } }).png().withMetadata({ orientation: 6 }).toFile(path);
  const img = await readImage(path);
  assert.deepEqual([img.width, img.height], [2, 3]);
  // after a clockwise quarter turn the old top-left corner is the new top-right
  assert.deepEqual([...img.data.subarray(3, 6)], [255, 0, 0]);
});

test('blendOverlay: mmseg show_result arithmetic (truncation, black for uncoloured labels)', () => {
  const image = { data: Uint8Array.from([100, 100, 100, 100, 100, 100]), height: 1, width: 2 };
  const out = blendOverlay(image, [0, 255], [[255, 0, 11]], 0.5);
  // 100·0.5 + 255·0.5 = 177.5 → 177; 100·0.5 + 0·0.5 = 50; 100·0.5 + 11·0.5 = 55.5 → 55; label 255 has no colour → 50
  assert.deepEqual([...out], [177, 50, 55, 50, 50, 50]);
  assert.throws(() => blendOverlay(image, [0], [[0, 0, 0]]), /label map has 1 pixels/);
});
