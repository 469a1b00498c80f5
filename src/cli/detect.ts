/**
 * Detection commands of the `vit-adapter` CLI: `detect` (overlay PNGs and COCO results of images), and the
 * detection parts of the shared commands — `eval --task detection` (COCO bbox / segm evaluation of a split),
 * `configs` (lists the detection presets after the segmentation ones) and `synth --coco` (the generated dataset's
 * instances as COCO JSON). {@link withDetection} wraps the segmentation / training command objects so that their
 * behaviour without the new options is unchanged.
 */
import { basename, dirname, join, resolve } from 'node:path';
import { manualSeed } from '../engine/index.js';
import { ensureDir, readRegularFile, writeFileAtomic } from '../io/files.js';
import { readImage } from '../io/image.js';
import type { MaskRCNN } from '../models/detectors/index.js';
import { ProgressBar } from '../tools/progress.js';
import { listConfigs } from '../tasks/segmentation/configs.js';
import { writeSyntheticSplits } from '../tasks/segmentation/synth-splits.js';
import { detectionPalette } from '../tasks/detection/classes.js';
import { type DetConfig, isDetPreset, listDetConfigs, loadDetConfig } from '../tasks/detection/configs.js';
import { buildDetector, detectImage, loadDetector } from '../tasks/detection/detector.js';
import { type DetEvalResult, detectionsToCocoResults, evaluateDetection } from '../tasks/detection/evaluate.js';
import { writeOverlay } from '../tasks/detection/overlay.js';
import { writeSyntheticCoco } from '../tasks/detection/synthetic.js';
import { type OptionSpec, type Parsed, UsageError, intOption, stringOption } from './args.js';
import { print, warn } from './output.js';
import { applyThreads, deviceOption } from './runtime.js';
import { type SegCommand, imageLimits, listImages, outputNames } from './segment.js';
import { synthOptions } from './train.js';

/** A CLI command (the shape of `main.ts`'s `commands` entries; the same as the segmentation commands'). */
export type DetCommand = SegCommand;

/** The warning printed whenever a detector runs without trained weights. */
export const DET_UNTRAINED_WARNING =
  'WARNING: no --checkpoint given: the detector has RANDOM, UNTRAINED weights. Its boxes, classes and masks are not ' +
  'meaningful; pass --checkpoint FILE (an mmdetection/ViT-Adapter Mask R-CNN .pth or .safetensors) for real detections.';

/** The detection config used when `--config` is not given. */
export const DEFAULT_DET_CONFIG = 'mask_rcnn_deit_adapter_tiny_fpn_3x_coco';

/** Builds (seeded random weights, with the warning) or loads the detector. */
function prepareDetector(config: DetConfig, checkpoint: string | undefined, seed: number, device: string, allowNonfinite: boolean): MaskRCNN {
  if (!checkpoint) {
    warn(DET_UNTRAINED_WARNING);
    warn(`note: the random weights are seeded (--seed ${seed}), so runs with the same seed give the same detections.`);
    manualSeed(seed);
    return buildDetector(config, { device });
  }
  const { model, report } = loadDetector(config, checkpoint, { device, allowNonfinite });
  for (const n of report.notes) warn(`note: ${n}`);
  return model;
}


/** `--score-thr`: a number in [0, 1]. */
function scoreThrOption(p: Parsed, dflt: number): number {
  const v = p.options['score-thr'];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw new UsageError(`--score-thr must be a number in [0, 1], got ${String(v)}`);
  return v;
}

