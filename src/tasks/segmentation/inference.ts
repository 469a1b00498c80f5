/**
 * Semantic-segmentation inference as mmseg 0.20.2 runs ViT-Adapter's test configs:
 *
 *   LoadImageFromFile → MultiScaleFlipAug(img_scale, img_ratios, flip) [ Resize(keep_ratio) → ResizeToMultiple(32)
 *   → RandomFlip → Normalize → ImageToTensor ] → EncoderDecoder.{whole,slide}_inference → resize to the original
 *   size → softmax → (un-flip) → average over the augmented copies → argmax.
 *
 * - Resizes act on the uint8 image with OpenCV's bilinear arithmetic (`resizeBilinearHWC`), as mmcv does.
 * - `whole`: one pass on the full (resized) image. `slide`: mmseg's sliding window — `h_grids = max(h − crop_h +
 *   stride_h − 1, 0) // stride_h + 1` (same for w), window `i` starts at `i·stride`, is clipped to the image and
 *   shifted back to keep its full size where the image allows (`y1 = max(y2 − crop_h, 0)`); every window's logits
 *   (already resized to the window by `encodeDecode`) are summed into a canvas, which is divided by the per-pixel
 *   window count.
 * - ViT-Adapter needs inputs whose sides are multiples of 32. The authors' pipeline guarantees that with
 *   `ResizeToMultiple(32)`, so with their configs nothing below pads. For configs without it (or images smaller
 *   than a crop), each network input — the whole image, or a slide window — is zero-padded at the bottom/right to a
 *   multiple of 32 (zero = the mean colour after normalisation) and the logits are cropped back to the unpadded
 *   extent. This is an extension: mmseg would fail on such inputs instead.
 * - Test-time augmentation as mmseg's `aug_test`: every (scale, flip) copy's logits are resized to the original image
 *   size, softmaxed, flipped back, summed, and divided by the number of copies; the label is the argmax.
 */
import {
  type Tensor, fromBytes, interpolate, noGrad, pad, scope, softmax, zeros,
} from '../../engine/index.js';
import { type RgbImage, readImage } from '../../io/image.js';
import { Module, StateDictError, type LoadResult } from '../../nn/index.js';
import { openStateDict } from '../../nn/serialization.js';
import type { ViTAdapterOptions } from '../../models/adapter/vit-adapter.js';
import type { HeadConfig, NeckConfig } from '../../models/heads/index.js';
import { flipHorizontalHWC, normalizeToCHW, rescaleSize, resizeBilinearHWC, sizeToMultiple } from './pipeline-image.js';
import { EncoderDecoder } from './segmentor.js';
import { ViTBaseline, type ViTBaselineOptions } from '../../models/vit-baseline.js';
import { type SegConfig, type TestCfg, type TestPipelineCfg, classNamesOf } from './configs.js';

/** Anything with mmseg's `encode_decode`: N×3×H×W normalised image → N×C×H×W logits at the input size. */
export interface SegModel {
  encodeDecode(img: Tensor): Tensor;
}

/** An 8-bit RGB image in HWC layout (as `readImage` returns). */
export type RgbLike = Pick<RgbImage, 'data' | 'height' | 'width'>;

/** The side multiple ViT-Adapter needs (its token split at strides 8/16/32). */
export const SIZE_DIVISOR = 32;

// ---- building and loading -------------------------------------------------------------------------------------

/** Options of {@link buildSegmentor} and {@link loadSegmentor}. */
export interface BuildOptions {
  /** Device to move the model to (default cpu). */
  device?: string;
}

/** Builds the config's `EncoderDecoder` with random (mmseg-initialised) weights, in eval mode. */
export function buildSegmentor(config: SegConfig, o: BuildOptions = {}): EncoderDecoder {
  const m = config.model;
  const { type: _type, ...bb } = m.backbone;
  const model = new EncoderDecoder({
    backbone: _type === 'ViTBaseline' ? new ViTBaseline(bb as ViTBaselineOptions) : { type: 'ViTAdapter', ...(bb as ViTAdapterOptions) },
    neck: m.neck ? (m.neck as unknown as NeckConfig) : null,
    decode_head: m.decode_head as unknown as HeadConfig,
    auxiliary_head: m.auxiliary_head ? (m.auxiliary_head as unknown as HeadConfig) : null,
  });
  model.eval();
  if (o.device && o.device !== 'cpu') model.to(o.device);
  return model;
}

