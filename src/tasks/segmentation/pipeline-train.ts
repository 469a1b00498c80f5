/**
 * mmseg 0.20.2's segmentation **training** pipeline on plain typed arrays (HWC uint8 until the
 * final CHW float32), reproducing the authors' recipe bit for bit given the same random draws:
 *
 *   LoadAnnotations(reduce_zero_label) → Resize(img_scale, ratio_range, keep_ratio) →
 *   RandomCrop(crop_size, cat_max_ratio) → RandomFlip(prob) → PhotoMetricDistortion →
 *   Normalize(mean, std, to_rgb) → Pad(size, 0, seg 255) → DefaultFormatBundle
 *
 * Semantics and arithmetic follow `../shared/fixtures/training/README.md`: float64 size
 * arithmetic, OpenCV's fixed-point `INTER_LINEAR` (with its exact-half area path) for images and
 * `INTER_NEAREST` for label maps, float32/truncating `convert` in PhotoMetricDistortion, OpenCV's
 * uint8 HSV conversions ({@link bgrToHsv}, {@link hsvToBgr}), a float32 normalisation table.
 * Random draws go through a {@link PipelineRandom} with numpy's call semantics, in mmseg's order.
 *
 * **Channel order.** mmseg loads BGR (cv2); our `readImage` gives RGB. Only two steps care:
 * the HSV conversions (hue/saturation) and Normalize's `to_rgb`. Every function that cares takes
 * the image's {@link ChannelOrder}; {@link trainPipeline} takes RGB by default and produces exactly
 * the tensor mmseg produces from the same picture loaded as BGR (RGB planes when `toRgb`).
 *
 * **Threads.** Nothing here touches tensors, the native addon or the file system: the functions
 * are safe to call from `worker_threads`; inputs are never modified (outputs may alias an input
 * when a step is the identity, e.g. no flip).
 */
import { bgrToHsv, hsvToBgr, HSV2BGR_VECTOR_BLOCK, type ChannelOrder } from './cv-color.js';
import {
  flipHorizontalHWC,
  rescaleFactor,
  resizeBilinearHWC,
  resizeBilinearHWCFixedPointRegion,
  resizeNearestHWC,
} from './pipeline-image.js';
import type { PipelineRandom } from '../../train/random.js';

export type { ChannelOrder } from './cv-color.js';

/** PhotoMetricDistortion parameters (mmseg names in comments). */
export interface PhotoMetricCfg {
  /** `brightness_delta`: beta drawn from uniform(−d, d). 32 in the recipe. */
  brightnessDelta: number;
  /** `contrast_range`: alpha drawn from uniform(lo, hi). [0.5, 1.5] in the recipe. */
  contrastRange: readonly [number, number];
  /** `saturation_range`. [0.5, 1.5] in the recipe. */
  saturationRange: readonly [number, number];
  /** `hue_delta`: delta drawn from randint(−d, d), i.e. −d..d−1. 18 in the recipe. */
  hueDelta: number;
}

/** Every value of the mmseg train pipeline that {@link trainPipeline} runs. */
export interface TrainPipelineCfg {
  /** LoadAnnotations `reduce_zero_label`: label 0 → 255, v → v − 1 (ADE20K: true). */
  reduceZeroLabel: boolean;
  /** Resize `img_scale` as (long bound, short bound) before the ratio, e.g. [2048, 512]. */
  imgScale: readonly [number, number];
  /** Resize `ratio_range` ([0.5, 2.0]); null resizes to `imgScale` itself without drawing. */
  ratioRange: readonly [number, number] | null;
  /** RandomCrop `crop_size` as [height, width] ([512, 512]). */
  cropSize: readonly [number, number];
  /** RandomCrop `cat_max_ratio` (0.75); 1 or more disables the class-share check. */
  catMaxRatio: number;
  /** Label ignored by the crop check and used for padding checks (255). */
  ignoreIndex: number;
  /** RandomFlip `prob` (0.5), horizontal. */
  flipProb: number;
  /** PhotoMetricDistortion parameters, or null to leave it out of the pipeline. */
  photoMetric: PhotoMetricCfg | null;
  /** Normalize `mean`, in output channel order (RGB when `toRgb`). */
  mean: readonly [number, number, number];
  /** Normalize `std`, in output channel order. */
  std: readonly [number, number, number];
  /** Normalize `to_rgb` (true: the output planes are R, G, B). */
  toRgb: boolean;
  /** Pad `size` as [height, width] ([512, 512]); null pads nothing. */
  padSize: readonly [number, number] | null;
  /** Pad `pad_val` for the image (applied after Normalize; 0). */
  padVal: number;
  /** Pad `seg_pad_val` for the label map (255). */
  segPadVal: number;
  /** Pixels per SIMD block of OpenCV's HSV→BGR ({@link HSV2BGR_VECTOR_BLOCK}, the fixtures' AVX2 build). */
  hsvVectorBlock: number;
}

/** The authors' PhotoMetricDistortion defaults (mmseg 0.20.2). */
export const PHOTOMETRIC_DEFAULT: Readonly<PhotoMetricCfg> = Object.freeze({
  brightnessDelta: 32,
  contrastRange: [0.5, 1.5] as const,
  saturationRange: [0.5, 1.5] as const,
  hueDelta: 18,
});

