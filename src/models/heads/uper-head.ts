/**
 * UPerNet's decode head (mmseg `UPerHead`, Xiao et al. 2018), the ViT-Adapter semantic-segmentation head: a pyramid
 * pooling module (PPM) on the coarsest map, a top-down FPN over all maps, and a fusion of the four FPN levels.
 *
 * Keys (registration order, after `conv_seg`): `psp_modules.{i}.1.*` (index 0 is the adaptive pooling, stateless),
 * `bottleneck`, `lateral_convs.{0..L-2}`, `fpn_convs.{0..L-2}`, `fpn_bottleneck`; every one a {@link ConvModule}.
 */
import { type Tensor, cat, scope } from '../../engine/index.js';
import { AdaptiveAvgPool2d, ModuleList, Sequential } from '../../nn/index.js';
import { ConvModule } from './conv-module.js';
import { type Capture, type DecodeHeadConfig, DecodeHead, resize, spatial } from './decode-head.js';
import { checkInt } from '../validate.js';

/** UPerHead config: the base keys plus `pool_scales` (default [1, 2, 3, 6]). `input_transform` is fixed. */
export interface UPerHeadConfig extends Omit<DecodeHeadConfig, 'input_transform'> {
  pool_scales?: number[];
}

/** mmseg `PPM`: per scale, AdaptiveAvgPool2d(s) → 1×1 ConvModule (children `{i}.0`, `{i}.1`). */
export class PPM extends ModuleList<Sequential> {
  constructor(readonly poolScales: readonly number[], inChannels: number, channels: number, private readonly head: DecodeHead) {
    super();
    for (const s of poolScales) {
      this.push(new Sequential(new AdaptiveAvgPool2d(s), new ConvModule(inChannels, channels, {
        kernelSize: 1, norm: head.normCfg, act: head.actCfg, convCfg: head.convCfg,
      })));
    }
  }

  /** Each branch resized back to x's size (bilinear), in scale order. Captures `ppm_pool.i`, `ppm.i`. */
  forward(x: Tensor, capture?: Capture): Tensor[] {
    const size = spatial(x);
    return this.slice(0).map((branch, i) => {
      const pooled = branch.at(0).forward(x);
      capture?.(`ppm_pool.${i}`, pooled);
      const out = resize(branch.at(1).forward(pooled), size, this.head.alignCorners);
      capture?.(`ppm.${i}`, out);
      return out;
    });
  }
}

/** mmseg `UPerHead` (`input_transform` = multiple_select). */
export class UPerHead extends DecodeHead {
  readonly psp_modules: PPM;
  readonly bottleneck: ConvModule;
  readonly lateral_convs: ModuleList<ConvModule>;
  readonly fpn_convs: ModuleList<ConvModule>;
  readonly fpn_bottleneck: ConvModule;
  readonly poolScales: number[];

  constructor(cfg: UPerHeadConfig) {
    super('UPerHead', cfg as DecodeHeadConfig, ['pool_scales'], 'multiple_select');
    const scales = cfg.pool_scales ?? [1, 2, 3, 6];
    if (!Array.isArray(scales) || scales.length === 0) {
      throw new Error(`UPerHead: pool_scales must be a non-empty list of positive integers, got ${JSON.stringify(scales)}`);
    }
    scales.forEach((s, i) => checkInt('UPerHead', `pool_scales[${i}]`, s, { min: 1, max: 1024 }));
    this.poolScales = [...scales];
    const inCh = this.inChannelList();
    const top = inCh[inCh.length - 1]!;
    const C = this.channels;
    const conv = (cin: number, k: number): ConvModule =>
      new ConvModule(cin, C, { kernelSize: k, norm: this.normCfg, act: this.actCfg, convCfg: this.convCfg });
    this.psp_modules = this.registerModule('psp_modules', new PPM(this.poolScales, top, C, this));
    this.bottleneck = this.registerModule('bottleneck', conv(top + this.poolScales.length * C, 3));
    this.lateral_convs = this.registerModule('lateral_convs', new ModuleList<ConvModule>());
    this.fpn_convs = this.registerModule('fpn_convs', new ModuleList<ConvModule>());
    for (const c of inCh.slice(0, -1)) {
      this.lateral_convs.push(conv(c, 1));
      this.fpn_convs.push(conv(C, 3));
    }
    this.fpn_bottleneck = this.registerModule('fpn_bottleneck', conv(inCh.length * C, 3));
  }

  /** PPM + bottleneck on the last selected map (`psp_out`). */
  pspForward(inputs: readonly Tensor[], capture?: Capture): Tensor {
    const x = inputs[inputs.length - 1]!;
    const out = scope(() => this.bottleneck.forward(cat([x, ...this.psp_modules.forward(x, capture)], 1)));
    capture?.('psp_out', out);
    return out;
  }

  /**
   * The fused feature before dropout/`conv_seg` (`fpn_out`, at the resolution of the first selected map).
   * Captures `ppm_pool.i`, `ppm.i`, `psp_out`, `lateral.i`, `topdown.i`, `fpn.i`, `fpn_out`.
   */
  features(inputs: readonly Tensor[], capture?: Capture): Tensor {
    const xs = this.multipleInputs(inputs);
    const laterals = this.lateral_convs.slice(0).map((conv, i) => {
      const l = conv.forward(xs[i]!);
      capture?.(`lateral.${i}`, l);
      return l;
    });
    laterals.push(this.pspForward(xs, capture));
    const L = laterals.length;
    for (let i = L - 1; i > 0; i--) {
      laterals[i - 1] = laterals[i - 1]!.add(resize(laterals[i]!, spatial(laterals[i - 1]!), this.alignCorners));
    }
    if (capture) laterals.forEach((l, i) => capture(`topdown.${i}`, l));
    const outs = this.fpn_convs.slice(0).map((conv, i) => {
      const f = conv.forward(laterals[i]!);
      capture?.(`fpn.${i}`, f);
      return f;
    });
    outs.push(laterals[L - 1]!);
    const size = spatial(outs[0]!);
    // the 4·C-channel concatenation at stride 4 is the largest intermediate: freed as soon as the conv has run
    const fused = scope(() => this.fpn_bottleneck.forward(cat(outs.map((o) => resize(o, size, this.alignCorners)), 1)));
    capture?.('fpn_out', fused);
    return fused;
  }
}
