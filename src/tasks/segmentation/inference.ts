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
 *   size, softmaxed, flipped back, summed, and divided by the number of copies; the label is the argmax. This final
 *   stage runs in bands of output rows ({@link streamLabels}) with the same arithmetic per pixel, so no C×H×W tensor
 *   of the photo's size is ever built (src/tools/full-resolution.ts keeps the full-resolution form as a baseline).
 */
import {
  type Tensor, fromBytes, getNumThreads, interpolate, noGrad, pad, scope, softmax, zeros,
} from '../../engine/index.js';
import { type RgbImage, readImage } from '../../io/image.js';
import { Module, StateDictError, type LoadResult } from '../../nn/index.js';
import { openStateDict } from '../../nn/serialization.js';
import { ViTAdapter, type ViTAdapterOptions } from '../../models/adapter/vit-adapter.js';
import { BEiTAdapter, type BEiTAdapterOptions } from '../../models/adapter/beit-adapter.js';
import type { HeadConfig, NeckConfig } from '../../models/heads/index.js';
import { flipHorizontalHWC, normalizeToCHW, rescaleSize, resizeBilinearHWC, sizeToMultiple } from './pipeline-image.js';
import { type Backbone, EncoderDecoder } from './segmentor.js';
import { BACKBONE_TYPES, type BackboneCfg, type SegConfig, type TestCfg, type TestPipelineCfg, classNamesOf } from './configs.js';
import { ViTBaseline, type ViTBaselineOptions } from '../../models/vit-baseline.js';

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
  /** {@link loadSegmentor} only: load checkpoint tensors holding NaN/±Inf instead of refusing them (default false). */
  allowNonfinite?: boolean;
}

/**
 * Builds a config's backbone by its `type`: `ViTAdapter` (also when absent), `BEiTAdapter` or `ViTBaseline`. A BEiT-Adapter config
 * with `pretrained` loads that BEiT checkpoint at construction (relative position tables re-sampled).
 */
export function buildBackbone(cfg: BackboneCfg): Backbone {
  const { type, ...kwargs } = cfg;
  switch (type ?? 'ViTAdapter') {
    case 'ViTAdapter': return new ViTAdapter(kwargs as ViTAdapterOptions);
    case 'BEiTAdapter': return new BEiTAdapter(kwargs as BEiTAdapterOptions);
    case 'ViTBaseline': return new ViTBaseline(kwargs as ViTBaselineOptions);
    default: throw new Error(`unknown backbone type ${JSON.stringify(type)}; expected ${BACKBONE_TYPES.join(' or ')}`);
  }
}

