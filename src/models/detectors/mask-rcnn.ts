/**
 * mmdetection 2.x `MaskRCNN` (a `TwoStageDetector`) at test time: backbone → FPN neck → RPN proposals → standard RoI
 * head (boxes, then masks), `simple_test(img, img_metas, rescale=True)` for one image.
 *
 * Submodules are registered as `backbone`, `neck`, `rpn_head`, `roi_head` (mmdet's names and order), so a released
 * `mask_rcnn_*` checkpoint's `state_dict` loads strictly with `loadStateDict`.
 */
import { type Tensor, noGrad, scope } from '../../engine/index.js';
import { Module } from '../../nn/index.js';
import { ViTAdapter, type ViTAdapterOptions } from '../adapter/index.js';
import { checkKeys } from '../heads/conv-module.js';
import { FPN, type FPNConfig } from '../necks/fpn.js';
import { RPNHead, type RPNHeadConfig, parseRpnTestCfg } from './rpn-head.js';
import { StandardRoIHead, type StandardRoIHeadConfig, toDetections } from './roi-head.js';
import { parseRcnnTestCfg } from './bbox-head.js';
import { type Detections, type ImageMeta, type MaskRCNNTestConfig, type StageCapture, checkImageMeta } from './types.js';

/** A detection backbone: an image batch (N, 3, H, W) → feature maps (four for ViT-Adapter, strides 4..32). */
export interface DetectorBackbone extends Module {
  forward(x: Tensor): Tensor[];
}

/** The mmdet `MaskRCNN` model config (snake_case fields, verbatim values). */
export interface MaskRCNNConfig {
  type?: 'MaskRCNN';
  /** The backbone config, used by {@link buildMaskRCNN} (a ViT-Adapter); ignored when a backbone module is given. */
  backbone?: { type?: 'ViTAdapter' } & ViTAdapterOptions;
  neck: { type?: 'FPN' } & FPNConfig;
  rpn_head: RPNHeadConfig;
  roi_head: StandardRoIHeadConfig;
  test_cfg: MaskRCNNTestConfig;
  /** Accepted and not used (test time only). */
  train_cfg?: unknown;
  pretrained?: null;
  init_cfg?: unknown;
}

/** Options of {@link MaskRCNN.simpleTest}. */
export interface SimpleTestOptions {
  /** Compute masks (default true when the RoI head has a mask branch). */
  withMask?: boolean;
  /**
   * Receives every stage under the fixture's names: `neck.{i}`, `rpn.cls_score.{l}`, `rpn.bbox_pred.{l}`,
   * `anchors.{l}`, `proposals`, `bbox_roi_feats`, `cls_score`, `bbox_pred`, `det_bboxes`, `det_labels`, `mask_rois`,
   * `mask_roi_feats`, `mask_pred`. Keep (`t.keep()`) what you hold on to.
   */
  capture?: StageCapture;
}

/** Mask R-CNN (test time). */
export class MaskRCNN extends Module {
  readonly backbone: DetectorBackbone;
  readonly neck: FPN;
  readonly rpn_head: RPNHead;
  readonly roi_head: StandardRoIHead;
  readonly testCfg: MaskRCNNTestConfig;

  /** Builds the model from its config and a built backbone module. */
  constructor(cfg: MaskRCNNConfig, backbone: DetectorBackbone) {
    super();
    const where = 'MaskRCNN';
    checkKeys(where, cfg, ['type', 'backbone', 'neck', 'rpn_head', 'roi_head', 'test_cfg', 'train_cfg', 'pretrained', 'init_cfg']);
    if (cfg.type !== undefined && cfg.type !== 'MaskRCNN') throw new Error(`${where}: type must be MaskRCNN, got ${JSON.stringify(cfg.type)}`);
    if (!(backbone instanceof Module)) throw new Error(`${where}: a backbone module is required (use buildMaskRCNN to build one from cfg.backbone)`);
    for (const k of ['neck', 'rpn_head', 'roi_head', 'test_cfg'] as const) {
      if (cfg[k] === undefined || cfg[k] === null) throw new Error(`${where}: config needs ${k}`);
    }
    if (typeof cfg.test_cfg !== 'object' || !cfg.test_cfg.rpn || !cfg.test_cfg.rcnn) throw new Error(`${where}: test_cfg needs rpn and rcnn`);
    parseRpnTestCfg(cfg.test_cfg.rpn);
    parseRcnnTestCfg(cfg.test_cfg.rcnn);
    this.testCfg = structuredClone(cfg.test_cfg);
    this.backbone = this.registerModule('backbone', backbone);
    const { type: neckType, ...neck } = cfg.neck;
    if (neckType !== undefined && neckType !== 'FPN') throw new Error(`${where}: only an FPN neck is supported, got ${JSON.stringify(neckType)}`);
    this.neck = this.registerModule('neck', new FPN(neck));
    this.rpn_head = this.registerModule('rpn_head', new RPNHead(cfg.rpn_head));
    this.roi_head = this.registerModule('roi_head', new StandardRoIHead(cfg.roi_head));
    if (this.neck.numOuts !== this.rpn_head.anchorGenerator.numLevels) {
      throw new Error(`${where}: the neck gives ${this.neck.numOuts} levels but the anchor generator has ${this.rpn_head.anchorGenerator.numLevels} strides`);
    }
  }

