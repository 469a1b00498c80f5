/**
 * mmdetection 2.x `RPNHead` at test time: a shared 3×3 conv + ReLU, per-anchor objectness logits (`rpn_cls`, sigmoid
 * scores) and box deltas (`rpn_reg`) on every pyramid level, then `_get_bboxes_single` + `_bbox_post_process`:
 * per level the top `nms_pre` scores (sorted descending; all anchors, in anchor order, when the level has fewer),
 * decoding with the anchors (clamped to `img_shape`), dropping boxes with width or height ≤ `min_bbox_size`,
 * batched NMS with the level as group, and the first `max_per_img` of the result.
 *
 * Keys: `rpn_conv.{weight,bias}`, `rpn_cls.{weight,bias}`, `rpn_reg.{weight,bias}`.
 */
import { type Tensor, cat, full, relu, scope, sort, tensor, zeros } from '../../engine/index.js';
import { Conv2d, Module, batchedNms } from '../../nn/index.js';
import { normal_, zeros_ } from '../../nn/init.js';
import { checkKeys } from '../heads/conv-module.js';
import { checkWidth } from '../validate.js';
import { AnchorGenerator, type AnchorGeneratorConfig } from './anchor-generator.js';
import { DeltaXYWHBBoxCoder, type DeltaXYWHBBoxCoderConfig } from './bbox-coder.js';
import { type ImageMeta, type RPNTestConfig, type StageCapture, parseNmsCfg } from './types.js';

/** mmdet `rpn_head` config (snake_case, verbatim; losses and init_cfg are accepted and not used at test time). */
export interface RPNHeadConfig {
  type?: 'RPNHead';
  in_channels: number;
  feat_channels?: number;
  num_convs?: 1;
  anchor_generator: AnchorGeneratorConfig;
  bbox_coder?: DeltaXYWHBBoxCoderConfig;
  reg_decoded_bbox?: boolean;
  loss_cls?: unknown;
  loss_bbox?: unknown;
  train_cfg?: unknown;
  test_cfg?: RPNTestConfig;
  init_cfg?: unknown;
}

const KEYS = ['type', 'in_channels', 'feat_channels', 'num_convs', 'anchor_generator', 'bbox_coder', 'reg_decoded_bbox',
  'loss_cls', 'loss_bbox', 'train_cfg', 'test_cfg', 'init_cfg'];

/** Validates `test_cfg.rpn`. */
export function parseRpnTestCfg(cfg: RPNTestConfig): { nmsPre: number; maxPerImg: number; iou: number; splitThr: number; minBboxSize: number } {
  const where = 'RPNHead test_cfg';
  if (typeof cfg !== 'object' || cfg === null) throw new Error(`${where}: must be a dict with nms_pre, max_per_img, nms, min_bbox_size`);
  checkKeys(where, cfg, ['nms_pre', 'max_per_img', 'nms', 'min_bbox_size', 'nms_across_levels']);
  if (cfg.nms_across_levels) throw new Error(`${where}: nms_across_levels is not supported (mmdetection 2.x ignores it in the RPN test path)`);
  const nmsPre = cfg.nms_pre ?? -1;
  if (!Number.isInteger(nmsPre)) throw new Error(`${where}: nms_pre must be an integer, got ${JSON.stringify(cfg.nms_pre)}`);
  if (!Number.isInteger(cfg.max_per_img) || cfg.max_per_img < 1) throw new Error(`${where}: max_per_img must be a positive integer, got ${JSON.stringify(cfg.max_per_img)}`);
  const minBboxSize = cfg.min_bbox_size ?? 0;
  if (typeof minBboxSize !== 'number' || !Number.isFinite(minBboxSize)) throw new Error(`${where}: min_bbox_size must be a number`);
  const { iou, splitThr } = parseNmsCfg(where, cfg.nms);
  return { nmsPre, maxPerImg: cfg.max_per_img, iou, splitThr, minBboxSize };
}

/** The RPN head (single 3×3 conv, sigmoid objectness). */
export class RPNHead extends Module {
  readonly rpn_conv: Conv2d;
  readonly rpn_cls: Conv2d;
  readonly rpn_reg: Conv2d;
  readonly anchorGenerator: AnchorGenerator;
  readonly bboxCoder: DeltaXYWHBBoxCoder;
  readonly inChannels: number;
  readonly featChannels: number;

