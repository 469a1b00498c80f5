/**
 * A small deterministic generator of synthetic scenes for testing segmentation end to end
 * without a real dataset: textured "stuff" backgrounds (sky gradient with clouds, grass,
 * brick wall, grey floor) and overlapping "thing" instances (disc, box, triangle, ring, cross)
 * with per-instance colour, texture and sensor noise.
 *
 * Everything derives from one seed through a mulberry32 PRNG and integer hashing, so the same
 * seed always yields the same bytes (no Math.random, no platform-dependent maths on pixel values).
 */
import { join } from 'node:path';
import { writeLabelPng, writeRgbJpeg, writeRgbPng } from '../../io/image.js';
import { mulberry32 } from '../../train/random.js';
import type { Palette } from './classes.js';
import { customDataset, type SegDatasetConfig } from './datasets.js';

/** Class names of the synthetic scenes; the index is the class id in `semantic`. */
export const SYNTHETIC_CLASSES: readonly string[] = Object.freeze([
  'background', // 0: plain grey backdrop / floor
  'sky', // 1
  'grass', // 2
  'wall', // 3
  'disc', // 4
  'box', // 5
  'triangle', // 6
  'ring', // 7
  'cross', // 8
]);

/** Display palette for {@link SYNTHETIC_CLASSES} (distinct from the rendered object colours). */
export const SYNTHETIC_PALETTE: Palette = Object.freeze(
  (
    [
      [0, 0, 0],
      [70, 130, 180],
      [107, 142, 35],
      [156, 102, 31],
      [220, 20, 60],
      [255, 215, 0],
      [0, 90, 255],
      [160, 32, 240],
      [0, 206, 170],
    ] as const
  ).map((c) => Object.freeze([c[0], c[1], c[2]] as const)),
);

/** Number of stuff (background) classes: ids 0..3. Object classes follow. */
const NUM_STUFF = 4;

/** One object instance of a scene. */
export interface SyntheticInstance {
  /** Class id (index into {@link SYNTHETIC_CLASSES}); always ≥ 4. */
  classId: number;
  /** H*W mask, 1 where this instance is visible (after occlusion by later instances). */
  mask: Uint8Array;
  /** Visible extent `[x, y, w, h]` in pixels (COCO convention). */
  bbox: [number, number, number, number];
  /** Visible pixel count. */
  area: number;
}

/** A generated scene. */
export interface SyntheticScene {
  /** H*W*3 RGB bytes. */
  image: Uint8Array;
  /** H*W class ids (0 = background). */
  semantic: Uint8Array;
  /** Visible instances in painting order (fully hidden ones are dropped). */
  instances: SyntheticInstance[];
  /** Rows. */
  height: number;
  /** Columns. */
  width: number;
}

/** Options of {@link generateScene}. */
export interface SceneOptions {
  /** Image width in pixels. */
  width: number;
  /** Image height in pixels. */
  height: number;
  /** Any 32-bit integer; equal seeds give identical scenes. */
  seed: number;
  /**
   * Use only class ids below this (1..9, default 9): layouts needing an excluded stuff class
   * are skipped and excluded object classes are never drawn.
   */
  numClasses?: number;
  /** Fewest / most objects to draw (defaults 2 and 6). */
  minObjects?: number;
  /** Most objects to draw (default 6). */
  maxObjects?: number;
}