/**
 * The train pipeline of the authors' ADE20K configs (`upernet_deit_adapter_*_512_160k_ade20k.py`):
 * reduce_zero_label, Resize (2048, 512) ratio 0.5–2.0, RandomCrop 512×512 cat_max_ratio 0.75,
 * RandomFlip 0.5, PhotoMetricDistortion (32, 0.5–1.5, 0.5–1.5, 18), ImageNet Normalize to RGB,
 * Pad 512×512 (0 / 255).
 */
export const ADE20K_TRAIN_PIPELINE: Readonly<TrainPipelineCfg> = Object.freeze({
  reduceZeroLabel: true,
  imgScale: [2048, 512] as const,
  ratioRange: [0.5, 2.0] as const,
  cropSize: [512, 512] as const,
  catMaxRatio: 0.75,
  ignoreIndex: 255,
  flipProb: 0.5,
  photoMetric: PHOTOMETRIC_DEFAULT,
  mean: [123.675, 116.28, 103.53] as const,
  std: [58.395, 57.12, 57.375] as const,
  toRgb: true,
  padSize: [512, 512] as const,
  padVal: 0,
  segPadVal: 255,
  hsvVectorBlock: HSV2BGR_VECTOR_BLOCK,
});

/**
 * The ADE20K recipe's pipeline at another size (for small CPU presets): `imgScale` becomes
 * `[4·crop, crop]` like the recipe's (2048, 512) for crop 512, and crop and pad are `crop × crop`.
 *
 * @param crop crop (and pad) side in pixels
 * @param overrides any other field to change
 */
export function scaledTrainPipelineCfg(crop: number, overrides: Partial<TrainPipelineCfg> = {}): TrainPipelineCfg {
  if (!Number.isInteger(crop) || crop <= 0) throw new RangeError(`scaledTrainPipelineCfg: crop must be a positive integer, got ${crop}`);
  return { ...ADE20K_TRAIN_PIPELINE, imgScale: [4 * crop, crop], cropSize: [crop, crop], padSize: [crop, crop], ...overrides };
}

// ---------------------------------------------------------------------------------------------
// LoadAnnotations

/**
 * `reduce_zero_label`: 0 → 255, v → v − 1 for 1..254, 255 stays 255 (uint8 wrap-around as numpy).
 *
 * @param label raw label values
 * @returns a new array
 */
