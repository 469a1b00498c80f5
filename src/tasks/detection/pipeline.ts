/**
 * The authors' detection test pipeline (`_base_/datasets/coco_instance.py`, mmdetection 2.x / mmcv 1.4):
 *
 *   LoadImageFromFile → MultiScaleFlipAug(img_scale=(1333, 800), flip=False)
 *     [ Resize(keep_ratio=True) → RandomFlip → Normalize(mean, std, to_rgb=True) → Pad(size_divisor=32)
 *       → ImageToTensor ] → Collect(img, meta)
 *
 * - Resize: `scale = min(1333 / max(h, w), 800 / min(h, w))`, new size `(int(w·scale + 0.5), int(h·scale + 0.5))`
 *   (mmcv `rescale_size`), bilinear on the 8-bit image with OpenCV's fixed-point arithmetic (`resizeBilinearHWC`,
 *   bit-exact with `cv2.resize(INTER_LINEAR)`); `scale_factor = float32([new_w / w, new_h / h, new_w / w, new_h / h])`.
 *   With `keep_ratio: false` the image is resized to `img_scale` = (w, h) exactly.
 * - Normalize: mmcv's `imnormalize` on float32 (`(x − mean) · (1 / std)`, one rounding), BGR → RGB
 *   (`normalizeToCHW`; our decoded images are RGB already, which is what `to_rgb=True` produces).
 * - Pad: zeros at the bottom and right up to the next multiples of `size_divisor` (`pad_shape`); the backbone sees
 *   the padded tensor; boxes live in `img_shape` coordinates and are divided by `scale_factor` to reach the original
 *   image; masks are pasted at `ori_shape`.
 */
import { type Tensor, fromBytes } from '../../engine/index.js';
import { normalizeToCHW, rescaleSize, resizeBilinearHWC } from '../segmentation/pipeline-image.js';
import type { ImgNormCfg } from '../segmentation/configs.js';

/** An 8-bit RGB image in HWC layout (what `readImage` returns). */
export interface DetRgbImage {
  data: Uint8Array;
  height: number;
  width: number;
}

/** The detection test pipeline's settings (mmdetection config names). */
export interface DetTestPipelineCfg {
  /** `img_scale`: with `keep_ratio`, the (long, short) bounds in either order, e.g. (1333, 800); else the exact (w, h). */
  img_scale: [number, number];
  /** `Resize(keep_ratio=...)`. */
  keep_ratio: boolean;
  /** `Pad(size_divisor=...)`: pad bottom/right to multiples of this (32 in the authors' configs). */
  size_divisor: number;
}

/** The authors' COCO test pipeline: 1333×800, keep ratio, pad to 32. */
export const COCO_TEST_PIPELINE: Readonly<DetTestPipelineCfg> = Object.freeze({ img_scale: [1333, 800] as [number, number], keep_ratio: true, size_divisor: 32 });

/**
 * mmdetection's `img_metas` entry for one image (the parts the model uses), `[h, w]` pairs.
 * `scaleFactor` holds float32 values (`[w_scale, h_scale, w_scale, h_scale]`), as mmdetection keeps it.
 */
export interface DetImageMeta {
  /** `ori_shape`: the decoded image. */
  oriShape: [number, number];
  /** `img_shape`: after the resize (boxes are clamped to it). */
  imgShape: [number, number];
  /** `pad_shape` (= `batch_input_shape` for one image): the network input. */
  padShape: [number, number];
  /** `scale_factor`: float32 `[new_w / w, new_h / h, new_w / w, new_h / h]`. */
  scaleFactor: [number, number, number, number];
}

/** A prepared network input: the normalised, padded CHW image and its meta. */
export interface DetInput {
  /** 3 × padH × padW float32, RGB planes, zeros in the padding. */
  data: Float32Array;
  meta: DetImageMeta;
}

function checkImage(image: DetRgbImage): void {
  const { height: h, width: w, data } = image;
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) throw new RangeError(`detection pipeline: invalid image size ${w}x${h}`);
  if (data.length !== h * w * 3) throw new RangeError(`detection pipeline: expected ${w}x${h}x3 bytes, got ${data.length}`);
}

/**
 * The resized size and `scale_factor` of a `w × h` image (see the module notes).
 *
 * @returns `[newW, newH]` and the float32 scale factor `[w_scale, h_scale, w_scale, h_scale]`
 */
export function detResizeShape(w: number, h: number, cfg: DetTestPipelineCfg): { size: [number, number]; scaleFactor: [number, number, number, number] } {
  const [nw, nh] = cfg.keep_ratio ? rescaleSize(w, h, cfg.img_scale) : [cfg.img_scale[0], cfg.img_scale[1]];
  if (nw < 1 || nh < 1) throw new RangeError(`detection pipeline: a ${w}x${h} image resizes to ${nw}x${nh} at img_scale ${cfg.img_scale.join('x')}`);
  const ws = Math.fround(nw / w);
  const hs = Math.fround(nh / h);
  return { size: [nw, nh], scaleFactor: [ws, hs, ws, hs] };
}

/** `pad_shape` `[padH, padW]` of an `h × w` image: each side rounded up to a multiple of `divisor`. */
export function padShapeOf(h: number, w: number, divisor: number): [number, number] {
  if (!Number.isInteger(divisor) || divisor < 1) throw new RangeError(`size_divisor must be a positive integer, got ${divisor}`);
  return [Math.ceil(h / divisor) * divisor, Math.ceil(w / divisor) * divisor];
}

/**
 * Runs the test pipeline on one image: resize, normalise, pad (see the module notes).
 *
 * @param image 8-bit RGB, HWC
 * @param cfg resize and pad settings
 * @param norm `img_norm_cfg` (mean/std in RGB order, `to_rgb`)
 */
export function prepareDetectionInput(image: DetRgbImage, cfg: DetTestPipelineCfg, norm: ImgNormCfg): DetInput {
  checkImage(image);
  const { height: h, width: w } = image;
  const { size: [nw, nh], scaleFactor } = detResizeShape(w, h, cfg);
  const resized = nw === w && nh === h ? image.data : resizeBilinearHWC(image.data, h, w, nh, nw);
  const chw = normalizeToCHW(resized, nh, nw, norm.mean, norm.std, norm.to_rgb);
  const [ph, pw] = padShapeOf(nh, nw, cfg.size_divisor);
  let data = chw;
  if (ph !== nh || pw !== nw) {
    data = new Float32Array(3 * ph * pw);
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < nh; y++) data.set(chw.subarray((c * nh + y) * nw, (c * nh + y + 1) * nw), (c * ph + y) * pw);
    }
  }
  return { data, meta: { oriShape: [h, w], imgShape: [nh, nw], padShape: [ph, pw], scaleFactor } };
}

/** The prepared input as a (1, 3, padH, padW) float32 tensor on `device`. */
export function detInputTensor(input: DetInput, device?: string): Tensor {
  const [ph, pw] = input.meta.padShape;
  return fromBytes(input.data, 'float32', [1, 3, ph, pw], device);
}
