/**
 * COCOeval (iouType `bbox` and `segm`) with pycocotools' arithmetic: the same IoUs, the same greedy matching, the
 * same accumulation into precision / recall arrays, and the same 12 summary numbers and printed lines.
 *
 * Faithful points (see ../shared/fixtures/coco/README.md, "Behaviour a port must reproduce"):
 * - thresholds are numpy `linspace` values computed with numpy's arithmetic (`start + i * step`, last = stop);
 * - detections per (image, category) sorted by descending score with a stable sort and cut to 100; GTs stably sorted
 *   with the non-ignored first, per area range;
 * - matching starts at `min(t, 1 - 1e-10)`, equal IoU matches, a later GT with equal IoU wins, crowds match many;
 * - the stored match is the GT id and is tested for non-zero (a GT with id 0 yields a false positive);
 * - precision `tp / (tp + fp + spacing(1))`, made monotone from the end, sampled with `searchsorted(side='left')`;
 * - means are numpy's pairwise sums of the entries > -1 in C order, divided by their count;
 * - `{:0.3f}` rounds the exact binary value half to even.
 *
 * Speed: the work is done per category over typed arrays (no per-detection objects in the loops); the accumulation
 * sorts each category's detections once and derives the three maxDets cuts from that order (a stable sort of a
 * subsequence is the subsequence of the stable sort).
 */
import type { CocoAnnotation, CocoDataset, CocoDetection, CocoImage } from './dataset.js';
import { CocoFormatError, loadCocoResults } from './dataset.js';
import { type RleData, RleError, bboxIouFlat, frPolyData, polygonsToRleData, rleIouData, rleToData } from './rle.js';

// ---- parameters ----------------------------------------------------------------------------------------------

/** numpy.linspace(start, stop, num) (endpoint=True) with numpy's arithmetic: `i * step + start`, the last = stop. */
export function numpyLinspace(start: number, stop: number, num: number): number[] {
  const div = num - 1;
  const delta = stop - start;
  const out: number[] = [];
  if (num <= 0) return out;
  if (num === 1) return [start];
  const step = delta / div;
  for (let i = 0; i < num; i++) out.push(step === 0 ? (i / div) * delta + start : i * step + start);
  out[num - 1] = stop;
  return out;
}

/** The default COCOeval parameters (`Params.setDetParams`). */
export const COCO_PARAMS = Object.freeze({
  /** `np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1)`; [8] is 0.8999999999999999. */
  iouThrs: Object.freeze(numpyLinspace(0.5, 0.95, Math.round((0.95 - 0.5) / 0.05) + 1)),
  /** `np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1)`; e.g. [35] is 0.35000000000000003. */
  recThrs: Object.freeze(numpyLinspace(0.0, 1.0, Math.round((1.0 - 0.0) / 0.01) + 1)),
  maxDets: Object.freeze([1, 10, 100]),
  areaRng: Object.freeze([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]].map((r) => Object.freeze(r))),
  areaRngLbl: Object.freeze(['all', 'small', 'medium', 'large']),
});

/** numpy's `spacing(1)`: the gap between 1 and the next double. */
const EPS = 2.220446049250313e-16;

// ---- numpy-compatible reductions and formatting ---------------------------------------------------------------

/**
 * numpy's pairwise summation of float64 (`DOUBLE_pairwise_sum`): blocks below 8 summed in order, up to 128 with
 * 8 interleaved accumulators, larger ranges split at a multiple of 8 near the middle. `np.add.reduce` over a
 * contiguous array gives exactly this (checked against numpy 2.4 on 80,800 values).
 */
export function pairwiseSum(a: ArrayLike<number>, lo = 0, n = a.length - lo): number {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[lo + i]!;
    return res;
  }
  if (n <= 128) {
    let r0 = a[lo]!, r1 = a[lo + 1]!, r2 = a[lo + 2]!, r3 = a[lo + 3]!;
    let r4 = a[lo + 4]!, r5 = a[lo + 5]!, r6 = a[lo + 6]!, r7 = a[lo + 7]!;
    let i = 8;
    const end = n - (n % 8);
    for (; i < end; i += 8) {
      r0 += a[lo + i]!;
      r1 += a[lo + i + 1]!;
      r2 += a[lo + i + 2]!;
      r3 += a[lo + i + 3]!;
      r4 += a[lo + i + 4]!;
      r5 += a[lo + i + 5]!;
      r6 += a[lo + i + 6]!;
      r7 += a[lo + i + 7]!;
    }
    let res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
    for (; i < n; i++) res += a[lo + i]!;
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, lo, n2) + pairwiseSum(a, lo + n2, n - n2);
}

