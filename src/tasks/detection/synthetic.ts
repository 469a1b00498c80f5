/**
 * A synthetic instance-segmentation dataset in COCO format, made from the scenes of
 * `../segmentation/synthetic.ts` (whose generator already produces one visible mask per object instance).
 *
 * `vit-adapter synth --out DIR --coco` writes it next to the semantic layout of the same scenes:
 *
 *   DIR/img_dir/{train,val}/synthetic_NNNN.png                 (images, shared with the semantic layout)
 *   DIR/ann_dir/{train,val}/synthetic_NNNN.png                 (semantic label maps)
 *   DIR/annotations/instances_{train,val}.json                 (COCO instances, this module)
 *
 * Scene i (seed `sampleSeed(seed, i)`) has image id i + 1; the first `count − val` scenes are the train split.
 * Categories are the five object classes (`disc`, `box`, `triangle`, `ring`, `cross`) with ids 1..5 (model label
 * = id − 1). Each visible instance is one annotation:
 *
 * - `segmentation`: its visible mask (after occlusion by later objects) as compressed RLE (`{size: [h, w], counts}`,
 *   pycocotools' column-major string encoding);
 * - `area`: the number of visible pixels — exactly the RLE area of `segmentation` (for COCO's own polygon
 *   annotations `area` is the polygon area instead; here there is no polygon);
 * - `bbox`: `[x, y, w, h]` of the visible pixels, pixel-inclusive extents (x = leftmost column, w = rightmost − leftmost
 *   + 1), which is pycocotools' `toBbox` of the RLE;
 * - `iscrowd`: 0.
 */
import { join } from 'node:path';
import { writeFileAtomic, ensureDir } from '../../io/files.js';
import { generateScene, sampleSeed, type SyntheticScene } from '../segmentation/synthetic.js';
import { encodeMask, type RLE } from './coco/index.js';
import { SYNTHETIC_FIRST_THING_ID, SYNTHETIC_THING_CLASSES } from './classes.js';

/** One COCO annotation as written here. */
export interface SyntheticCocoAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  segmentation: RLE;
  area: number;
  bbox: [number, number, number, number];
  iscrowd: 0;
}

/** A COCO instances file (the fields pycocotools and mmdetection read). */
export interface SyntheticCocoJson {
  info: { description: string; version: string; year: number };
  licenses: unknown[];
  images: { id: number; file_name: string; height: number; width: number }[];
  annotations: SyntheticCocoAnnotation[];
  categories: { id: number; name: string; supercategory: string }[];
}

/** The synthetic categories (ids 1..5). */
export function syntheticCategories(): SyntheticCocoJson['categories'] {
  return SYNTHETIC_THING_CLASSES.map((name, i) => ({ id: i + 1, name, supercategory: 'shape' }));
}

/** File name of scene i (as `writeSyntheticSplits` names it). */
export function syntheticFileName(i: number): string {
  return `synthetic_${String(i).padStart(4, '0')}.png`;
}

/**
 * The COCO annotations of one scene: one per visible instance, ids from `firstAnnId` on.
 *
 * @param scene a generated scene
 * @param imageId the scene's image id
 * @param firstAnnId id of the first annotation
 */
export function sceneAnnotations(scene: SyntheticScene, imageId: number, firstAnnId: number): SyntheticCocoAnnotation[] {
  return scene.instances.map((inst, k) => ({
    id: firstAnnId + k,
    image_id: imageId,
    category_id: inst.classId - SYNTHETIC_FIRST_THING_ID + 1,
    segmentation: encodeMask(inst.mask, scene.height, scene.width),
    area: inst.area,
    bbox: [inst.bbox[0], inst.bbox[1], inst.bbox[2], inst.bbox[3]],
    iscrowd: 0,
  }));
}

/** Options of {@link buildSyntheticCoco} and {@link writeSyntheticCoco}. */
export interface SyntheticCocoOptions {
  /** Total scenes (train + val). */
  count: number;
  /** Scene side in pixels. */
  size: number;
  seed: number;
  /** Val scenes (default: 20 % of count, at least 1 — as `synth`). */
  val?: number;
  /** Called after each scene. */
  onProgress?: (done: number, total: number) => void;
}

function splitSizes(o: SyntheticCocoOptions): { train: number; val: number } {
  const { count, size, seed } = o;
  if (!Number.isInteger(count) || count < 2) throw new RangeError(`synth --coco: count must be an integer ≥ 2 (train + val), got ${count}`);
  if (!Number.isInteger(size) || size < 8 || size > 4096) throw new RangeError(`synth --coco: size must be an integer in 8..4096, got ${size}`);
  if (!Number.isSafeInteger(seed)) throw new RangeError(`synth --coco: seed must be an integer, got ${seed}`);
  const val = o.val ?? Math.max(1, Math.round(count * 0.2));
  if (!Number.isInteger(val) || val < 1 || val >= count) throw new RangeError(`synth --coco: val must be in 1..${count - 1}, got ${val}`);
  return { train: count - val, val };
}

/**
 * Builds the train and val COCO instances objects of the scenes `synth` generates with these options (see the
 * module notes), without writing anything. Scenes are regenerated from their seeds.
 */
export function buildSyntheticCoco(o: SyntheticCocoOptions): { train: SyntheticCocoJson; val: SyntheticCocoJson } {
  const { train } = splitSizes(o);
  const make = (split: string): SyntheticCocoJson => ({
    info: { description: `vit-adapter synthetic instances (${split}, size ${o.size}, seed ${o.seed})`, version: '1.0', year: 2026 },
    licenses: [], images: [], annotations: [], categories: syntheticCategories(),
  });
  const out = { train: make('train'), val: make('val') };
  let annId = 1;
  for (let i = 0; i < o.count; i++) {
    const target = i < train ? out.train : out.val;
    const scene = generateScene({ width: o.size, height: o.size, seed: sampleSeed(o.seed, i) });
    target.images.push({ id: i + 1, file_name: syntheticFileName(i), height: scene.height, width: scene.width });
    const anns = sceneAnnotations(scene, i + 1, annId);
    annId += anns.length;
    target.annotations.push(...anns);
    o.onProgress?.(i + 1, o.count);
  }
  return out;
}

/** What {@link writeSyntheticCoco} wrote. */
export interface SyntheticCocoResult {
  /** `DIR/annotations/instances_train.json` and `..._val.json`. */
  files: { train: string; val: string };
  /** Image folders the files' `file_name`s are relative to (`DIR/img_dir/train`, `DIR/img_dir/val`). */
  imageDirs: { train: string; val: string };
  images: { train: number; val: number };
  annotations: { train: number; val: number };
}

/**
 * Writes `DIR/annotations/instances_{train,val}.json` (atomically) for the scenes `synth` writes with the same
 * options; the images themselves are `writeSyntheticSplits`' (`DIR/img_dir/{train,val}`).
 */
export function writeSyntheticCoco(dir: string, o: SyntheticCocoOptions): SyntheticCocoResult {
  const coco = buildSyntheticCoco(o);
  const annDir = join(dir, 'annotations');
  ensureDir(annDir);
  const files = { train: join(annDir, 'instances_train.json'), val: join(annDir, 'instances_val.json') };
  writeFileAtomic(files.train, JSON.stringify(coco.train));
  writeFileAtomic(files.val, JSON.stringify(coco.val));
  return {
    files, imageDirs: { train: join(dir, 'img_dir', 'train'), val: join(dir, 'img_dir', 'val') },
    images: { train: coco.train.images.length, val: coco.val.images.length },
    annotations: { train: coco.train.annotations.length, val: coco.val.annotations.length },
  };
}