/** What {@link loadSegmentor} loaded. */
export interface LoadReport {
  /** The checkpoint file. */
  path: string;
  /** Number of tensors copied into the model. */
  loaded: number;
  /** `auxiliary_head.*` tensors in the checkpoint that were skipped because the model has no auxiliary head. */
  skippedAuxKeys: number;
  /** True when the model has an auxiliary head but the checkpoint has no `auxiliary_head.*` keys (it stays random; it is unused at inference). */
  auxHeadMissing: boolean;
  /** Human-readable notes about the above (empty when everything matched exactly). */
  notes: string[];
}

/**
 * Builds the config's model and loads a checkpoint (safetensors, PyTorch `.pth` as mmseg saves it, `.npz`) into it:
 * `backbone.*`, `neck.*` and `decode_head.*` strictly (every missing, unexpected or mis-shaped key is an error).
 * `auxiliary_head.*` keys load into the auxiliary head when the model has one; otherwise they are skipped and the
 * report says how many. A checkpoint without auxiliary keys loads into a model with an auxiliary head (which is
 * unused at inference), with a note. A `module.` prefix (DataParallel) is removed.
 */
export function loadSegmentor(config: SegConfig, checkpointPath: string, o: BuildOptions = {}): { model: EncoderDecoder; report: LoadReport } {
  const model = buildSegmentor(config);
  const report = loadSegmentorWeights(model, checkpointPath);
  if (o.device && o.device !== 'cpu') model.to(o.device);
  return { model, report };
}

/** Loads a checkpoint into an existing segmentor with the rules of {@link loadSegmentor}. */
export function loadSegmentorWeights(model: EncoderDecoder, checkpointPath: string): LoadReport {
  const { sources, checkpoint } = openStateDict(checkpointPath, { strip: ['module.'] });
  try {
    // A training checkpoint (`vit-adapter train`) also holds the optimizer and RNG state: not model weights.
    for (const k of [...sources.keys()]) if (k.startsWith('optimizer.') || k.startsWith('rng.')) sources.delete(k);
    const hasAux = model.auxiliary_head !== null;
    const auxKeys = [...sources.keys()].filter((k) => k.startsWith('auxiliary_head.'));
    const notes: string[] = [];
    let skipped = 0;
    if (!hasAux && auxKeys.length) {
      for (const k of auxKeys) sources.delete(k);
      skipped = auxKeys.length;
      notes.push(`skipped ${skipped} auxiliary_head.* key(s) of the checkpoint: the model has no auxiliary head (it is only used in training)`);
    }
    const auxMissing = hasAux && auxKeys.length === 0;
    const r: LoadResult = model.loadStateDict(sources, { strict: false });
    const bad: LoadResult = {
      missing: r.missing.filter((k) => !(auxMissing && k.startsWith('auxiliary_head.'))),
      unexpected: r.unexpected,
      mismatched: r.mismatched,
    };
    if (bad.missing.length || bad.unexpected.length || bad.mismatched.length) {
      throw new StateDictError(bad, `${model.constructor.name} (checkpoint ${checkpointPath})`);
    }
    if (auxMissing) {
      notes.push('the checkpoint has no auxiliary_head.* keys: the auxiliary head keeps random weights (it is unused at inference)');
    }
    const loaded = [...model.stateDict().keys()].filter((k) => sources.has(k)).length;
    return { path: checkpointPath, loaded, skippedAuxKeys: skipped, auxHeadMissing: auxMissing, notes };
  } finally {
    checkpoint.close();
  }
}

// ---- pre-processing -------------------------------------------------------------------------------------------

/**
 * The scale `MultiScaleFlipAug` passes to `Resize` for a ratio: `(int(img_scale[0]·r), int(img_scale[1]·r))`.
 */
export function scaleForRatio(imgScale: readonly [number, number], ratio: number): [number, number] {
  if (!(ratio > 0)) throw new RangeError(`test scale ratio must be positive, got ${ratio}`);
  return [Math.trunc(imgScale[0] * ratio), Math.trunc(imgScale[1] * ratio)];
}

/** A resized 8-bit image, before flip and normalisation. */
export interface ResizedImage {
  data: Uint8Array;
  height: number;
  width: number;
  /** Size after `Resize` and before `ResizeToMultiple`. */
  resizedHeight: number;
  resizedWidth: number;
}

/**
 * `Resize(keep_ratio)` (mmcv `imrescale`: size from `rescale_size`, cv2 bilinear on uint8) at `img_scale`·ratio, then
 * `ResizeToMultiple(size_divisor)` (a second bilinear resize up to the next multiple) when configured.
 */