/** `np.mean(x[x > -1])`, or -1 when no entry is > -1 (pycocotools' summary statistic). */
export function meanAboveMinusOne(values: ArrayLike<number>): number {
  const kept = new Float64Array(values.length);
  let n = 0;
  for (let i = 0; i < values.length; i++) if (values[i]! > -1) kept[n++] = values[i]!;
  return n === 0 ? -1 : pairwiseSum(kept, 0, n) / n;
}

/**
 * Python's `format(x, '0.{digits}f')`: the exact binary value of `x` rounded half to even (JavaScript's `toFixed`
 * rounds exact ties up: 0.5625 → "0.563", Python "0.562"); the sign of negative values and -0 is kept.
 */
export function formatPythonFixed(x: number, digits: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const neg = x < 0 || Object.is(x, -0);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const bexp = (hi >>> 20) & 0x7ff;
  let mant = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e: number;
  if (bexp === 0) e = -1074;
  else {
    mant |= 1n << 52n;
    e = bexp - 1075;
  }
  const scale = 10n ** BigInt(digits);
  let q: bigint;
  if (e >= 0) q = (mant << BigInt(e)) * scale;
  else {
    const num = mant * scale;
    const den = 1n << BigInt(-e);
    q = num / den;
    const twice = 2n * (num - q * den);
    if (twice > den || (twice === den && (q & 1n) === 1n)) q += 1n;
  }
  const s = q.toString().padStart(digits + 1, '0');
  const int = s.slice(0, s.length - digits);
  return `${neg ? '-' : ''}${int}${digits > 0 ? `.${s.slice(s.length - digits)}` : ''}`;
}

/** The 12 (ap, iouThr, areaRng, maxDets) selections of `COCOeval.summarize()` for detection. */
const SUMMARY_ROWS: readonly { ap: boolean; iouThr: number | null; area: string; maxDets: number }[] = [
  { ap: true, iouThr: null, area: 'all', maxDets: 100 },
  { ap: true, iouThr: 0.5, area: 'all', maxDets: 100 },
  { ap: true, iouThr: 0.75, area: 'all', maxDets: 100 },
  { ap: true, iouThr: null, area: 'small', maxDets: 100 },
  { ap: true, iouThr: null, area: 'medium', maxDets: 100 },
  { ap: true, iouThr: null, area: 'large', maxDets: 100 },
  { ap: false, iouThr: null, area: 'all', maxDets: 1 },
  { ap: false, iouThr: null, area: 'all', maxDets: 10 },
  { ap: false, iouThr: null, area: 'all', maxDets: 100 },
  { ap: false, iouThr: null, area: 'small', maxDets: 100 },
  { ap: false, iouThr: null, area: 'medium', maxDets: 100 },
  { ap: false, iouThr: null, area: 'large', maxDets: 100 },
];

/**
 * The text `COCOeval.summarize()` prints for 12 stats: 12 lines, each
 * `' {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}'` and a newline.
 */
export function formatCocoSummary(stats: number[]): string {
  if (stats.length !== 12) throw new Error(`formatCocoSummary: expected 12 stats, got ${stats.length}`);
  const thr = COCO_PARAMS.iouThrs;
  let out = '';
  SUMMARY_ROWS.forEach((row, i) => {
    const title = (row.ap ? 'Average Precision' : 'Average Recall').padEnd(18);
    const type = row.ap ? '(AP)' : '(AR)';
    const iou = (row.iouThr === null
      ? `${formatPythonFixed(thr[0]!, 2)}:${formatPythonFixed(thr[thr.length - 1]!, 2)}`
      : formatPythonFixed(row.iouThr, 2)).padEnd(9);
    out += ` ${title} ${type} @[ IoU=${iou} | area=${row.area.padStart(6)} | maxDets=${String(row.maxDets).padStart(3)} ] = ${formatPythonFixed(stats[i]!, 3)}\n`;
  });
  return out;
}

// ---- evaluation ----------------------------------------------------------------------------------------------