/** Builds the config's `EncoderDecoder` with random (mmseg-initialised) weights, in eval mode. */
export function buildSegmentor(config: SegConfig, o: BuildOptions = {}): EncoderDecoder {
  const m = config.model;
  const model = new EncoderDecoder({
    backbone: buildBackbone(m.backbone),
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
 * unused at inference), with a note. A `module.` prefix (DataParallel) is removed. Tensors holding NaN/±Inf are
 * refused unless `allowNonfinite` (see `Module.loadStateDict`).
 */
export function loadSegmentor(config: SegConfig, checkpointPath: string, o: BuildOptions = {}): { model: EncoderDecoder; report: LoadReport } {
  const model = buildSegmentor(config);
  const report = loadSegmentorWeights(model, checkpointPath, { allowNonfinite: o.allowNonfinite ?? false });
  if (o.device && o.device !== 'cpu') model.to(o.device);
  return { model, report };
}

/** Loads a checkpoint into an existing segmentor with the rules of {@link loadSegmentor}. */
export function loadSegmentorWeights(model: EncoderDecoder, checkpointPath: string,
  o: { allowNonfinite?: boolean } = {}): LoadReport {
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
    const r: LoadResult = model.loadStateDict(sources, { strict: false, allowNonfinite: o.allowNonfinite ?? false });
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

/**
 * The authors' `SETR_Resize` (keep_ratio, setr_multi_scale) output size `[w, h]` of a w×h image at `scale`: the short
 * side becomes `crop[0]` if `min(scale)` is smaller, else `min(scale)`; the target (short side, proportional long
 * side) goes through mmcv's `imrescale`.
 */
export function setrResizeSize(w: number, h: number, scale: readonly [number, number], crop: readonly [number, number]): [number, number] {
  const m = Math.min(scale[0], scale[1]);
  const short = m < crop[0] ? crop[0] : m;
  const target: [number, number] = h > w ? [(short * h) / w, short] : [short, (short * w) / h];
  return rescaleSize(w, h, target);
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

/** Largest network input (width × height after the test resize) that {@link resizeForTest} accepts: 64 megapixels. */
export const MAX_NETWORK_INPUT_PIXELS = 64_000_000;

/**
 * `Resize(keep_ratio)` (mmcv `imrescale`: size from `rescale_size`, cv2 bilinear on uint8) at `img_scale`·ratio, then
 * `ResizeToMultiple(size_divisor)` (a second bilinear resize up to the next multiple) when configured. Throws a
 * RangeError naming the ratio when the network input would exceed {@link MAX_NETWORK_INPUT_PIXELS}.
 */

export function resizeForTest(image: RgbLike, pipeline: TestPipelineCfg, ratio = 1): ResizedImage {
  const { height: h, width: w } = image;
  const scale = scaleForRatio(pipeline.img_scale, ratio);
  let [nw, nh] = pipeline.setr_crop_size ? setrResizeSize(w, h, scale, pipeline.setr_crop_size)
    : pipeline.keep_ratio ? rescaleSize(w, h, scale) : scale;
  nw = Math.max(1, nw);
  nh = Math.max(1, nh);
  if (nw * nh > MAX_NETWORK_INPUT_PIXELS) {
    throw new RangeError(`test scale ratio ${ratio} would resize the ${w}x${h} image to ${nw}x${nh} for the network ` +
      `(${(nw * nh / 1e6).toFixed(0)} megapixels, limit ${MAX_NETWORK_INPUT_PIXELS / 1e6}); ratios are fractions of the ` +
      `config's img_scale [${pipeline.img_scale.join(', ')}], e.g. 0.5,0.75,1.0,1.25,1.5,1.75`);
  }
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
  const data = normalizeToCHW(px, r.height, r.width, n.mean, n.std, n.to_rgb);
  const pad = config.test_pipeline.pad_short_side;
  if (!pad) return { data, height: r.height, width: r.width, flip };
  return { ...padShortSideCHW(data, r.height, r.width, pad.size,
    // raw pixel 0 normalised as normalizeToCHW does it, or normalised 0
    pad.before_normalize ? n.mean.map((m, c) => Math.fround(Math.fround(0 - Math.fround(m)) * (1 / n.std[c]!))) : [0, 0, 0]), flip };
}

/**
 * The authors' `PadShortSide(size)` on normalised 3×h×w planes: bottom/right padding to at least size×size with
 * `values[c]` in channel c.
 */
export function padShortSideCHW(data: Float32Array, h: number, w: number, size: number, values: readonly number[]):
  { data: Float32Array; height: number; width: number } {
  const nh = Math.max(h, size);
  const nw = Math.max(w, size);
  if (nh === h && nw === w) return { data, height: h, width: w };
  const out = new Float32Array(3 * nh * nw);
  for (let c = 0; c < 3; c++) {
    out.fill(values[c]!, c * nh * nw, (c + 1) * nh * nw);
    for (let y = 0; y < h; y++) out.set(data.subarray((c * h + y) * w, (c * h + y + 1) * w), (c * nh + y) * nw);
  }
  return { data: out, height: nh, width: nw };
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
  /** Receives the averaged class probabilities band by band (see {@link streamLabels}); the full C×H×W map is never built. */
  onProbabilities?: (band: ProbabilityBand) => void;
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
 *
 * Memory: each (scale, flip) copy's logits are kept at network resolution only (C×h×w, what the slide canvas or the
 * whole pass produces); the resize to the original size, softmax, un-flip, averaging over copies and argmax run in
 * bands of output rows ({@link streamLabels}), so the peak is bounded by the network input sizes and a band, not by
 * the photo. The labels are those of mmseg's full-resolution computation (see {@link resizeRowsExact} and
 * {@link softmaxClasses} for the exactness argument).
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
      // 1. every copy's logits at its network resolution (the photo-sized work is left to step 2)
      const logits: NetworkLogits[] = [];
      for (const ratio of ratios) {
        const resized = resizeForTest(image, config.test_pipeline, ratio);
        for (const flip of flips) {
          copies.push({ ratio, flip, inputHeight: resized.height, inputWidth: resized.width });
          const l = scope(() => {
            const p = normalizeResized(resized, config, flip);
            const x = fromBytes(p.data, 'float32', [1, 3, p.height, p.width], device);
            return inferLogits(model, x, testCfg, divisor);
          });
          logits.push({ logits: l, flip });
        }
      }
      // 2. resize, softmax, un-flip, average and argmax, band by band of output rows
      return streamLabels(logits, H, W, { alignCorners, onProbabilities: o.onProbabilities });
    }));
    return { labels, height: H, width: W, numClasses, classShares: classShares(labels, numClasses, classNamesOf(config)), copies, ms: performance.now() - t0 };
  } finally {
    if (wasTraining) (model as unknown as Module).train();
  }
}

