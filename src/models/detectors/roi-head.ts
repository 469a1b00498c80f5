/**
 * mmdetection 2.x `StandardRoIHead` at test time (`simple_test`, rescale = true): box branch (RoI extractor → box head
 * → per-class decoding and multi-class NMS) then, with masks, the mask branch on the detections (`mask_rois =
 * det_bboxes · scale_factor`, mask RoI extractor → mask head → pasting at the original size).
 *
 * Keys: `bbox_head.*`, `mask_head.*` (the extractors hold no state).
 */
import { type Tensor, cat, noGrad, scope, tensor, zeros } from '../../engine/index.js';
import { Module } from '../../nn/index.js';
import { checkKeys } from '../heads/conv-module.js';
import { Shared2FCBBoxHead, type Shared2FCBBoxHeadConfig, parseRcnnTestCfg } from './bbox-head.js';
import { FCNMaskHead, type FCNMaskHeadConfig, pasteMasks } from './mask-head.js';
import { SingleRoIExtractor, type SingleRoIExtractorConfig } from './roi-extractor.js';
import { type Detections, type ImageMeta, type RCNNTestConfig, type StageCapture } from './types.js';

/** mmdet `roi_head` config (snake_case, verbatim). */
export interface StandardRoIHeadConfig {
  type?: 'StandardRoIHead';
  bbox_roi_extractor: SingleRoIExtractorConfig;
  bbox_head: Shared2FCBBoxHeadConfig;
  mask_roi_extractor?: SingleRoIExtractorConfig | null;
  mask_head?: FCNMaskHeadConfig | null;
  shared_head?: null;
  train_cfg?: unknown;
  test_cfg?: RCNNTestConfig;
  pretrained?: null;
  init_cfg?: unknown;
}

/** Tensors of one image's RoI-head test pass (all in the model's dtype unless noted). */
export interface RoIHeadResult {
  /** (D, 5): box in original-image pixels and score, descending score. */
  detBboxes: Tensor;
  /** (D,) int64 class indices. */
  detLabels: Tensor;
  /** D·oriH·oriW binary masks in detection order (with masks). */
  masks?: Uint8Array;
}

/** Converts the RoI head's tensors into plain {@link Detections}. */
export function toDetections(r: RoIHeadResult): Detections {
  const D = r.detBboxes.shape[0]!;
  const b = r.detBboxes.toTypedArray();
  const l = r.detLabels.toTypedArray();
  const boxes = new Float32Array(D * 4);
  const scores = new Float32Array(D);
  const labels = new Int32Array(D);
  for (let i = 0; i < D; i++) {
    for (let k = 0; k < 4; k++) boxes[4 * i + k] = b[5 * i + k]!;
    scores[i] = b[5 * i + 4]!;
    labels[i] = l[i]!;
  }
  return r.masks ? { boxes, scores, labels, masks: r.masks } : { boxes, scores, labels };
}

/** The standard two-stage RoI head (box and mask branches). */
export class StandardRoIHead extends Module {
  readonly bbox_roi_extractor: SingleRoIExtractor;
  readonly bbox_head: Shared2FCBBoxHead;
  readonly mask_roi_extractor: SingleRoIExtractor | null = null;
  readonly mask_head: FCNMaskHead | null = null;

  constructor(cfg: StandardRoIHeadConfig) {
    super();
    const where = 'StandardRoIHead';
    checkKeys(where, cfg, ['type', 'bbox_roi_extractor', 'bbox_head', 'mask_roi_extractor', 'mask_head', 'shared_head',
      'train_cfg', 'test_cfg', 'pretrained', 'init_cfg']);
    if (cfg.type !== undefined && cfg.type !== 'StandardRoIHead') throw new Error(`${where}: type must be StandardRoIHead, got ${JSON.stringify(cfg.type)}`);
    if (cfg.shared_head != null) throw new Error(`${where}: shared_head is not supported`);
    if (!cfg.bbox_roi_extractor || !cfg.bbox_head) throw new Error(`${where}: bbox_roi_extractor and bbox_head are required`);
    this.bbox_roi_extractor = this.registerModule('bbox_roi_extractor', new SingleRoIExtractor(cfg.bbox_roi_extractor));
    this.bbox_head = this.registerModule('bbox_head', new Shared2FCBBoxHead(cfg.bbox_head));
    if (cfg.mask_head) {
      if (!cfg.mask_roi_extractor) throw new Error(`${where}: a mask_head needs a mask_roi_extractor (a shared one is not supported)`);
      this.mask_roi_extractor = this.registerModule('mask_roi_extractor', new SingleRoIExtractor(cfg.mask_roi_extractor));
      this.mask_head = this.registerModule('mask_head', new FCNMaskHead(cfg.mask_head));
      if (this.mask_head.numClasses !== this.bbox_head.numClasses) {
        throw new Error(`${where}: mask_head.num_classes ${this.mask_head.numClasses} differs from bbox_head.num_classes ${this.bbox_head.numClasses}`);
      }
    }
  }