/** Per-category AP (mean of `precision[:, :, k, all, 100]` over entries > -1; -1 without non-ignored GT). */
export interface CocoCategoryAp {
  categoryId: number;
  name: string;
  ap: number;
}

/** pycocotools' per-image record (`evalImgs` entry) for one (category, area range, image). */
export interface CocoEvalImage {
  imageId: number;
  categoryId: number;
  area: string;
  /** Detection ids, sorted by descending score (stable), cut to 100. */
  dtIds: number[];
  /** GT ids, the non-ignored first (stable). */
  gtIds: number[];
  dtScores: number[];
  /** [T][D]: id of the matched GT or 0. */
  dtMatches: number[][];
  /** [T][G]: id of the matched detection or 0. */
  gtMatches: number[][];
  /** [T][D] 0/1. */
  dtIgnore: number[][];
  /** [G] 0/1. */
  gtIgnore: number[];
}

/** The IoU matrix of one (image, category) with both GT and detections. */
export interface CocoImageIou {
  imageId: number;
  categoryId: number;
  dtIds: number[];
  gtIds: number[];
  /** iou[d][g] (GT in annotation-file order). */
  iou: number[][];
}

/** Intermediate values, for locating a departure from pycocotools (`keepDetails`). */
export interface CocoEvalDetails {
  imgIds: number[];
  catIds: number[];
  ious: CocoImageIou[];
  /** In pycocotools' order: category, then area range, then image (only records that exist). */
  evalImgs: CocoEvalImage[];
  /** `precision[t][r][k][a][m]` flattened in C order (T=10, R=101, K, A=4, M=3); -1 where undefined. */
  precision: Float64Array;
  /** `recall[t][k][a][m]` flattened in C order; -1 where undefined. */
  recall: Float64Array;
}

/** What {@link evaluateCoco} returns. */
export interface CocoEvalOutput {
  iouType: 'bbox' | 'segm';
  /** The 12 numbers of `COCOeval.stats`. */
  stats: number[];
  /** One entry per GT category, ascending id. */
  perCategoryAp: CocoCategoryAp[];
  /** Exactly the 12 lines `summarize()` prints (each ending with a newline). */
  summary: string;
  numImages: number;
  numCategories: number;
  /** Detections evaluated (after dropping unknown categories, before the per-image cut to 100). */
  numDetections: number;
  /** Detections whose category is not in the GT file (never evaluated). */
  numDroppedDetections: number;
  details?: CocoEvalDetails;
}

/** Options of {@link evaluateCoco}. */
export interface CocoEvalOptions {
  /** Called after each category (done, total). */
  onProgress?: (done: number, total: number) => void;
  /** Also return the intermediate values (IoUs, per-image records, precision / recall arrays). */
  keepDetails?: boolean;
}

/** Mask runs of a GT annotation (`annToRLE`): polygons rasterised with the image size and merged, RLEs as given. */
function gtRle(a: CocoAnnotation, img: CocoImage, where: string): RleData {
  const seg = a.segmentation;
  if (seg === undefined) throw new CocoFormatError(`${where}: annotation id ${a.id} has no "segmentation" (needed for iouType segm)`);
  try {
    if (Array.isArray(seg)) return polygonsToRleData(seg, img.height, img.width);
    return rleToData(seg);
  } catch (e) {
    if (e instanceof RleError) throw new CocoFormatError(`${where}: annotation id ${a.id}: ${e.message}`);
    throw e;
  }
}

function dtRle(d: CocoDetection, img: CocoImage): RleData {
  const seg = d.segmentation;
  try {
    if (Array.isArray(seg)) return seg.length === 1 ? frPolyData(seg[0]!, img.height, img.width) : polygonsToRleData(seg, img.height, img.width);
    return rleToData(seg);
  } catch (e) {
    if (e instanceof RleError) throw new CocoFormatError(`results: detection ${d.id}: ${e.message}`);
    throw e;
  }
}

/**
 * Runs COCOeval (`evaluate()`, `accumulate()`, `summarize()` with the default parameters) of detection results
 * against a ground-truth dataset. `results` is a results list as in a results file (validated with
 * {@link loadCocoResults}); an empty list is accepted (see dataset.ts). Detections of categories absent from the GT
 * are dropped, as pycocotools does.
 * @throws CocoFormatError for invalid results or a GT annotation lacking the field the iouType needs.
 */