export function resizeForTest(image: RgbLike, pipeline: TestPipelineCfg, ratio = 1): ResizedImage {
  const { height: h, width: w } = image;
  const scale = scaleForRatio(pipeline.img_scale, ratio);
  let [nw, nh] = pipeline.keep_ratio ? rescaleSize(w, h, scale) : scale;
  nw = Math.max(1, nw);
  nh = Math.max(1, nh);
  let data = resizeBilinearHWC(image.data, h, w, nh, nw);
  const resizedHeight = nh;
  const resizedWidth = nw;
  if (pipeline.size_divisor !== null) {
    const [mw, mh] = sizeToMultiple(nw, nh, pipeline.size_divisor);
    if (mw !== nw || mh !== nh) {
      data = resizeBilinearHWC(data, nh, nw, mh, mw);
      nw = mw;
      nh = mh;
    }
  }
  return { data, height: nh, width: nw, resizedHeight, resizedWidth };
}

/** The network input of one test copy. */
export interface PreparedImage {
  /** 3×H×W normalised float32 planes (CHW). */
  data: Float32Array;
  height: number;
  width: number;
  /** Whether it was flipped horizontally. */
  flip: boolean;
}

/**
 * The test pipeline for one (ratio, flip) copy: {@link resizeForTest}, horizontal flip, `Normalize` (mean/std,
 * to_rgb) and HWC→CHW.
 */
export function prepareTestImage(image: RgbLike, config: SegConfig, o: { ratio?: number; flip?: boolean } = {}): PreparedImage {
  const r = resizeForTest(image, config.test_pipeline, o.ratio ?? 1);
  return normalizeResized(r, config, o.flip ?? false);
}

function normalizeResized(r: ResizedImage, config: SegConfig, flip: boolean): PreparedImage {
  const px = flip ? flipHorizontalHWC(r.data, r.height, r.width) : r.data;
  const n = config.img_norm_cfg;
  return { data: normalizeToCHW(px, r.height, r.width, n.mean, n.std, n.to_rgb), height: r.height, width: r.width, flip };
}

// ---- whole and slide inference ----------------------------------------------------------------------------------

/**
 * `model.encodeDecode` on an input padded (bottom/right, zeros) to a multiple of `divisor`, with the logits cropped
 * back to the input's H×W. Without padding needed, exactly `encodeDecode`.
 */
export function encodeDecodePadded(model: SegModel, img: Tensor, divisor = SIZE_DIVISOR): Tensor {
  const [, , h, w] = img.shape as [number, number, number, number];
  const ph = Math.ceil(h / divisor) * divisor;
  const pw = Math.ceil(w / divisor) * divisor;
  if (ph === h && pw === w) return model.encodeDecode(img);
  return scope(() => {
    const padded = pad(img, [0, pw - w, 0, ph - h], 'constant', 0);
    const logits = model.encodeDecode(padded);
    return logits.narrow(2, 0, h).narrow(3, 0, w).contiguous();
  });
}

/** mmseg `whole_inference` without the final resize: logits at the input size. */
export function wholeInference(model: SegModel, img: Tensor, divisor = SIZE_DIVISOR): Tensor {
  return encodeDecodePadded(model, img, divisor);
}

/** One sliding window: rows `[y1, y2)`, columns `[x1, x2)`. */
export interface SlideWindow {
  y1: number;
  y2: number;
  x1: number;
  x2: number;
}

/** mmseg's sliding windows for an `h×w` image (crop and stride as `(h, w)`), row by row. */
export function slideWindows(h: number, w: number, crop: readonly [number, number], stride: readonly [number, number]): SlideWindow[] {
  const [hCrop, wCrop] = crop;
  const [hStride, wStride] = stride;
  if (!(hStride > 0 && wStride > 0 && hCrop > 0 && wCrop > 0)) throw new RangeError('slide: crop and stride must be positive');
  const hGrids = Math.floor(Math.max(h - hCrop + hStride - 1, 0) / hStride) + 1;
  const wGrids = Math.floor(Math.max(w - wCrop + wStride - 1, 0) / wStride) + 1;
  const out: SlideWindow[] = [];
  for (let hi = 0; hi < hGrids; hi++) {
    for (let wi = 0; wi < wGrids; wi++) {
      let y1 = hi * hStride;
      let x1 = wi * wStride;
      const y2 = Math.min(y1 + hCrop, h);
      const x2 = Math.min(x1 + wCrop, w);
      y1 = Math.max(y2 - hCrop, 0);
      x1 = Math.max(x2 - wCrop, 0);
      out.push({ y1, y2, x1, x2 });
    }
  }
  return out;
}

