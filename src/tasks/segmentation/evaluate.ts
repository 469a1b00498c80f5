/**
 * Dataset evaluation as mmseg's `single_gpu_test` + `dataset.evaluate(metric='mIoU')`: every image is segmented at
 * its original size with the config's test pipeline and mode, compared with its raw label map (`reduce_zero_label`
 * and `ignore_index` from the dataset), areas are accumulated over the dataset, and aAcc / mIoU / mAcc plus the
 * per-class IoU / Acc table are reported (mmseg's numbers and table format).
 */
import { type ImageLimits, readImage, readLabelMap } from '../../io/image.js';
import { type SegDatasetConfig, ade20kDataset, customDataset, listSamples } from './datasets.js';
import { SegEvaluator } from './metrics.js';
import { type SegModel, type SegmentOptions, segmentImage, testCfgFor } from './inference.js';
import { type SegConfig, classNamesOf, numClassesOf, paletteOf } from './configs.js';

/** Options of {@link evaluateDataset}. */
export interface EvaluateOptions extends SegmentOptions {
  /** Evaluate only the first N images (in listing order). */
  limit?: number;
  /** Called after each image. */
  onProgress?: (done: number, total: number, name: string) => void;
  /** File-size and pixel-count limits for images and labels (defaults of `readImage`). */
  limits?: ImageLimits;
  /** Called for each decoder warning of an image (a corrupt JPEG decoded anyway); they are also in the result. */
  onWarning?: (file: string, warning: string) => void;
}

/** Per-class row of an {@link EvalResult} (fractions; null where mmseg prints nan). */
export interface ClassMetric {
  class: string;
  IoU: number | null;
  Acc: number | null;
}

/** A JSON-able evaluation result. Metric values are fractions in [0, 1] (mmseg prints them ×100). */
export interface EvalResult {
  config: string;
  dataset: string;
  images: number;
  mode: 'whole' | 'slide';
  flip: boolean;
  scales: number[];
  reduce_zero_label: boolean;
  ignore_index: number;
  aAcc: number | null;
  mIoU: number | null;
  mAcc: number | null;
  per_class: ClassMetric[];
  /** mmseg's printed report (per-class table and summary). */
  table: string;
  seconds: number;
  /** Mean wall time per image in milliseconds. */
  ms_per_image: number;
  /** Decoder warnings per image (images that decoded with warnings only). */
  warnings: { image: string; warnings: string[] }[];
}

const finite = (x: number): number | null => (Number.isFinite(x) ? x : null);

/**
 * Segments every image of a dataset and scores the predictions against the labels.
 *
 * @param model the segmentor (or any {@link SegModel})
 * @param config the model's config (test pipeline, mode, classes)
 * @param dataset images, labels, classes and label options (see `datasets.ts` or {@link datasetFromConfig})
 */