/** `detect <image|folder>...`. */
export const detectCommand: DetCommand = {
  summary: 'detect objects and instance masks (Mask R-CNN): overlay PNGs and COCO results JSON per image',
  usage: 'vit-adapter detect <image|folder>... [--config NAME|file.json] [--checkpoint FILE] [--score-thr 0.3] [--out DIR] ' +
    '[--seed N] [--device cpu|cuda] [--threads N] [--top K] [--fail-fast] [--max-megapixels 250] [--max-file-mib 512] [--allow-nonfinite] [--json]',
  options: {
    config: 'string', checkpoint: 'string', 'score-thr': 'number', out: 'string', seed: 'number', device: 'string', threads: 'number',
    top: 'number', 'fail-fast': 'boolean', 'max-megapixels': 'number', 'max-file-mib': 'number', 'allow-nonfinite': 'boolean', json: 'boolean',
  },
  async run(p) {
    applyThreads(p);
    if (p.positionals.length === 0) throw new UsageError('detect: give at least one image or folder');
    const config = loadDetConfig(stringOption(p, 'config') ?? DEFAULT_DET_CONFIG);
    const device = deviceOption(p);
    const scoreThr = scoreThrOption(p, 0.3);
    const seed = intOption(p, 'seed', 0, 0);
    const top = intOption(p, 'top', 10, 0);
    const limits = imageLimits(p);
    const failFast = Boolean(p.options['fail-fast']);
    const json = Boolean(p.options.json);
    const { files, failures } = listImages(p.positionals, { outputs: /_detections\.png$/i });
    for (const f of failures) warn(`error: ${f.input}: ${f.error}`);
    if (failFast && failures.length) files.length = 0;
    const outDir = stringOption(p, 'out') ?? 'detect-output';
    const checkpoint = stringOption(p, 'checkpoint');
    ensureDir(outDir);
    const names = outputNames(files);
    const model = files.length ? prepareDetector(config, checkpoint, seed, device, Boolean(p.options['allow-nonfinite'])) : null;
    if (!json) print(`config ${config.name}${checkpoint ? `, checkpoint ${checkpoint}` : ` (untrained, seed ${seed})`}, ${files.length} image(s), score ≥ ${scoreThr} → ${resolve(outDir)}`);
    const palette = detectionPalette(config.classes.length);
    const written = new Set(files.map((f) => resolve(f)));
    const images: unknown[] = [];
    const bar = files.length > 1 ? new ProgressBar(files.length, { label: 'detect' }) : null;
    const clearBar = (): void => { if (bar && process.stderr.isTTY) process.stderr.write('\r\x1b[K'); };
    try {
      for (let i = 0; i < files.length && model; i++) {
        const file = files[i]!;
        try {
          const image = await readImage(file, limits);
          const warnings = image.warnings ?? [];
          for (const w of warnings) { clearBar(); warn(`warning: ${file}: decoder: ${w} (the image was decoded anyway; expect artefacts)`); }
          const r = detectImage(model, config, image, { device });
          const overlay = join(outDir, `${names[i]}_detections.png`);
          const resultsPath = join(outDir, `${names[i]}_results.json`);
          for (const pth of [overlay, resultsPath]) {
            if (written.has(resolve(pth))) throw new Error(`output ${pth} would overwrite a file of this run (an input or another output)`);
            written.add(resolve(pth));
          }
          const d = r.detections;
          const results = detectionsToCocoResults(d, i + 1, config.category_ids, image.height, image.width, scoreThr);
          writeFileAtomic(resultsPath, `${JSON.stringify(results)}\n`);
          await writeOverlay(overlay, image, d, { classNames: config.classes, palette, scoreThr });
          const kept = [...Array(d.scores.length).keys()].filter((k) => d.scores[k]! >= scoreThr).sort((a, b) => d.scores[b]! - d.scores[a]! || a - b);
          const dets = kept.map((k) => ({
            label: d.labels[k]!, class: config.classes[d.labels[k]!] ?? String(d.labels[k]), score: d.scores[k]!,
            bbox: [d.boxes[4 * k]!, d.boxes[4 * k + 1]!, d.boxes[4 * k + 2]!, d.boxes[4 * k + 3]!],
            mask_area: d.masks ? countMask(d.masks, k, image.height * image.width) : null,
          }));
          images.push({
            input: file, overlay, results: resultsPath, image_id: i + 1, height: image.height, width: image.width, ms: Math.round(r.ms),
            detections: dets, total_detections: d.scores.length, warnings,
          });
          if (!json) {
            clearBar();
            print(`${file}: ${image.width}x${image.height}, ${dets.length} detection(s) with score ≥ ${scoreThr} (of ${d.scores.length}), ${Math.round(r.ms)} ms → ${overlay}, ${resultsPath}`);
            for (const x of dets.slice(0, top)) {
              print(`  ${x.class.padEnd(16)} ${x.score.toFixed(3)}  [${x.bbox.map((v) => v.toFixed(1)).join(', ')}]${x.mask_area !== null ? `  mask ${x.mask_area} px` : ''}`);
            }
            if (dets.length > top) print(`  (${dets.length - top} more)`);
          }
        } catch (e) {
          const msg = (e as Error).message;
          const reason = msg.startsWith(`${file}: `) ? msg.slice(file.length + 2) : msg;
          failures.push({ input: file, error: reason });
          clearBar();
          warn(`error: ${file}: ${reason}`);
          if (failFast) break;
        }
        bar?.tick(1, basename(file));
      }
    } finally {
      bar?.finish();
      model?.dispose();
    }
    if (json) {
      print(JSON.stringify({
        config: config.name, checkpoint: checkpoint ?? null, untrained: !checkpoint, seed: checkpoint ? null : seed, device,
        score_thr: scoreThr, classes: config.classes, images, failures,
      }));
    } else if (failures.length) {
      print(`${failures.length} input(s) failed:`);
      for (const f of failures) print(`  ${f.input}: ${f.error}`);
    }
    return failures.length ? 1 : 0;
  },
};

