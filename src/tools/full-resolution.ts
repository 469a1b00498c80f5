/**
 * The full-resolution final stage that `segmentImage` used before it streamed (as mmseg's `aug_test` computes it):
 * every (scale, flip) copy's logits resized to the photo's H×W, softmaxed, flipped back, summed, averaged, argmax.
 * It needs C×H×W float32 tensors (150 classes: 0.6 GB per megapixel each, two to four of them at once), so the
 * package does not use it; it is kept as the baseline of the streamed path's tests and of `bench/segmentor.ts`
 * (`--photo`): the same network passes, then this.
 */
import { type Tensor, fromBytes, interpolate, noGrad, scope, softmax } from '../engine/index.js';
import { classNamesOf, type SegConfig } from '../tasks/segmentation/configs.js';
import {
  type RgbLike, type SegModel, type SegmentOptions, type SegmentationResult, SIZE_DIVISOR, classShares, inferLogits,
  prepareTestImage, testCfgFor,
} from '../tasks/segmentation/inference.js';

/** {@link segmentImageFullResolution}'s result: `segmentImage`'s, plus the averaged probabilities when asked for. */
export interface FullResolutionResult extends SegmentationResult {
  /** C×H×W averaged probabilities (only with `keepProbabilities`). */
  probs?: Float32Array;
}

/**
 * Segments like `segmentImage` (same pipeline, test mode, TTA and network passes) with the final stage at full
 * resolution. The model must be in eval mode; its `alignCorners` (else the config's) is used for the resize.
 */
export function segmentImageFullResolution(model: SegModel, image: RgbLike, config: SegConfig,
  o: Omit<SegmentOptions, 'onProbabilities'> & { keepProbabilities?: boolean } = {}): FullResolutionResult {
  const t0 = performance.now();
  const { height: H, width: W } = image;
  const ratios = o.scales ?? config.test_pipeline.img_ratios ?? [1];
  const flips = (o.flip ?? config.test_pipeline.flip) ? [false, true] : [false];
  const testCfg = testCfgFor(config, o.mode);
  const own = (model as { alignCorners?: unknown }).alignCorners;
  const alignCorners = typeof own === 'boolean' ? own : config.model.align_corners ?? false;
  const copies: SegmentationResult['copies'] = [];
  const out = noGrad(() => scope(() => {
    let acc: Tensor | null = null;
    for (const ratio of ratios) {
      for (const flip of flips) {
        const prob = scope(() => {
          const p = prepareTestImage(image, config, { ratio, flip });
          copies.push({ ratio, flip, inputHeight: p.height, inputWidth: p.width });
          const x = fromBytes(p.data, 'float32', [1, 3, p.height, p.width], o.device);
          const logits = inferLogits(model, x, testCfg, o.divisor ?? SIZE_DIVISOR);
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
    const avg = copies.length > 1 ? acc!.div(copies.length) : acc!;
    const c = avg.shape[1]!;
    const idx = avg.argmax(1);
    const labels = c <= 256 ? (idx.to('uint8').toTypedArray() as Uint8Array) : Uint16Array.from(idx.to('int32').toTypedArray() as Int32Array);
    return { labels, numClasses: c, probs: o.keepProbabilities ? (avg.toTypedArray() as Float32Array) : undefined };
  }));
  return {
    labels: out.labels, height: H, width: W, numClasses: out.numClasses,
    classShares: classShares(out.labels, out.numClasses, classNamesOf(config)), copies, ms: performance.now() - t0,
    ...(out.probs ? { probs: out.probs } : {}),
  };
}
