/**
 * Non-maximum suppression as mmcv 1.4.2 / mmdetection 2.x run it.
 *
 * `nms`: boxes (x1, y1, x2, y2) with no "+1" (offset 0): `area = (x2 − x1)·(y2 − y1)`,
 * `IoU = inter / (area_i + area_j − inter)`, `inter = max(0, min(x2) − max(x1))·max(0, min(y2) − max(y1))`.
 * Greedy in descending score order (ties: lower index first; NaN scores sort first, as torch's descending sort puts
 * them): a box is dropped when its IoU with an already kept box is > threshold (strict). As in mmcv, the threshold is
 * a C `float` (rounded to float32) and the IoU is computed in the boxes' dtype.
 *
 * `batchedNms`: mmcv's `batched_nms`: boxes of different `idxs` never suppress each other. Unless class-agnostic,
 * every box is shifted by `idx · (max(boxes) + 1)` (computed with tensor ops in the boxes' dtype, as mmcv does); with
 * fewer than `splitThr` (10000) boxes one NMS runs on the shifted boxes, otherwise one NMS per distinct idx (still on
 * the shifted boxes) and the kept boxes are sorted by descending score.
 *
 * Implementations: the native kernel (`vit_adapter::nms`, CPU; CUDA when built with CUDA) and a scalar TypeScript
 * reference (the test oracle, float32 arithmetic emulated with Math.fround for float32 boxes).
 */
import { type Tensor, op, tensor } from '../../engine/index.js';

/** Which implementation to use: `native` (addon kernel), `composition` (scalar TypeScript), `auto` (native when built). */
export type NmsImpl = 'native' | 'composition' | 'auto';

const nativeOp = op('vit_adapter::nms');

/** Whether the native NMS kernel is built into the addon. */
export function hasNativeNms(): boolean {
  return nativeOp.available();
}

function checkBoxes(where: string, boxes: Tensor, scores: Tensor, iouThreshold: number, impl: unknown): void {
  if (boxes.ndim !== 2 || boxes.shape[1] !== 4) {
    throw new Error(`${where}: boxes must be (n, 4) rows of (x1, y1, x2, y2), got shape [${boxes.shape.join(', ')}]`);
  }
  if (scores.ndim !== 1 || scores.shape[0] !== boxes.shape[0]) {
    throw new Error(`${where}: scores must be (n,) = (${boxes.shape[0]},) to match boxes, got shape [${scores.shape.join(', ')}]`);
  }
  if (boxes.dtype !== 'float32' && boxes.dtype !== 'float64') throw new Error(`${where}: boxes must be float32 or float64, got ${boxes.dtype}`);
  if (scores.dtype !== 'float32' && scores.dtype !== 'float64') throw new Error(`${where}: scores must be float32 or float64, got ${scores.dtype}`);
  if (scores.device !== boxes.device) throw new Error(`${where}: scores are on ${scores.device} but boxes on ${boxes.device}`);
  if (typeof iouThreshold !== 'number' || Number.isNaN(iouThreshold)) throw new Error(`${where}: iouThreshold must be a number, got ${iouThreshold}`);
  if (impl !== undefined && impl !== 'auto' && impl !== 'native' && impl !== 'composition') {
    throw new Error(`${where}: impl must be 'native', 'composition' or 'auto', got ${JSON.stringify(impl)}`);
  }
}

/** Indices 0..n-1 sorted by descending score, stable (ties keep index order), NaN first. */
function descendingOrder(s: ArrayLike<number>): number[] {
  const order = Array.from({ length: s.length }, (_, i) => i);
  order.sort((a, b) => {
    const x = s[a]!;
    const y = s[b]!;
    const xn = Number.isNaN(x);
    const yn = Number.isNaN(y);
    if (xn || yn) return xn && yn ? a - b : xn ? -1 : 1;
    return x > y ? -1 : x < y ? 1 : a - b;
  });
  return order;
}

/**
 * The scalar reference NMS on plain arrays: boxes (n·4, row-major), scores (n). `float32` emulates float32
 * arithmetic. Returns kept indices in descending score order.
 */
export function nmsReference(boxes: ArrayLike<number>, scores: ArrayLike<number>, iouThreshold: number, float32: boolean): number[] {
  const n = scores.length;
  const thr = Math.fround(iouThreshold);
  const order = descendingOrder(scores);
  // coordinates and areas in sorted order (as the native kernel keeps them)
  const x1 = new Float64Array(n);
  const y1 = new Float64Array(n);
  const x2 = new Float64Array(n);
  const y2 = new Float64Array(n);
  const area = new Float64Array(n);
  for (let a = 0; a < n; a++) {
    const i = order[a]!;
    x1[a] = boxes[4 * i]!;
    y1[a] = boxes[4 * i + 1]!;
    x2[a] = boxes[4 * i + 2]!;
    y2[a] = boxes[4 * i + 3]!;
    area[a] = float32 ? Math.fround(Math.fround(x2[a]! - x1[a]!) * Math.fround(y2[a]! - y1[a]!)) : (x2[a]! - x1[a]!) * (y2[a]! - y1[a]!);
  }
  const suppressed = new Uint8Array(n);
  const keep: number[] = [];
  for (let a = 0; a < n; a++) {
    if (suppressed[a]) continue;
    keep.push(order[a]!);
    const ix1 = x1[a]!;
    const iy1 = y1[a]!;
    const ix2 = x2[a]!;
    const iy2 = y2[a]!;
    const ia = area[a]!;
    for (let b = a + 1; b < n; b++) {
      if (suppressed[b]) continue;
      // std::max(a, b) = a < b ? b : a and std::min(a, b) = b < a ? b : a, as the C++ kernels (NaN behaviour)
      const xx1 = ix1 < x1[b]! ? x1[b]! : ix1;
      const yy1 = iy1 < y1[b]! ? y1[b]! : iy1;
      const xx2 = x2[b]! < ix2 ? x2[b]! : ix2;
      const yy2 = y2[b]! < iy2 ? y2[b]! : iy2;
      let iou: number;
      if (float32) {
        const dw = Math.fround(xx2 - xx1);
        const dh = Math.fround(yy2 - yy1);
        const inter = Math.fround((0 < dw ? dw : 0) * (0 < dh ? dh : 0));
        iou = Math.fround(inter / Math.fround(Math.fround(ia + area[b]!) - inter));
      } else {
        const dw = xx2 - xx1;
        const dh = yy2 - yy1;
        const inter = (0 < dw ? dw : 0) * (0 < dh ? dh : 0);
        iou = inter / (ia + area[b]! - inter);
      }
      if (iou > thr) suppressed[b] = 1;
    }
  }
  return keep;
}