/** Integer hash of (x, y, salt) to [0, 1). */
function hash3(x: number, y: number, salt: number): number {
  let h = Math.imul(x | 0, 0x27d4eb2d) ^ Math.imul(y | 0, 0x165667b1) ^ Math.imul(salt | 0, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4294967296;
}

/** Smooth value noise in [0, 1) with lattice spacing `cell` pixels. */
function valueNoise(x: number, y: number, cell: number, salt: number): number {
  const fx = x / cell;
  const fy = y / cell;
  const ix = Math.floor(fx);
  const iy = Math.floor(fy);
  const tx = fx - ix;
  const ty = fy - iy;
  const sx = tx * tx * (3 - 2 * tx);
  const sy = ty * ty * (3 - 2 * ty);
  const a = hash3(ix, iy, salt);
  const b = hash3(ix + 1, iy, salt);
  const c = hash3(ix, iy + 1, salt);
  const d = hash3(ix + 1, iy + 1, salt);
  const top = a + (b - a) * sx;
  const bot = c + (d - c) * sx;
  return top + (bot - top) * sy;
}

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

type Layout = { name: string; classes: number[] };
const LAYOUTS: Layout[] = [
  { name: 'outdoor', classes: [1, 2] },
  { name: 'indoor', classes: [3, 0] },
  { name: 'plain', classes: [0] },
  { name: 'wall', classes: [3] },
  { name: 'field', classes: [2] },
];

/** Base RGB of each object class in the rendered image. */
const OBJECT_COLOURS: Record<number, [number, number, number]> = {
  4: [200, 40, 40],
  5: [230, 170, 30],
  6: [40, 80, 210],
  7: [150, 50, 190],
  8: [30, 170, 150],
};

interface Shape {
  classId: number;
  inside: (x: number, y: number) => boolean;
  /** Texture factor (multiplies the base colour) at a pixel inside the shape. */
  shade: (x: number, y: number) => number;
  colour: [number, number, number];
  box: [number, number, number, number]; // x0, y0, x1, y1 (exclusive), clipped
}

/**
 * Generate one synthetic scene. Objects are painted in order, so later instances occlude earlier
 * ones; each instance mask is its visible part, and the semantic map equals the class of the
 * last instance covering a pixel (or the background class).
 *
 * @param opts size, seed and class range
 */
export function generateScene(opts: SceneOptions): SyntheticScene {
  const { width: W, height: H, seed } = opts;
  if (!Number.isInteger(W) || !Number.isInteger(H) || W < 1 || H < 1) {
    throw new RangeError(`generateScene: invalid size ${W}x${H}`);
  }
  const numClasses = opts.numClasses ?? SYNTHETIC_CLASSES.length;
  if (!Number.isInteger(numClasses) || numClasses < 1 || numClasses > SYNTHETIC_CLASSES.length) {
    throw new RangeError(`generateScene: numClasses must be in 1..${SYNTHETIC_CLASSES.length}, got ${numClasses}`);
  }
  const minObjects = opts.minObjects ?? 2;
  const maxObjects = opts.maxObjects ?? 6;
  if (!(minObjects >= 0 && maxObjects >= minObjects)) throw new RangeError('generateScene: need 0 <= minObjects <= maxObjects');
  const rand = mulberry32(seed ^ 0x5eed1234);
  const randInt = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
  const randRange = (lo: number, hi: number): number => lo + rand() * (hi - lo);
  const salt = Math.floor(rand() * 0x7fffffff);

  const image = new Uint8Array(W * H * 3);
  const semantic = new Uint8Array(W * H);

  // ---- Background layout --------------------------------------------------------------------
  const layouts = LAYOUTS.filter((l) => l.classes.every((c) => c < numClasses));
  const layout = layouts[Math.floor(rand() * layouts.length)]!;
  const horizon = randRange(0.3, 0.65) * H;
  const horizonAmp = randRange(0.02, 0.08) * H;
  const horizonCell = randRange(0.15, 0.4) * W;
  const brickH = randInt(6, 14);
  const brickW = brickH * 2 + randInt(0, 8);
  const brickBase: [number, number, number] = [randInt(130, 170), randInt(55, 85), randInt(35, 60)];
  const floorBase = randInt(95, 150);
  const grassBase: [number, number, number] = [randInt(40, 80), randInt(120, 160), randInt(30, 60)];
  const skyTop: [number, number, number] = [randInt(20, 60), randInt(70, 110), randInt(170, 220)];
  const skyBottom: [number, number, number] = [randInt(150, 190), randInt(195, 225), randInt(235, 255)];
  const cloudiness = randRange(0, 0.6);

  const stuffAt = (x: number, y: number): number => {
    switch (layout.name) {
      case 'outdoor': {
        const hy = horizon + (valueNoise(x, 0, horizonCell, salt + 1) - 0.5) * 2 * horizonAmp;
        return y + 0.5 < hy ? 1 : 2;
      }
      case 'indoor': {
        return y + 0.5 < horizon ? 3 : 0;
      }
      default:
        return layout.classes[0]!;
    }
  };

  const stuffColour = (cls: number, x: number, y: number, out: number[]): void => {
    const fine = hash3(x, y, salt + 7) - 0.5;
    if (cls === 1) {
      const t = Math.min(1, y / Math.max(1, horizon + horizonAmp));
      const cloud = Math.max(0, valueNoise(x, y * 2, 24, salt + 3) * 1.6 - 1 + cloudiness);
      for (let k = 0; k < 3; k++) {
        const g = skyTop[k]! + (skyBottom[k]! - skyTop[k]!) * t;
        out[k] = g + (245 - g) * Math.min(1, cloud * 1.5) + fine * 6;
      }
    } else if (cls === 2) {
      const n = valueNoise(x, y, 9, salt + 4) - 0.5;
      const blade = hash3(x, Math.floor(y / 4), salt + 5) > 0.8 ? 18 : 0;
      for (let k = 0; k < 3; k++) out[k] = grassBase[k]! * (1 + n * 0.5) + blade * (k === 1 ? 1 : 0.4) + fine * 24;
    } else if (cls === 3) {
      const row = Math.floor(y / brickH);
      const shifted = x + (row % 2 === 1 ? brickW / 2 : 0);
      const col = Math.floor(shifted / brickW);
      const mortar = y % brickH === 0 || Math.floor(shifted) % brickW === 0;
      const jitter = (hash3(col, row, salt + 6) - 0.5) * 40;
      for (let k = 0; k < 3; k++) out[k] = mortar ? 200 - k * 6 + fine * 10 : brickBase[k]! + jitter + fine * 14;
    } else {
      const n = valueNoise(x, y, 32, salt + 8) - 0.5;
      const v = floorBase * (1 + n * 0.35);
      out[0] = v + fine * 16;
      out[1] = v + 2 + fine * 16;
      out[2] = v - 4 + fine * 16;
    }
  };

  const px: number[] = [0, 0, 0];
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const cls = stuffAt(x, y);
      const p = y * W + x;
      semantic[p] = cls;
      stuffColour(cls, x, y, px);
      image[p * 3] = clamp255(px[0]!);
      image[p * 3 + 1] = clamp255(px[1]!);
      image[p * 3 + 2] = clamp255(px[2]!);
    }
  }

  // ---- Objects ------------------------------------------------------------------------------
  const objectClasses: number[] = [];
  for (let c = NUM_STUFF; c < numClasses; c++) objectClasses.push(c);
  const count = objectClasses.length === 0 ? 0 : randInt(minObjects, maxObjects);
  const minDim = Math.min(W, H);
  const shapes: Shape[] = [];
  for (let i = 0; i < count; i++) {
    const classId = objectClasses[Math.floor(rand() * objectClasses.length)]!;
    const r = Math.max(1.5, randRange(0.06, 0.3) * minDim);
    const cx = randRange(0, W);
    const cy = randRange(0, H);
    const theta = randRange(0, Math.PI);
    const cos = Math.cos(theta);
    const sin = Math.sin(theta);
    const base = OBJECT_COLOURS[classId]!;
    const colour: [number, number, number] = [
      clamp255(base[0] + randInt(-30, 30)),
      clamp255(base[1] + randInt(-30, 30)),
      clamp255(base[2] + randInt(-30, 30)),
    ];
    const period = randInt(4, 12);
    const local = (x: number, y: number): [number, number] => {
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      return [dx * cos + dy * sin, -dx * sin + dy * cos];
    };
    let inside: (x: number, y: number) => boolean;
    let shade: (x: number, y: number) => number;
    if (classId === 4) {
      // Disc with radial shading (brighter centre).
      inside = (x, y) => {
        const [u, v] = local(x, y);
        return u * u + v * v <= r * r;
      };
      shade = (x, y) => {
        const [u, v] = local(x, y);
        return 1.15 - 0.4 * (Math.sqrt(u * u + v * v) / r);
      };
    } else if (classId === 5) {
      // Rotated box with stripes.
      const hw = r * randRange(0.6, 1);
      const hh = r * randRange(0.35, 1);
      inside = (x, y) => {
        const [u, v] = local(x, y);
        return Math.abs(u) <= hw && Math.abs(v) <= hh;
      };
      shade = (x, y) => {
        const [u] = local(x, y);
        return Math.floor((u + hw) / period) % 2 === 0 ? 1 : 0.75;
      };
    } else if (classId === 6) {
      // Triangle with a linear gradient.
      const vs: [number, number][] = [];
      for (let k = 0; k < 3; k++) {
        const a = (k * 2 * Math.PI) / 3 + randRange(-0.35, 0.35);
        const rr = r * randRange(0.75, 1);
        vs.push([Math.cos(a) * rr, Math.sin(a) * rr]);
      }
      const [[x0, y0], [x1, y1], [x2, y2]] = vs as [[number, number], [number, number], [number, number]];
      const edge = (ax: number, ay: number, bx: number, by: number, u: number, v: number): number =>
        (bx - ax) * (v - ay) - (by - ay) * (u - ax);
      inside = (x, y) => {
        const [u, v] = local(x, y);
        const e0 = edge(x0, y0, x1, y1, u, v);
        const e1 = edge(x1, y1, x2, y2, u, v);
        const e2 = edge(x2, y2, x0, y0, u, v);
        return (e0 >= 0 && e1 >= 0 && e2 >= 0) || (e0 <= 0 && e1 <= 0 && e2 <= 0);
      };
      shade = (x, y) => {
        const [u] = local(x, y);
        return 0.8 + 0.35 * ((u + r) / (2 * r));
      };
    } else if (classId === 7) {
      // Ring (annulus) with a small checker; its hole shows what lies behind.
      const rin = r * randRange(0.4, 0.65);
      inside = (x, y) => {
        const [u, v] = local(x, y);
        const d2 = u * u + v * v;
        return d2 <= r * r && d2 >= rin * rin;
      };
      shade = (x, y) => ((Math.floor(x / 3) + Math.floor(y / 3)) % 2 === 0 ? 1 : 0.85);
    } else {
      // Cross (plus sign), rotated, with dots.
      const t = r * randRange(0.18, 0.32);
      inside = (x, y) => {
        const [u, v] = local(x, y);
        const au = Math.abs(u);
        const av = Math.abs(v);
        return (au <= r && av <= t) || (au <= t && av <= r);
      };
      shade = (x, y) => (hash3(Math.floor(x / 2), Math.floor(y / 2), salt + 9) > 0.85 ? 0.7 : 1);
    }
    const x0 = Math.max(0, Math.floor(cx - r - 1));
    const y0 = Math.max(0, Math.floor(cy - r - 1));
    const x1 = Math.min(W, Math.ceil(cx + r + 1));
    const y1 = Math.min(H, Math.ceil(cy + r + 1));
    shapes.push({ classId, inside, shade, colour, box: [x0, y0, x1, y1] });
  }

  // Paint in order; `owner` remembers the last instance covering each pixel.
  const owner = new Int16Array(W * H).fill(-1);
  for (let s = 0; s < shapes.length; s++) {
    const sh = shapes[s]!;
    const [x0, y0, x1, y1] = sh.box;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        if (!sh.inside(x, y)) continue;
        const p = y * W + x;
        owner[p] = s;
        semantic[p] = sh.classId;
        const f = sh.shade(x, y);
        const fine = (hash3(x, y, salt + 11 + s) - 0.5) * 20;
        image[p * 3] = clamp255(sh.colour[0] * f + fine);
        image[p * 3 + 1] = clamp255(sh.colour[1] * f + fine);
        image[p * 3 + 2] = clamp255(sh.colour[2] * f + fine);
      }
    }
  }

  // Sensor noise over the whole frame.
  for (let p = 0; p < W * H; p++) {
    const n = (hash3(p % W, Math.floor(p / W), salt + 13) + hash3(p % W, Math.floor(p / W), salt + 14) - 1) * 8;
    for (let k = 0; k < 3; k++) image[p * 3 + k] = clamp255(image[p * 3 + k]! + n);
  }

  // Visible instance masks.
  const instances: SyntheticInstance[] = [];
  for (let s = 0; s < shapes.length; s++) {
    const sh = shapes[s]!;
    const mask = new Uint8Array(W * H);
    let area = 0;
    let bx0 = W;
    let by0 = H;
    let bx1 = -1;
    let by1 = -1;
    const [x0, y0, x1, y1] = sh.box;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const p = y * W + x;
        if (owner[p] !== s) continue;
        mask[p] = 1;
        area++;
        if (x < bx0) bx0 = x;
        if (x > bx1) bx1 = x;
        if (y < by0) by0 = y;
        if (y > by1) by1 = y;
      }
    }
    if (area === 0) continue;
    instances.push({ classId: sh.classId, mask, bbox: [bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1], area });
  }

  return { image, semantic, instances, height: H, width: W };
}

