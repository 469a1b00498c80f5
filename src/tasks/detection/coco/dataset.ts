/**
 * COCO annotation files (ground truth) and detection results, read and validated with the semantics of pycocotools'
 * `COCO` class and `COCO.loadRes`.
 *
 * Differences from pycocotools, all on input it would mishandle: a file with missing or mistyped fields, duplicate
 * ids, or annotations pointing at unknown images or categories is rejected with an error naming the entry (pycocotools
 * silently keeps the last duplicate and drops orphans, or fails later with a KeyError); `iscrowd` may be omitted
 * (0). Results for categories absent from the ground truth are kept here and dropped by the evaluation, as in
 * pycocotools; results for unknown images are an error (pycocotools: "Results do not correspond to current coco set").
 * An empty results list is accepted (pycocotools' `loadRes` fails on it with an IndexError): every detection-based
 * figure is then 0 where ground truth exists, exactly what pycocotools gives for results that hold only detections
 * of unknown categories.
 */
import { readFileSync } from 'node:fs';
import { type RLE, type RleData, RleError, areaOfData, bboxOfData, rleToData } from './rle.js';

/** An image entry of a COCO file (`width` / `height` are needed to rasterise polygons). */
export interface CocoImage {
  id: number;
  width: number;
  height: number;
  file_name?: string;
  [key: string]: unknown;
}

/** A category entry of a COCO file. */
export interface CocoCategory {
  id: number;
  name: string;
  supercategory?: string;
  [key: string]: unknown;
}

/** A segmentation: polygons (a list of flat `[x0, y0, x1, y1, ...]` parts) or an RLE (compressed or uncompressed). */
export type CocoSegmentation = number[][] | RLE;

/** A ground-truth annotation (`area` is used as is by the evaluation; `ignore` has no effect, as in pycocotools). */
export interface CocoAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  area: number;
  iscrowd: number;
  bbox?: [number, number, number, number];
  segmentation?: CocoSegmentation;
  [key: string]: unknown;
}

/** The top level of a COCO annotation file. */
export interface CocoJson {
  images: CocoImage[];
  categories: CocoCategory[];
  annotations: CocoAnnotation[];
  info?: unknown;
  licenses?: unknown;
}

/** One detection of a results file (`bbox` for iouType bbox, `segmentation` (an RLE) for segm). */
export interface CocoResult {
  image_id: number;
  category_id: number;
  bbox?: number[];
  segmentation?: RLE;
  score: number;
}

/** Error for an invalid COCO annotation or results file (names the file and the entry). */
export class CocoFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CocoFormatError';
  }
}

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const show = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 120 ? `${s.slice(0, 120)}…` : s;
};

function num(o: Record<string, unknown>, key: string, where: string, opts: { integer?: boolean; min?: number } = {}): number {
  if (!(key in o)) throw new CocoFormatError(`${where}: missing field "${key}"`);
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CocoFormatError(`${where}: "${key}" must be a finite number, got ${show(v)}`);
  if (opts.integer && !Number.isInteger(v)) throw new CocoFormatError(`${where}: "${key}" must be an integer, got ${show(v)}`);
  if (opts.min !== undefined && v < opts.min) throw new CocoFormatError(`${where}: "${key}" must be >= ${opts.min}, got ${show(v)}`);
  return v;
}

function box(v: unknown, where: string): [number, number, number, number] {
  if (!Array.isArray(v) || v.length !== 4 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new CocoFormatError(`${where}: "bbox" must be [x, y, width, height] (4 finite numbers), got ${show(v)}`);
  }
  return v as [number, number, number, number];
}

function rleData(v: Record<string, unknown>, where: string, checkTotal: boolean): RleData {
  try {
    return rleToData(v as unknown as RLE, `${where}: segmentation`, checkTotal);
  } catch (e) {
    if (e instanceof RleError) throw new CocoFormatError(e.message);
    throw e;
  }
}