  constructor(cfg: RPNHeadConfig) {
    super();
    const where = 'RPNHead';
    checkKeys(where, cfg, KEYS);
    if (cfg.type !== undefined && cfg.type !== 'RPNHead') throw new Error(`${where}: type must be RPNHead, got ${JSON.stringify(cfg.type)}`);
    if (cfg.num_convs !== undefined && cfg.num_convs !== 1) throw new Error(`${where}: only num_convs=1 is implemented`);
    if (cfg.reg_decoded_bbox) throw new Error(`${where}: reg_decoded_bbox is not supported`);
    checkWidth(where, 'in_channels', cfg.in_channels);
    this.inChannels = cfg.in_channels;
    this.featChannels = cfg.feat_channels ?? 256;
    checkWidth(where, 'feat_channels', this.featChannels);
    this.anchorGenerator = new AnchorGenerator(cfg.anchor_generator);
    this.bboxCoder = new DeltaXYWHBBoxCoder(cfg.bbox_coder ?? {});
    const A = this.anchorGenerator.numBaseAnchors;
    this.rpn_conv = this.registerModule('rpn_conv', new Conv2d(this.inChannels, this.featChannels, 3, { padding: 1 }));
    this.rpn_cls = this.registerModule('rpn_cls', new Conv2d(this.featChannels, A, 1));
    this.rpn_reg = this.registerModule('rpn_reg', new Conv2d(this.featChannels, A * 4, 1));
    // mmdet's RPNHead init_cfg: Normal(std=0.01) on the convs, zero bias
    for (const c of [this.rpn_conv, this.rpn_cls, this.rpn_reg]) {
      normal_(c.weight, 0, 0.01);
      zeros_(c.bias!);
    }
  }

  /** Per level: objectness logits (N, A, h, w) and deltas (N, 4A, h, w). */
  forward(feats: readonly Tensor[]): { clsScores: Tensor[]; bboxPreds: Tensor[] } {
    const clsScores: Tensor[] = [];
    const bboxPreds: Tensor[] = [];
    for (const f of feats) {
      const [c, r] = scope(() => {
        const t = relu(this.rpn_conv.forward(f));
        return [this.rpn_cls.forward(t), this.rpn_reg.forward(t)];
      });
      clsScores.push(c!);
      bboxPreds.push(r!);
    }
    return { clsScores, bboxPreds };
  }

  /**
   * Proposals of image `b` (batch index) from the head outputs: (P, 5) rows (x1, y1, x2, y2, score) in descending
   * score order. Captures `anchors.{l}` when `capture` is given.
   */
  getBboxes(clsScores: readonly Tensor[], bboxPreds: readonly Tensor[], meta: ImageMeta, testCfg: RPNTestConfig,
    b = 0, capture?: StageCapture): Tensor {
    const cfg = parseRpnTestCfg(testCfg);
    const L = clsScores.length;
    if (bboxPreds.length !== L || L !== this.anchorGenerator.numLevels) {
      throw new Error(`RPNHead: expected ${this.anchorGenerator.numLevels} levels of scores and deltas, got ${L} and ${bboxPreds.length}`);
    }
    return scope(() => {
      const dtype = clsScores[0]!.dtype;
      const device = clsScores[0]!.device;
      const sizes = clsScores.map((c) => [c.shape[2]!, c.shape[3]!] as [number, number]);
      const anchors = this.anchorGenerator.gridPriors(sizes, dtype, device);
      if (capture) anchors.forEach((a, l) => capture(`anchors.${l}`, a));
      const scoresL: Tensor[] = [];
      const deltasL: Tensor[] = [];
      const anchorsL: Tensor[] = [];
      const idsL: Tensor[] = [];
      for (let l = 0; l < L; l++) {
        let scores = clsScores[l]!.select(0, b).permute(1, 2, 0).reshape(-1).sigmoid();
        let deltas = bboxPreds[l]!.select(0, b).permute(1, 2, 0).reshape(-1, 4);
        let anc = anchors[l]!;
        const n = scores.shape[0]!;
        if (cfg.nmsPre > 0 && cfg.nmsPre < n) {
          const { values, indices } = sort(scores, 0, true);
          const top = indices.slice(0, 0, cfg.nmsPre);
          scores = values.slice(0, 0, cfg.nmsPre);
          deltas = deltas.indexSelect(0, top);
          anc = anc.indexSelect(0, top);
        }
        scoresL.push(scores);
        deltasL.push(deltas);
        anchorsL.push(anc);
        idsL.push(full([scores.shape[0]!], l, { dtype: 'int64', device }));
      }
      let scores = cat(scoresL, 0);
      let proposals = this.bboxCoder.decode(cat(anchorsL, 0), cat(deltasL, 0), meta.imgShape);
      let ids = cat(idsL, 0);
      if (cfg.minBboxSize >= 0) {
        // w = x2 - x1 and h = y2 - y1 in the boxes' dtype, as mmdet computes them
        const f = dtype === 'float32' ? Math.fround : (x: number): number => x;
        const p = proposals.toTypedArray();
        const keep: number[] = [];
        for (let i = 0; i < p.length / 4; i++) {
          if (f(p[4 * i + 2]! - p[4 * i]!) > cfg.minBboxSize && f(p[4 * i + 3]! - p[4 * i + 1]!) > cfg.minBboxSize) keep.push(i);
        }
        if (keep.length !== p.length / 4) {
          const k = tensor(keep, { dtype: 'int64', device });
          proposals = proposals.indexSelect(0, k);
          scores = scores.indexSelect(0, k);
          ids = ids.indexSelect(0, k);
        }
      }
      if (proposals.shape[0] === 0) return zeros([0, 5], { dtype, device });
      const keep = batchedNms(proposals, scores, ids, cfg.iou, { splitThr: cfg.splitThr }).slice(0, 0, cfg.maxPerImg);
      return cat([proposals.indexSelect(0, keep), scores.indexSelect(0, keep).unsqueeze(1)], 1);
    });
  }
}
