/**
 * The `FPN` neck (Lin et al. 2017) as mmseg 0.x and mmdetection 2.x build it (the two implementations agree for every
 * option here): lateral 1×1 convs, nearest-neighbour top-down additions, 3×3 output convs, and extra levels either by
 * max-pooling (`add_extra_convs` false: P6 = max_pool2d(P5, 1, stride 2), as the authors' Mask R-CNN configs with
 * `num_outs=5`) or by stride-2 convs.
 *
 * Keys: `lateral_convs.{i}.conv.{weight,bias}` (1×1), then `fpn_convs.{i}.conv.{weight,bias}` (3×3, and the extra
 * stride-2 convs when `add_extra_convs`). The default `norm_cfg=None, act_cfg=None` gives ConvModules with a conv
 * bias and neither norm nor activation; with a norm_cfg they have `bn.*` and no bias. The detection fixture
 * (`../shared/fixtures/detection/maskrcnn_small`) verifies the keys and the forward of the Mask R-CNN setting.
 *
 * The neck's Xavier `init_cfg` is overridden by mmcv's ConvModule init in mmcv 1.x (we use the ConvModule init:
 * Kaiming-normal fan_out, zero bias).
 */
import { type Tensor, interpolate, maxPool2d, relu } from '../../engine/index.js';
import { Module, ModuleList } from '../../nn/index.js';
import { type ActCfg, type ConvCfg, type NormCfg, ConvModule, checkKeys, parseActCfg, parseConvCfg, parseNormCfg } from '../heads/conv-module.js';
import { type Capture, spatial } from '../heads/decode-head.js';
import { checkInt, checkWidth } from '../validate.js';

/** mmseg `FPN` neck config (snake_case, verbatim). */
export interface FPNConfig {
  in_channels: number[];
  out_channels: number;
  num_outs: number;
  start_level?: number;
  end_level?: number;
  add_extra_convs?: boolean | 'on_input' | 'on_lateral' | 'on_output';
  extra_convs_on_inputs?: boolean;
  relu_before_extra_convs?: boolean;
  no_norm_on_lateral?: boolean;
  conv_cfg?: ConvCfg | null;
  norm_cfg?: NormCfg | null;
  /** Default null (no activation), as mmseg's FPN. */
  act_cfg?: ActCfg | null;
  /** `{mode:'nearest'|'bilinear', scale_factor?, align_corners?}`; default `{mode:'nearest'}`. */
  upsample_cfg?: { mode?: 'nearest' | 'bilinear'; scale_factor?: number; align_corners?: boolean };
  /** Accepted and ignored. */
  init_cfg?: unknown;
}

const FPN_KEYS = [
  'in_channels', 'out_channels', 'num_outs', 'start_level', 'end_level', 'add_extra_convs', 'extra_convs_on_inputs',
  'relu_before_extra_convs', 'no_norm_on_lateral', 'conv_cfg', 'norm_cfg', 'act_cfg', 'upsample_cfg', 'init_cfg',
];

/** mmseg's `FPN` neck: lateral 1×1 convs, nearest-neighbour top-down additions, 3×3 output convs. */
export class FPN extends Module {
  readonly lateral_convs: ModuleList<ConvModule>;
  readonly fpn_convs: ModuleList<ConvModule>;
  readonly inChannels: number[];
  readonly outChannels: number;
  readonly numOuts: number;
  readonly startLevel: number;
  readonly backboneEndLevel: number;
  readonly addExtraConvs: false | 'on_input' | 'on_lateral' | 'on_output';
  readonly reluBeforeExtraConvs: boolean;
  private readonly upsample: { mode: 'nearest' | 'bilinear'; scaleFactor: number | null; alignCorners: boolean };