/** Options of {@link writeSyntheticDataset}. */
export interface SyntheticDatasetOptions {
  /** Image width. */
  width: number;
  /** Image height. */
  height: number;
  /** Base seed; image i uses a seed derived from (seed, i). */
  seed: number;
  /** 'png' (lossless, default) or 'jpg' (quality 95). */
  imageFormat?: 'png' | 'jpg';
  /** Passed to {@link generateScene}. */
  numClasses?: number;
}

/** What {@link writeSyntheticDataset} wrote. */
export interface SyntheticDatasetResult {
  /** A dataset description for `listSamples` (datasets.ts) and the evaluators. */
  config: SegDatasetConfig;
  /** Sample names (file names without suffix), in order. */
  names: string[];
}

/** Seed of image `index` of a dataset generated with `seed`. */
export function sampleSeed(seed: number, index: number): number {
  return Math.floor(hash3(seed, index, 0x51a7) * 4294967296) | 0;
}

/**
 * Write `count` synthetic scenes in the generic custom-dataset layout:
 * `<dir>/img_dir/synthetic_0000.png|jpg` and `<dir>/ann_dir/synthetic_0000.png` (palette PNG of
 * class ids, colours from {@link SYNTHETIC_PALETTE}). Folders are created.
 *
 * @param dir dataset root
 * @param count number of images
 * @param opts size, seed, image format and class range
 */
