/**
 * mmdetection 2.x `FCNMaskHead` and its test-time pasting (`get_seg_masks`, rescale = true, `_do_paste_mask`).
 *
 * Forward: `num_convs` × [3×3 conv + ReLU] (ConvModules), `ConvTranspose2d(kernel 2, stride 2)` + ReLU (`upsample`,
 * the default `deconv` upsampling), `conv_logits` (1×1, K channels, or 1 when class-agnostic).
 *
 * Pasting: detection i's probability map `sigmoid(mask_pred[i, label_i])` (S×S) is sampled at every pixel centre of
 * the original image inside the box's bounding region `[max(floor(x0) − 1, 0), min(ceil(x1) + 1, W))` (same for y),
 * exactly as `F.grid_sample(bilinear, zeros padding, align_corners=False)` with the grid
 * `gx = ((x + 0.5) − x0) / (x1 − x0) · 2 − 1` (an infinite value, from a zero-width box, replaced by 0) does; the
 * mask is `value >= mask_thr_binary` and 0 outside the region. Bilinear interpolation is separable here (gx depends
 * on x only, gy on y only), so each row is first interpolated along y (S values) and each pixel then needs two
 * products. Memory: the binary masks (D·H·W bytes) and one row of S values; no full-image float map is allocated.
 *
 * Keys: `convs.{i}.conv.{weight,bias}`, `upsample.{weight,bias}`, `conv_logits.{weight,bias}`.
 */
import { type Tensor, relu, scope } from '../../engine/index.js';
import { Conv2d, ConvTranspose2d, Module, ModuleList } from '../../nn/index.js';
import { constant_, kaimingNormal_ } from '../../nn/init.js';
import { ConvModule, checkKeys } from '../heads/conv-module.js';
import { checkInt, checkWidth } from '../validate.js';

/** mmdet `mask_head` config (snake_case, verbatim; the loss is accepted and not used at test time). */
export interface FCNMaskHeadConfig {
  type?: 'FCNMaskHead';
  num_convs?: number;
  roi_feat_size?: number;
  in_channels: number;
  conv_kernel_size?: number;
  conv_out_channels?: number;
  num_classes: number;
  class_agnostic?: boolean;
  upsample_cfg?: { type: 'deconv'; scale_factor?: 2 };
  conv_cfg?: null;
  norm_cfg?: null;
  predictor_cfg?: { type: 'Conv' };
  loss_mask?: unknown;
  init_cfg?: unknown;
}

const KEYS = ['type', 'num_convs', 'roi_feat_size', 'in_channels', 'conv_kernel_size', 'conv_out_channels', 'num_classes',
  'class_agnostic', 'upsample_cfg', 'conv_cfg', 'norm_cfg', 'predictor_cfg', 'loss_mask', 'init_cfg'];

/** The FCN mask head. */
export class FCNMaskHead extends Module {
  readonly convs: ModuleList<ConvModule>;
  readonly upsample: ConvTranspose2d;
  readonly conv_logits: Conv2d;
  readonly numClasses: number;
  readonly classAgnostic: boolean;

  constructor(cfg: FCNMaskHeadConfig) {
    super();
    const where = 'FCNMaskHead';
    checkKeys(where, cfg, KEYS);
    if (cfg.type !== undefined && cfg.type !== 'FCNMaskHead') throw new Error(`${where}: type must be FCNMaskHead, got ${JSON.stringify(cfg.type)}`);
    const up = cfg.upsample_cfg ?? { type: 'deconv', scale_factor: 2 };
    if (typeof up !== 'object' || up === null || up.type !== 'deconv' || (up.scale_factor ?? 2) !== 2) {
      throw new Error(`${where}: only upsample_cfg {type: 'deconv', scale_factor: 2} is implemented, got ${JSON.stringify(cfg.upsample_cfg)}`);
    }
    checkKeys(`${where}: upsample_cfg`, up, ['type', 'scale_factor']);
    if (cfg.conv_cfg != null || cfg.norm_cfg != null) throw new Error(`${where}: conv_cfg / norm_cfg are not supported (only plain convs with bias)`);
    if (cfg.predictor_cfg !== undefined && cfg.predictor_cfg?.type !== 'Conv') throw new Error(`${where}: predictor_cfg must be {type: 'Conv'}`);
    const numConvs = cfg.num_convs ?? 4;
    checkInt(where, 'num_convs', numConvs, { min: 0, max: 64 });
    const k = cfg.conv_kernel_size ?? 3;
    checkInt(where, 'conv_kernel_size', k, { min: 1, max: 15 });
    if (k % 2 !== 1) throw new Error(`${where}: conv_kernel_size must be odd, got ${k}`);
    checkWidth(where, 'in_channels', cfg.in_channels);
    const C = cfg.conv_out_channels ?? 256;
    checkWidth(where, 'conv_out_channels', C);
    checkInt(where, 'num_classes', cfg.num_classes, { min: 1, max: 100_000 });
    this.numClasses = cfg.num_classes;
    this.classAgnostic = cfg.class_agnostic ?? false;
    this.convs = this.registerModule('convs', new ModuleList<ConvModule>());
    for (let i = 0; i < numConvs; i++) {
      this.convs.push(new ConvModule(i === 0 ? cfg.in_channels : C, C, { kernelSize: k, padding: (k - 1) / 2 }));
    }
    const upIn = numConvs > 0 ? C : cfg.in_channels;
    this.upsample = this.registerModule('upsample', new ConvTranspose2d(upIn, C, 2, { stride: 2 }));
    this.conv_logits = this.registerModule('conv_logits', new Conv2d(C, this.classAgnostic ? 1 : this.numClasses, 1));
    // mmdet FCNMaskHead.init_weights: Kaiming normal (fan_out, relu) on upsample and conv_logits, zero bias
    for (const m of [this.upsample, this.conv_logits]) {
      kaimingNormal_(m.weight, { mode: 'fan_out', nonlinearity: 'relu' });
      constant_(m.bias!, 0);
    }
  }

