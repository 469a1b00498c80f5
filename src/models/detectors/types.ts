/** Types shared by the detector modules: image metas, test configs, detections and the stage capture. */
import type { Tensor } from '../../engine/index.js';

/** What mmdetection keeps of an image's preprocessing (`img_metas`), as the detectors use it. */
export interface ImageMeta {
  /** (h, w) after the resize, before padding: boxes are clamped to it. */
  imgShape: [number, number];
  /** (h, w) of the original image: boxes are rescaled and masks pasted at this size. */
  oriShape: [number, number];
  /** (h, w) of the padded network input. */
  padShape: [number, number];
  /** (w_scale, h_scale, w_scale, h_scale) as float32 values (mmdetection keeps a float32 array). */
  scaleFactor: [number, number, number, number];
}

/** Detections of one image, in the original image's pixel coordinates. */
export interface Detections {
  /** D·4 values: x1, y1, x2, y2 per detection. */
  boxes: Float32Array;
  /** D scores (descending). */
  scores: Float32Array;
  /** D class indices 0..K-1. */
  labels: Int32Array;
  /** D·oriH·oriW row-major 0/1 masks in detection order (when masks were requested). */
  masks?: Uint8Array;
}

/** A callback receiving named intermediate tensors (call `t.keep()` to hold one past the forward's scope). */
export type StageCapture = (name: string, t: Tensor) => void;

/** mmcv `nms` config as the detection test configs give it. */
export interface NmsCfg {
  type?: 'nms';
  iou_threshold: number;
  /** mmcv's `batched_nms` split threshold (default 10000). */
  split_thr?: number;
}

/** `test_cfg.rpn` (snake_case, verbatim mmdetection). */
export interface RPNTestConfig {
  nms_pre?: number;
  max_per_img: number;
  nms: NmsCfg;
  min_bbox_size?: number;
  /** Deprecated mmdet names are refused (they would be ignored silently). */
  nms_across_levels?: false;
}

/** `test_cfg.rcnn` (snake_case, verbatim mmdetection). */
export interface RCNNTestConfig {
  score_thr: number;
  nms: NmsCfg;
  max_per_img: number;
  mask_thr_binary?: number;
}

/** The detector's `test_cfg`. */
export interface MaskRCNNTestConfig {
  rpn: RPNTestConfig;
  rcnn: RCNNTestConfig;
}

/** Validates an mmcv nms config; returns (iou threshold, split threshold). */
export function parseNmsCfg(where: string, v: unknown): { iou: number; splitThr: number } {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: nms must be a dict like {type: 'nms', iou_threshold: 0.5}`);
  const o = v as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !['type', 'iou_threshold', 'split_thr'].includes(k));
  if (unknown.length) throw new Error(`${where}: unknown nms key(s) ${unknown.join(', ')}; accepted: type, iou_threshold, split_thr`);
  if (o.type !== undefined && o.type !== 'nms') throw new Error(`${where}: nms type ${JSON.stringify(o.type)} is not supported; only 'nms'`);
  const iou = o.iou_threshold;
  if (typeof iou !== 'number' || !(iou >= 0 && iou <= 1)) throw new Error(`${where}: nms.iou_threshold must be a number in [0, 1], got ${JSON.stringify(iou)}`);
  const split = o.split_thr ?? 10000;
  if (typeof split !== 'number' || !(split > 0)) throw new Error(`${where}: nms.split_thr must be a positive number, got ${JSON.stringify(split)}`);
  return { iou, splitThr: split };
}

/** Checks an image meta (shapes positive integers, four finite positive scale factors). */
export function checkImageMeta(where: string, m: ImageMeta): void {
  if (typeof m !== 'object' || m === null) throw new Error(`${where}: image meta must be an object {imgShape, oriShape, padShape, scaleFactor}`);
  for (const k of ['imgShape', 'oriShape', 'padShape'] as const) {
    const s = m[k];
    if (!Array.isArray(s) || s.length < 2 || !s.slice(0, 2).every((x) => Number.isInteger(x) && x > 0)) {
      throw new Error(`${where}: meta.${k} must be (h, w) positive integers, got ${JSON.stringify(s)}`);
    }
  }
  const sf = m.scaleFactor;
  if (!Array.isArray(sf) || sf.length !== 4 || !sf.every((x) => typeof x === 'number' && Number.isFinite(x) && x > 0)) {
    throw new Error(`${where}: meta.scaleFactor must be 4 positive numbers (w, h, w, h), got ${JSON.stringify(sf)}`);
  }
}