export async function evaluateDataset(model: SegModel, config: SegConfig, dataset: SegDatasetConfig, o: EvaluateOptions = {}): Promise<EvalResult> {
  const numClasses = numClassesOf(config);
  if (dataset.classes.length !== numClasses) {
    throw new Error(`dataset '${dataset.name}' has ${dataset.classes.length} classes but the model predicts ${numClasses}`);
  }
  if (dataset.annDir === null) throw new Error(`dataset '${dataset.name}' has no annotation folder; cannot evaluate`);
  let samples = listSamples(dataset);
  if (o.limit !== undefined) {
    if (!Number.isInteger(o.limit) || o.limit < 1) throw new RangeError(`limit must be a positive integer, got ${o.limit}`);
    samples = samples.slice(0, o.limit);
  }
  const ev = new SegEvaluator({ numClasses, ignoreIndex: dataset.ignoreIndex, reduceZeroLabel: dataset.reduceZeroLabel });
  const t0 = performance.now();
  let done = 0;
  const scales = [...(o.scales ?? config.test_pipeline.img_ratios ?? [1])];
  const flip = o.flip ?? config.test_pipeline.flip;
  const mode = testCfgFor(config, o.mode).mode;
  const warnings: EvalResult['warnings'] = [];
  for (const s of samples) {
    // An unreadable image or label stops the evaluation with an error naming the file (and the sample): a score over
    // a subset of the dataset would be a different number from the one asked for.
    let image: Awaited<ReturnType<typeof readImage>>;
    let label: Awaited<ReturnType<typeof readLabelMap>>;
    try {
      [image, label] = await Promise.all([readImage(s.image, o.limits), readLabelMap(s.label!, o.limits)]);
    } catch (e) {
      throw new Error(`dataset '${dataset.name}', sample ${done + 1} of ${samples.length} (${s.name}): ${(e as Error).message}`, { cause: e });
    }
    if (image.height !== label.height || image.width !== label.width) {
      throw new Error(`${s.label}: label is ${label.width}x${label.height} but image ${s.image} is ${image.width}x${image.height}`);
    }
    if (image.warnings?.length) {
      warnings.push({ image: s.image, warnings: image.warnings });
      for (const w of image.warnings) o.onWarning?.(s.image, w);
    }
    const r = segmentImage(model, image, config, { ...o, scales, flip, mode });
    ev.add(r.labels, label.data);
    done++;
    o.onProgress?.(done, samples.length, s.name);
  }
  const seconds = (performance.now() - t0) / 1000;
  const sum = ev.summary();
  return {
    config: config.name, dataset: dataset.name, images: done, mode, flip, scales,
    reduce_zero_label: dataset.reduceZeroLabel, ignore_index: dataset.ignoreIndex,
    aAcc: finite(sum.aAcc), mIoU: finite(sum.mIoU), mAcc: finite(sum.mAcc),
    per_class: dataset.classes.map((c, i) => ({ class: c, IoU: finite(sum.IoU[i]!), Acc: finite(sum.Acc[i]!) })),
    table: ev.formatTable([...dataset.classes]),
    seconds, ms_per_image: done ? (seconds * 1000) / done : 0, warnings,
  };
}

/** Options of {@link datasetFromConfig}: replace the config's dataset settings. */
export interface DatasetOverrides {
  /** Dataset root (mmseg `data_root`); for ADE20K the `ADEChallengeData2016` folder. */
  dataRoot?: string;
  /** `ade20k` or `custom` (default: the config's dataset type). */
  kind?: 'ade20k' | 'custom';
  /**
   * Label convention (`reduce_zero_label`). Default: ADE20K's (true) for `ade20k`; for `custom`, the config's value
   * when the config itself describes a custom dataset, else false — a custom dataset never inherits ADE20K's.
   */
  imgDir?: string;
  annDir?: string;
  imgSuffix?: string;
  segMapSuffix?: string;
  classes?: string[];
  reduceZeroLabel?: boolean;
}

/**
 * The evaluation dataset of a config (its `dataset` section), with overrides. ADE20K: `<root>/images/validation`
 * and `<root>/annotations/validation` unless `imgDir`/`annDir` are given. Custom: folders relative to the root.
 */
export function datasetFromConfig(config: SegConfig, o: DatasetOverrides = {}): SegDatasetConfig {
  const d = config.dataset;
  const kind = o.kind ?? (d.type === 'ADE20KDataset' ? 'ade20k' : 'custom');
  const root = o.dataRoot ?? d.data_root;
  if (kind === 'ade20k' && !o.imgDir && !o.annDir && !o.imgSuffix && !o.segMapSuffix && !o.classes && o.reduceZeroLabel === undefined) {
    return ade20kDataset(root, 'validation');
  }
  // mmseg's CustomDataset defaults to reduce_zero_label=False; ADE20K's True belongs to ADE20KDataset and must not
  // leak into a custom dataset evaluated with an ADE20K-derived config.
  const reduceZeroLabel = o.reduceZeroLabel ?? (kind === 'custom' && d.type === 'ADE20KDataset' ? false : d.reduce_zero_label);
  const classes = o.classes ?? [...classNamesOf(config)];
  const palette = o.classes ? undefined : paletteOf(config);
  return customDataset({
    name: kind === 'ade20k' ? 'ade20k' : 'custom',
    dataRoot: root,
    imgDir: o.imgDir ?? d.img_dir,
    annDir: o.annDir ?? d.ann_dir,
    imgSuffix: o.imgSuffix ?? d.img_suffix,
    segMapSuffix: o.segMapSuffix ?? d.seg_map_suffix,
    classes,
    ...(palette ? { palette } : {}),
    reduceZeroLabel,
    ignoreIndex: d.ignore_index,
  });
}
