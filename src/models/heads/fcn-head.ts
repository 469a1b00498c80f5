/**
 * The fully-convolutional head (mmseg `FCNHead`, Long et al. 2015), ViT-Adapter's auxiliary head:
 * `num_convs` ConvModules (kernel `kernel_size`, dilation `dilation`, "same" padding) on the selected map, optionally
 * `conv_cat` over [input, convs output], then `cls_seg`.
 *
 * Keys (after `conv_seg`): `convs.{0..num_convs-1}.*` (none for num_convs = 0, where the convs are the identity and
 * in_channels must equal channels), then `conv_cat.*` with `concat_input` (mmseg default true; the ViT-Adapter
 * configs set false).
 */
import { type Tensor, cat } from '../../engine/index.js';
import { Identity, Sequential } from '../../nn/index.js';
import { ConvModule } from './conv-module.js';
import { type Capture, type DecodeHeadConfig, DecodeHead } from './decode-head.js';
import { checkInt } from '../validate.js';

/** FCNHead config: the base keys plus `num_convs` (2), `kernel_size` (3), `concat_input` (true), `dilation` (1). */
export interface FCNHeadConfig extends DecodeHeadConfig {
  num_convs?: number;
  kernel_size?: number;
  concat_input?: boolean;
  dilation?: number;
}

/** mmseg `FCNHead`. */
export class FCNHead extends DecodeHead {
  readonly convs: Sequential | Identity;
  readonly conv_cat: ConvModule | null = null;
  readonly numConvs: number;
  readonly kernelSize: number;
  readonly concatInput: boolean;
  readonly dilation: number;

  constructor(cfg: FCNHeadConfig) {
    super('FCNHead', cfg, ['num_convs', 'kernel_size', 'concat_input', 'dilation']);
    this.numConvs = cfg.num_convs ?? 2;
    this.kernelSize = cfg.kernel_size ?? 3;
    this.concatInput = cfg.concat_input ?? true;
    this.dilation = cfg.dilation ?? 1;
    checkInt('FCNHead', 'num_convs', this.numConvs, { min: 0, max: 64 });
    checkInt('FCNHead', 'kernel_size', this.kernelSize, { min: 1, max: 1024 });
    checkInt('FCNHead', 'dilation', this.dilation, { min: 1, max: 1024 });
    if (typeof this.concatInput !== 'boolean') throw new Error('FCNHead: concat_input must be a boolean');
    const cin = this.inChannelCount();
    const C = this.channels;
    const common = { kernelSize: this.kernelSize, norm: this.normCfg, act: this.actCfg, convCfg: this.convCfg };
    if (this.numConvs === 0) {
      if (cin !== C) throw new Error(`FCNHead: num_convs 0 needs in_channels (${cin}) == channels (${C})`);
      this.convs = this.registerModule('convs', new Identity());
    } else {
      const padding = Math.floor(this.kernelSize / 2) * this.dilation;
      const layers: ConvModule[] = [];
      for (let i = 0; i < this.numConvs; i++) {
        layers.push(new ConvModule(i === 0 ? cin : C, C, { ...common, padding, dilation: this.dilation }));
      }
      this.convs = this.registerModule('convs', new Sequential(...layers));
    }
    if (this.concatInput) {
      // mmseg: padding kernel_size // 2, no dilation
      this.conv_cat = this.registerModule('conv_cat', new ConvModule(cin + C, C, { ...common, padding: Math.floor(this.kernelSize / 2) }));
    }
  }

  /** The feature fed to `cls_seg` (`feat`): convs output, through `conv_cat` with concat_input. */
  features(inputs: readonly Tensor[], capture?: Capture): Tensor {
    const x = this.singleInput(inputs);
    let out = this.convs.forward(x);
    if (this.conv_cat) out = this.conv_cat.forward(cat([x, out], 1));
    capture?.('feat', out);
    return out;
  }
}