/** The per-pixel window count (mmseg's `count_mat`) of {@link slideWindows}, row-major h×w. */
export function slideCountMap(h: number, w: number, crop: readonly [number, number], stride: readonly [number, number]): Uint16Array {
  const count = new Uint16Array(h * w);
  for (const { y1, y2, x1, x2 } of slideWindows(h, w, crop, stride)) {
    for (let y = y1; y < y2; y++) for (let x = x1; x < x2; x++) count[y * w + x]!++;
  }
  return count;
}

/**
 * mmseg `slide_inference` without the final resize: logits at the input size. Windows narrower than a multiple of
 * `divisor` (only when the image itself is) are padded for the network and cropped back (see the module notes).
 */
export function slideInference(model: SegModel, img: Tensor, crop: readonly [number, number], stride: readonly [number, number],
  divisor = SIZE_DIVISOR): Tensor {
  const [b, , h, w] = img.shape as [number, number, number, number];
  const windows = slideWindows(h, w, crop, stride);
  let canvas: Tensor | null = null;
  for (const win of windows) {
    const logits = scope(() => {
      const cropImg = img.narrow(2, win.y1, win.y2 - win.y1).narrow(3, win.x1, win.x2 - win.x1).contiguous();
      return encodeDecodePadded(model, cropImg, divisor);
    });
    if (canvas === null) canvas = zeros([b, logits.shape[1]!, h, w], { dtype: logits.dtype, device: logits.device });
    scope(() => {
      canvas!.narrow(2, win.y1, win.y2 - win.y1).narrow(3, win.x1, win.x2 - win.x1).add_(logits);
    });
    logits.dispose();
  }
  const counts = slideCountMap(h, w, crop, stride);
  if (counts.some((c) => c === 0)) throw new Error('slide inference: some pixels are not covered by any window'); // mmseg asserts the same
  const out = scope(() => {
    const cm = fromBytes(Float32Array.from(counts), 'float32', [1, 1, h, w], canvas!.device).to(canvas!.dtype);
    return canvas!.div(cm);
  });
  canvas!.dispose();
  return out;
}

/** Logits at the input size by the test mode (`whole` or `slide`). */
export function inferLogits(model: SegModel, img: Tensor, testCfg: TestCfg, divisor = SIZE_DIVISOR): Tensor {
  if (testCfg.mode === 'slide') {
    if (!testCfg.crop_size || !testCfg.stride) throw new Error('slide mode needs test_cfg.crop_size and test_cfg.stride');
    return slideInference(model, img, testCfg.crop_size, testCfg.stride, divisor);
  }
  if (testCfg.mode !== 'whole') throw new Error(`unknown test mode ${JSON.stringify(testCfg.mode)}; expected whole or slide`);
  return wholeInference(model, img, divisor);
}

// ---- the whole prediction ----------------------------------------------------------------------------------------

/** Options of {@link segmentImage}. */
export interface SegmentOptions {
  /** `whole` or `slide` (default: the config's `test_cfg.mode`). */
  mode?: 'whole' | 'slide';
  /** Horizontal-flip TTA (default: the config's `test_pipeline.flip`). */
  flip?: boolean;
  /** Multi-scale TTA ratios of `img_scale` (default: the config's `img_ratios`, else [1]). */
  scales?: readonly number[] | null;
  /** Device of the input tensors (default: the model's parameters' device, else cpu). */
  device?: string;
  /** Pad network inputs to this multiple (default 32). */
  divisor?: number;
}

/** Pixel share of one class. */
export interface ClassShare {
  classId: number;
  /** Class name from the config's dataset. */
  name: string;
  pixels: number;
  /** pixels / (height·width). */
  share: number;
}

/** The prediction for one image. */
export interface SegmentationResult {
  /** Class id per pixel, row-major, at the original image size (Uint16Array only for more than 256 classes). */
  labels: Uint8Array | Uint16Array;
  height: number;
  width: number;
  numClasses: number;
  /** Classes present in the prediction, largest share first. */
  classShares: ClassShare[];
  /** The (scale, flip) copies averaged. */
  copies: { ratio: number; flip: boolean; inputHeight: number; inputWidth: number }[];
  /** Wall time of the prediction (pre-processing included). */
  ms: number;
}

function modelDevice(model: SegModel): string {
  if (model instanceof Module) {
    const p = model.parameters()[0];
    if (p) return p.device;
  }
  return 'cpu';
}

