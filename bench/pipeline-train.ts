/**
 * Throughput of the training pipeline (`trainPipeline`, src/tasks/segmentation/pipeline-train.ts) on one thread, for
 * sizing the data-loader workers: samples/s for a generated scene at the recipe's config, against the same
 * transforms run one by one as mmseg does (full-image resize, then crop: the baseline, in the same process and on
 * the same draws). Both paths must give identical outputs; the script checks that.
 *
 *   node dist/bench/pipeline-train.js [--size 683x512] [--crop 512] [--samples 40] [--warmup 5] [--seed 0] [--json]
 */
import { loadavg } from 'node:os';
import { generateScene } from '../src/tasks/segmentation/synthetic.js';
import {
  ADE20K_TRAIN_PIPELINE,
  hwcToChw,
  normalizeHWC,
  normalizeLut,
  padHWC,
  photoMetricDistortion,
  randomCrop,
  randomFlip,
  randomResize,
  reduceZeroLabel,
  scaledTrainPipelineCfg,
  trainPipeline,
  type ImageLabelPair,
  type TrainPipelineCfg,
  type TrainPipelineInput,
} from '../src/tasks/segmentation/pipeline-train.js';
import { SeededRandom } from '../src/train/random.js';
import { cpuSeconds, intArg, machineLine, loadEndLine, ms, parseFlags, printRows, reporters, stats, type Stats } from './common.js';

const USAGE = `usage: node dist/bench/pipeline-train.js [--size WxH] [--crop C] [--samples N] [--warmup N] [--seed S] [--json]
  --size     input image size (default 683x512, a typical ADE20K image)
  --crop     crop/pad side; 512 = the recipe's ADE20K_TRAIN_PIPELINE, other values scaledTrainPipelineCfg(C)
  --samples  timed samples per path (default 40); sample i uses SeededRandom(seed, i) on both paths
  --warmup   untimed samples first (default 5)
  --json     print one JSON object instead of the tables`;

let width = 683;
let height = 512;
let crop = 512;
let samples = 40;
let warmup = 5;
let seed = 0;
let json = false;
parseFlags(process.argv.slice(2), USAGE, (flag, val) => {
  switch (flag) {
    case '--size': {
      const m = /^(\d+)x(\d+)$/.exec(val());
      if (!m) throw new Error(`--size: expected WxH, e.g. 683x512`);
      width = intArg('--size width', m[1], 1);
      height = intArg('--size height', m[2], 1);
      return true;
    }
    case '--crop': crop = intArg('--crop', val(), 1); return true;
    case '--samples': samples = intArg('--samples', val(), 1); return true;
    case '--warmup': warmup = intArg('--warmup', val(), 0); return true;
    case '--seed': seed = intArg('--seed', val(), 0); return true;
    case '--json': json = true; return true;
    default: return false;
  }
});

const { log } = reporters(json);
const cfg: TrainPipelineCfg = crop === 512 ? { ...ADE20K_TRAIN_PIPELINE } : scaledTrainPipelineCfg(crop);
const scene = generateScene({ width, height, seed: 12345 });
const input: TrainPipelineInput = {
  image: { data: scene.image, height, width },
  label: { data: scene.semantic, height, width },
  channelOrder: 'rgb',
};

type Out = { img: Float32Array; label: Uint8Array };
const STAGES = ['reduce', 'resize', 'crop', 'flip', 'photometric', 'normalize+pad+chw'] as const;
const stageTime: Record<string, number> = Object.fromEntries(STAGES.map((s) => [s, 0]));

/** mmseg's order, one transform after the other on whole arrays. */
function stepByStep(rng: SeededRandom): Out {
  const t = (k: string, t0: number): void => { stageTime[k]! += performance.now() - t0; };
  let t0 = performance.now();
  let pair: ImageLabelPair = { img: scene.image, label: reduceZeroLabel(scene.semantic), height, width };
  t('reduce', t0);
  t0 = performance.now();
  pair = randomResize(pair, cfg.imgScale, cfg.ratioRange, rng);
  t('resize', t0);
  t0 = performance.now();
  pair = randomCrop(pair, cfg.cropSize, cfg.catMaxRatio, cfg.ignoreIndex, rng);
  t('crop', t0);
  t0 = performance.now();
  pair = randomFlip(pair, cfg.flipProb, rng);
  t('flip', t0);
  t0 = performance.now();
  const pm = photoMetricDistortion(pair.img, pair.height, pair.width, cfg.photoMetric!, rng, 'rgb', cfg.hsvVectorBlock);
  t('photometric', t0);
  t0 = performance.now();
  const norm = normalizeHWC(pm.img, pair.height, pair.width, normalizeLut(cfg.mean, cfg.std), 'rgb', cfg.toRgb);
  const [ph, pw] = cfg.padSize!;
  const img = hwcToChw(padHWC(norm, pair.height, pair.width, 3, ph, pw, cfg.padVal), ph, pw);
  const label = padHWC(pair.label, pair.height, pair.width, 1, ph, pw, cfg.segPadVal);
  t('normalize+pad+chw', t0);
  return { img, label };
}