function countMask(masks: Uint8Array, k: number, plane: number): number {
  let n = 0;
  for (let p = k * plane; p < (k + 1) * plane; p++) n += masks[p]! ? 1 : 0;
  return n;
}

const DET_EVAL_OPTIONS: OptionSpec = {
  task: 'string', config: 'string', checkpoint: 'string', data: 'string', ann: 'string', 'img-dir': 'string', limit: 'number',
  device: 'string', threads: 'number', seed: 'number', results: 'string', out: 'string', json: 'boolean',
  'max-megapixels': 'number', 'max-file-mib': 'number', 'allow-nonfinite': 'boolean',
};

const DET_EVAL_USAGE = 'vit-adapter eval --task detection --config NAME|file.json [--checkpoint FILE] --data COCO_ROOT [--ann FILE] ' +
  '[--img-dir DIR] [--limit N] [--device cpu|cuda] [--threads N] [--seed N] [--results dt.json] [--out metrics.json] [--json]';

/** AP figures in percent; -1 (pycocotools: nothing to evaluate in that slice) prints as `n/a`. */
const fmtStats = (s: number[]): string => ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl']
  .map((k, i) => `${k} ${s[i]! < 0 ? 'n/a' : (s[i]! * 100).toFixed(1)}`).join('  ');