export function evaluateCoco(gt: CocoDataset, results: unknown, iouType: 'bbox' | 'segm', opts: CocoEvalOptions = {}): CocoEvalOutput {
  if (iouType !== 'bbox' && iouType !== 'segm') throw new Error(`evaluateCoco: iouType must be "bbox" or "segm", got ${JSON.stringify(iouType)}`);
  return evaluateCocoDetections(gt, loadCocoResults(gt, results, iouType), iouType, opts);
}

/** {@link evaluateCoco} on results already loaded with {@link loadCocoResults}. */
export function evaluateCocoDetections(gt: CocoDataset, dets: readonly CocoDetection[], iouType: 'bbox' | 'segm', opts: CocoEvalOptions = {}): CocoEvalOutput {
  const P = COCO_PARAMS;
  const iouThrs = Float64Array.from(P.iouThrs);
  const recThrs = Float64Array.from(P.recThrs);
  const T = iouThrs.length;
  const R = recThrs.length;
  const A = P.areaRng.length;
  const M = P.maxDets.length;
  const maxDets = Int32Array.from(P.maxDets);
  const maxDet = maxDets[M - 1]!;
  const areaLo = Float64Array.from(P.areaRng, (r) => r[0]!);
  const areaHi = Float64Array.from(P.areaRng, (r) => r[1]!);
  const keep = opts.keepDetails === true;

  const imgIds = gt.imgIds();
  const catIds = gt.catIds();
  const I = imgIds.length;
  const K = catIds.length;
  const imgIndex = new Map<number, number>();
  imgIds.forEach((id, i) => imgIndex.set(id, i));
  const catIndex = new Map<number, number>();
  catIds.forEach((id, k) => catIndex.set(id, k));
  const images = imgIds.map((id) => gt.image(id)!);

  // ---- GT, grouped per category (images ascending, file order within an image) ----
  const gtAnns: CocoAnnotation[] = [];
  const gtCat: number[] = [];
  const gtImg: number[] = [];
  for (let i = 0; i < I; i++) {
    for (const a of gt.annsOf(imgIds[i]!)) {
      const k = catIndex.get(a.category_id);
      if (k === undefined) continue;
      gtAnns.push(a);
      gtCat.push(k);
      gtImg.push(i);
    }
  }
  const NG = gtAnns.length;
  const gtArea = new Float64Array(NG);
  const gtCrowd = new Uint8Array(NG);
  const gtId = new Float64Array(NG);
  const gtBox = new Float64Array(NG * 4);
  for (let j = 0; j < NG; j++) {
    const a = gtAnns[j]!;
    gtArea[j] = a.area;
    gtCrowd[j] = a.iscrowd ? 1 : 0;
    gtId[j] = a.id;
    if (iouType === 'bbox') {
      const b = a.bbox;
      if (!b) throw new CocoFormatError(`${gt.source}: annotation id ${a.id} has no "bbox" (needed for iouType bbox)`);
      gtBox.set(b, j * 4);
    }
  }
  const gtByCat = groupBy(gtCat, K);

  // ---- detections, grouped per category (images ascending, results order within an image) ----
  const ND = dets.length;
  const detImg = new Int32Array(ND);
  for (let j = 0; j < ND; j++) detImg[j] = imgIndex.get(dets[j]!.image_id)!;
  const byImg = groupBy(detImg, I);
  const detCatList: number[] = [];
  const detOrder: number[] = [];
  let dropped = 0;
  for (let p = 0; p < ND; p++) {
    const j = byImg.items[p]!;
    const k = catIndex.get(dets[j]!.category_id);
    if (k === undefined) {
      dropped++;
      continue;
    }
    detOrder.push(j);
    detCatList.push(k);
  }
  const dtByCatLocal = groupBy(detCatList, K);
  const dtByCat = { offsets: dtByCatLocal.offsets, items: Int32Array.from(dtByCatLocal.items, (p) => detOrder[p]!) };
  const dtScore = new Float64Array(ND);
  const dtArea = new Float64Array(ND);
  const dtId = new Float64Array(ND);
  for (let j = 0; j < ND; j++) {
    const d = dets[j]!;
    dtScore[j] = d.score;
    dtArea[j] = d.area;
    dtId[j] = d.id;
  }

  const precision = new Float64Array(T * R * K * A * M).fill(-1);
  const recall = new Float64Array(T * K * A * M).fill(-1);
  const details: CocoEvalDetails | undefined = keep ? { imgIds, catIds, ious: [], evalImgs: [], precision, recall } : undefined;

  // scratch buffers (grown on demand)
  let iouBuf = new Float64Array(1024);
  let order = new Int32Array(64);
  let igS = new Uint8Array(64);
  let crowdS = new Uint8Array(64);
  let gtIdS = new Float64Array(64);
  let gtm = new Float64Array(64);
  let dtm = new Float64Array(T * 128);
  let dtIg = new Uint8Array(T * 128);
  let rc = new Float64Array(1024);
  let pr = new Float64Array(1024);
  const gtRles: RleData[] = [];
  const dtRles: RleData[] = [];

  for (let k = 0; k < K; k++) {
    const g0 = gtByCat.offsets[k]!;
    const g1 = gtByCat.offsets[k + 1]!;
    const d0 = dtByCat.offsets[k]!;
    const d1 = dtByCat.offsets[k + 1]!;
    // kept detections of this category, in (image, sorted) order
    const cap = d1 - d0;
    const kScore = new Float64Array(cap);
    const kRank = new Int32Array(cap);
    const kState = new Uint8Array(A * T * cap); // [a][t][detection]: 0 false positive, 1 true positive, 2 ignored
    let nk = 0;
    const npig = new Float64Array(A);
    let nImagesWithRecords = 0;
    const recordsByArea: CocoEvalImage[][] | null = keep ? Array.from({ length: A }, () => []) : null;

    let gp = g0;
    let dp = d0;
    while (gp < g1 || dp < d1) {
      const gi = gp < g1 ? gtImg[gtByCat.items[gp]!]! : I;
      const di = dp < d1 ? detImg[dtByCat.items[dp]!]! : I;
      const img = Math.min(gi, di);
      let ge = gp;
      while (ge < g1 && gtImg[gtByCat.items[ge]!] === img) ge++;
      let de = dp;
      while (de < d1 && detImg[dtByCat.items[de]!] === img) de++;
      const G = ge - gp;
      const Dall = de - dp;
      nImagesWithRecords++;
      // detections sorted by descending score (stable), cut to maxDets[-1]
      const dl: number[] = [];
      for (let q = dp; q < de; q++) dl.push(dtByCat.items[q]!);
      if (dl.length > 1) dl.sort((a, b) => (dtScore[a]! > dtScore[b]! ? -1 : dtScore[a]! < dtScore[b]! ? 1 : a - b));
      const D = Math.min(Dall, maxDet);
      const gl = gtByCat.items.subarray(gp, ge);

      // IoU [d][g], GT in file order
      if (iouBuf.length < D * G) iouBuf = new Float64Array(D * G * 2);
      const ious = iouBuf;
      const haveIous = D > 0 && G > 0;
      if (haveIous) {
        const crowd = new Uint8Array(G);
        for (let g = 0; g < G; g++) crowd[g] = gtCrowd[gl[g]!]!;
        if (iouType === 'bbox') {
          const db = new Float64Array(D * 4);
          for (let d = 0; d < D; d++) {
            const b = dets[dl[d]!]!.bbox;
            db[d * 4] = b[0];
            db[d * 4 + 1] = b[1];
            db[d * 4 + 2] = b[2];
            db[d * 4 + 3] = b[3];
          }
          const gb = new Float64Array(G * 4);
          for (let g = 0; g < G; g++) gb.set(gtBox.subarray(gl[g]! * 4, gl[g]! * 4 + 4), g * 4);
          bboxIouFlat(db, D, gb, G, crowd, ious);
        } else {
          const im = images[img]!;
          gtRles.length = 0;
          for (let g = 0; g < G; g++) gtRles.push(gtRle(gtAnns[gl[g]!]!, im, gt.source));
          dtRles.length = 0;
          for (let d = 0; d < D; d++) dtRles.push(dets[dl[d]!]!.rle ?? dtRle(dets[dl[d]!]!, im));
          rleIouData(dtRles, gtRles, crowd, ious);
        }
        if (keep) {
          details!.ious.push({
            imageId: imgIds[img]!, categoryId: catIds[k]!, dtIds: dl.slice(0, D).map((j) => dtId[j]!), gtIds: Array.from(gl, (j) => gtId[j]!),
            iou: Array.from({ length: D }, (_, d) => Array.from(ious.subarray(d * G, (d + 1) * G))),
          });
        }
      }

      // append the kept detections to the category's arrays
      const base = nk;
      for (let d = 0; d < D; d++) {
        kScore[nk] = dtScore[dl[d]!]!;
        kRank[nk] = d;
        nk++;
      }

      // evaluateImg for each area range
      if (order.length < G) {
        const n = G * 2;
        order = new Int32Array(n);
        igS = new Uint8Array(n);
        crowdS = new Uint8Array(n);
        gtIdS = new Float64Array(n);
        gtm = new Float64Array(n);
      }
      if (dtm.length < T * D) {
        dtm = new Float64Array(T * D * 2);
        dtIg = new Uint8Array(T * D * 2);
      }
      for (let a = 0; a < A; a++) {
        const lo = areaLo[a]!;
        const hi = areaHi[a]!;
        // GT order: non-ignored first, stable
        let o = 0;
        for (let g = 0; g < G; g++) {
          const j = gl[g]!;
          if (!(gtCrowd[j] || gtArea[j]! < lo || gtArea[j]! > hi)) order[o++] = g;
        }
        const nNonIgn = o;
        for (let g = 0; g < G; g++) {
          const j = gl[g]!;
          if (gtCrowd[j] || gtArea[j]! < lo || gtArea[j]! > hi) {
            order[o++] = g;
          }
        }
        for (let s = 0; s < G; s++) {
          const j = gl[order[s]!]!;
          igS[s] = s < nNonIgn ? 0 : 1;
          crowdS[s] = gtCrowd[j]!;
          gtIdS[s] = gtId[j]!;
        }
        npig[a] += nNonIgn;
        dtm.fill(0, 0, T * D);
        dtIg.fill(0, 0, T * D);
        const gtmAll = keep ? new Float64Array(T * G) : null;
        if (haveIous) {
          for (let t = 0; t < T; t++) {
            gtm.fill(0, 0, G);
            const thr = Math.min(iouThrs[t]!, 1 - 1e-10);
            for (let d = 0; d < D; d++) {
              let iou = thr;
              let m = -1;
              const row = d * G;
              for (let s = 0; s < G; s++) {
                if (gtm[s]! > 0 && !crowdS[s]) continue;
                if (m > -1 && igS[m] === 0 && igS[s] === 1) break;
                const v = ious[row + order[s]!]!;
                if (v < iou) continue;
                iou = v;
                m = s;
              }
              if (m === -1) continue;
              dtIg[t * D + d] = igS[m]!;
              dtm[t * D + d] = gtIdS[m]!;
              gtm[m] = dtId[dl[d]!]!;
            }
            if (gtmAll) gtmAll.set(gtm.subarray(0, G), t * G);
          }
        }
        // unmatched detections outside the area range are ignored
        for (let d = 0; d < D; d++) {
          const ar = dtArea[dl[d]!]!;
          if (ar < lo || ar > hi) for (let t = 0; t < T; t++) if (dtm[t * D + d] === 0) dtIg[t * D + d] = 1;
        }
        for (let t = 0; t < T; t++) {
          const sb = (a * T + t) * cap + base;
          for (let d = 0; d < D; d++) kState[sb + d] = dtIg[t * D + d] ? 2 : dtm[t * D + d] !== 0 ? 1 : 0;
        }
        if (recordsByArea) {
          const rows = (arr: Float64Array | Uint8Array, n: number): number[][] =>
            Array.from({ length: T }, (_, t) => Array.from(arr.subarray(t * n, t * n + n)));
          recordsByArea[a]!.push({
            imageId: imgIds[img]!, categoryId: catIds[k]!, area: P.areaRngLbl[a]!,
            dtIds: dl.slice(0, D).map((j) => dtId[j]!), gtIds: Array.from(order.subarray(0, G), (g) => gtId[gl[g]!]!),
            dtScores: dl.slice(0, D).map((j) => dtScore[j]!),
            dtMatches: rows(dtm, D), gtMatches: rows(gtmAll!, G), dtIgnore: rows(dtIg, D), gtIgnore: Array.from(igS.subarray(0, G)),
          });
        }
      }
      gp = ge;
      dp = de;
    }
    if (recordsByArea) for (const l of recordsByArea) details!.evalImgs.push(...l);

    // ---- accumulate ----
    if (nImagesWithRecords > 0) {
      const sorted = new Int32Array(nk);
      for (let j = 0; j < nk; j++) sorted[j] = j;
      sorted.sort((a, b) => (kScore[a]! > kScore[b]! ? -1 : kScore[a]! < kScore[b]! ? 1 : a - b));
      // one pass over the sorted detections per (area, threshold) serves all maxDets cuts
      if (rc.length < nk * M) {
        rc = new Float64Array(nk * M * 2);
        pr = new Float64Array(nk * M * 2);
      }
      const sRank = new Int32Array(nk);
      for (let q = 0; q < nk; q++) sRank[q] = kRank[sorted[q]!]!;
      const tps = new Float64Array(M);
      const fps = new Float64Array(M);
      const nds = new Int32Array(M);
      for (let a = 0; a < A; a++) {
        const np = npig[a]!;
        if (np === 0) continue;
        for (let t = 0; t < T; t++) {
          const slab = (a * T + t) * cap;
          tps.fill(0);
          fps.fill(0);
          nds.fill(0);
          for (let q = 0; q < nk; q++) {
            const st = kState[slab + sorted[q]!]!;
            if (st === 2) continue;
            const rk = sRank[q]!;
            for (let mi = 0; mi < M; mi++) {
              if (rk >= maxDets[mi]!) continue;
              const tp = st === 1 ? ++tps[mi]! : tps[mi]!;
              const fp = st === 1 ? fps[mi]! : ++fps[mi]!;
              const o = mi * nk + nds[mi]!++;
              rc[o] = tp / np;
              pr[o] = tp / (fp + tp + EPS);
            }
          }
          for (let mi = 0; mi < M; mi++) {
            const nd = nds[mi]!;
            const off = mi * nk;
            recall[((t * K + k) * A + a) * M + mi] = nd ? rc[off + nd - 1]! : 0;
            for (let i = off + nd - 1; i > off; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
            let i = 0;
            for (let r = 0; r < R; r++) {
              const thr = recThrs[r]!;
              while (i < nd && rc[off + i]! < thr) i++;
              precision[(((t * R + r) * K + k) * A + a) * M + mi] = i < nd ? pr[off + i]! : 0;
            }
          }
        }
      }
    }
    opts.onProgress?.(k + 1, K);
  }

  // ---- summarize ----
  const stats = SUMMARY_ROWS.map((row) => {
    const aind = P.areaRngLbl.indexOf(row.area);
    const mind = P.maxDets.indexOf(row.maxDets);
    const ts: number[] = [];
    for (let t = 0; t < T; t++) if (row.iouThr === null || iouThrs[t] === row.iouThr) ts.push(t);
    const vals: number[] = [];
    if (row.ap) {
      for (const t of ts) for (let r = 0; r < R; r++) for (let k = 0; k < K; k++) vals.push(precision[(((t * R + r) * K + k) * A + aind) * M + mind]!);
    } else {
      for (const t of ts) for (let k = 0; k < K; k++) vals.push(recall[((t * K + k) * A + aind) * M + mind]!);
    }
    return meanAboveMinusOne(vals);
  });
  const perCategoryAp: CocoCategoryAp[] = catIds.map((id, k) => {
    const vals: number[] = [];
    for (let t = 0; t < T; t++) for (let r = 0; r < R; r++) vals.push(precision[(((t * R + r) * K + k) * A + 0) * M + (M - 1)]!);
    return { categoryId: id, name: gt.category(id)!.name, ap: meanAboveMinusOne(vals) };
  });
  const out: CocoEvalOutput = {
    iouType, stats, perCategoryAp, summary: formatCocoSummary(stats), numImages: I, numCategories: K,
    numDetections: ND - dropped, numDroppedDetections: dropped,
  };
  if (details) out.details = details;
  return out;
}

/** Stable grouping of item positions 0..n-1 by key (counting sort): `items[offsets[k]..offsets[k+1])` have key k. */
function groupBy(keys: ArrayLike<number>, numKeys: number): { offsets: Int32Array; items: Int32Array } {
  const offsets = new Int32Array(numKeys + 1);
  for (let i = 0; i < keys.length; i++) offsets[keys[i]! + 1]++;
  for (let k = 0; k < numKeys; k++) offsets[k + 1] += offsets[k]!;
  const fill = offsets.slice(0, numKeys);
  const items = new Int32Array(keys.length);
  for (let i = 0; i < keys.length; i++) items[fill[keys[i]!]!++] = i;
  return { offsets, items };
}