function segmentation(v: unknown, where: string): CocoSegmentation {
  if (Array.isArray(v)) {
    v.forEach((p, i) => {
      if (!Array.isArray(p) || !p.every((x) => typeof x === 'number' && Number.isFinite(x))) {
        throw new CocoFormatError(`${where}: segmentation polygon ${i} must be a flat list of numbers [x0, y0, x1, y1, ...], got ${show(p)}`);
      }
    });
    return v as number[][];
  }
  if (isObj(v)) {
    rleData(v, where, true);
    return v as unknown as RLE;
  }
  throw new CocoFormatError(`${where}: "segmentation" must be a list of polygons or an RLE {size, counts}, got ${show(v)}`);
}

/**
 * A validated COCO annotation file with pycocotools' indexes: images and categories by id, annotations per image in
 * file order.
 */
export class CocoDataset {
  /** Images in file order. */
  readonly images: CocoImage[];
  /** Categories in file order. */
  readonly categories: CocoCategory[];
  /** Annotations in file order. */
  readonly annotations: CocoAnnotation[];
  /** Where the data came from (a path, or a description), for messages. */
  readonly source: string;
  private readonly imgById = new Map<number, CocoImage>();
  private readonly catById = new Map<number, CocoCategory>();
  private readonly annsByImage = new Map<number, CocoAnnotation[]>();

  constructor(json: CocoJson, source = 'COCO data') {
    this.images = json.images;
    this.categories = json.categories;
    this.annotations = json.annotations;
    this.source = source;
    for (const im of this.images) this.imgById.set(im.id, im);
    for (const c of this.categories) this.catById.set(c.id, c);
    for (const a of this.annotations) {
      let l = this.annsByImage.get(a.image_id);
      if (!l) this.annsByImage.set(a.image_id, (l = []));
      l.push(a);
    }
  }

  /** Image ids, ascending (the evaluation order). */
  imgIds(): number[] {
    return [...this.imgById.keys()].sort((a, b) => a - b);
  }

  /** Category ids, ascending (the evaluation order). */
  catIds(): number[] {
    return [...this.catById.keys()].sort((a, b) => a - b);
  }

  /** The annotations of an image, in file order (empty for an image without annotations or an unknown id). */
  annsOf(imageId: number): CocoAnnotation[] {
    return this.annsByImage.get(imageId) ?? [];
  }

  /** The image with this id, or undefined. */
  image(id: number): CocoImage | undefined {
    return this.imgById.get(id);
  }

  /** The category with this id, or undefined. */
  category(id: number): CocoCategory | undefined {
    return this.catById.get(id);
  }
}

/**
 * Validates a parsed COCO annotation object and indexes it. Requires `images` (id, width, height), `categories`
 * (id; `name` defaults to the id) and `annotations` (id, image_id, category_id, area; `bbox` and `segmentation` when
 * present must be well formed; `iscrowd` defaults to 0). Ids must be unique; annotations must point at a listed image
 * and category.
 * @throws CocoFormatError naming `source` and the offending entry.
 */
