/**
 * mmdetection 2.x `Shared2FCBBoxHead` (a `ConvFCBBoxHead` with two shared fully connected layers) and the test-time
 * `BBoxHead.get_bboxes` + `multiclass_nms`.
 *
 * Forward: flatten the (C, S, S) RoI features in (channel, y, x) order, `relu(fc0)`, `relu(fc1)`, then `fc_cls`
 * (K + 1 logits, background last) and `fc_reg` (4K class-specific deltas, or 4 when `reg_class_agnostic`).
 * Detections: `softmax` scores; every class's deltas decoded against the proposal and clamped to `img_shape`; boxes
 * divided by `scale_factor` (rescale to the original image, not clamped to it); candidates = every (proposal, class)
 * with score > `score_thr`, proposal-major; batched NMS with the class as group; the first `max_per_img`.
 *
 * Keys: `fc_cls.*`, `fc_reg.*`, `shared_fcs.{0,1}.*` (mmdet's module order).
 */
import { type Tensor, cat, relu, scope, softmax, tensor, zeros } from '../../engine/index.js';
import { Linear, Module, ModuleList, batchedNms } from '../../nn/index.js';
import { constant_, normal_, xavierUniform_ } from '../../nn/init.js';
import { checkKeys } from '../heads/conv-module.js';
import { checkInt, checkWidth } from '../validate.js';
import { DeltaXYWHBBoxCoder, type DeltaXYWHBBoxCoderConfig } from './bbox-coder.js';
import { type ImageMeta, type RCNNTestConfig, parseNmsCfg } from './types.js';

/** mmdet `bbox_head` config (snake_case, verbatim; losses are accepted and not used at test time). */
export interface Shared2FCBBoxHeadConfig {
  type?: 'Shared2FCBBoxHead';
  in_channels: number;
  fc_out_channels?: number;
  roi_feat_size?: number;
  num_classes: number;
  bbox_coder?: DeltaXYWHBBoxCoderConfig;
  reg_class_agnostic?: boolean;
  reg_decoded_bbox?: boolean;
  with_avg_pool?: boolean;
  with_cls?: boolean;
  with_reg?: boolean;
  loss_cls?: unknown;
  loss_bbox?: unknown;
  init_cfg?: unknown;
}

const KEYS = ['type', 'in_channels', 'fc_out_channels', 'roi_feat_size', 'num_classes', 'bbox_coder', 'reg_class_agnostic',
  'reg_decoded_bbox', 'with_avg_pool', 'with_cls', 'with_reg', 'loss_cls', 'loss_bbox', 'init_cfg'];

/** Validated `test_cfg.rcnn`. */
export interface ParsedRcnnCfg { scoreThr: number; iou: number; splitThr: number; maxPerImg: number; maskThr: number }

/** Validates `test_cfg.rcnn`. */
export function parseRcnnTestCfg(cfg: RCNNTestConfig): ParsedRcnnCfg {
  const where = 'RoI head test_cfg';
  if (typeof cfg !== 'object' || cfg === null) throw new Error(`${where}: must be a dict with score_thr, nms, max_per_img, mask_thr_binary`);
  checkKeys(where, cfg, ['score_thr', 'nms', 'max_per_img', 'mask_thr_binary']);
  if (typeof cfg.score_thr !== 'number' || !Number.isFinite(cfg.score_thr)) throw new Error(`${where}: score_thr must be a number, got ${JSON.stringify(cfg.score_thr)}`);
  if (!Number.isInteger(cfg.max_per_img)) throw new Error(`${where}: max_per_img must be an integer (<= 0: no cap), got ${JSON.stringify(cfg.max_per_img)}`);
  const maskThr = cfg.mask_thr_binary ?? 0.5;
  if (typeof maskThr !== 'number' || !Number.isFinite(maskThr)) throw new Error(`${where}: mask_thr_binary must be a number`);
  const { iou, splitThr } = parseNmsCfg(where, cfg.nms);
  return { scoreThr: cfg.score_thr, iou, splitThr, maxPerImg: cfg.max_per_img, maskThr };
}

/** The box head. */
export class Shared2FCBBoxHead extends Module {
  readonly fc_cls: Linear;
  readonly fc_reg: Linear;
  readonly shared_fcs: ModuleList<Linear>;
  readonly numClasses: number;
  readonly inChannels: number;
  readonly roiFeatSize: number;
  readonly fcOutChannels: number;
  readonly regClassAgnostic: boolean;
  readonly bboxCoder: DeltaXYWHBBoxCoder;