export function reduceZeroLabel(label: Uint8Array): Uint8Array {
  const out = new Uint8Array(label.length);
  for (let i = 0; i < label.length; i++) {
    const v = label[i]!;
    out[i] = v === 0 || v === 255 ? 255 : v - 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Resize

/** Result of mmseg's Resize size arithmetic for one image. */
export interface ResizePlan {
  /** The drawn ratio (1 when `ratioRange` is null). */
  ratio: number;
  /** `results['scale']`: `(int(imgScale[0]·ratio), int(imgScale[1]·ratio))`. */
  scale: [number, number];
  /** mmcv `rescale_size`'s factor `min(max(scale)/max(h,w), min(scale)/min(h,w))` (float64). */
  factor: number;
  /** Output width `int(w·factor + 0.5)`. */
  newW: number;
  /** Output height `int(h·factor + 0.5)`. */
  newH: number;
  /** mmseg's `scale_factor` meta: `[newW/w, newH/h, newW/w, newH/h]` rounded to float32. */
  scaleFactor: [number, number, number, number];
}

/**
 * mmseg's Resize size arithmetic for a given ratio (no drawing), in float64 as Python computes it.
 *
 * @param h image height
 * @param w image width
 * @param imgScale `img_scale` (long, short)
 * @param ratio the ratio (`u·(hi − lo) + lo` for a draw u)
 */
export function resizePlan(h: number, w: number, imgScale: readonly [number, number], ratio: number): ResizePlan {
  if (!Number.isInteger(h) || !Number.isInteger(w) || h <= 0 || w <= 0) throw new RangeError(`resizePlan: invalid image size ${w}x${h}`);
  const scale: [number, number] = [Math.trunc(imgScale[0] * ratio), Math.trunc(imgScale[1] * ratio)];
  if (!(scale[0] > 0 && scale[1] > 0)) {
    throw new RangeError(`Resize: img_scale ${imgScale.join('x')} × ratio ${ratio} gives an empty scale ${scale.join('x')}`);
  }
  const factor = rescaleFactor(w, h, scale);
  const newW = Math.trunc(w * factor + 0.5);
  const newH = Math.trunc(h * factor + 0.5);
  if (newW <= 0 || newH <= 0) throw new RangeError(`Resize: ${w}x${h} at factor ${factor} gives an empty image`);
  const sw = Math.fround(newW / w);
  const sh = Math.fround(newH / h);
  return { ratio, scale, factor, newW, newH, scaleFactor: [sw, sh, sw, sh] };
}

/**
 * mmseg's `Resize.random_sample_ratio`: one `random_sample()` u, `ratio = u·(hi − lo) + lo`.
 *
 * @param rng random source
 * @param ratioRange [lo, hi]
 */
export function sampleResizeRatio(rng: PipelineRandom, ratioRange: readonly [number, number]): number {
  const [lo, hi] = ratioRange;
  if (!(lo <= hi)) throw new RangeError(`Resize: ratio_range must have min <= max, got [${lo}, ${hi}]`);
  return rng.randomSample() * (hi - lo) + lo;
}

/** An image and its label map at one stage of the pipeline (HWC uint8, 3 channels; H×W labels). */
export interface ImageLabelPair {
  /** H×W×3 pixel bytes. */
  img: Uint8Array;
  /** H×W labels. */
  label: Uint8Array;
  /** Rows. */
  height: number;
  /** Columns. */
  width: number;
}

/**
 * mmseg `Resize(img_scale, ratio_range, keep_ratio=True)`: draws the ratio (if `ratioRange`),
 * resizes the image with OpenCV-exact `INTER_LINEAR` and the label map with `INTER_NEAREST`.
 *
 * @param pair image and labels
 * @param imgScale `img_scale` (long, short)
 * @param ratioRange `ratio_range` or null (no draw, ratio 1)
 * @param rng random source
 */
export function randomResize(
  pair: ImageLabelPair,
  imgScale: readonly [number, number],
  ratioRange: readonly [number, number] | null,
  rng: PipelineRandom,
): ImageLabelPair & { plan: ResizePlan } {
  checkPair(pair, 'Resize');
  const ratio = ratioRange === null ? 1 : sampleResizeRatio(rng, ratioRange);
  const plan = resizePlan(pair.height, pair.width, imgScale, ratio);
  const img = resizeBilinearHWC(pair.img, pair.height, pair.width, plan.newH, plan.newW);
  const label = resizeNearestHWC(pair.label, pair.height, pair.width, plan.newH, plan.newW);
  return { img, label, height: plan.newH, width: plan.newW, plan };
}

// ---------------------------------------------------------------------------------------------
// RandomCrop

/** A crop box as mmseg returns it: `[y1, y2, x1, x2]` (y2/x2 may lie past a small image). */
export type CropBox = [number, number, number, number];

/**
 * mmseg `RandomCrop.get_crop_bbox`: `randint(0, max(H − ch, 0) + 1)` then
 * `randint(0, max(W − cw, 0) + 1)`.
 *
 * @param h image height
 * @param w image width
 * @param cropSize [ch, cw]
 * @param rng random source
 */
export function drawCropBox(h: number, w: number, cropSize: readonly [number, number], rng: PipelineRandom): CropBox {
  const marginH = Math.max(h - cropSize[0], 0);
  const marginW = Math.max(w - cropSize[1], 0);
  const y1 = rng.randint(0, marginH + 1);
  const x1 = rng.randint(0, marginW + 1);
  return [y1, y1 + cropSize[0], x1, x1 + cropSize[1]];
}

/** The outcome of the class-share check on one crop box. */
export interface CropCheck {
  /** Every distinct value in the box, ascending, the ignore index included (`np.unique`). */
  labels: number[];
  /** Largest count / total count over the labels other than the ignore index (0 when there are none). */
  maxShare: number;
  /** At least two labels other than the ignore index, and `maxShare < catMaxRatio`. */
  accepted: boolean;
}

/**
 * mmseg's crop acceptance test: after dropping `ignoreIndex`, at least two labels and
 * `max(count) / sum(count) < catMaxRatio` (strictly, float64).
 *
 * @param label H×W labels
 * @param h height
 * @param w width
 * @param box crop box (clipped to the image)
 * @param catMaxRatio e.g. 0.75
 * @param ignoreIndex e.g. 255
 */
export function checkCropBox(label: Uint8Array, h: number, w: number, box: CropBox, catMaxRatio: number, ignoreIndex: number): CropCheck {
  const y2 = Math.min(box[1], h);
  const x2 = Math.min(box[3], w);
  const counts = new Int32Array(256);
  for (let y = box[0]; y < y2; y++) {
    const row = y * w;
    for (let x = box[2]; x < x2; x++) counts[label[row + x]!]!++;
  }
  const labels: number[] = [];
  let counted = 0;
  let max = 0;
  let sum = 0;
  for (let v = 0; v < 256; v++) {
    const n = counts[v]!;
    if (n === 0) continue;
    labels.push(v);
    if (v === ignoreIndex) continue;
    counted++;
    sum += n;
    if (n > max) max = n;
  }
  const maxShare = sum === 0 ? 0 : max / sum;
  return { labels, maxShare, accepted: counted > 1 && maxShare < catMaxRatio };
}

/** Copies the box (clipped to the image) out of an HWC array with `c` channels. */
export function cropHWC<T extends Uint8Array | Float32Array>(img: T, h: number, w: number, c: number, box: CropBox): { data: T; height: number; width: number } {
  if (img.length !== h * w * c) throw new RangeError(`cropHWC: expected ${h}x${w}x${c} values, got ${img.length}`);
  const y1 = Math.max(0, Math.min(box[0], h));
  const y2 = Math.max(y1, Math.min(box[1], h));
  const x1 = Math.max(0, Math.min(box[2], w));
  const x2 = Math.max(x1, Math.min(box[3], w));
  const oh = y2 - y1;
  const ow = x2 - x1;
  const data = (img instanceof Float32Array ? new Float32Array(oh * ow * c) : new Uint8Array(oh * ow * c)) as T;
  const rowLen = ow * c;
  for (let y = 0; y < oh; y++) {
    const s = ((y1 + y) * w + x1) * c;
    data.set(img.subarray(s, s + rowLen), y * rowLen);
  }
  return { data, height: oh, width: ow };
}

/**
 * mmseg `RandomCrop(crop_size, cat_max_ratio, ignore_index)`: draw a box; if `catMaxRatio < 1`,
 * up to 10 times check it and draw a new one when rejected (the 11th box is used unchecked).
 *
 * @param pair image and labels
 * @param cropSize [ch, cw]
 * @param catMaxRatio e.g. 0.75
 * @param ignoreIndex e.g. 255
 * @param rng random source
 * @returns the crop, the final box and every box drawn (with its check, if checked)
 */
export function randomCrop(
  pair: ImageLabelPair,
  cropSize: readonly [number, number],
  catMaxRatio: number,
  ignoreIndex: number,
  rng: PipelineRandom,
): ImageLabelPair & { box: CropBox; boxesDrawn: number; checks: CropCheck[] } {
  checkPair(pair, 'RandomCrop');
  const { height: h, width: w } = pair;
  const sel = chooseCropBox(pair.label, h, w, cropSize, catMaxRatio, ignoreIndex, rng);
  const img = cropHWC(pair.img, h, w, 3, sel.box);
  const label = cropHWC(pair.label, h, w, 1, sel.box);
  return { img: img.data, label: label.data, height: img.height, width: img.width, ...sel };
}

/**
 * RandomCrop's box selection alone (draws and checks, no copying): the first box, then up to 10
 * checks with a new box after each rejection; the last box drawn is the result.
 *
 * @param label H×W labels
 * @param h rows
 * @param w columns
 * @param cropSize [ch, cw]
 * @param catMaxRatio e.g. 0.75 (≥ 1: no checks)
 * @param ignoreIndex e.g. 255
 * @param rng random source
 */
export function chooseCropBox(
  label: Uint8Array,
  h: number,
  w: number,
  cropSize: readonly [number, number],
  catMaxRatio: number,
  ignoreIndex: number,
  rng: PipelineRandom,
): { box: CropBox; boxesDrawn: number; checks: CropCheck[] } {
  if (!(Number.isInteger(cropSize[0]) && Number.isInteger(cropSize[1]) && cropSize[0] > 0 && cropSize[1] > 0)) {
    throw new RangeError(`RandomCrop: crop_size must be positive integers, got ${cropSize.join('x')}`);
  }
  if (label.length !== h * w) throw new RangeError(`RandomCrop: label map has ${label.length} values, expected ${h}x${w}`);
  let box = drawCropBox(h, w, cropSize, rng);
  let boxesDrawn = 1;
  const checks: CropCheck[] = [];
  if (catMaxRatio < 1) {
    for (let i = 0; i < 10; i++) {
      const c = checkCropBox(label, h, w, box, catMaxRatio, ignoreIndex);
      checks.push(c);
      if (c.accepted) break;
      box = drawCropBox(h, w, cropSize, rng);
      boxesDrawn++;
    }
  }
  return { box, boxesDrawn, checks };
}

// ---------------------------------------------------------------------------------------------
// RandomFlip

/**
 * mmseg `RandomFlip(prob, 'horizontal')`: one `rand()`; flip iff it is `< prob`.
 *
 * @param pair image and labels
 * @param prob flip probability
 * @param rng random source
 * @returns flipped copies, or the same arrays when not flipped
 */
export function randomFlip(pair: ImageLabelPair, prob: number, rng: PipelineRandom): ImageLabelPair & { flip: boolean } {
  checkPair(pair, 'RandomFlip');
  const flip = rng.rand() < prob;
  if (!flip) return { ...pair, flip };
  return {
    img: flipHorizontalHWC(pair.img, pair.height, pair.width),
    label: flipHorizontalHWC(pair.label, pair.height, pair.width),
    height: pair.height,
    width: pair.width,
    flip,
  };
}

// ---------------------------------------------------------------------------------------------
// PhotoMetricDistortion

/** What PhotoMetricDistortion drew and applied (null = that step was off). */
export interface PhotoMetricParams {
  /** Brightness beta. */
  brightness: number | null;
  /** mmseg's `mode`: 1 = contrast before saturation/hue, 0 = contrast last. */
  mode: 0 | 1;
  /** Contrast alpha. */
  contrast: number | null;
  /** Saturation alpha. */
  saturation: number | null;
  /** Hue delta (integer). */
  hue: number | null;
}

/** The order in which PhotoMetricDistortion ran its steps for a given mode (mmseg's `steps`). */
export function photoMetricSteps(mode: 0 | 1): ('brightness' | 'contrast' | 'saturation' | 'hue')[] {
  return mode === 1 ? ['brightness', 'contrast', 'saturation', 'hue'] : ['brightness', 'saturation', 'hue', 'contrast'];
}

/**
 * mmseg's `convert(img, alpha, beta)` on uint8: `uint8(trunc(clip(f32(x)·f32(alpha) + f32(beta), 0, 255)))`
 * with float32 arithmetic (the product and the sum each rounded to float32).
 *
 * @param img bytes (any layout)
 * @param alpha gain
 * @param beta offset
 * @param out destination (may be `img`); new array otherwise
 */
export function convertU8(img: Uint8Array, alpha: number, beta: number, out?: Uint8Array): Uint8Array {
  const dst = out ?? new Uint8Array(img.length);
  // 256 possible inputs: a table keeps the exact float32 arithmetic and is fast.
  const lut = convertTable(alpha, beta);
  for (let i = 0; i < img.length; i++) dst[i] = lut[img[i]!]!;
  return dst;
}

/** The 256-entry table of {@link convertU8}. */
export function convertTable(alpha: number, beta: number): Uint8Array {
  const fa = Math.fround(alpha);
  const fb = Math.fround(beta);
  const lut = new Uint8Array(256);
  for (let v = 0; v < 256; v++) {
    // numpy: float32 array * alpha (float32) then + beta (float32); alpha = 1 / beta = 0 are exact no-ops.
    const x = Math.fround(Math.fround(v * fa) + fb);
    lut[v] = x <= 0 ? 0 : x >= 255 ? 255 : Math.trunc(x);
  }
  return lut;
}

/**
 * Brightness step: `convert(img, beta=delta)`.
 *
 * @param img bytes
 * @param delta beta
 */
export function adjustBrightness(img: Uint8Array, delta: number): Uint8Array {
  return convertU8(img, 1, delta);
}

/**
 * Contrast step: `convert(img, alpha=alpha)`.
 *
 * @param img bytes
 * @param alpha gain
 */
export function adjustContrast(img: Uint8Array, alpha: number): Uint8Array {
  return convertU8(img, alpha, 0);
}

/**
 * Saturation step: BGR→HSV, `S = convert(S, alpha)`, HSV→BGR (OpenCV uint8 arithmetic).
 *
 * @param img H×W×3 bytes
 * @param h rows
 * @param w columns
 * @param alpha saturation gain
 * @param order channel order of `img`
 * @param block HSV→BGR SIMD block width
 */
export function adjustSaturation(
  img: Uint8Array,
  h: number,
  w: number,
  alpha: number,
  order: ChannelOrder = 'bgr',
  block: number = HSV2BGR_VECTOR_BLOCK,
): Uint8Array {
  const hsv = bgrToHsv(img, h, w, order);
  const lut = convertTable(alpha, 0);
  for (let i = 1; i < hsv.length; i += 3) hsv[i] = lut[hsv[i]!]!;
  return hsvToBgr(hsv, h, w, order, hsv, block);
}

/**
 * Hue step: BGR→HSV, `H = (H + delta) mod 180` (non-negative), HSV→BGR.
 *
 * @param img H×W×3 bytes
 * @param h rows
 * @param w columns
 * @param delta integer hue shift
 * @param order channel order of `img`
 * @param block HSV→BGR SIMD block width
 */
export function adjustHue(
  img: Uint8Array,
  h: number,
  w: number,
  delta: number,
  order: ChannelOrder = 'bgr',
  block: number = HSV2BGR_VECTOR_BLOCK,
): Uint8Array {
  if (!Number.isInteger(delta)) throw new RangeError(`adjustHue: delta must be an integer, got ${delta}`);
  const hsv = bgrToHsv(img, h, w, order);
  for (let i = 0; i < hsv.length; i += 3) {
    const v = (hsv[i]! + delta) % 180;
    hsv[i] = v < 0 ? v + 180 : v; // Python's non-negative modulo; & 255 as numpy's uint8 store (always < 180)
  }
  return hsvToBgr(hsv, h, w, order, hsv, block);
}

/**
 * mmseg `PhotoMetricDistortion`, drawing in mmseg's order: `randint(2)` (brightness on?) [→
 * `uniform(−d, d)`], `randint(2)` (mode), then for mode 1: contrast, saturation, hue; for mode 0:
 * saturation, hue, contrast; each step `randint(2)` (on?) [→ its value: `uniform` for contrast and
 * saturation, `randint(−d, d)` for hue].
 *
 * @param img H×W×3 bytes
 * @param h rows
 * @param w columns
 * @param cfg distortion parameters
 * @param rng random source
 * @param order channel order of `img` (matters for saturation and hue)
 * @param block HSV→BGR SIMD block width
 * @returns the image (the input array itself when every step was off) and the drawn parameters
 */
export function photoMetricDistortion(
  img: Uint8Array,
  h: number,
  w: number,
  cfg: PhotoMetricCfg,
  rng: PipelineRandom,
  order: ChannelOrder = 'bgr',
  block: number = HSV2BGR_VECTOR_BLOCK,
): { img: Uint8Array; params: PhotoMetricParams } {
  return photoMetricCore(img, h, w, cfg, rng, order, block, false);
}

function photoMetricCore(
  img: Uint8Array,
  h: number,
  w: number,
  cfg: PhotoMetricCfg,
  rng: PipelineRandom,
  order: ChannelOrder,
  block: number,
  inPlace: boolean,
): { img: Uint8Array; params: PhotoMetricParams } {
  if (img.length !== h * w * 3) throw new RangeError(`PhotoMetricDistortion: expected ${h}x${w}x3 bytes, got ${img.length}`);
  const params: PhotoMetricParams = { brightness: null, mode: 0, contrast: null, saturation: null, hue: null };
  let cur = img;
  const owned = (): Uint8Array => (cur === img && !inPlace ? new Uint8Array(img) : cur);
  const contrast = (): void => {
    if (rng.randint(2)) {
      params.contrast = rng.uniform(cfg.contrastRange[0], cfg.contrastRange[1]);
      const c = owned();
      cur = convertU8(c, params.contrast, 0, c);
    }
  };
  if (rng.randint(2)) {
    params.brightness = rng.uniform(-cfg.brightnessDelta, cfg.brightnessDelta);
    const c = owned();
    cur = convertU8(c, 1, params.brightness, c);
  }
  params.mode = rng.randint(2) === 1 ? 1 : 0;
  if (params.mode === 1) contrast();
  if (rng.randint(2)) {
    params.saturation = rng.uniform(cfg.saturationRange[0], cfg.saturationRange[1]);
    cur = adjustSaturation(cur, h, w, params.saturation, order, block);
  }
  if (rng.randint(2)) {
    params.hue = rng.randint(-cfg.hueDelta, cfg.hueDelta);
    cur = adjustHue(cur, h, w, params.hue, order, block);
  }
  if (params.mode === 0) contrast();
  return { img: cur, params };
}

// ---------------------------------------------------------------------------------------------
// Normalize, Pad, DefaultFormatBundle

/**
 * Normalize as a table: `lut[c·256 + v] = f32((v − f64(f32(mean[c]))) · (1 / f64(f32(std[c]))))`
 * (mmseg keeps mean/std as float32; mmcv subtracts and multiplies by the float64 reciprocal;
 * one rounding to float32), c in output channel order.
 *
 * @param mean per output channel
 * @param std per output channel (non-zero)
 * @returns Float32Array(3·256)
 */
export function normalizeLut(mean: readonly number[], std: readonly number[]): Float32Array {
  if (mean.length !== 3 || std.length !== 3) throw new RangeError(`Normalize: mean and std need 3 entries, got ${mean.length} and ${std.length}`);
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const m = Math.fround(mean[c]!);
    const s = Math.fround(std[c]!);
    if (!(s !== 0) || !Number.isFinite(s)) throw new RangeError(`Normalize: std[${c}] must be finite and non-zero, got ${std[c]}`);
    const inv = 1 / s;
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = (v - m) * inv;
  }
  return lut;
}

/** Index of the input channel feeding output channel 0 (the other end is `2 − it`), for `toRgb`. */
function normalizeSource(inputOrder: ChannelOrder, toRgb: boolean): 0 | 2 {
  const outOrder: ChannelOrder = toRgb ? 'rgb' : 'bgr';
  return outOrder === inputOrder ? 0 : 2;
}

/**
 * mmseg `Normalize(mean, std, to_rgb)` on HWC bytes, output HWC float32 in the channel order
 * mmseg would produce (RGB when `toRgb`, BGR otherwise), whatever the input order.
 *
 * @param img H×W×3 bytes
 * @param h rows
 * @param w columns
 * @param lut {@link normalizeLut} of the config's mean/std
 * @param inputOrder channel order of `img`
 * @param toRgb mmseg's `to_rgb`
 */
export function normalizeHWC(img: Uint8Array, h: number, w: number, lut: Float32Array, inputOrder: ChannelOrder, toRgb: boolean): Float32Array {
  if (img.length !== h * w * 3) throw new RangeError(`Normalize: expected ${h}x${w}x3 bytes, got ${img.length}`);
  const src0 = normalizeSource(inputOrder, toRgb);
  const out = new Float32Array(img.length);
  for (let i = 0; i < img.length; i += 3) {
    out[i] = lut[img[i + src0]!]!;
    out[i + 1] = lut[256 + img[i + 1]!]!;
    out[i + 2] = lut[512 + img[i + 2 - src0]!]!;
  }
  return out;
}

/**
 * mmcv `impad(shape=(ph, pw), pad_val)`: pads at the bottom and right. Throws if the array is
 * larger than the target.
 *
 * @param img H×W×C values
 * @param h rows
 * @param w columns
 * @param c channels
 * @param ph target rows
 * @param pw target columns
 * @param value pad value
 */
export function padHWC<T extends Uint8Array | Float32Array>(img: T, h: number, w: number, c: number, ph: number, pw: number, value: number): T {
  if (img.length !== h * w * c) throw new RangeError(`Pad: expected ${h}x${w}x${c} values, got ${img.length}`);
  if (ph < h || pw < w) throw new RangeError(`Pad: a ${w}x${h} image does not fit the pad size ${pw}x${ph}`);
  const out = (img instanceof Float32Array ? new Float32Array(ph * pw * c) : new Uint8Array(ph * pw * c)) as T;
  if (value !== 0) out.fill(value);
  const rowLen = w * c;
  for (let y = 0; y < h; y++) out.set(img.subarray(y * rowLen, (y + 1) * rowLen), y * pw * c);
  return out;
}

/**
 * DefaultFormatBundle's image part: HWC → CHW (contiguous float32).
 *
 * @param img H×W×C floats
 * @param h rows
 * @param w columns
 * @param c channels
 */
export function hwcToChw(img: Float32Array, h: number, w: number, c = 3): Float32Array {
  if (img.length !== h * w * c) throw new RangeError(`hwcToChw: expected ${h}x${w}x${c} values, got ${img.length}`);
  const plane = h * w;
  const out = new Float32Array(img.length);
  for (let p = 0; p < plane; p++) for (let k = 0; k < c; k++) out[k * plane + p] = img[p * c + k]!;
  return out;
}

/**
 * DefaultFormatBundle's label part as mmseg does it (int64, shape (1, H, W)); the pipeline itself
 * returns uint8 labels (4× less to move between threads) and the trainer widens them when batching.
 *
 * @param label H×W labels
 */
export function labelToInt64(label: Uint8Array): BigInt64Array {
  const out = new BigInt64Array(label.length);
  for (let i = 0; i < label.length; i++) out[i] = BigInt(label[i]!);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The composed pipeline

/** An input sample: decoded image and raw label map (as read from the PNG, before reduce_zero_label). */
export interface TrainPipelineInput {
  /** H×W×3 bytes. */
  image: { data: Uint8Array; height: number; width: number };
  /** H×W raw label values, same size as the image. */
  label: { data: Uint8Array; height: number; width: number };
  /** Channel order of `image.data`: 'rgb' (our `readImage`, the default) or 'bgr' (OpenCV's). */
  channelOrder?: ChannelOrder;
}

/** Meta data of a processed sample (mmseg's `img_metas` plus what was drawn); JSON-able. */
export interface TrainSampleMeta {
  /** Input shape [H, W, 3]. */
  oriShape: [number, number, number];
  /** Shape after the crop (before padding) [H, W, 3]. */
  imgShape: [number, number, number];
  /** Shape after padding [H, W, 3] (equals the output size). */
  padShape: [number, number, number];
  /** The drawn resize ratio. */
  ratio: number;
  /** Resize `scale` (long, short) after the ratio. */
  scale: [number, number];
  /** `[w_scale, h_scale, w_scale, h_scale]` as float32 values. */
  scaleFactor: [number, number, number, number];
  /** Size after Resize [H, W]. */
  resizedShape: [number, number];
  /** Final crop box [y1, y2, x1, x2] in the resized image (may extend past a small image). */
  cropBox: CropBox;
  /** How many crop boxes were drawn (1..11). */
  cropBoxesDrawn: number;
  /** Whether the sample was flipped horizontally. */
  flip: boolean;
  /** Always 'horizontal'. */
  flipDirection: 'horizontal';
  /** PhotoMetricDistortion's draws, or null when the config has none. */
  photoMetric: PhotoMetricParams | null;
  /** Channel order of the input image. */
  inputOrder: ChannelOrder;
  /** Channel order of the output planes ('rgb' when `toRgb`). */
  outputOrder: ChannelOrder;
}

/** A processed sample: what DefaultFormatBundle + Collect hand to the model. */
export interface TrainPipelineOutput {
  /** 3×H×W float32, normalised, padded with `padVal`. */
  img: Float32Array;
  /** H×W uint8 labels (0..254 classes, 255 ignore/padding); widen to int64 when batching. */
  label: Uint8Array;
  /** Output rows. */
  height: number;
  /** Output columns. */
  width: number;
  /** Meta data and draws. */
  meta: TrainSampleMeta;
}

function checkPair(p: ImageLabelPair, what: string): void {
  if (!Number.isInteger(p.height) || !Number.isInteger(p.width) || p.height <= 0 || p.width <= 0) {
    throw new RangeError(`${what}: invalid size ${p.width}x${p.height}`);
  }
  if (p.img.length !== p.height * p.width * 3) {
    throw new RangeError(`${what}: image has ${p.img.length} bytes, expected ${p.height}x${p.width}x3 = ${p.height * p.width * 3}`);
  }
  if (p.label.length !== p.height * p.width) {
    throw new RangeError(`${what}: label map has ${p.label.length} values, expected ${p.height}x${p.width} = ${p.height * p.width}`);
  }
}

/** reduce_zero_label as a byte table. */
const REDUCE_ZERO_LUT = reduceZeroLabel(Uint8Array.from({ length: 256 }, (_, i) => i));

/** INTER_NEAREST resize of a label map with an optional value table applied on the way. */
function resizeLabelNearest(label: Uint8Array, h: number, w: number, nh: number, nw: number, map: Uint8Array | null): Uint8Array {
  if (map === null) return resizeNearestHWC(label, h, w, nh, nw);
  if (nh === h && nw === w) {
    const out = new Uint8Array(label.length);
    for (let i = 0; i < label.length; i++) out[i] = map[label[i]!]!;
    return out;
  }
  const out = new Uint8Array(nh * nw);
  const ifx = 1 / (nw / w);
  const ify = 1 / (nh / h);
  const xo = new Int32Array(nw);
  for (let dx = 0; dx < nw; dx++) xo[dx] = Math.min(Math.floor(dx * ifx), w - 1);
  let o = 0;
  for (let dy = 0; dy < nh; dy++) {
    const srow = Math.min(Math.floor(dy * ify), h - 1) * w;
    for (let dx = 0; dx < nw; dx++) out[o++] = map[label[srow + xo[dx]!]!]!;
  }
  return out;
}

/** Mirrors every row of an HWC array in place. */
function flipRowsInPlace(a: Uint8Array, h: number, w: number, c: number): void {
  for (let y = 0; y < h; y++) {
    let l = y * w * c;
    let r = l + (w - 1) * c;
    for (; l < r; l += c, r -= c) {
      for (let k = 0; k < c; k++) {
        const t = a[l + k]!;
        a[l + k] = a[r + k]!;
        a[r + k] = t;
      }
    }
  }
}

const lutCache = new Map<string, Float32Array>();
function cachedNormalizeLut(mean: readonly number[], std: readonly number[]): Float32Array {
  const key = `${mean.join(',')}/${std.join(',')}`;
  let lut = lutCache.get(key);
  if (lut === undefined) {
    lut = normalizeLut(mean, std);
    if (lutCache.size > 16) lutCache.clear();
    lutCache.set(key, lut);
  }
  return lut;
}

/**
 * Runs the mmseg train pipeline (after LoadImageFromFile) on one sample:
 * reduce_zero_label → Resize → RandomCrop → RandomFlip → PhotoMetricDistortion → Normalize → Pad →
 * DefaultFormatBundle. Draws, in mmseg's order: 1 `random_sample` (resize), 2–22 `randint`
 * (crop), 1 `rand` (flip), 5–9 for PhotoMetricDistortion.
 *
 * The image may be RGB (default, as `readImage` returns) or BGR; the result is identical to
 * mmseg's on the same picture loaded by OpenCV (BGR) with the same draws. Pure typed-array code:
 * safe in worker threads; the input arrays are not modified. The result's `img.buffer` and
 * `label.buffer` are fresh and may be transferred (`postMessage(out, [out.img.buffer, out.label.buffer])`).
 *
 * Seeding with several workers: give each sample its own stream, e.g.
 * `new SeededRandom(seed, epoch, indexInEpoch)`; then the augmentation of a sample does not depend
 * on which worker runs it or when, and resuming needs only those counters (a single shared stream
 * would need its {@link SeededRandom.getState} saved instead, and a fixed processing order).
 * The image is resized only inside the chosen crop box (byte-identical to resizing it all).
 *
 * @param sample image + raw label map
 * @param cfg pipeline values ({@link ADE20K_TRAIN_PIPELINE} for the recipe)
 * @param rng random source ({@link SeededRandom}, or {@link ForcedRandom} in tests)
 * @returns CHW float32 image, H×W uint8 labels, meta
 */
export function trainPipeline(sample: TrainPipelineInput, cfg: TrainPipelineCfg, rng: PipelineRandom): TrainPipelineOutput {
  const order: ChannelOrder = sample.channelOrder ?? 'rgb';
  if (order !== 'rgb' && order !== 'bgr') throw new RangeError(`trainPipeline: channelOrder must be 'rgb' or 'bgr', got ${String(order)}`);
  const { image, label } = sample;
  if (image.height !== label.height || image.width !== label.width) {
    throw new RangeError(
      `trainPipeline: label map is ${label.width}x${label.height} but the image is ${image.width}x${image.height}; they must be the same size`,
    );
  }
  if (!Number.isInteger(image.height) || !Number.isInteger(image.width) || image.height <= 0 || image.width <= 0) {
    throw new RangeError(`trainPipeline: invalid image size ${image.width}x${image.height}`);
  }
  checkPair({ img: image.data, label: label.data, height: image.height, width: image.width }, 'trainPipeline');
  const h0 = image.height;
  const w0 = image.width;
  const oriShape: [number, number, number] = [h0, w0, 3];

  // Resize: the label map in full (the crop check needs it), with reduce_zero_label folded in.
  const ratio = cfg.ratioRange === null ? 1 : sampleResizeRatio(rng, cfg.ratioRange);
  const plan = resizePlan(h0, w0, cfg.imgScale, ratio);
  const { newH, newW } = plan;
  const labelR = resizeLabelNearest(label.data, h0, w0, newH, newW, cfg.reduceZeroLabel ? REDUCE_ZERO_LUT : null);
  const resizedShape: [number, number] = [newH, newW];

  // RandomCrop: choose the box on the resized labels, then resize only that part of the image
  // (byte-identical to resizing everything and cropping).
  const sel = chooseCropBox(labelR, newH, newW, cfg.cropSize, cfg.catMaxRatio, cfg.ignoreIndex, rng);
  const y1 = sel.box[0];
  const y2 = Math.min(sel.box[1], newH);
  const x1 = sel.box[2];
  const x2 = Math.min(sel.box[3], newW);
  let pair: ImageLabelPair = {
    img: resizeBilinearHWCFixedPointRegion(image.data, h0, w0, newH, newW, y1, y2, x1, x2),
    label: cropHWC(labelR, newH, newW, 1, sel.box).data,
    height: y2 - y1,
    width: x2 - x1,
  };

  // RandomFlip (in place: the arrays are ours).
  const flip = rng.rand() < cfg.flipProb;
  if (flip) {
    flipRowsInPlace(pair.img, pair.height, pair.width, 3);
    flipRowsInPlace(pair.label, pair.height, pair.width, 1);
  }

  let photoMetric: PhotoMetricParams | null = null;
  if (cfg.photoMetric !== null) {
    const r = photoMetricCore(pair.img, pair.height, pair.width, cfg.photoMetric, rng, order, cfg.hsvVectorBlock, true);
    pair = { ...pair, img: r.img };
    photoMetric = r.params;
  }

  // Normalize + Pad + DefaultFormatBundle in one pass: padded CHW planes, pad value after normalising.
  const h = pair.height;
  const w = pair.width;
  const [ph, pw] = cfg.padSize === null ? [h, w] : [cfg.padSize[0], cfg.padSize[1]];
  if (ph < h || pw < w) throw new RangeError(`Pad: a ${w}x${h} crop does not fit the pad size ${pw}x${ph} (pad size must be >= crop size)`);
  const lut = cachedNormalizeLut(cfg.mean, cfg.std);
  const src0 = normalizeSource(order, cfg.toRgb);
  const plane = ph * pw;
  const out = new Float32Array(3 * plane);
  if (cfg.padVal !== 0) out.fill(cfg.padVal);
  const img = pair.img;
  for (let y = 0; y < h; y++) {
    let i = y * w * 3;
    let o = y * pw;
    const end = o + w;
    for (; o < end; o++, i += 3) {
      out[o] = lut[img[i + src0]!]!;
      out[plane + o] = lut[256 + img[i + 1]!]!;
      out[2 * plane + o] = lut[512 + img[i + 2 - src0]!]!;
    }
  }
  const outLabel = ph === h && pw === w ? pair.label : padHWC(pair.label, h, w, 1, ph, pw, cfg.segPadVal);

  return {
    img: out,
    label: outLabel,
    height: ph,
    width: pw,
    meta: {
      oriShape,
      imgShape: [h, w, 3],
      padShape: [ph, pw, 3],
      ratio: plan.ratio,
      scale: plan.scale,
      scaleFactor: plan.scaleFactor,
      resizedShape,
      cropBox: sel.box,
      cropBoxesDrawn: sel.boxesDrawn,
      flip,
      flipDirection: 'horizontal',
      photoMetric,
      inputOrder: order,
      outputOrder: cfg.toRgb ? 'rgb' : 'bgr',
    },
  };
}
