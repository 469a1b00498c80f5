/**
 * mmseg's `EncoderDecoder` segmentor: a backbone producing a feature pyramid, an optional neck, a decode head and
 * optional auxiliary head(s). Submodules are registered as `backbone`, `neck`, `decode_head`, `auxiliary_head`
 * (in that order, as mmseg), so a released mmseg / ViT-Adapter checkpoint (`backbone.*`, `decode_head.*`,
 * `auxiliary_head.*`, maybe `neck.*`) loads with `loadStateDict(sd)` strictly.
 *
 * This file holds the training forward and the single-pass `encodeDecode`; test-time strategies (whole/slide,
 * flip, multi-scale) are built on top of {@link EncoderDecoder.encodeDecode} elsewhere.
 */
import { type Tensor, scope } from '../../engine/index.js';
import { Module, ModuleList } from '../../nn/index.js';
import { ViTAdapter, type ViTAdapterOptions } from '../../models/adapter/index.js';
import type { Capture } from '../../models/adapter/vit-adapter.js';
import {
  DecodeHead, type HeadConfig, type HeadLosses, type NeckConfig, type SegmentationHead, buildHead, buildNeck, resize, spatial,
} from '../../models/heads/index.js';

/** A backbone: any module mapping an N×3×H×W image to a list of feature maps. */
export interface Backbone extends Module {
  forward(x: Tensor, capture?: Capture): Tensor[];
}

/** A neck: any module mapping a list of feature maps to a list of feature maps. */
export interface Neck extends Module {
  forward(inputs: readonly Tensor[], capture?: Capture): Tensor[];
}

/** Constructor options of {@link EncoderDecoder}: built modules, or mmseg config dicts. */
export interface EncoderDecoderOptions {
  /** A backbone module, or a `{type:'ViTAdapter', ...}` config (the authors' keys). */
  backbone: Backbone | ({ type: 'ViTAdapter' } & ViTAdapterOptions);
  /** Optional neck: a module or a `{type:'FPN', ...}` config. */
  neck?: Neck | NeckConfig | null;
  /**
   * The decode head: a module or an mmseg head config. A `Mask2FormerHead` makes this the authors'
   * `EncoderDecoderMask2Former`, whose inference path is the same (`encode_decode` resizes the head's semantic scores
   * to the input); it has no auxiliary head in the authors' configs and cannot train yet.
   */
  decode_head: SegmentationHead | HeadConfig;
  /** Optional auxiliary head(s): one (keys `auxiliary_head.*`) or a list (keys `auxiliary_head.{i}.*`), as mmseg. */
  auxiliary_head?: DecodeHead | HeadConfig | (DecodeHead | HeadConfig)[] | null;
}

/** The training outputs of {@link EncoderDecoder.forwardTrain}. */
export interface SegmentorLosses {
  /** loss_decode + loss_aux: what to back-propagate. */
  loss: Tensor;
  /** The decode head's weighted loss (its `loss_weight`, 1.0 in the configs). */
  loss_decode: Tensor;
  /** The auxiliary head(s)' weighted loss (its `loss_weight`, 0.4 in the configs), or null without one. */
  loss_aux: Tensor | null;
  /** Decode-head pixel accuracy in percent over non-ignored pixels (0-d, no gradient). */
  acc: Tensor;
  /** Auxiliary-head pixel accuracy (the first auxiliary head), or null. */
  acc_aux: Tensor | null;
  /** Every term under mmseg's log names: `decode.loss_ce`, `decode.acc_seg`, `aux.loss_ce` (`aux_{i}.` for lists), ... */
  log: Record<string, Tensor>;
}

function isModule(x: unknown): x is Module {
  return x instanceof Module;
}

/** mmseg's `EncoderDecoder`. */
export class EncoderDecoder extends Module {
  readonly backbone: Backbone;
  readonly neck: Neck | null = null;
  readonly decode_head: SegmentationHead;
  /** The auxiliary heads (registered as one module, or as a ModuleList when a list was given). */
  readonly auxiliaryHeads: DecodeHead[] = [];
  readonly auxiliary_head: DecodeHead | ModuleList<DecodeHead> | null = null;