  /** Whether the head has a mask branch. */
  get withMask(): boolean { return this.mask_head !== null; }

  /**
   * One image's test pass from the neck outputs `feats` (batch index `b`) and its proposals (P, 5): detections and,
   * when `withMask` (default: when the head has a mask branch), masks. Captures `bbox_roi_feats`, `cls_score`,
   * `bbox_pred`, `det_bboxes`, `det_labels`, `mask_rois`, `mask_roi_feats`, `mask_pred`.
   */
  simpleTest(feats: readonly Tensor[], proposals: Tensor, meta: ImageMeta, cfg: RCNNTestConfig,
    o: { withMask?: boolean; batchIndex?: number; capture?: StageCapture } = {}): RoIHeadResult {
    const parsed = parseRcnnTestCfg(cfg);
    const withMask = o.withMask ?? this.withMask;
    if (withMask && !this.withMask) throw new Error('StandardRoIHead: masks requested but the head has no mask branch');
    const cap = o.capture;
    const b = o.batchIndex ?? 0;
    return noGrad(() => scope(() => {
      const dtype = proposals.dtype;
      const device = proposals.device;
      const P = proposals.shape[0]!;
      const roisFor = (boxes: Tensor): Tensor => cat([zeros([boxes.shape[0]!, 1], { dtype, device }).add(b), boxes], 1);
      const rois = roisFor(proposals.slice(1, 0, 4));
      const bboxFeats = this.bbox_roi_extractor.forward(feats, rois);
      cap?.('bbox_roi_feats', bboxFeats);
      let detBboxes: Tensor;
      let detLabels: Tensor;
      if (P === 0) {
        detBboxes = zeros([0, 5], { dtype, device });
        detLabels = zeros([0], { dtype: 'int64', device });
      } else {
        const { clsScore, bboxPred } = this.bbox_head.forward(bboxFeats);
        cap?.('cls_score', clsScore);
        cap?.('bbox_pred', bboxPred);
        ({ detBboxes, detLabels } = this.bbox_head.getBboxes(rois, clsScore, bboxPred, meta, cfg));
      }
      cap?.('det_bboxes', detBboxes);
      cap?.('det_labels', detLabels);
      if (!withMask) return { detBboxes, detLabels };
      const D = detBboxes.shape[0]!;
      const [oh, ow] = meta.oriShape;
      if (D === 0) return { detBboxes, detLabels, masks: new Uint8Array(0) };
      const sf = tensor(meta.scaleFactor.map(Math.fround), { dtype: 'float32', device }).to(dtype);
      const scaled = detBboxes.slice(1, 0, 4).mul(sf);
      const maskRois = roisFor(scaled);
      cap?.('mask_rois', maskRois);
      const maskFeats = this.mask_roi_extractor!.forward(feats, maskRois);
      cap?.('mask_roi_feats', maskFeats);
      const maskPred = this.mask_head!.forward(maskFeats);
      cap?.('mask_pred', maskPred);
      // the mask of each detection's class, its probabilities, and its box back in original-image coordinates
      const S = maskPred.shape[2]!;
      const cls = this.mask_head!.classAgnostic ? zeros([D], { dtype: 'int64', device }) : detLabels;
      const sel = maskPred.flatten(2).gather(1, cls.reshape(D, 1, 1).expand(D, 1, S * maskPred.shape[3]!)).reshape(D, S, -1);
      if (sel.shape[2] !== S) throw new Error(`StandardRoIHead: mask logits must be square, got [${maskPred.shape.join(', ')}]`);
      const probs = sel.sigmoid().contiguous().toTypedArray();
      const boxes = scaled.div(sf).contiguous().toTypedArray();
      const masks = pasteMasks(probs, boxes, S, oh, ow, parsed.maskThr);
      return { detBboxes, detLabels, masks };
    }));
  }
}