  constructor(cfg: FPNConfig) {
    super();
    const where = 'FPN';
    checkKeys(where, cfg, FPN_KEYS);
    if (!Array.isArray(cfg.in_channels) || cfg.in_channels.length === 0) {
      throw new Error(`FPN: in_channels must be a non-empty list of positive integers, got ${JSON.stringify(cfg.in_channels)}`);
    }
    cfg.in_channels.forEach((c, i) => checkWidth(where, `in_channels[${i}]`, c));
    checkWidth(where, 'out_channels', cfg.out_channels);
    checkInt(where, 'num_outs', cfg.num_outs, { min: 1, max: 16 });
    this.inChannels = [...cfg.in_channels];
    this.outChannels = cfg.out_channels;
    this.numOuts = cfg.num_outs;
    const numIns = this.inChannels.length;
    const start = cfg.start_level ?? 0;
    const end = cfg.end_level ?? -1;
    if (!Number.isInteger(start) || start < 0 || start >= numIns) throw new Error(`FPN: start_level ${start} out of range`);
    if (end === -1) {
      this.backboneEndLevel = numIns;
      if (this.numOuts < numIns - start) throw new Error(`FPN: num_outs ${this.numOuts} < number of used levels ${numIns - start}`);
    } else {
      if (!Number.isInteger(end) || end > numIns || end <= start) throw new Error(`FPN: end_level ${end} out of range`);
      if (this.numOuts !== end - start) throw new Error(`FPN: with end_level, num_outs must be end_level - start_level`);
      this.backboneEndLevel = end;
    }
    this.startLevel = start;
    const extra = cfg.add_extra_convs ?? false;
    if (typeof extra === 'string') {
      if (!['on_input', 'on_lateral', 'on_output'].includes(extra)) throw new Error(`FPN: add_extra_convs ${JSON.stringify(extra)} is not valid`);
      this.addExtraConvs = extra;
    } else if (extra === true) {
      this.addExtraConvs = cfg.extra_convs_on_inputs ? 'on_input' : 'on_output';
    } else if (extra === false) {
      this.addExtraConvs = false;
    } else {
      throw new Error('FPN: add_extra_convs must be a boolean or on_input/on_lateral/on_output');
    }
    this.reluBeforeExtraConvs = cfg.relu_before_extra_convs ?? false;
    const convCfg = parseConvCfg(where, cfg.conv_cfg);
    const normCfg = parseNormCfg(where, cfg.norm_cfg);
    const actCfg = cfg.act_cfg === undefined ? null : parseActCfg(where, cfg.act_cfg);
    const up = cfg.upsample_cfg ?? { mode: 'nearest' };
    checkKeys('FPN: upsample_cfg', up, ['mode', 'scale_factor', 'align_corners']);
    if (up.mode !== undefined && up.mode !== 'nearest' && up.mode !== 'bilinear') throw new Error(`FPN: upsample mode ${JSON.stringify(up.mode)} not supported`);
    this.upsample = { mode: up.mode ?? 'nearest', scaleFactor: up.scale_factor ?? null, alignCorners: up.align_corners ?? false };
    const O = this.outChannels;
    this.lateral_convs = this.registerModule('lateral_convs', new ModuleList<ConvModule>());
    this.fpn_convs = this.registerModule('fpn_convs', new ModuleList<ConvModule>());
    for (let i = start; i < this.backboneEndLevel; i++) {
      this.lateral_convs.push(new ConvModule(this.inChannels[i]!, O, {
        kernelSize: 1, convCfg, norm: cfg.no_norm_on_lateral ? null : normCfg, act: actCfg,
      }));
      this.fpn_convs.push(new ConvModule(O, O, { kernelSize: 3, padding: 1, convCfg, norm: normCfg, act: actCfg }));
    }
    const extraLevels = this.numOuts - this.backboneEndLevel + start;
    if (this.addExtraConvs && extraLevels >= 1) {
      for (let i = 0; i < extraLevels; i++) {
        const cin = i === 0 && this.addExtraConvs === 'on_input' ? this.inChannels[this.backboneEndLevel - 1]! : O;
        this.fpn_convs.push(new ConvModule(cin, O, { kernelSize: 3, stride: 2, padding: 1, convCfg, norm: normCfg, act: actCfg }));
      }
    }
  }

  private up(x: Tensor, size: [number, number]): Tensor {
    const { mode, scaleFactor, alignCorners } = this.upsample;
    if (scaleFactor !== null) {
      return interpolate(x, { scaleFactor, mode, ...(mode === 'bilinear' ? { alignCorners } : {}) });
    }
    return interpolate(x, { size, mode, ...(mode === 'bilinear' ? { alignCorners } : {}) });
  }

  /** `num_outs` maps of `out_channels`. Captures `neck.lateral.i` (after the top-down pass) and `neck.out.i`. */
  forward(inputs: readonly Tensor[], capture?: Capture): Tensor[] {
    if (inputs.length !== this.inChannels.length) {
      throw new Error(`FPN: expected ${this.inChannels.length} input maps, got ${inputs.length}`);
    }
    const laterals = this.lateral_convs.slice(0).map((conv, i) => conv.forward(inputs[i + this.startLevel]!));
    const used = laterals.length;
    for (let i = used - 1; i > 0; i--) {
      laterals[i - 1] = laterals[i - 1]!.add(this.up(laterals[i]!, spatial(laterals[i - 1]!)));
    }
    if (capture) laterals.forEach((l, i) => capture(`neck.lateral.${i}`, l));
    const outs = laterals.map((l, i) => this.fpn_convs.at(i).forward(l));
    if (this.numOuts > outs.length) {
      if (!this.addExtraConvs) {
        for (let i = 0; i < this.numOuts - used; i++) outs.push(maxPool2d(outs[outs.length - 1]!, 1, { stride: 2 }));
      } else {
        const source = this.addExtraConvs === 'on_input' ? inputs[this.backboneEndLevel - 1]!
          : this.addExtraConvs === 'on_lateral' ? laterals[used - 1]! : outs[outs.length - 1]!;
        outs.push(this.fpn_convs.at(used).forward(source));
        for (let i = used + 1; i < this.numOuts; i++) {
          const prev = outs[outs.length - 1]!;
          outs.push(this.fpn_convs.at(i).forward(this.reluBeforeExtraConvs ? relu(prev) : prev));
        }
      }
    }
    if (capture) outs.forEach((o, i) => capture(`neck.out.${i}`, o));
    return outs;
  }
}