  constructor(o: EncoderDecoderOptions) {
    super();
    const allowed = new Set(['backbone', 'neck', 'decode_head', 'auxiliary_head']);
    const unknown = Object.keys(o).filter((k) => !allowed.has(k));
    if (unknown.length) throw new Error(`EncoderDecoder: unknown option(s) ${unknown.join(', ')}`);
    if (!o.backbone) throw new Error('EncoderDecoder: backbone is required');
    if (!o.decode_head) throw new Error('EncoderDecoder: decode_head is required');
    let backbone: Backbone;
    if (isModule(o.backbone)) {
      backbone = o.backbone;
    } else {
      const cfg = o.backbone as { type?: unknown };
      if (cfg.type !== 'ViTAdapter') throw new Error(`EncoderDecoder: backbone config type ${JSON.stringify(cfg.type)} is not supported (ViTAdapter, or pass a module)`);
      backbone = new ViTAdapter(o.backbone as ViTAdapterOptions);
    }
    this.backbone = this.registerModule('backbone', backbone);
    if (o.neck) this.neck = this.registerModule('neck', isModule(o.neck) ? o.neck : buildNeck(o.neck as NeckConfig));
    const head = (h: DecodeHead | HeadConfig): DecodeHead => {
      const built = h instanceof DecodeHead ? h : buildHead(h);
      if (!(built instanceof DecodeHead)) throw new Error(`EncoderDecoder: a ${built.constructor.name} cannot be an auxiliary head`);
      return built;
    };
    const decode = isModule(o.decode_head) ? o.decode_head : buildHead(o.decode_head as HeadConfig);
    this.decode_head = this.registerModule('decode_head', decode);
    const aux = o.auxiliary_head;
    if (Array.isArray(aux)) {
      const list = new ModuleList<DecodeHead>(aux.map(head));
      this.auxiliary_head = this.registerModule('auxiliary_head', list);
      this.auxiliaryHeads = list.slice(0);
    } else if (aux) {
      const h = head(aux);
      this.auxiliary_head = this.registerModule('auxiliary_head', h);
      this.auxiliaryHeads = [h];
    }
  }

  /** The head's `align_corners` (used for the final resize, as mmseg). */
  get alignCorners(): boolean {
    return this.decode_head.alignCorners;
  }

  /** Backbone (then neck) features. */
  extractFeat(img: Tensor, capture?: Capture): Tensor[] {
    if (img.ndim !== 4) throw new Error(`EncoderDecoder: expected an N×C×H×W image, got [${img.shape.join(', ')}]`);
    let x = this.backbone.forward(img, capture);
    if (this.neck) x = this.neck.forward(x, capture);
    return x;
  }

  /**
   * mmseg `encode_decode`: backbone (+ neck) and decode head, logits resized (bilinear, the head's align_corners)
   * to the input's H×W → N×num_classes×H×W. Uses the current train/eval mode; call `eval()` for inference.
   */
  encodeDecode(img: Tensor, capture?: Capture): Tensor {
    // backbone features and head logits are freed once the resized logits exist
    return scope(() => resize(this.decode_head.forward(this.extractFeat(img, capture), capture), spatial(img), this.alignCorners));
  }

  /**
   * mmseg `forward_train`: the decode head's loss, plus each auxiliary head's, on the same features.
   * @param img N×3×H×W normalised images
   * @param label N×H×W (or N×1×H×W) integer class maps at the image size, `ignore_index` (255) where unlabeled
   */
  forwardTrain(img: Tensor, label: Tensor): SegmentorLosses {
    const x = this.extractFeat(img);
    const log: Record<string, Tensor> = {};
    const record = (prefix: string, l: HeadLosses): void => {
      for (const [k, v] of Object.entries(l.terms)) log[`${prefix}.${k}`] = v;
      log[`${prefix}.acc_seg`] = l.acc_seg;
    };
    const dec = this.decode_head.forwardTrain(x, label);
    record('decode', dec);
    let lossAux: Tensor | null = null;
    let accAux: Tensor | null = null;
    this.auxiliaryHeads.forEach((h, i) => {
      const a = h.forwardTrain(x, label);
      record(this.auxiliary_head instanceof ModuleList ? `aux_${i}` : 'aux', a);
      lossAux = lossAux ? lossAux.add(a.loss) : a.loss;
      accAux ??= a.acc_seg;
    });
    const total: Tensor = lossAux ? dec.loss.add(lossAux) : dec.loss;
    return { loss: total, loss_decode: dec.loss, loss_aux: lossAux, acc: dec.acc_seg, acc_aux: accAux, log };
  }
}