// ---- streaming the final resize, softmax, averaging and argmax ------------------------------------------------------

/** One test copy's logits at network resolution (1×C×h×w) and whether its input was flipped. */
export interface NetworkLogits {
  logits: Tensor;
  flip: boolean;
}

/** A band of averaged class probabilities, passed to {@link StreamOptions.onProbabilities}. */
export interface ProbabilityBand {
  /** First output row of the band. */
  y0: number;
  /** One past its last row. */
  y1: number;
  /**
   * 1×C×(y1−y0)×W float32 probabilities, averaged over the copies: what mmseg's `aug_test` computes for these rows.
   * Valid only during the callback (it is freed after it returns; clone it to keep it).
   */
  probs: Tensor;
}

/** Options of {@link streamLabels}. */
export interface StreamOptions {
  /** `align_corners` of the bilinear resize to the output size (mmseg: the decode head's). */
  alignCorners?: boolean;
  /** Called with each band of averaged probabilities, top to bottom (for library users who need them). */
  onProbabilities?: (band: ProbabilityBand) => void;
  /** Target number of float32 elements of one band tensor (C × rows × W); default {@link BAND_ELEMENTS}. */
  bandElements?: number;
}

/** Default size of one band tensor in the streamed final stage: 8 Mi float32 elements (32 MiB). */
export const BAND_ELEMENTS = 1 << 23;

/**
 * The widest vector step of libtorch's CPU softmax kernel (8 floats with AVX2, 16 with AVX-512). Its kernel for a
 * non-last dimension computes pixels in vector steps from the start of each thread's share and the leftover pixels at
 * the end of each share with scalar code (std::exp instead of the vectorised exp: results can differ in the last bit).
 */
const SOFTMAX_VEC = 16;

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Rows per band: about `elements / (C·W)`, rounded to a multiple that keeps the band's pixel count a multiple of 16·threads when possible. */
function bandRows(c: number, w: number, h: number, elements: number): number {
  let rows = Math.max(1, Math.floor(elements / (c * w)));
  const q = SOFTMAX_VEC * Math.max(1, getNumThreads());
  const unit = q / gcd(w, q);
  if (unit <= rows) rows -= rows % unit;
  return Math.min(rows, h);
}