function timeRun(fn: (rng: SeededRandom) => Out, keep: Out[] | null): Stats {
  for (let i = 0; i < warmup; i++) fn(new SeededRandom(seed + 1, i));
  for (const k of STAGES) stageTime[k] = 0;
  const times: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < samples; i++) {
    const rng = new SeededRandom(seed, i);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const out = fn(rng);
    times.push((performance.now() - t0) / 1000);
    cpu.push(cpuSeconds(c0));
    if (keep) keep.push(out);
  }
  return stats(times, cpu);
}

const load0 = loadavg();
log(`train pipeline throughput, one thread: ${width}x${height} generated scene, crop ${crop} ` +
  `(imgScale ${cfg.imgScale.join('x')}, ratio ${cfg.ratioRange?.join('-')}), ${samples} samples per path`);
log(machineLine(load0, '  (busy: timings inflated; compare the ratio)'));

const fusedOut: Out[] = [];
const fused = timeRun((rng) => trainPipeline(input, cfg, rng), fusedOut);
const baseOut: Out[] = [];
const base = timeRun(stepByStep, baseOut);
let identical = true;
for (let i = 0; i < samples; i++) {
  const a = fusedOut[i]!;
  const b = baseOut[i]!;
  if (a.img.length !== b.img.length || a.label.length !== b.label.length || a.img.some((v, j) => !Object.is(v, b.img[j])) || a.label.some((v, j) => v !== b.label[j])) {
    identical = false;
    break;
  }
}
const mean = (s: Stats): number => s.times_s.reduce((x, y) => x + y, 0) / s.times_s.length;
const result = {
  size: [width, height],
  crop,
  samples,
  fused: { samples_per_s: 1 / mean(fused), mean_ms: mean(fused) * 1e3, median_ms: fused.median_s * 1e3, min_ms: fused.min_s * 1e3, cpu_median_ms: fused.cpu_median_s * 1e3 },
  step_by_step: { samples_per_s: 1 / mean(base), mean_ms: mean(base) * 1e3, median_ms: base.median_s * 1e3, min_ms: base.min_s * 1e3, cpu_median_ms: base.cpu_median_s * 1e3 },
  ratio_mean: mean(fused) / mean(base),
  stage_ms_step_by_step: Object.fromEntries(STAGES.map((k) => [k, stageTime[k]! / samples])),
  outputs_identical: identical,
  load_average: { start: load0, end: loadavg() },
};
if (json) {
  console.log(JSON.stringify(result));
} else {
  printRows(
    [
      ['path', 'samples/s', 'mean ms', 'median ms', 'min ms', 'CPU ms'],
      ['trainPipeline (fused)', result.fused.samples_per_s.toFixed(1), ms(mean(fused)), ms(fused.median_s), ms(fused.min_s), ms(fused.cpu_median_s)],
      ['step by step (baseline)', result.step_by_step.samples_per_s.toFixed(1), ms(mean(base)), ms(base.median_s), ms(base.min_s), ms(base.cpu_median_s)],
    ],
    '  ',
    1,
  );
  log(`  fused / baseline (mean time): ${result.ratio_mean.toFixed(2)}; outputs identical: ${identical}`);
  log(`  baseline stages (mean ms): ${STAGES.map((k) => `${k} ${result.stage_ms_step_by_step[k]!.toFixed(1)}`).join(', ')}`);
  log(loadEndLine(loadavg()));
}
if (!identical) {
  console.error('pipeline-train bench: the fused pipeline and the step-by-step transforms disagree');
  process.exitCode = 1;
}
