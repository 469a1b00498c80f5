/**
 * The plain-ViT baseline of the paper's ablation (Table 6, "ViT" row): the same ViT, without the adapter, turned into
 * a 4-level pyramid by simple operations on the outputs of its four stages (the blocks of `interaction_indexes`):
 * stage 1 upsampled ×4 (deconv, BN, GELU, deconv), stage 2 ×2 (deconv), stage 3 as is, stage 4 down ×2 (max pool),
 * each followed by a BatchNorm (`norm1..4`, like the adapter's output norms). Strides 4, 8, 16, 32, so the same
 * decode heads apply. Keys: the ViT's (`pos_embed`, `patch_embed.*`, `blocks.*`), `fpn1.{0,1,3}`, `fpn2`, `norm1..4`.
 */
import { type Tensor } from '../engine/index.js';
import { BatchNorm2d, ConvTranspose2d, GELU, MaxPool2d, Sequential } from '../nn/index.js';
import { initWeights } from './adapter/vit-adapter.js';
import { type ViTOptions, VisionTransformer } from './vit.js';

/** Options: the ViT's plus the stage ends and the position table size. */
export interface ViTBaselineOptions extends ViTOptions {
  /** Four [first, last] block ranges; the last block of each gives a pyramid level (default: depth split in 4). */
  interaction_indexes?: [number, number][];
  /** Grid of the position table (as ViT-Adapter's `pretrain_size`). */
  pretrain_size?: number;
  type?: string;
}

/** The plain-ViT baseline backbone (see the module notes). */
export class ViTBaseline extends VisionTransformer {
  readonly fpn1: Sequential;
  readonly fpn2: ConvTranspose2d;
  readonly fpn4: MaxPool2d;
  readonly norm1: BatchNorm2d;
  readonly norm2: BatchNorm2d;
  readonly norm3: BatchNorm2d;
  readonly norm4: BatchNorm2d;
  readonly stageEnds: number[];

  constructor(options: ViTBaselineOptions = {}) {
    const { interaction_indexes, pretrain_size, type: _type, ...vit } = options;
    super({ ...vit, img_size: pretrain_size ?? vit.img_size ?? 224 });
    const D = this.embedDim;
    const depth = this.opts.depth;
    const idx = interaction_indexes ?? [0, 1, 2, 3].map((i) => [(i * depth) / 4, ((i + 1) * depth) / 4 - 1] as [number, number]);
    if (idx.length !== 4 || idx.some(([a, b]) => !(Number.isInteger(a) && Number.isInteger(b) && a >= 0 && b >= a && b < depth))) {
      throw new Error(`ViTBaseline: interaction_indexes must be four [first, last] block ranges within depth ${depth}`);
    }
    this.stageEnds = idx.map(([, b]) => b);
    this.fpn1 = this.registerModule('fpn1', new Sequential(
      new ConvTranspose2d(D, D, 2, { stride: 2 }), new BatchNorm2d(D), new GELU(), new ConvTranspose2d(D, D, 2, { stride: 2 }),
    ));
    this.fpn2 = this.registerModule('fpn2', new ConvTranspose2d(D, D, 2, { stride: 2 }));
    this.fpn4 = new MaxPool2d(2, 2);
    this.norm1 = this.registerModule('norm1', new BatchNorm2d(D));
    this.norm2 = this.registerModule('norm2', new BatchNorm2d(D));
    this.norm3 = this.registerModule('norm3', new BatchNorm2d(D));
    this.norm4 = this.registerModule('norm4', new BatchNorm2d(D));
    for (const m of [this.fpn1, this.fpn2, this.norm1, this.norm2, this.norm3, this.norm4]) m.apply(initWeights);
  }

  /** Four maps B×D×H/s×W/s for strides 4, 8, 16, 32. */
  forward(x: Tensor): [Tensor, Tensor, Tensor, Tensor] {
    if (x.ndim !== 4 || x.shape[2]! % 32 || x.shape[3]! % 32) {
      throw new Error(`ViTBaseline: expected B×3×H×W with H and W multiples of 32, got [${x.shape.join(', ')}]`);
    }
    const B = x.shape[0]!;
    const D = this.embedDim;
    let { tokens, H, W } = this.embed(x);
    const maps: Tensor[] = [];
    let from = 0;
    for (const end of this.stageEnds) {
      tokens = this.runBlocks(tokens, from, end, H, W);
      from = end + 1;
      maps.push(tokens.transpose(1, 2).reshape(B, D, H, W));
    }
    return [
      this.norm1.forward(this.fpn1.forward(maps[0]!)),
      this.norm2.forward(this.fpn2.forward(maps[1]!)),
      this.norm3.forward(maps[2]!),
      this.norm4.forward(this.fpn4.forward(maps[3]!)),
    ];
  }
}