/**
 * The averaged probabilities' argmax at the output size H×W, computed band by band: per band of output rows and per
 * copy, {@link resizeRowsExact} (the rows of the bilinear resize to H×W), {@link softmaxClasses}, the horizontal
 * un-flip, then the sum over copies in order, the division by their count and the argmax over classes — mmseg's
 * `aug_test` arithmetic pixel by pixel, without a full-resolution C×H×W tensor. The copies' logits are freed by the
 * caller.
 */
export function streamLabels(copies: readonly NetworkLogits[], H: number, W: number, o: StreamOptions = {}):
  { labels: Uint8Array | Uint16Array; numClasses: number } {
  if (copies.length === 0) throw new RangeError('streamLabels: no copies');
  const c = copies[0]!.logits.shape[1]!;
  for (const k of copies) {
    if (k.logits.ndim !== 4 || k.logits.shape[0] !== 1 || k.logits.shape[1] !== c) {
      throw new RangeError(`streamLabels: expected 1×${c}×h×w logits, got [${k.logits.shape.join(', ')}]`);
    }
  }
  const alignCorners = o.alignCorners ?? false;
  const labels = c <= 256 ? new Uint8Array(H * W) : new Uint16Array(H * W);
  const plans = copies.map((k) => ({
    ...k,
    rows: bilinearAxis(k.logits.shape[2]!, H, alignCorners),
  }));
  const rows = bandRows(c, W, H, o.bandElements ?? BAND_ELEMENTS);
  const n = copies.length;
  for (let y0 = 0; y0 < H; y0 += rows) {
    const y1 = Math.min(H, y0 + rows);
    scope(() => {
      let acc: Tensor | null = null;
      for (const k of plans) {
        const band = resizeRowsExact(k.logits, y0, y1, W, k.rows, alignCorners);
        const sm = softmaxClasses(band);
        const prob = k.flip ? sm.flip(3) : sm;
        if (acc === null) acc = prob.contiguous();
        else acc.add_(prob);
      }
      const avg = n > 1 ? acc!.div(n) : acc!;
      if (o.onProbabilities) o.onProbabilities({ y0, y1, probs: avg });
      const idx = avg.argmax(1);
      if (c <= 256) labels.set(idx.to('uint8').toTypedArray() as Uint8Array, y0 * W);
      else labels.set(idx.to('int32').toTypedArray() as Int32Array, y0 * W);
    });
  }
  return { labels, numClasses: c };
}

/**
 * Source indices and weights of a 1-d bilinear resize from `inSize` to `outSize` samples, as libtorch's CPU kernel
 * computes them (aten/native/UpSample.h, `compute_source_index_and_lambda`): the scale in float32
 * (`in/out`, or `(in−1)/(out−1)` with align_corners), the source coordinate in double
 * (`scale·(i+0.5)−0.5`, clamped at 0; `scale·i` with align_corners), `i0` its truncation, `i1 = min(i0+1, in−1)`,
 * `w1` = the fraction rounded to float32, `w0 = 1 − w1` in float32. Equal sizes copy (`w0 = 1`, `w1 = 0`).
 */
export function bilinearAxis(inSize: number, outSize: number, alignCorners: boolean):
  { i0: Int32Array; i1: Int32Array; w0: Float32Array; w1: Float32Array } {
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const w0 = new Float32Array(outSize);
  const w1 = new Float32Array(outSize);
  if (inSize === outSize) {
    for (let i = 0; i < outSize; i++) { i0[i] = i; i1[i] = i; w0[i] = 1; }
    return { i0, i1, w0, w1 };
  }
  const f = Math.fround;
  const scale = alignCorners ? (outSize > 1 ? f((inSize - 1) / (outSize - 1)) : 0) : f(inSize / outSize);
  for (let i = 0; i < outSize; i++) {
    let real = alignCorners ? scale * i : scale * (i + 0.5) - 0.5;
    if (!alignCorners && real < 0) real = 0;
    const a = Math.trunc(real);
    i0[i] = a;
    i1[i] = a < inSize - 1 ? a + 1 : a;
    w1[i] = real - a; // stored as float32
    w0[i] = f(1 - w1[i]!);
  }
  return { i0, i1, w0, w1 };
}