/** `eval --task detection`: runs the detector over a COCO split, bbox and segm COCOeval. */
async function runDetectionEval(p: Parsed): Promise<number> {
  applyThreads(p);
  if (p.positionals.length) throw new UsageError(`eval: unexpected argument ${JSON.stringify(p.positionals[0])}`);
  const data = stringOption(p, 'data');
  if (!data) throw new UsageError('eval --task detection: --data COCO_ROOT is required');
  const config = loadDetConfig(stringOption(p, 'config') ?? DEFAULT_DET_CONFIG);
  const limit = p.options.limit === undefined ? undefined : intOption(p, 'limit', 1);
  const device = deviceOption(p);
  const seed = intOption(p, 'seed', 0, 0);
  const checkpoint = stringOption(p, 'checkpoint');
  const out = stringOption(p, 'out');
  const resultsFile = stringOption(p, 'results');
  for (const f of [out, resultsFile]) if (f) ensureDir(dirname(resolve(f)));
  const model = prepareDetector(config, checkpoint, seed, device, Boolean(p.options['allow-nonfinite']));
  let bar: ProgressBar | null = null;
  let r: DetEvalResult;
  try {
    r = await evaluateDetection(model, config, {
      dataRoot: data, ...(stringOption(p, 'ann') ? { annFile: stringOption(p, 'ann')! } : {}), ...(stringOption(p, 'img-dir') ? { imgDir: stringOption(p, 'img-dir')! } : {}),
      ...(limit !== undefined ? { limit } : {}), device, limits: imageLimits(p),
      onProgress: (done, total, name) => {
        bar ??= new ProgressBar(total, { label: 'eval' });
        bar.tick(1, name);
        if (done === total) bar.finish();
      },
      onWarning: (file, w) => warn(`warning: ${file}: decoder: ${w} (decoded anyway; expect artefacts)`),
    });
  } finally {
    model.dispose();
  }
  if (resultsFile) writeFileAtomic(resultsFile, `${JSON.stringify(r.results)}\n`);
  const { results: _omit, ...metrics } = r;
  const summary = { ...metrics, task: 'detection', checkpoint: checkpoint ?? null, untrained: !checkpoint, seed: checkpoint ? null : seed, results_file: resultsFile ?? null };
  if (out) writeFileAtomic(out, `${JSON.stringify(summary, null, 2)}\n`);
  if (p.options.json) {
    print(JSON.stringify(summary));
    return 0;
  }
  print(`evaluated ${r.images} image(s) of ${r.ann_file} with ${r.config}: ${r.detections} detections in ${r.seconds.toFixed(1)} s (${r.ms_per_image.toFixed(0)} ms/image)`);
  for (const [name, m] of [['bbox', r.bbox], ['segm', r.segm]] as const) {
    if (!m) {
      print(`\n${name}: no ${name === 'segm' ? 'mask ' : ''}detections on the evaluated images: nothing to evaluate (mmdetection skips the metric too)`);
      continue;
    }
    print(`\nEvaluating ${name}:\n${m.summary}`);
    print(`${name}: ${fmtStats(m.stats)}`);
  }
  if (resultsFile) print(`wrote ${resultsFile}`);
  if (out) print(`wrote ${out}`);
  return 0;
}

/** Whether a `--config` value names a detection config (a detection preset, or a JSON file for one). */
export function isDetectionConfig(nameOrPath: string | undefined): boolean {
  if (!nameOrPath) return false;
  if (isDetPreset(nameOrPath)) return true;
  if (!nameOrPath.toLowerCase().endsWith('.json')) return false;
  try {
    // a regular file of at most 16 MiB, as the config loaders read it (a FIFO named *.json must not hang)
    const raw = JSON.parse(new TextDecoder().decode(readRegularFile(nameOrPath, { maxBytes: 16 * 2 ** 20, what: 'config file' }))) as { task?: unknown; base?: unknown };
    return raw.task === 'detection' || (typeof raw.base === 'string' && isDetPreset(raw.base));
  } catch {
    return false; // the segmentation loader reports unreadable files
  }
}

