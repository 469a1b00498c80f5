/**
 * Evaluating a detector on a COCO split as mmdetection's `CocoDataset.evaluate(metric=['bbox', 'segm'])` does:
 * every image of the annotation file (in file order) through the test pipeline and the model; detections turned
 * into COCO results (label-major within an image, as mmdetection's `results2json`; `bbox = [x1, y1, x2 − x1, y2 − y1]`
 * from the float32 boxes; `score` the box score for the mask too; masks as compressed RLE); then COCOeval for
 * `bbox` and `segm` (the mask results without their `bbox`, as mmdetection passes them, so mask areas decide the
 * area ranges). Model labels map to the annotation file's categories by class name.
 */
import { basename, join } from 'node:path';
import { readRegularFile } from '../../io/files.js';
import { readImage, type ImageLimits } from '../../io/image.js';
import type { MaskRCNN } from '../../models/detectors/index.js';
import { type CocoResult, encodeMask, evaluateCoco, parseCocoJson } from './coco/index.js';
import type { DetConfig } from './configs.js';
import { detectImage } from './detector.js';
import type { DetectionsLike } from './overlay.js';

/** mmdetection's `xyxy2xywh` on a float32 box: the coordinates as doubles, width and height subtracted in double. */
export function xyxyToXywh(boxes: Float32Array, i: number): [number, number, number, number] {
  const x1 = boxes[4 * i]!;
  const y1 = boxes[4 * i + 1]!;
  return [x1, y1, boxes[4 * i + 2]! - x1, boxes[4 * i + 3]! - y1];
}

/**
 * The COCO results of one image's detections, in mmdetection's order (labels ascending; within a label, the
 * model's output order). Each entry has `bbox`, `score` and, when the detections have masks, `segmentation`
 * (compressed RLE of the `height × width` mask).
 *
 * @param det detections (boxes in original pixels)
 * @param imageId the image's COCO id
 * @param categoryIds COCO category id per model label
 * @param height original image rows (mask size)
 * @param width original image columns
 * @param scoreThr keep detections with `score >= scoreThr` (default 0: all)
 */
export function detectionsToCocoResults(det: DetectionsLike, imageId: number, categoryIds: readonly number[], height: number, width: number,
  scoreThr = 0): CocoResult[] {
  const n = det.scores.length;
  const order = [...Array(n).keys()].filter((i) => det.scores[i]! >= scoreThr);
  order.sort((a, b) => det.labels[a]! - det.labels[b]! || a - b);
  const plane = height * width;
  if (det.masks && det.masks.length !== n * plane) throw new RangeError(`results: masks hold ${det.masks.length} values, expected ${n}×${height}×${width}`);
  return order.map((i) => {
    const label = det.labels[i]!;
    const cat = categoryIds[label];
    if (cat === undefined) throw new RangeError(`results: label ${label} has no category id (${categoryIds.length} classes)`);
    const r: CocoResult = { image_id: imageId, category_id: cat, bbox: xyxyToXywh(det.boxes, i), score: det.scores[i]! };
    if (det.masks) r.segmentation = encodeMask(det.masks.subarray(i * plane, (i + 1) * plane), height, width);
    return r;
  });
}

/** Options of {@link evaluateDetection}. */
export interface DetEvalOptions {
  /** Dataset root (`--data`). */
  dataRoot: string;
  /** Annotation file relative to the root, or absolute (default: the config's `dataset.ann_file`). */
  annFile?: string;
  /** Image folder relative to the root, or absolute (default: the config's `dataset.img_prefix`). */
  imgDir?: string;
  /** Evaluate the first N images only (COCOeval then runs on those images). */
  limit?: number;
  device?: string;
  limits?: ImageLimits;
  onProgress?: (done: number, total: number, name: string) => void;
  onWarning?: (file: string, warning: string) => void;
}

/** One iou type's evaluation. */
export interface DetMetric {
  /** The 12 COCOeval summary numbers (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl). */
  stats: number[];
  per_category: { category_id: number; name: string; ap: number }[];
  /** pycocotools' printed summary. */
  summary: string;
}

/** What {@link evaluateDetection} returns. */
export interface DetEvalResult {
  config: string;
  ann_file: string;
  img_dir: string;
  images: number;
  detections: number;
  seconds: number;
  ms_per_image: number;
  /** Null when the model made no detection on the evaluated images (mmdetection skips the metric then; pycocotools cannot load empty results). */
  bbox: DetMetric | null;
  /** Null without detections or without a mask head. */
  segm: DetMetric | null;
  /** The COCO results (bbox, score, segmentation), as `--results` writes them. */
  results: CocoResult[];
}