/**
 * Rows `[y0, y1)` of `interpolate(x, {size: [H, W], mode: 'bilinear', alignCorners})` for a 1×C×h×w `x`, without
 * computing the others; on the CPU the result is bitwise that of the full resize. libtorch's CPU kernel computes
 * every output value as `fma(t0, wy0, t1·wy1)`, where `t0`, `t1` are the width-interpolated values of source rows
 * `i0(y)`, `i1(y)`. So: (1) the source rows `i0(y)` (and `i1(y)`) of the band are gathered at network resolution and
 * width-interpolated with the same kernel, the height left alone (an equal size: weights 1 and 0, which return `t`
 * exactly); (2) they are combined with the kernel's own row weights (`rowsAxis`, from {@link bilinearAxis}) as
 * `t1·wy1` then `addcmul_` (`+= t0·wy0`, fused as the kernel). Verified bitwise against `interpolate` in
 * test/segmentation-e2e/streamed.test.ts.
 */
export function resizeRowsExact(x: Tensor, y0: number, y1: number, W: number,
  rowsAxis: { i0: Int32Array; i1: Int32Array; w0: Float32Array; w1: Float32Array }, alignCorners: boolean): Tensor {
  return scope(() => {
    const [, , h, w] = x.shape as [number, number, number, number];
    const H = rowsAxis.i0.length;
    if (!(y0 >= 0 && y1 > y0 && y1 <= H)) throw new RangeError(`resizeRowsExact: rows [${y0}, ${y1}) outside [0, ${H})`);
    const n = y1 - y0;
    const dev = x.device;
    // width pass of the given source rows (or just the rows when the width does not change)
    const widthPass = (src: Tensor): Tensor => (w === W ? src.contiguous()
      : interpolate(src, { size: [src.shape[2]!, W], mode: 'bilinear', alignCorners }));
    if (h === H) return widthPass(x.narrow(2, y0, n));
    const rows = (a: Int32Array): Tensor => {
      const b = new BigInt64Array(n);
      for (let i = 0; i < n; i++) b[i] = BigInt(a[y0 + i]!);
      return widthPass(x.indexSelect(2, fromBytes(b, 'int64', [n], dev)));
    };
    const wt = (a: Float32Array): Tensor => fromBytes(a.slice(y0, y1), 'float32', [1, 1, n, 1], dev).to(x.dtype);
    // fma(t0, w0, t1·w1), as the kernel
    const out = rows(rowsAxis.i1).mul_(wt(rowsAxis.w1));
    return out.addcmul_(rows(rowsAxis.i0), wt(rowsAxis.w0));
  });
}

/**
 * Softmax over the classes (dim 1) of a 1×C×h×w band, computed so that every pixel takes libtorch's vectorised path:
 * the pixels are padded to a multiple of 16 × the thread count (each thread's share then splits into whole vector
 * steps). The result per pixel then no longer depends on where the pixel lies in the tensor; it equals the full-image
 * softmax at every pixel that full computation also vectorises — all but the last < 16 pixels of each thread's share
 * (where libtorch's own result changes with the thread count).
 */
export function softmaxClasses(x: Tensor): Tensor {
  const [nb, c, h, w] = x.shape as [number, number, number, number];
  const px = h * w;
  const q = SOFTMAX_VEC * Math.max(1, getNumThreads());
  const padded = Math.ceil(px / q) * q;
  if (nb !== 1 || padded === px) return softmax(x, 1);
  return scope(() => softmax(pad(x.reshape(1, c, px), [0, padded - px]), 1).narrow(2, 0, px).view(1, c, h, w));
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