  /** Mask logits (N, K, 2S, 2S) of mask RoI features (N, C, S, S). */
  forward(x: Tensor): Tensor {
    return scope(() => {
      let y = x;
      for (const c of this.convs) y = c.forward(y);
      y = relu(this.upsample.forward(y));
      return this.conv_logits.forward(y);
    });
  }
}

/**
 * Pastes probability maps into binary masks of an `h × w` image (mmdet's CPU path, one detection at a time).
 * `probs`: D·S·S values (row-major S×S per detection, S = `size`), `boxes`: D·4 (x0, y0, x1, y1) in the image's pixel
 * coordinates. Returns D·h·w bytes (0/1), or writes into `out` when given.
 */
export function pasteMasks(probs: ArrayLike<number>, boxes: ArrayLike<number>, size: number, h: number, w: number,
  threshold: number, out?: Uint8Array): Uint8Array {
  const D = boxes.length / 4;
  if (!Number.isInteger(D)) throw new Error(`pasteMasks: boxes must hold 4 values per detection, got ${boxes.length}`);
  if (probs.length !== D * size * size) throw new Error(`pasteMasks: expected ${D}·${size}·${size} probabilities, got ${probs.length}`);
  const plane = h * w;
  const masks = out ?? new Uint8Array(D * plane);
  if (masks.length !== D * plane) throw new Error(`pasteMasks: output must hold ${D * plane} bytes, got ${masks.length}`);
  const S = size;
  const row = new Float64Array(S);
  for (let d = 0; d < D; d++) {
    const x0 = boxes[4 * d]!;
    const y0 = boxes[4 * d + 1]!;
    const x1 = boxes[4 * d + 2]!;
    const y1 = boxes[4 * d + 3]!;
    const xa = Math.max(Math.floor(x0) - 1, 0);
    const ya = Math.max(Math.floor(y0) - 1, 0);
    const xb = Math.min(Math.ceil(x1) + 1, w);
    const yb = Math.min(Math.ceil(y1) + 1, h);
    if (!(xb > xa) || !(yb > ya)) continue;
    const nx = xb - xa;
    // per column: the two source columns and their weights (a column outside the map contributes 0)
    const cx = new Int32Array(nx);
    const wx0 = new Float64Array(nx);
    const wx1 = new Float64Array(nx);
    const colOk = new Uint8Array(nx);
    for (let j = 0; j < nx; j++) {
      const ix = srcIndex(((xa + j + 0.5) - x0) / (x1 - x0), S);
      if (Number.isNaN(ix)) continue;
      const i0 = Math.floor(ix);
      cx[j] = i0;
      wx0[j] = i0 + 1 - ix;
      wx1[j] = ix - i0;
      colOk[j] = 1;
    }
    const pBase = d * S * S;
    const mBase = d * plane;
    for (let y = ya; y < yb; y++) {
      const iy = srcIndex(((y + 0.5) - y0) / (y1 - y0), S);
      if (Number.isNaN(iy)) continue;
      const r0 = Math.floor(iy);
      const wy0 = r0 + 1 - iy;
      const wy1 = iy - r0;
      const ok0 = r0 >= 0 && r0 < S;
      const ok1 = r0 + 1 >= 0 && r0 + 1 < S;
      if (!ok0 && !ok1) continue;
      for (let k = 0; k < S; k++) {
        row[k] = (ok0 ? wy0 * probs[pBase + r0 * S + k]! : 0) + (ok1 ? wy1 * probs[pBase + (r0 + 1) * S + k]! : 0);
      }
      const o = mBase + y * w;
      for (let j = 0; j < nx; j++) {
        if (!colOk[j]) continue;
        const c0 = cx[j]!;
        const v = (c0 >= 0 && c0 < S ? wx0[j]! * row[c0]! : 0) + (c0 + 1 >= 0 && c0 + 1 < S ? wx1[j]! * row[c0 + 1]! : 0);
        if (v >= threshold) masks[o + xa + j] = 1;
      }
    }
  }
  return masks;
}

/**
 * grid_sample's source index (align_corners = false) of a normalised coordinate `(t·2 − 1)` given as the fraction
 * `t` of the box; an infinite normalised value becomes 0 (mmdet), NaN stays NaN (no contribution).
 */
function srcIndex(t: number, size: number): number {
  let g = t * 2 - 1;
  if (g === Infinity || g === -Infinity) g = 0;
  return ((g + 1) * size - 1) / 2;
}

/** The probability at one pixel as {@link pasteMasks} computes it (for diagnostics and tests). */
export function pastedProbability(probs: ArrayLike<number>, d: number, box: readonly number[], size: number, y: number, x: number): number {
  const S = size;
  const ix = srcIndex(((x + 0.5) - box[0]!) / (box[2]! - box[0]!), S);
  const iy = srcIndex(((y + 0.5) - box[1]!) / (box[3]! - box[1]!), S);
  if (Number.isNaN(ix) || Number.isNaN(iy)) return 0;
  const c0 = Math.floor(ix);
  const r0 = Math.floor(iy);
  let v = 0;
  for (const [r, wy] of [[r0, r0 + 1 - iy], [r0 + 1, iy - r0]] as const) {
    for (const [c, wx] of [[c0, c0 + 1 - ix], [c0 + 1, ix - c0]] as const) {
      if (r >= 0 && r < S && c >= 0 && c < S) v += wy * wx * probs[d * S * S + r * S + c]!;
    }
  }
  return v;
}
