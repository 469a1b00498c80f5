/**
 * One training sample of a segmentation dataset: read the image (sharp) and the label PNG, check them, and run the
 * mmseg train pipeline with a generator seeded from `(seed, epoch, index)`. Pure typed-array work apart from the
 * file reads, so it runs unchanged in a worker thread (`train-worker.ts`) or in-process (`--workers 0`).
 */
import { readImage, readLabelMap } from '../../io/image.js';
import type { SampleTask } from '../../train/loader.js';
import { type TrainPipelineCfg, trainPipeline } from './pipeline-train.js';
import { SeededRandom } from '../../train/random.js';

/** What a data worker needs (structured-clonable: sent as `workerData`). */
export interface SegSampleContext {
  /** Image and label paths, by dataset index. */
  samples: { image: string; label: string }[];
  pipeline: TrainPipelineCfg;
  /** Classes the model predicts: raw label values must be below this (after reduce_zero_label), or the ignore index. */
  numClasses: number;
  ignoreIndex: number;
  reduceZeroLabel: boolean;
}

/** A processed sample, ready to batch. */
export interface SegTrainSample {
  /** 3×H×W normalised float32. */
  img: Float32Array;
  /** H×W labels (255 = ignore). */
  label: Uint8Array;
  height: number;
  width: number;
  /** Dataset index. */
  index: number;
}

function checkLabelValues(file: string, data: Uint8Array, ctx: SegSampleContext): void {
  const max = ctx.reduceZeroLabel ? ctx.numClasses : ctx.numClasses - 1;
  let bad = -1;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (v > max && v !== ctx.ignoreIndex) {
      bad = v;
      break;
    }
  }
  if (bad >= 0) {
    throw new Error(`${file}: class id ${bad} out of range: the config has ${ctx.numClasses} classes ` +
      `(label values 0..${max}${ctx.reduceZeroLabel ? ' with reduce_zero_label' : ''}, ${ctx.ignoreIndex} = ignore)`);
  }
}

/** The sample function of a context (see the module notes). */
export function segSampleFn(ctx: SegSampleContext): (task: SampleTask) => Promise<SegTrainSample> {
  return async (task) => {
    const s = ctx.samples[task.index];
    if (!s) throw new Error(`sample index ${task.index} out of range (${ctx.samples.length} samples)`);
    const [image, label] = await Promise.all([readImage(s.image), readLabelMap(s.label)]);
    if (image.height !== label.height || image.width !== label.width) {
      throw new Error(`${s.label}: label map is ${label.width}x${label.height} but its image ${s.image} is ${image.width}x${image.height}`);
    }
    checkLabelValues(s.label, label.data, ctx);
    const rng = new SeededRandom(task.seed, task.epoch, task.index);
    try {
      const out = trainPipeline({ image, label, channelOrder: 'rgb' }, ctx.pipeline, rng);
      return { img: out.img, label: out.label, height: out.height, width: out.width, index: task.index };
    } catch (e) {
      throw new Error(`${s.image}: ${(e as Error).message}`);
    }
  };
}