export function parseCocoJson(obj: unknown, source = 'COCO data'): CocoDataset {
  if (!isObj(obj)) throw new CocoFormatError(`${source}: expected a JSON object with "images", "categories" and "annotations", got ${show(obj)}`);
  for (const key of ['images', 'categories', 'annotations']) {
    if (!(key in obj)) throw new CocoFormatError(`${source}: missing top-level field "${key}" (a COCO annotation file has images, categories and annotations)`);
    if (!Array.isArray(obj[key])) throw new CocoFormatError(`${source}: "${key}" must be a list, got ${show(obj[key])}`);
  }
  const images: CocoImage[] = [];
  const imgIds = new Set<number>();
  (obj.images as unknown[]).forEach((im, i) => {
    const where = `${source}: images[${i}]`;
    if (!isObj(im)) throw new CocoFormatError(`${where}: expected an object, got ${show(im)}`);
    const id = num(im, 'id', where);
    num(im, 'width', where, { integer: true, min: 0 });
    num(im, 'height', where, { integer: true, min: 0 });
    if (imgIds.has(id)) throw new CocoFormatError(`${where}: duplicate image id ${id}`);
    imgIds.add(id);
    images.push(im as CocoImage);
  });
  const categories: CocoCategory[] = [];
  const catIds = new Set<number>();
  (obj.categories as unknown[]).forEach((c, i) => {
    const where = `${source}: categories[${i}]`;
    if (!isObj(c)) throw new CocoFormatError(`${where}: expected an object, got ${show(c)}`);
    const id = num(c, 'id', where);
    if (catIds.has(id)) throw new CocoFormatError(`${where}: duplicate category id ${id}`);
    catIds.add(id);
    if ('name' in c && typeof c.name !== 'string') throw new CocoFormatError(`${where}: "name" must be a string, got ${show(c.name)}`);
    categories.push(('name' in c ? c : { ...c, name: String(id) }) as CocoCategory);
  });
  const annotations: CocoAnnotation[] = [];
  const annIds = new Set<number>();
  (obj.annotations as unknown[]).forEach((a, i) => {
    if (!isObj(a)) throw new CocoFormatError(`${source}: annotations[${i}]: expected an object, got ${show(a)}`);
    const where = `${source}: annotations[${i}]${typeof a.id === 'number' ? ` (id ${a.id})` : ''}`;
    const id = num(a, 'id', where);
    if (annIds.has(id)) throw new CocoFormatError(`${where}: duplicate annotation id ${id}`);
    annIds.add(id);
    const imageId = num(a, 'image_id', where);
    if (!imgIds.has(imageId)) throw new CocoFormatError(`${where}: image_id ${imageId} is not in "images"`);
    const catId = num(a, 'category_id', where);
    if (!catIds.has(catId)) throw new CocoFormatError(`${where}: category_id ${catId} is not in "categories"`);
    num(a, 'area', where);
    let iscrowd = 0;
    if ('iscrowd' in a) {
      const v = a.iscrowd;
      if (v !== 0 && v !== 1 && v !== true && v !== false) throw new CocoFormatError(`${where}: "iscrowd" must be 0 or 1, got ${show(v)}`);
      iscrowd = v === 1 || v === true ? 1 : 0;
    }
    if ('bbox' in a) box(a.bbox, where);
    if ('segmentation' in a) segmentation(a.segmentation, where);
    annotations.push((a.iscrowd === iscrowd ? a : { ...a, iscrowd }) as CocoAnnotation);
  });
  return new CocoDataset({ ...(obj as object), images, categories, annotations } as CocoJson, source);
}