  /**
   * Detections of one normalised, padded image `img` (1, 3, Hp, Wp), rescaled to the original image (rescale=True).
   * Runs in eval mode (as mmdetection's test scripts do); a model in training mode is switched back afterwards.
   */
  simpleTest(img: Tensor, meta: ImageMeta, opts: SimpleTestOptions = {}): Detections {
    if (img.ndim !== 4 || img.shape[0] !== 1 || img.shape[1] !== 3) {
      throw new Error(`MaskRCNN.simpleTest: img must be (1, 3, H, W), got [${img.shape.join(', ')}]`);
    }
    checkImageMeta('MaskRCNN.simpleTest', meta);
    const [ph, pw] = meta.padShape;
    if (img.shape[2] !== ph || img.shape[3] !== pw) {
      throw new Error(`MaskRCNN.simpleTest: img is ${img.shape[2]}x${img.shape[3]} but meta.padShape is ${ph}x${pw}`);
    }
    return this.inEval(() => noGrad(() => scope(() => {
      const feats = this.backbone.forward(img);
      return this.simpleTestFromFeatures(feats, meta, opts);
    })));
  }

  private inEval<T>(fn: () => T): T {
    const wasTraining = this.training;
    if (wasTraining) this.eval();
    try {
      return fn();
    } finally {
      if (wasTraining) this.train();
    }
  }

  /** {@link simpleTest} from given backbone features (one image), in eval mode. */
  simpleTestFromFeatures(feats: readonly Tensor[], meta: ImageMeta, opts: SimpleTestOptions = {}): Detections {
    checkImageMeta('MaskRCNN.simpleTestFromFeatures', meta);
    if (feats.some((f) => f.ndim !== 4 || f.shape[0] !== 1)) {
      throw new Error(`MaskRCNN: backbone features must be (1, C, h, w) maps, got ${feats.map((f) => `[${f.shape.join(', ')}]`).join(', ')}`);
    }
    const cap = opts.capture;
    return this.inEval(() => noGrad(() => scope(() => {
      const x = this.neck.forward(feats);
      if (cap) x.forEach((t, i) => cap(`neck.${i}`, t));
      const { clsScores, bboxPreds } = this.rpn_head.forward(x);
      if (cap) {
        clsScores.forEach((t, l) => cap(`rpn.cls_score.${l}`, t));
        bboxPreds.forEach((t, l) => cap(`rpn.bbox_pred.${l}`, t));
      }
      const proposals = this.rpn_head.getBboxes(clsScores, bboxPreds, meta, this.testCfg.rpn, 0, cap);
      cap?.('proposals', proposals);
      const r = this.roi_head.simpleTest(x, proposals, meta, this.testCfg.rcnn, {
        ...(opts.withMask === undefined ? {} : { withMask: opts.withMask }), ...(cap ? { capture: cap } : {}),
      });
      return toDetections(r);
    })));
  }
}

/**
 * The authors' configs list `window_size` per block with `None` for the blocks without window attention; the ViT
 * takes a number for every block, so a null entry of a block without window attention becomes 14 (never used).
 */
function windowSizes(o: ViTAdapterOptions): Pick<ViTAdapterOptions, 'window_size'> {
  const ws = o.window_size as unknown;
  if (!Array.isArray(ws) || !ws.includes(null)) return {};
  const wa = o.window_attn;
  return {
    window_size: ws.map((v: number | null, i: number) => {
      if (v !== null) return v;
      const windowed = Array.isArray(wa) ? wa[i] : wa;
      if (windowed) throw new Error(`buildMaskRCNN: window_size[${i}] is null but block ${i} uses window attention`);
      return 14;
    }),
  };
}

/** Builds a Mask R-CNN whose backbone is the ViT-Adapter of `cfg.backbone` (the `detection` variant by default). */
export function buildMaskRCNN(cfg: MaskRCNNConfig): MaskRCNN {
  if (!cfg.backbone) throw new Error('buildMaskRCNN: the config has no backbone');
  const { type, ...opts } = cfg.backbone;
  if (type !== undefined && type !== 'ViTAdapter') throw new Error(`buildMaskRCNN: only a ViTAdapter backbone is supported, got ${JSON.stringify(type)}`);
  const backbone = new ViTAdapter({ variant: 'detection', ...opts, ...windowSizes(opts) });
  try {
    return new MaskRCNN(cfg, backbone as unknown as DetectorBackbone);
  } catch (e) {
    backbone.dispose();
    throw e;
  }
}