function toScoreDtype(scores: Tensor, boxes: Tensor): Tensor {
  return scores.dtype === boxes.dtype ? scores : scores.to(boxes.dtype);
}

/**
 * mmcv `nms` (offset 0). boxes (n, 4) x1y1x2y2, scores (n) (converted to the boxes' dtype); returns the int64
 * indices of the kept boxes in descending score order; a box is suppressed by a kept box when IoU > iouThreshold.
 */
export function nms(boxes: Tensor, scores: Tensor, iouThreshold: number, opts: { impl?: NmsImpl } = {}): Tensor {
  checkBoxes('nms', boxes, scores, iouThreshold, opts.impl);
  const impl = opts.impl ?? 'auto';
  const s = toScoreDtype(scores, boxes);
  if (impl === 'native' || (impl === 'auto' && hasNativeNms())) {
    if (!hasNativeNms()) throw new Error('nms: the native nms kernel is not built into this addon');
    return nativeOp.t([boxes.handle, s.handle, iouThreshold]);
  }
  const keep = nmsReference(boxes.toTypedArray(), s.toTypedArray(), iouThreshold, boxes.dtype === 'float32');
  return tensor(keep, { dtype: 'int64', device: boxes.device });
}

/** Options of {@link batchedNms}. */
export interface BatchedNmsOptions {
  /** Ignore `idxs` (one NMS over all boxes). Default false. */
  classAgnostic?: boolean;
  /** With at least this many boxes, run one NMS per idx instead of one on the shifted boxes (mmcv: 10000). */
  splitThr?: number;
  impl?: NmsImpl;
}

/**
 * mmcv 1.4.2 `batched_nms`: boxes of different `idxs` never suppress each other (coordinate-offset trick; per-idx loop
 * from `splitThr` boxes on). boxes (n, 4), scores (n), idxs (n) integer group ids (any integer or float dtype holding
 * integers ≥ 0). Returns the kept indices (int64) sorted by descending score (ties: lower index first).
 */
export function batchedNms(boxes: Tensor, scores: Tensor, idxs: Tensor, iouThreshold: number, opts: BatchedNmsOptions = {}): Tensor {
  checkBoxes('batchedNms', boxes, scores, iouThreshold, opts.impl);
  const n = boxes.shape[0]!;
  if (idxs.ndim !== 1 || idxs.shape[0] !== n) {
    throw new Error(`batchedNms: idxs must be (n,) = (${n},) to match boxes, got shape [${idxs.shape.join(', ')}]`);
  }
  if (idxs.device !== boxes.device) throw new Error(`batchedNms: idxs are on ${idxs.device} but boxes on ${boxes.device}`);
  const splitThr = opts.splitThr ?? 10000;
  if (typeof splitThr !== 'number' || Number.isNaN(splitThr)) throw new Error(`batchedNms: splitThr must be a number, got ${splitThr}`);
  if (n === 0) return tensor([], { dtype: 'int64', device: boxes.device });
  const ids = idxs.toTypedArray();
  for (let i = 0; i < n; i++) {
    const v = ids[i]!;
    if (!Number.isInteger(v) || v < 0) throw new Error(`batchedNms: idxs[${i}] = ${v}; expected integers >= 0`);
  }
  const s = toScoreDtype(scores, boxes);
  let forNms = boxes;
  if (!opts.classAgnostic) {
    // offsets = idxs · (max(boxes) + 1), in the boxes' dtype (mmcv: idxs.to(boxes) * (boxes.max() + tensor(1).to(boxes)))
    const offsets = idxs.to(boxes.dtype).mul(boxes.max().add(1));
    forNms = boxes.add(offsets.unsqueeze(1));
  }
  const nmsOpts = { impl: opts.impl };
  if (n < splitThr) return nms(forNms, s, iouThreshold, nmsOpts);
  // Per-group NMS, groups in ascending id order (torch.unique), then all kept boxes by descending score.
  const groups = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const g = groups.get(ids[i]!);
    if (g) g.push(i);
    else groups.set(ids[i]!, [i]);
  }
  const kept = new Uint8Array(n);
  for (const id of [...groups.keys()].sort((a, b) => a - b)) {
    const members = groups.get(id)!;
    const m = tensor(members, { dtype: 'int64', device: boxes.device });
    const k = nms(forNms.indexSelect(0, m), s.indexSelect(0, m), iouThreshold, nmsOpts).toTypedArray();
    for (let t = 0; t < k.length; t++) kept[members[k[t]!]!] = 1;
  }
  const keep: number[] = [];
  for (let i = 0; i < n; i++) if (kept[i]) keep.push(i);
  const sv = s.toTypedArray();
  const sub = keep.map((i) => sv[i]!);
  const order = descendingOrder(sub);
  return tensor(order.map((o) => keep[o]!), { dtype: 'int64', device: boxes.device });
}