/** Reads a JSON file with a clear error for a missing file or invalid JSON. */
export function readJsonFile(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CocoFormatError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CocoFormatError(`${what} ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Reads and validates a COCO annotation file (see {@link parseCocoJson}). */
export function loadCocoJson(path: string): CocoDataset {
  return parseCocoJson(readJsonFile(path, 'COCO annotation file'), path);
}

/** A detection after `loadRes`: id = position + 1 in the results list, `area` as pycocotools sets it. */
export interface CocoDetection {
  id: number;
  image_id: number;
  category_id: number;
  score: number;
  /** `[x, y, w, h]`: given, or toBbox of the mask (segm results without boxes). */
  bbox: [number, number, number, number];
  /** Box results: `w * h` of the box; mask results: the mask's pixel count (see {@link loadCocoResults}). */
  area: number;
  /** The given RLE, or for box results without a mask the box's corner polygon (`[[x1, y1, x1, y2, x2, y2, x2, y1]]`). */
  segmentation: CocoSegmentation;
  /** The decoded runs of `segmentation` when it is an RLE (kept so the evaluation does not parse it again). */
  rle?: RleData;
}

/**
 * Validates detection results against a ground-truth dataset with `COCO.loadRes` semantics: the first result decides
 * the kind for the whole list — with a non-empty `bbox` every result needs a box, `area = w * h` of the box and a
 * missing `segmentation` becomes the box's corner polygon; otherwise every result needs a `segmentation` RLE,
 * `area` = its pixel count and a missing `bbox` = its toBbox. Ids are positions + 1, `iscrowd` 0. Every result's
 * image must be in the ground truth; categories are not checked here (the evaluation drops unknown ones).
 * An RLE may also be uncompressed (pycocotools accepts only compressed results).
 * @param iouType only used in messages about what each result needs.
 * @throws CocoFormatError naming the result.
 */
export function loadCocoResults(gt: CocoDataset, results: unknown, iouType: 'bbox' | 'segm', source = 'results'): CocoDetection[] {
  if (!Array.isArray(results)) throw new CocoFormatError(`${source}: results must be a list of {image_id, category_id, ${iouType === 'bbox' ? 'bbox' : 'segmentation'}, score} objects, got ${show(results)}`);
  if (results.length === 0) return [];
  const first = results[0];
  if (!isObj(first)) throw new CocoFormatError(`${source}[0]: expected an object, got ${show(first)}`);
  const boxKind = 'bbox' in first && !(Array.isArray(first.bbox) && first.bbox.length === 0);
  if (!boxKind && !('segmentation' in first)) {
    throw new CocoFormatError(`${source}[0]: a result needs a "bbox" (iouType bbox) or a "segmentation" RLE (iouType segm); found neither`);
  }
  const out: CocoDetection[] = new Array(results.length);
  for (let i = 0; i < results.length; i++) {
    const r = results[i];
    const where = `${source}[${i}]`;
    if (!isObj(r)) throw new CocoFormatError(`${where}: expected an object, got ${show(r)}`);
    const imageId = num(r, 'image_id', where);
    if (!gt.image(imageId)) throw new CocoFormatError(`${where}: image_id ${imageId} is not an image of the ground truth ${gt.source} (results do not correspond to this COCO set)`);
    const categoryId = num(r, 'category_id', where);
    const score = num(r, 'score', where);
    let bbox: [number, number, number, number];
    let area: number;
    let seg: CocoSegmentation;
    let rle: RleData | undefined;
    if (boxKind) {
      if (!('bbox' in r)) throw new CocoFormatError(`${where}: missing field "bbox" (the first result has one, so every result needs one)`);
      bbox = box(r.bbox, where);
      const [x1, y1] = bbox;
      const x2 = bbox[0] + bbox[2];
      const y2 = bbox[1] + bbox[3];
      if ('segmentation' in r) {
        const s = r.segmentation;
        if (isObj(s)) {
          rle = rleData(s, where, true);
          seg = s as unknown as RLE;
        } else seg = segmentation(s, where);
      } else seg = [[x1, y1, x1, y2, x2, y2, x2, y1]];
      area = bbox[2] * bbox[3];
    } else {
      if (!('segmentation' in r)) throw new CocoFormatError(`${where}: missing field "segmentation" (the first result has one and no bbox, so every result needs one)`);
      const s = r.segmentation;
      if (!isObj(s)) throw new CocoFormatError(`${where}: "segmentation" of a result must be an RLE {size: [h, w], counts}, got ${show(s)}`);
      rle = rleData(s, where, true);
      seg = s as unknown as RLE;
      area = areaOfData(rle);
      // an empty "bbox" (the reason this branch was taken) counts as absent
      const given = 'bbox' in r && !(Array.isArray(r.bbox) && r.bbox.length === 0);
      bbox = given ? box(r.bbox, where) : (bboxOfData(rle) as [number, number, number, number]);
    }
    out[i] = { id: i + 1, image_id: imageId, category_id: categoryId, score, bbox, area, segmentation: seg };
    if (rle) out[i]!.rle = rle;
  }
  return out;
}