export async function writeSyntheticDataset(dir: string, count: number, opts: SyntheticDatasetOptions): Promise<SyntheticDatasetResult> {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`writeSyntheticDataset: count must be a non-negative integer, got ${count}`);
  const fmt = opts.imageFormat ?? 'png';
  const imgSuffix = fmt === 'png' ? '.png' : '.jpg';
  const names: string[] = [];
  const digits = Math.max(4, String(Math.max(0, count - 1)).length);
  for (let i = 0; i < count; i++) {
    const name = `synthetic_${String(i).padStart(digits, '0')}`;
    const scene = generateScene({
      width: opts.width,
      height: opts.height,
      seed: sampleSeed(opts.seed, i),
      ...(opts.numClasses === undefined ? {} : { numClasses: opts.numClasses }),
    });
    const imgPath = join(dir, 'img_dir', name + imgSuffix);
    if (fmt === 'png') await writeRgbPng(imgPath, scene.image, scene.height, scene.width);
    else await writeRgbJpeg(imgPath, scene.image, scene.height, scene.width, 95);
    await writeLabelPng(join(dir, 'ann_dir', name + '.png'), scene.semantic, scene.height, scene.width, SYNTHETIC_PALETTE);
    names.push(name);
  }
  const numClasses = opts.numClasses ?? SYNTHETIC_CLASSES.length;
  const config = customDataset({
    name: 'synthetic',
    dataRoot: dir,
    imgDir: 'img_dir',
    annDir: 'ann_dir',
    imgSuffix,
    segMapSuffix: '.png',
    classes: SYNTHETIC_CLASSES.slice(0, numClasses),
    palette: SYNTHETIC_PALETTE.slice(0, numClasses),
    reduceZeroLabel: false,
  });
  return { config, names };
}
