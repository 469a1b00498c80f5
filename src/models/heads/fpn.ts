/**
 * Semantic FPN (Kirillov et al. 2019) as mmseg builds it: the `FPN` neck (implemented in `models/necks/fpn.ts`,
 * shared with the detectors, and re-exported here) and the `FPNHead` decode head.
 *
 * ViT-Adapter's Semantic FPN setting is
 *   neck        = FPN(in_channels=[D]*4, out_channels=256, num_outs=4)
 *   decode_head = FPNHead(in_channels=[256]*4, in_index=[0,1,2,3], feature_strides=[4,8,16,32], channels=128,
 *                         dropout_ratio=0.1, num_classes=150, norm_cfg=SyncBN, align_corners=False)
 *
 * Keys (written from mmseg's module structure; NO reference fixture covers them, so they are unverified against a
 * released checkpoint):
 * - neck: `lateral_convs.{i}.conv.{weight,bias}` (1×1), then `fpn_convs.{i}.conv.{weight,bias}` (3×3, and the extra
 *   stride-2 convs when `add_extra_convs`). mmseg's FPN defaults to `norm_cfg=None, act_cfg=None`, so these
 *   ConvModules carry a conv bias and have neither norm nor activation; with a norm_cfg they have `bn.*` and no bias.
 * - head (after `conv_seg`): `scale_heads.{i}.{j}.conv.weight` + `.bn.*`. Each scale head is an `nn.Sequential` of
 *   [ConvModule, Upsample×2] pairs; the Upsample layers hold no state but take Sequential indices, so the ConvModules
 *   sit at even indices: stride 4 → `0`; stride 8 → `0`; stride 16 → `0`, `2`; stride 32 → `0`, `2`, `4`.
 *
 * Uncertain: mmseg's FPN top-down pass uses `upsample_cfg=dict(mode='nearest')` resized to the lower level's size
 * (implemented; a `scale_factor` upsample_cfg is also supported); the neck's Xavier `init_cfg` is overridden by
 * mmcv's ConvModule init in mmcv 1.x (we use the ConvModule init: Kaiming-normal fan_out, zero bias).
 */
import { type Tensor, interpolate } from '../../engine/index.js';
import { Module, ModuleList, Sequential, type UnaryModule } from '../../nn/index.js';
import { ConvModule } from './conv-module.js';
import { type Capture, type DecodeHeadConfig, DecodeHead, resize, spatial } from './decode-head.js';

// The neck lives in models/necks (shared with the detectors); re-exported here so existing imports keep working.
export { FPN, type FPNConfig } from '../necks/fpn.js';

/** mmseg's `Upsample` with a scale factor: output size int(in · s), then a size-based resize. Stateless. */
export class Upsample extends Module implements UnaryModule {
  constructor(readonly scaleFactor: number, readonly mode: 'bilinear' | 'nearest' = 'bilinear', readonly alignCorners = false) {
    super();
  }
  forward(x: Tensor): Tensor {
    const size: [number, number] = [Math.trunc(x.shape[2]! * this.scaleFactor), Math.trunc(x.shape[3]! * this.scaleFactor)];
    return this.mode === 'bilinear' ? resize(x, size, this.alignCorners) : interpolate(x, { size, mode: 'nearest' });
  }
}

/** FPNHead config: the base keys plus `feature_strides` (required). `input_transform` is fixed. */
export interface FPNHeadConfig extends Omit<DecodeHeadConfig, 'input_transform'> {
  feature_strides: number[];
}

/**
 * mmseg `FPNHead` (multiple_select): per level i, log2(stride_i / stride_0) stages (at least one) of
 * [3×3 ConvModule, ×2 bilinear upsample] (no upsample for the first level), then the levels summed (each resized to
 * level 0's size) and `cls_seg`.
 */
export class FPNHead extends DecodeHead {
  readonly scale_heads: ModuleList<Sequential>;
  readonly featureStrides: number[];

  constructor(cfg: FPNHeadConfig) {
    super('FPNHead', cfg as DecodeHeadConfig, ['feature_strides'], 'multiple_select');
    const strides = cfg.feature_strides;
    const inCh = this.inChannelList();
    if (!Array.isArray(strides) || strides.length !== inCh.length || strides.some((s) => !Number.isInteger(s) || s < 1)) {
      throw new Error(`FPNHead: feature_strides must be ${inCh.length} positive integers (one per input), got ${JSON.stringify(strides)}`);
    }
    if (Math.min(...strides) !== strides[0]) throw new Error('FPNHead: the first feature stride must be the smallest');
    this.featureStrides = [...strides];
    this.scale_heads = this.registerModule('scale_heads', new ModuleList<Sequential>());
    strides.forEach((s, i) => {
      const len = Math.max(1, Math.trunc(Math.log2(s) - Math.log2(strides[0]!)));
      const layers: UnaryModule[] = [];
      for (let k = 0; k < len; k++) {
        layers.push(new ConvModule(k === 0 ? inCh[i]! : this.channels, this.channels, {
          kernelSize: 3, padding: 1, norm: this.normCfg, act: this.actCfg, convCfg: this.convCfg,
        }));
        if (s !== strides[0]) layers.push(new Upsample(2, 'bilinear', this.alignCorners));
      }
      this.scale_heads.push(new Sequential(...layers));
    });
  }

  /** The summed feature before dropout/`conv_seg` (`feat`). Captures `scale.i` and `feat`. */
  features(inputs: readonly Tensor[], capture?: Capture): Tensor {
    const xs = this.multipleInputs(inputs);
    let out = this.scale_heads.at(0).forward(xs[0]!);
    capture?.('scale.0', out);
    for (let i = 1; i < this.featureStrides.length; i++) {
      const s = this.scale_heads.at(i).forward(xs[i]!);
      capture?.(`scale.${i}`, s);
      out = out.add(resize(s, spatial(out), this.alignCorners));
    }
    capture?.('feat', out);
    return out;
  }
}