interface RawImage { id: number; file_name: string; height: number; width: number }
interface RawCoco { images: RawImage[]; annotations: { image_id: number; category_id: number }[]; categories: { id: number; name: string }[] }

const resolveUnder = (root: string, p: string): string => (p.startsWith('/') ? p : join(root, p));

/** Reads and checks a COCO annotation file (through the coco module's parser), returning the raw object. */
function readCoco(path: string): RawCoco {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(readRegularFile(path, { maxBytes: 4 * 2 ** 30, what: 'COCO annotation file' })));
  } catch (e) {
    throw new Error(`cannot read COCO annotations ${path}: ${(e as Error).message}`);
  }
  try {
    parseCocoJson(raw); // validates images / annotations / categories with clear messages
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
  return raw as RawCoco;
}

/**
 * The label → category mapping of a config against an annotation file's categories (by name). Throws naming the
 * classes that the file lacks.
 */
export function matchCategories(classes: readonly string[], categories: readonly { id: number; name: string }[], where = 'annotations'): number[] {
  const byName = new Map(categories.map((c) => [c.name, c.id]));
  const missing = classes.filter((c) => !byName.has(c));
  if (missing.length) {
    throw new Error(`${where}: the model's class(es) ${missing.slice(0, 8).map((m) => JSON.stringify(m)).join(', ')}${missing.length > 8 ? ', ...' : ''} ` +
      `are not categories of the annotation file (it has ${categories.length}: ${categories.slice(0, 8).map((c) => c.name).join(', ')}${categories.length > 8 ? ', ...' : ''})`);
  }
  return classes.map((c) => byName.get(c)!);
}

/**
 * Runs the model over a COCO split and evaluates `bbox` and (with a mask head) `segm` (see the module notes). An
 * image that cannot be read, or whose size differs from the annotation file's, stops the evaluation with an error
 * naming it.
 */
export async function evaluateDetection(model: MaskRCNN, config: DetConfig, o: DetEvalOptions): Promise<DetEvalResult> {
  const annFile = resolveUnder(o.dataRoot, o.annFile ?? config.dataset.ann_file);
  const imgDir = resolveUnder(o.dataRoot, o.imgDir ?? config.dataset.img_prefix);
  const coco = readCoco(annFile);
  const catIds = matchCategories(config.classes, coco.categories, annFile);
  const images = o.limit !== undefined ? coco.images.slice(0, o.limit) : coco.images;
  if (images.length === 0) throw new Error(`${annFile}: no images to evaluate`);
  const t0 = performance.now();
  const results: CocoResult[] = [];
  let withMasks = false;
  for (const [k, im] of images.entries()) {
    const file = join(imgDir, im.file_name);
    const image = await readImage(file, o.limits ?? {});
    for (const w of image.warnings ?? []) o.onWarning?.(file, w);
    if (image.height !== im.height || image.width !== im.width) {
      throw new Error(`${file}: the image is ${image.width}x${image.height} but ${basename(annFile)} says ${im.width}x${im.height} (image id ${im.id})`);
    }
    const r = detectImage(model, config, image, { ...(o.device ? { device: o.device } : {}) });
    withMasks ||= r.detections.masks !== undefined;
    results.push(...detectionsToCocoResults(r.detections, im.id, catIds, image.height, image.width));
    o.onProgress?.(k + 1, images.length, im.file_name);
  }
  const seconds = (performance.now() - t0) / 1000;
  // The evaluated images and the model's categories only (mmdetection sets params.imgIds / catIds to these).
  const keepImg = new Set(images.map((i) => i.id));
  const keepCat = new Set(catIds);
  const gtRaw = {
    ...coco, images: images,
    annotations: coco.annotations.filter((a) => keepImg.has(a.image_id) && keepCat.has(a.category_id)),
    categories: coco.categories.filter((c) => keepCat.has(c.id)),
  };
  const metric = (iouType: 'bbox' | 'segm'): DetMetric | null => {
    if (results.length === 0) return null;
    const gt = parseCocoJson(gtRaw);
    const dts = iouType === 'bbox'
      ? results.map(({ segmentation: _s, ...r }) => r)
      : results.map(({ bbox: _b, ...r }) => r);
    const e = evaluateCoco(gt, dts, iouType, {});
    return { stats: e.stats, per_category: e.perCategoryAp.map((c) => ({ category_id: c.categoryId, name: c.name, ap: c.ap })), summary: e.summary };
  };
  return {
    config: config.name, ann_file: annFile, img_dir: imgDir, images: images.length, detections: results.length,
    seconds, ms_per_image: (seconds * 1000) / images.length,
    bbox: metric('bbox'), segm: withMasks ? metric('segm') : null, results,
  };
}