/** The test mode config for `mode` (the config's own, or slide with the config's or the ADE20K window). */
export function testCfgFor(config: SegConfig, mode?: 'whole' | 'slide'): TestCfg {
  const t = config.model.test_cfg;
  const m = mode ?? t.mode;
  if (m === 'whole') return { mode: 'whole' };
  if (m !== 'slide') throw new Error(`unknown mode ${JSON.stringify(m)}; expected whole or slide`);
  return { mode: 'slide', crop_size: t.crop_size ?? [512, 512], stride: t.stride ?? [341, 341] };
}

/**
 * Segments one RGB image with the config's test pipeline and test mode (or the given overrides). Synchronous; all
 * intermediate tensors are freed before it returns. A module model is switched to eval mode for the call.
 */
export function segmentImage(model: SegModel, image: RgbLike, config: SegConfig, o: SegmentOptions = {}): SegmentationResult {
  const t0 = performance.now();
  const { height: H, width: W } = image;
  if (image.data.length !== H * W * 3) throw new RangeError(`segmentImage: expected ${H}×${W}×3 bytes, got ${image.data.length}`);
  const ratios = o.scales ?? config.test_pipeline.img_ratios ?? [1];
  if (ratios.length === 0) throw new RangeError('segmentImage: scales must not be empty');
  const flips = (o.flip ?? config.test_pipeline.flip) ? [false, true] : [false];
  const testCfg = testCfgFor(config, o.mode);
  const device = o.device ?? modelDevice(model);
  const divisor = o.divisor ?? SIZE_DIVISOR;
  // mmseg resizes with the decode head's align_corners; the config's value for models that do not say.
  const own = (model as { alignCorners?: unknown }).alignCorners;
  const alignCorners = typeof own === 'boolean' ? own : config.model.align_corners ?? false;
  const wasTraining = model instanceof Module && model.training;
  if (wasTraining) (model as unknown as Module).eval();
  const copies: SegmentationResult['copies'] = [];
  try {
    const { labels, numClasses } = noGrad(() => scope(() => {
      let acc: Tensor | null = null;
      for (const ratio of ratios) {
        const resized = resizeForTest(image, config.test_pipeline, ratio);
        for (const flip of flips) {
          copies.push({ ratio, flip, inputHeight: resized.height, inputWidth: resized.width });
          const prob = scope(() => {
            const p = normalizeResized(resized, config, flip);
            const x = fromBytes(p.data, 'float32', [1, 3, p.height, p.width], device);
            const logits = inferLogits(model, x, testCfg, divisor);
            const full = logits.shape[2] === H && logits.shape[3] === W ? logits
              : interpolate(logits, { size: [H, W], mode: 'bilinear', alignCorners });
            const sm = softmax(full, 1);
            return flip ? sm.flip(3) : sm;
          });
          if (acc === null) acc = prob;
          else {
            acc.add_(prob);
            prob.dispose();
          }
        }
      }
      const n = copies.length;
      const avg = n > 1 ? acc!.div(n) : acc!;
      const c = avg.shape[1]!;
      const idx = avg.argmax(1);
      const out = c <= 256 ? (idx.to('uint8').toTypedArray() as Uint8Array) : Uint16Array.from(idx.to('int32').toTypedArray() as Int32Array);
      return { labels: out, numClasses: c };
    }));
    return { labels, height: H, width: W, numClasses, classShares: classShares(labels, numClasses, classNamesOf(config)), copies, ms: performance.now() - t0 };
  } finally {
    if (wasTraining) (model as unknown as Module).train();
  }
}

/** Pixel shares of the classes present in a label map, largest first (ties by class id). */
export function classShares(labels: ArrayLike<number>, numClasses: number, names: readonly string[] = []): ClassShare[] {
  const counts = new Float64Array(Math.max(numClasses, 1));
  for (let i = 0; i < labels.length; i++) {
    const v = labels[i]!;
    if (v < counts.length) counts[v]!++;
  }
  const out: ClassShare[] = [];
  counts.forEach((pixels, classId) => {
    if (pixels > 0) out.push({ classId, name: names[classId] ?? String(classId), pixels, share: pixels / labels.length });
  });
  return out.sort((a, b) => b.pixels - a.pixels || a.classId - b.classId);
}

/** Reads an image file and segments it ({@link segmentImage}); returns the decoded image too. */
export async function segmentFile(model: SegModel, path: string, config: SegConfig, o: SegmentOptions = {}):
  Promise<{ image: RgbImage; result: SegmentationResult }> {
  const image = await readImage(path);
  return { image, result: segmentImage(model, image, config, o) };
}