/** `eval` with `--task segmentation|detection` (segmentation when absent, unless `--config` is a detection config). */
export function evalWithTask(seg: DetCommand): DetCommand {
  const detOnly = Object.keys(DET_EVAL_OPTIONS).filter((k) => !(k in seg.options) && k !== 'task');
  const segOnly = Object.keys(seg.options).filter((k) => !(k in DET_EVAL_OPTIONS));
  return {
    summary: `${seg.summary}; --task detection: COCO bbox/segm AP of a detector`,
    usage: `${seg.usage}\n       ${DET_EVAL_USAGE}`,
    options: { ...seg.options, ...DET_EVAL_OPTIONS },
    async run(p) {
      const task = stringOption(p, 'task') ?? (isDetectionConfig(stringOption(p, 'config')) ? 'detection' : 'segmentation');
      const given = Object.keys(p.options).filter((k) => p.options[k] !== undefined);
      if (task === 'detection') {
        const bad = given.filter((k) => segOnly.includes(k));
        if (bad.length) throw new UsageError(`eval --task detection: ${bad.map((k) => `--${k}`).join(', ')} apply to segmentation only`);
        return runDetectionEval(p);
      }
      if (task !== 'segmentation') throw new UsageError(`--task must be segmentation or detection, got ${JSON.stringify(task)}`);
      const bad = given.filter((k) => detOnly.includes(k));
      if (bad.length) throw new UsageError(`eval: ${bad.map((k) => `--${k}`).join(', ')} apply to --task detection only`);
      const { task: _t, ...rest } = p.options;
      return seg.run({ positionals: p.positionals, options: rest });
    },
  };
}

/** `configs`: the segmentation presets, then the detection presets. */
export function configsWithDetection(seg: DetCommand): DetCommand {
  return {
    summary: 'list the config presets (segmentation: the authors\' ADE20K configs and the synthetic demo; detection: COCO Mask R-CNN)',
    usage: seg.usage,
    options: seg.options,
    async run(p) {
      if (p.options.json) {
        if (p.positionals.length) throw new UsageError('configs: takes no arguments');
        print(JSON.stringify([...listConfigs(), ...listDetConfigs()]));
        return 0;
      }
      const code = await seg.run(p);
      if (code !== 0) return code;
      const rows = listDetConfigs();
      const w = Math.max(...rows.map((r) => r.name.length));
      print('\nDetection (vit-adapter detect / eval --task detection):');
      for (const r of rows) {
        print(`${r.name.padEnd(w)}  D=${String(r.embed_dim).padEnd(4)} MaskRCNN            ${String(r.num_classes).padStart(3)} cls  ${r.img_scale.join('×')}`);
        print(`${''.padEnd(w)}  ${r.description}`);
      }
      return 0;
    },
  };
}

/** `synth` with `--coco`: also write the scenes' instances as COCO JSON (`annotations/instances_{train,val}.json`). */
export function synthWithCoco(seg: DetCommand): DetCommand {
  return {
    summary: `${seg.summary}; --coco adds COCO instance annotations`,
    usage: seg.usage.replace(' [--json]', ' [--coco] [--json]'),
    options: { ...seg.options, coco: 'boolean' },
    async run(p) {
      if (!p.options.coco) return seg.run(p);
      const { out, ...o } = synthOptions(p);
      const { size, seed } = o;
      const bar = new ProgressBar(2 * o.count, { label: 'synth' });
      const opts = { ...o, onProgress: () => bar.tick() };
      const r = await writeSyntheticSplits(out, opts);
      const c = writeSyntheticCoco(out, opts);
      bar.finish();
      const res = {
        out: resolve(out), train: r.train, val: r.val, size, seed, layout: 'img_dir/{train,val}, ann_dir/{train,val}',
        coco: { files: c.files, image_dirs: c.imageDirs, images: c.images, annotations: c.annotations },
      };
      if (p.options.json) print(JSON.stringify(res));
      else {
        print(`wrote ${r.train} train + ${r.val} val scenes (${size}×${size}, seed ${seed}) to ${res.out}`);
        print(`COCO instances: ${c.files.train} (${c.annotations.train} annotations), ${c.files.val} (${c.annotations.val} annotations)`);
      }
      return 0;
    },
  };
}

/**
 * The detection commands, and the shared commands with their detection options, for `main.ts`: spread after the
 * segmentation and training commands.
 */
export function withDetection(seg: { eval: DetCommand; configs: DetCommand }, train: { synth: DetCommand }): Record<'detect' | 'eval' | 'configs' | 'synth', DetCommand> {
  return { detect: detectCommand, eval: evalWithTask(seg.eval), configs: configsWithDetection(seg.configs), synth: synthWithCoco(train.synth) };
}