  constructor(cfg: Shared2FCBBoxHeadConfig) {
    super();
    const where = 'Shared2FCBBoxHead';
    checkKeys(where, cfg, KEYS);
    if (cfg.type !== undefined && cfg.type !== 'Shared2FCBBoxHead') throw new Error(`${where}: type must be Shared2FCBBoxHead, got ${JSON.stringify(cfg.type)}`);
    if (cfg.with_avg_pool) throw new Error(`${where}: with_avg_pool is not supported`);
    if (cfg.with_cls === false || cfg.with_reg === false) throw new Error(`${where}: with_cls and with_reg must be true`);
    if (cfg.reg_decoded_bbox) throw new Error(`${where}: reg_decoded_bbox is not supported`);
    checkWidth(where, 'in_channels', cfg.in_channels);
    checkInt(where, 'num_classes', cfg.num_classes, { min: 1, max: 100_000 });
    this.inChannels = cfg.in_channels;
    this.numClasses = cfg.num_classes;
    this.roiFeatSize = cfg.roi_feat_size ?? 7;
    checkInt(where, 'roi_feat_size', this.roiFeatSize, { min: 1, max: 1024 });
    this.fcOutChannels = cfg.fc_out_channels ?? 1024;
    checkWidth(where, 'fc_out_channels', this.fcOutChannels);
    this.regClassAgnostic = cfg.reg_class_agnostic ?? false;
    this.bboxCoder = new DeltaXYWHBBoxCoder(cfg.bbox_coder ?? { target_stds: [0.1, 0.1, 0.2, 0.2] });
    const F = this.fcOutChannels;
    this.fc_cls = this.registerModule('fc_cls', new Linear(F, this.numClasses + 1));
    this.fc_reg = this.registerModule('fc_reg', new Linear(F, this.regClassAgnostic ? 4 : 4 * this.numClasses));
    this.shared_fcs = this.registerModule('shared_fcs', new ModuleList<Linear>([
      new Linear(this.inChannels * this.roiFeatSize * this.roiFeatSize, F), new Linear(F, F),
    ]));
    // mmdet init_cfg: fc_cls Normal(0.01), fc_reg Normal(0.001), shared fcs Xavier uniform; zero biases
    normal_(this.fc_cls.weight, 0, 0.01);
    normal_(this.fc_reg.weight, 0, 0.001);
    for (const fc of this.shared_fcs) xavierUniform_(fc.weight);
    for (const m of [this.fc_cls, this.fc_reg, ...this.shared_fcs]) constant_(m.bias!, 0);
  }

  /** Class logits (N, K + 1) and deltas (N, 4K) of RoI features (N, C, S, S). */
  forward(roiFeats: Tensor): { clsScore: Tensor; bboxPred: Tensor } {
    const [c, r] = scope(() => {
      let x = roiFeats.flatten(1);
      for (const fc of this.shared_fcs) x = relu(fc.forward(x));
      return [this.fc_cls.forward(x), this.fc_reg.forward(x)];
    });
    return { clsScore: c!, bboxPred: r! };
  }

  /**
   * Detections of one image from its RoIs (N, 5), logits and deltas (rescale = true): `detBboxes` (D, 5: box in
   * original-image pixels, score) in descending score order and `detLabels` (D,) int64.
   */
  getBboxes(rois: Tensor, clsScore: Tensor, bboxPred: Tensor, meta: ImageMeta, cfg: RCNNTestConfig): { detBboxes: Tensor; detLabels: Tensor } {
    const c = parseRcnnTestCfg(cfg);
    const K = this.numClasses;
    const dtype = clsScore.dtype;
    const device = clsScore.device;
    const N = rois.shape[0]!;
    const empty = (): { detBboxes: Tensor; detLabels: Tensor } => ({
      detBboxes: zeros([0, 5], { dtype, device }), detLabels: zeros([0], { dtype: 'int64', device }),
    });
    if (N === 0) return empty();
    const out = scope(() => {
      const scores = softmax(clsScore, -1);
      let boxes = this.bboxCoder.decode(rois.slice(1, 1, 5), bboxPred, meta.imgShape);
      const sf = tensor(meta.scaleFactor.map(Math.fround), { dtype: 'float32', device }).to(dtype);
      boxes = boxes.reshape(N, -1, 4).div(sf).reshape(N, -1);
      // multiclass_nms: candidates (i, c) with score > score_thr, proposal-major
      const s = scores.slice(1, 0, K).contiguous().toTypedArray();
      const f = dtype === 'float32' ? Math.fround : (x: number): number => x;
      const thr = f(c.scoreThr);
      const inds: number[] = [];
      const labels: number[] = [];
      for (let i = 0; i < N; i++) {
        for (let k = 0; k < K; k++) {
          if (s[i * K + k]! > thr) { inds.push(i * K + k); labels.push(k); }
        }
      }
      if (inds.length === 0) return null;
      const flatBoxes = this.regClassAgnostic ? boxes.unsqueeze(1).expand(N, K, 4).reshape(-1, 4) : boxes.reshape(-1, 4);
      const idx = tensor(inds, { dtype: 'int64', device });
      const candBoxes = flatBoxes.indexSelect(0, idx);
      const candScores = scores.slice(1, 0, K).reshape(-1).indexSelect(0, idx);
      const candLabels = tensor(labels, { dtype: 'int64', device });
      let keep = batchedNms(candBoxes, candScores, candLabels, c.iou, { splitThr: c.splitThr });
      if (c.maxPerImg > 0) keep = keep.slice(0, 0, c.maxPerImg);
      return {
        detBboxes: cat([candBoxes.indexSelect(0, keep), candScores.indexSelect(0, keep).unsqueeze(1)], 1),
        detLabels: candLabels.indexSelect(0, keep),
      };
    });
    return out ?? empty();
  }
}
