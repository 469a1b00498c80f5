/**
 * Semantic-segmentation commands of the `vit-adapter` CLI: `segment`, `eval`, `configs`, `demo`. Each export has the
 * shape of the `commands` entries in `main.ts` (`{ summary, usage, options, run(p) }`).
 *
 * Human-readable output goes to stdout; warnings and the progress bar go to stderr, so `--json` output on stdout stays
 * one parseable JSON object.
 */
import { existsSync, lstatSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { manualSeed } from '../engine/index.js';
import { ensureDir, kindOf, writeFileAtomic } from '../io/files.js';
import {
  DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS, type ImageLimits, type RgbImage, blendOverlay, readImage, readImageStdin,
  writeLabelPng, writeRgbPng,
} from '../io/image.js';
import { ProgressBar } from '../tools/progress.js';
import {
  type ConfigSummary, type SegConfig, getPreset, listConfigs, loadConfig, numClassesOf, paletteOf,
} from '../tasks/segmentation/configs.js';
import { datasetFromConfig, evaluateDataset } from '../tasks/segmentation/evaluate.js';
import {
  type LoadReport, type SegmentOptions, buildSegmentor, loadSegmentor, segmentImage,
} from '../tasks/segmentation/inference.js';
import { SegEvaluator } from '../tasks/segmentation/metrics.js';
import type { EncoderDecoder } from '../tasks/segmentation/segmentor.js';
import { SYNTHETIC_CLASSES, generateScene } from '../tasks/segmentation/synthetic.js';
import { type OptionSpec, type Parsed, UsageError, intOption, stringOption } from './args.js';
import { print, warn } from './output.js';
import { applyThreads, deviceOption } from './runtime.js';

/** A CLI command (the shape of `main.ts`'s `commands` entries). */
export interface SegCommand {
  summary: string;
  usage: string;
  options: OptionSpec;
  run(p: Parsed): Promise<number> | number;
}

/** The warning printed whenever a model runs without trained weights. */
export const UNTRAINED_WARNING =
  'WARNING: no --checkpoint given: the model has RANDOM, UNTRAINED weights. Its labels are not meaningful; ' +
  'pass --checkpoint FILE (an mmseg/ViT-Adapter .pth or .safetensors) for real predictions.';

/** The note the demo prints when it runs without trained weights (no shipped model and no --checkpoint). */
export const DEMO_NOTE = 'untrained demo model — labels are not meaningful until a trained checkpoint exists';

/** Seed of the random weights of a model run without a checkpoint (`--seed` changes it). */
export const DEFAULT_WEIGHT_SEED = 0;

const DEFAULT_CONFIG = 'upernet_deit_adapter_tiny_512_160k_ade20k';

/** The trained synthetic-scene model that ships with the package (see README "Training"), and its preset. */
export const SYNTH_CHECKPOINT = fileURLToPath(new URL('../../../assets/vit-adapter-synth.safetensors', import.meta.url));
export const SYNTH_CONFIG = 'upernet_vit_adapter_synth';

/** The shipped checkpoint for a config without `--checkpoint`: the trained synthetic model for its preset, else none. */
function defaultCheckpoint(config: SegConfig): string | undefined {
  return config.name === SYNTH_CONFIG && existsSync(SYNTH_CHECKPOINT) ? SYNTH_CHECKPOINT : undefined;
}
const IMAGE_EXTS = new Set(['.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff']);
/** Largest `--scales` ratio accepted (the authors' largest is 1.75). */
const MAX_SCALE_RATIO = 8;
/** The name under which `segment -` (an image on stdin) is reported and its outputs are named. */
const STDIN = '-';


function modeOption(p: Parsed): 'whole' | 'slide' | undefined {
  const m = stringOption(p, 'mode');
  if (m === undefined) return undefined;
  if (m !== 'whole' && m !== 'slide') throw new UsageError(`--mode must be whole or slide, got ${JSON.stringify(m)}`);
  return m;
}

function scalesOption(p: Parsed): number[] | undefined {
  const s = stringOption(p, 'scales');
  if (s === undefined) return undefined;
  const v = s.split(',').map((x) => x.trim()).filter((x) => x !== '').map(Number);
  if (v.length === 0 || v.some((x) => !Number.isFinite(x) || x <= 0)) {
    throw new UsageError(`--scales expects comma-separated positive ratios (e.g. 0.5,0.75,1.0,1.25,1.5,1.75), got ${JSON.stringify(s)}`);
  }
  const big = v.find((x) => x > MAX_SCALE_RATIO);
  if (big !== undefined) {
    throw new UsageError(`--scales: ratio ${big} is above ${MAX_SCALE_RATIO}; ratios are fractions of the config's img_scale ` +
      '(the authors use 0.5,0.75,1.0,1.25,1.5,1.75)');
  }
  return v;
}

function segmentOptions(p: Parsed, device: string): SegmentOptions {
  const o: SegmentOptions = { device };
  const mode = modeOption(p);
  if (mode) o.mode = mode;
  if (p.options.flip) o.flip = true;
  const scales = scalesOption(p);
  if (scales) o.scales = scales;
  return o;
}

/** `--max-megapixels` / `--max-file-mib`: the image limits (defaults 250 megapixels, 512 MiB). */
export function imageLimits(p: Parsed): Required<ImageLimits> {
  const num = (key: string, dflt: number): number => {
    const v = p.options[key];
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !(v > 0)) throw new UsageError(`--${key} must be a positive number, got ${String(v)}`);
    return v;
  };
  return {
    maxPixels: Math.floor(num('max-megapixels', DEFAULT_MAX_IMAGE_PIXELS / 1e6) * 1e6),
    maxBytes: Math.floor(num('max-file-mib', DEFAULT_MAX_IMAGE_BYTES / 2 ** 20) * 2 ** 20),
  };
}

/** Options of the model-building commands' untrained path. */
interface ModelSource { checkpoint: string | undefined; seed: number; device: string; allowNonfinite?: boolean }

/**
 * Builds or loads the model; prints the untrained warning (with the weight seed) or the loader's notes to stderr.
 * Random weights are seeded, so two runs without a checkpoint give the same labels.
 */
function prepareModel(config: SegConfig, src: ModelSource): { model: EncoderDecoder; report: LoadReport | null } {
  const { checkpoint, seed, device, allowNonfinite = false } = src;
  if (!checkpoint) {
    warn(UNTRAINED_WARNING);
    warn(`note: the random weights are seeded (--seed ${seed}), so runs with the same seed give the same labels.`);
    manualSeed(seed);
    return { model: buildSegmentor(config, { device }), report: null };
  }
  const { model, report } = loadSegmentor(config, checkpoint, { device, allowNonfinite });
  for (const n of report.notes) warn(`note: ${n}`);
  return { model, report };
}

/** An input that could not be processed: the file and why. */
export interface InputFailure {
  input: string;
  error: string;
}

/**
 * The images named on the command line (folders expanded, sorted), and the inputs that are already known bad.
 *
 * @param inputs files and folders as given
 * @param o `outputs`: the command's own output files, skipped when a folder is processed again; `stdinCommand`: the
 *   command that accepts `-` (standard input, once), else `-` is an ordinary path
 */
export function listImages(inputs: readonly string[], o: { outputs: RegExp; stdinCommand?: string }): { files: string[]; failures: InputFailure[] } {
  const files: string[] = [];
  const failures: InputFailure[] = [];
  let stdinSeen = false;
  for (const inp of inputs) {
    if (inp === STDIN && o.stdinCommand !== undefined) {
      if (stdinSeen) throw new UsageError(`${o.stdinCommand}: "-" (standard input) may be given only once`);
      stdinSeen = true;
      files.push(inp);
      continue;
    }
    let st;
    try {
      st = statSync(inp);
    } catch (e) {
      let link = false;
      try { link = lstatSync(inp).isSymbolicLink(); } catch { /* nothing there */ }
      failures.push({ input: inp, error: link ? 'dangling symbolic link (its target does not exist)' : `no such file or folder (${(e as NodeJS.ErrnoException).code ?? 'error'})` });
      continue;
    }
    if (st.isDirectory()) {
      let names: string[];
      try {
        names = readdirSync(inp);
      } catch (e) {
        failures.push({ input: inp, error: `cannot list folder (${(e as Error).message})` });
        continue;
      }
      const found = names
        .filter((f) => !f.startsWith('.') && IMAGE_EXTS.has(extname(f).toLowerCase()))
        // Skip the command's own outputs when a folder is processed again.
        .filter((f) => !o.outputs.test(f))
        .sort()
        .map((f) => join(inp, f));
      let n = 0;
      const failedBefore = failures.length;
      for (const f of found) {
        // A dangling link or a sub-folder named like an image: report the former, skip the latter.
        try {
          if (!statSync(f).isFile()) continue;
        } catch {
          failures.push({ input: f, error: 'dangling symbolic link (its target does not exist)' });
          continue;
        }
        files.push(f);
        n++;
      }
      if (n === 0 && failures.length === failedBefore) failures.push({ input: inp, error: `no images (${[...IMAGE_EXTS].join(' ')}) in folder` });
    } else if (!st.isFile()) {
      // Devices, FIFOs and sockets are refused here, before a model is built (the reader refuses them too).
      failures.push({ input: inp, error: `is ${kindOf(st)}, expected a regular image file` });
    } else {
      files.push(inp);
    }
  }
  return { files, failures };
}

/**
 * Output base names for a run's inputs: unique within the run and derived from the set of inputs alone (not their
 * order). An input whose file name stem is unique keeps it (`photo.jpg` → `photo`). Inputs sharing a stem get
 * their extension appended (`a.png`, `a.jpg` → `a_png`, `a_jpg`); if that still collides (the same name in two
 * folders), a counter follows, assigned in the order of the resolved paths (`a_png_2`). A candidate already used by
 * another input is skipped. Standard input is named `stdin`.
 *
 * @param inputs image paths (`-` for standard input)
 * @returns one name per input, in input order
 */
export function outputNames(inputs: readonly string[]): string[] {
  const stemOf = (f: string): string => (f === STDIN ? 'stdin' : basename(f, extname(f)));
  const keyOf = (f: string): string => (f === STDIN ? STDIN : resolve(f));
  const byStem = new Map<string, number[]>();
  inputs.forEach((f, i) => {
    const s = stemOf(f);
    byStem.set(s, [...(byStem.get(s) ?? []), i]);
  });
  const names = new Array<string>(inputs.length);
  const taken = new Set<string>();
  for (const [stem, idx] of byStem) {
    if (idx.length === 1) {
      names[idx[0]!] = stem;
      taken.add(stem);
    }
  }
  const collided = [...byStem.entries()].filter(([, idx]) => idx.length > 1).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [stem, idx] of collided) {
    const ordered = [...idx].sort((a, b) => {
      const ka = keyOf(inputs[a]!);
      const kb = keyOf(inputs[b]!);
      return ka < kb ? -1 : ka > kb ? 1 : a - b;
    });
    for (const i of ordered) {
      const f = inputs[i]!;
      const ext = f === STDIN ? 'stdin' : extname(f).slice(1).toLowerCase().replace(/[^a-z0-9]/g, '') || 'noext';
      let name = `${stem}_${ext}`;
      for (let k = 2; taken.has(name); k++) name = `${stem}_${ext}_${k}`;
      names[i] = name;
      taken.add(name);
    }
  }
  return names;
}

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;

/** `segment <image|folder|->...`: label PNGs, overlays and class shares. */
export const segmentCommand: SegCommand = {
  summary: 'semantic segmentation of images: palette label PNGs, overlays and per-class pixel shares',
  usage: 'vit-adapter segment <image|folder|->... --config NAME|file.json [--checkpoint FILE] [--seed N] [--out DIR] ' +
    '[--mode whole|slide] [--flip] [--scales 0.5,0.75,...] [--device cpu|cuda] [--threads N] [--top K] [--fail-fast] ' +
    '[--max-megapixels 250] [--max-file-mib 512] [--allow-nonfinite] [--json]',
  options: {
    'allow-nonfinite': 'boolean',
    config: 'string', checkpoint: 'string', out: 'string', mode: 'string', flip: 'boolean', scales: 'string',
    device: 'string', threads: 'number', json: 'boolean', top: 'number', seed: 'number', 'fail-fast': 'boolean',
    'max-megapixels': 'number', 'max-file-mib': 'number',
  },
  async run(p) {
    applyThreads(p);
    if (p.positionals.length === 0) throw new UsageError('segment: give at least one image, folder, or - (standard input)');
    const config = loadConfig(stringOption(p, 'config') ?? DEFAULT_CONFIG);
    const device = deviceOption(p);
    const opts = segmentOptions(p, device);
    const top = intOption(p, 'top', 5);
    const seed = intOption(p, 'seed', DEFAULT_WEIGHT_SEED, 0);
    const limits = imageLimits(p);
    const failFast = Boolean(p.options['fail-fast']);
    const { files, failures } = listImages(p.positionals, { outputs: /_(labels|overlay)\.png$/i, stdinCommand: 'segment' });
    for (const f of failures) warn(`error: ${f.input}: ${f.error}`);
    if (failFast && failures.length) files.length = 0; // stop at the first failure: process nothing
    const outDir = stringOption(p, 'out') ?? 'segment-output';
    const numClasses = numClassesOf(config);
    if (numClasses > 256) throw new Error(`segment: ${numClasses} classes do not fit an 8-bit label PNG`);
    const palette = paletteOf(config);
    const checkpoint = stringOption(p, 'checkpoint') ?? defaultCheckpoint(config);
    ensureDir(outDir);
    const names = outputNames(files);
    const { model } = files.length ? prepareModel(config, { checkpoint, seed, device, allowNonfinite: Boolean(p.options['allow-nonfinite']) }) : { model: null };
    const json = Boolean(p.options.json);
    if (!json) {
      print(`config ${config.name}${checkpoint ? `, checkpoint ${checkpoint}` : ` (untrained, seed ${seed})`}, ${files.length} image(s) → ${resolve(outDir)}`);
    }
    const bar = files.length > 1 ? new ProgressBar(files.length, { label: 'segment' }) : null;
    // Every path written in this run, and the inputs: nothing written here is ever overwritten in the same run.
    const written = new Set<string>(files.filter((f) => f !== STDIN).map((f) => resolve(f)));
    const images: unknown[] = [];
    const clearBar = (): void => { if (bar && process.stderr.isTTY) process.stderr.write('\r\x1b[K'); };
    try {
      for (let i = 0; i < files.length && model; i++) {
        const file = files[i]!;
        try {
          const image: RgbImage = file === STDIN ? await readImageStdin(limits) : await readImage(file, limits);
          const warnings = image.warnings ?? [];
          for (const w of warnings) {
            clearBar();
            warn(`warning: ${file === STDIN ? '<stdin>' : file}: decoder: ${w} (the image was decoded anyway; expect artefacts)`);
          }
          const r = segmentImage(model, image, config, opts);
          const labelsPath = join(outDir, `${names[i]}_labels.png`);
          const overlayPath = join(outDir, `${names[i]}_overlay.png`);
          for (const pth of [labelsPath, overlayPath]) {
            if (written.has(resolve(pth))) throw new Error(`output ${pth} would overwrite a file of this run (an input or another output)`);
            written.add(resolve(pth));
          }
          await writeLabelPng(labelsPath, r.labels, r.height, r.width, palette);
          await writeRgbPng(overlayPath, blendOverlay(image, r.labels, palette, 0.5), r.height, r.width);
          const shares = r.classShares.map((s) => ({ class: s.name, class_id: s.classId, share: s.share }));
          images.push({
            input: file, labels: labelsPath, overlay: overlayPath, height: r.height, width: r.width, ms: Math.round(r.ms), shares, warnings,
          });
          if (!json) {
            clearBar();
            print(`${file}: ${r.width}x${r.height}, ${Math.round(r.ms)} ms → ${labelsPath}, ${overlayPath}`);
            for (const s of r.classShares.slice(0, top)) print(`  ${s.name.trim().padEnd(24)} ${pct(s.share).padStart(8)}`);
            if (r.classShares.length > top) print(`  (${r.classShares.length - top} more classes)`);
          }
        } catch (e) {
          const msg = (e as Error).message;
          // Errors from the image layer already start with the file name.
          const shown = file === STDIN ? '<stdin>' : file;
          const reason = msg.startsWith(`${shown}: `) ? msg.slice(shown.length + 2) : msg;
          failures.push({ input: file, error: reason });
          clearBar();
          warn(`error: ${file === STDIN ? '<stdin>' : file}: ${reason}`);
          if (failFast) break;
        }
        bar?.tick(1, file === STDIN ? 'stdin' : basename(file));
      }
    } finally {
      bar?.finish();
    }
    if (json) {
      print(JSON.stringify({
        config: config.name, checkpoint: checkpoint ?? null, untrained: !checkpoint, seed: checkpoint ? null : seed, device,
        mode: opts.mode ?? config.model.test_cfg.mode, flip: opts.flip ?? config.test_pipeline.flip,
        scales: opts.scales ?? config.test_pipeline.img_ratios ?? [1], images, failures,
      }));
    } else if (failures.length) {
      print(`${failures.length} input(s) failed:`);
      for (const f of failures) print(`  ${f.input}: ${f.error}`);
    }
    return failures.length ? 1 : 0;
  },
};

/** `eval`: aAcc / mIoU / mAcc over a labelled dataset. */
export const evalCommand: SegCommand = {
  summary: 'evaluate a segmentor on a labelled dataset (aAcc, mIoU, mAcc and the per-class table, as mmseg)',
  usage: 'vit-adapter eval --config NAME|file.json --checkpoint FILE --data ROOT [--dataset ade20k|custom] [--img-dir DIR] ' +
    '[--ann-dir DIR] [--img-suffix .jpg] [--seg-map-suffix .png] [--classes a,b,c] [--reduce-zero-label | --no-reduce-zero-label] ' +
    '[--limit N] [--mode whole|slide] [--flip] [--scales 0.5,...] [--device cpu|cuda] [--threads N] [--seed N] ' +
    '[--max-megapixels 250] [--max-file-mib 512] [--allow-nonfinite] [--out results.json] [--json]',
  options: {
    'allow-nonfinite': 'boolean',
    config: 'string', checkpoint: 'string', data: 'string', dataset: 'string', 'img-dir': 'string', 'ann-dir': 'string',
    'img-suffix': 'string', 'seg-map-suffix': 'string', classes: 'string', 'reduce-zero-label': 'boolean',
    'no-reduce-zero-label': 'boolean', limit: 'number', out: 'string', json: 'boolean', mode: 'string', flip: 'boolean',
    scales: 'string', device: 'string', threads: 'number', seed: 'number', 'max-megapixels': 'number', 'max-file-mib': 'number',
  },
  async run(p) {
    applyThreads(p);
    if (p.positionals.length) throw new UsageError(`eval: unexpected argument ${JSON.stringify(p.positionals[0])}`);
    const data = stringOption(p, 'data');
    if (!data) throw new UsageError('eval: --data ROOT is required');
    const config = loadConfig(stringOption(p, 'config') ?? DEFAULT_CONFIG);
    const kind = stringOption(p, 'dataset');
    if (kind !== undefined && kind !== 'ade20k' && kind !== 'custom') throw new UsageError('--dataset must be ade20k or custom');
    const classes = stringOption(p, 'classes')?.split(',').map((c) => c.trim()).filter((c) => c !== '');
    if (classes && classes.length === 0) throw new UsageError('--classes expects comma-separated class names');
    if (p.options['reduce-zero-label'] && p.options['no-reduce-zero-label']) {
      throw new UsageError('eval: give --reduce-zero-label or --no-reduce-zero-label, not both');
    }
    const rzl = p.options['reduce-zero-label'] ? true : p.options['no-reduce-zero-label'] ? false : undefined;
    const dataset = datasetFromConfig(config, {
      dataRoot: data,
      ...(kind ? { kind } : {}),
      ...(stringOption(p, 'img-dir') ? { imgDir: stringOption(p, 'img-dir') } : {}),
      ...(stringOption(p, 'ann-dir') ? { annDir: stringOption(p, 'ann-dir') } : {}),
      ...(stringOption(p, 'img-suffix') ? { imgSuffix: stringOption(p, 'img-suffix') } : {}),
      ...(stringOption(p, 'seg-map-suffix') ? { segMapSuffix: stringOption(p, 'seg-map-suffix') } : {}),
      ...(classes ? { classes } : {}),
      ...(rzl !== undefined ? { reduceZeroLabel: rzl } : {}),
    });
    const limit = p.options.limit === undefined ? undefined : intOption(p, 'limit', 1);
    const device = deviceOption(p);
    const opts = segmentOptions(p, device);
    const seed = intOption(p, 'seed', DEFAULT_WEIGHT_SEED, 0);
    const limits = imageLimits(p);
    const checkpoint = stringOption(p, 'checkpoint');
    const out = stringOption(p, 'out');
    if (out) ensureDir(dirname(resolve(out)));
    // The label convention decides every number below: say which one is in force before the run.
    warn(`eval: dataset ${dataset.name}, reduce_zero_label ${dataset.reduceZeroLabel ? 'on (label 0 = ignore, labels shifted down by 1)' : 'off (labels are class ids)'}, ignore_index ${dataset.ignoreIndex}`);
    const { model } = prepareModel(config, { checkpoint, seed, device, allowNonfinite: Boolean(p.options['allow-nonfinite']) });
    let bar: ProgressBar | null = null;
    const r = await evaluateDataset(model, config, dataset, {
      ...opts, ...(limit !== undefined ? { limit } : {}), limits,
      onProgress: (done, total, name) => {
        bar ??= new ProgressBar(total, { label: 'eval' });
        bar.tick(1, name);
        if (done === total) bar.finish();
      },
      onWarning: (file, w) => warn(`warning: ${file}: decoder: ${w} (decoded anyway; expect artefacts)`),
    });
    const result = { ...r, checkpoint: checkpoint ?? null, untrained: !checkpoint, seed: checkpoint ? null : seed };
    if (out) writeFileAtomic(out, `${JSON.stringify(result, null, 2)}\n`);
    if (p.options.json) {
      print(JSON.stringify(result));
    } else {
      print(`evaluated ${r.images} image(s) of ${r.dataset} with ${r.config} (${r.mode}${r.flip ? ', flip' : ''}, scales ${r.scales.join(',')}, ` +
        `reduce_zero_label ${r.reduce_zero_label ? 'on' : 'off'}) in ${r.seconds.toFixed(1)} s (${r.ms_per_image.toFixed(0)} ms/image)`);
      print(r.table);
      const f = (x: number | null): string => (x === null ? 'nan' : (x * 100).toFixed(2));
      print(`aAcc: ${f(r.aAcc)}  mIoU: ${f(r.mIoU)}  mAcc: ${f(r.mAcc)}`);
      if (out) print(`wrote ${out}`);
    }
    return 0;
  },
};

/** `configs`: the presets. */
export const configsCommand: SegCommand = {
  summary: 'list the segmentation config presets (the authors\' ADE20K configs and the synthetic demo)',
  usage: 'vit-adapter configs [--json]',
  options: { json: 'boolean' },
  run(p) {
    if (p.positionals.length) throw new UsageError('configs: takes no arguments');
    const rows: ConfigSummary[] = listConfigs();
    if (p.options.json) {
      print(JSON.stringify(rows));
      return 0;
    }
    const w = Math.max(...rows.map((r) => r.name.length));
    for (const r of rows) {
      const heads = [r.neck, r.decode_head, r.auxiliary_head].filter((x) => x !== null).join('+');
      print(`${r.name.padEnd(w)}  D=${String(r.embed_dim).padEnd(4)} ${heads.padEnd(20)} ${String(r.num_classes).padStart(3)} cls  ${r.test_mode}`);
      print(`${''.padEnd(w)}  ${r.description}`);
    }
    print('\nUse a name with --config, or a JSON file {"base": "<name>", ...overrides}.');
    return 0;
  },
};

/** `demo`: a synthetic scene segmented end to end, no downloads. */
export const demoCommand: SegCommand = {
  summary: 'generate a synthetic scene, segment it with the shipped trained ViT-Adapter + UperNet (assets/), write PNGs and score it (no downloads)',
  usage: 'vit-adapter demo [--out DIR] [--size 128] [--seed 1] [--checkpoint FILE] [--mode whole|slide] [--device cpu|cuda] ' +
    '[--threads N] [--json]',
  options: {
    out: 'string', size: 'number', seed: 'number', checkpoint: 'string', mode: 'string', device: 'string', threads: 'number', json: 'boolean',
  },
  async run(p) {
    applyThreads(p);
    if (p.positionals.length) throw new UsageError('demo: takes no positional arguments');
    const checkpointOpt = stringOption(p, 'checkpoint');
    // With the shipped trained model (and no --checkpoint): its preset, at the scene size it was trained on.
    const trained = checkpointOpt === undefined && existsSync(SYNTH_CHECKPOINT);
    const size = intOption(p, 'size', trained ? getPreset(SYNTH_CONFIG).test_pipeline.img_scale[1] : 512, 32);
    if (size > 2048) throw new UsageError('--size must be at most 2048');
    const seed = intOption(p, 'seed', 1, 0);
    const outDir = stringOption(p, 'out') ?? 'demo-output';
    const device = deviceOption(p);
    const opts = segmentOptions(p, device);
    const json = Boolean(p.options.json);
    const t0 = performance.now();
    const config = getPreset(trained ? SYNTH_CONFIG : 'upernet_deit_adapter_tiny_synthetic');
    if (!trained) config.test_pipeline.img_scale = [Math.max(2048, 4 * size), size];
    const scene = generateScene({ width: size, height: size, seed });
    const palette = paletteOf(config);
    const files = {
      image: join(outDir, 'scene.png'), ground_truth: join(outDir, 'scene_gt.png'), gt_overlay: join(outDir, 'scene_gt_overlay.png'),
      labels: join(outDir, 'scene_labels.png'), overlay: join(outDir, 'scene_overlay.png'),
    };
    const img = { data: scene.image, height: size, width: size };
    ensureDir(outDir);
    await writeRgbPng(files.image, scene.image, size, size);
    await writeLabelPng(files.ground_truth, scene.semantic, size, size, palette);
    await writeRgbPng(files.gt_overlay, blendOverlay(img, scene.semantic, palette, 0.5), size, size);
    const checkpoint = checkpointOpt ?? (trained ? SYNTH_CHECKPOINT : undefined);
    let model: EncoderDecoder;
    if (checkpoint) {
      model = loadSegmentor(config, checkpoint, { device }).model;
    } else {
      manualSeed(seed); // reproducible random weights
      model = buildSegmentor(config, { device });
    }
    const r = segmentImage(model, img, config, opts);
    await writeLabelPng(files.labels, r.labels, size, size, palette);
    await writeRgbPng(files.overlay, blendOverlay(img, r.labels, palette, 0.5), size, size);
    const ev = new SegEvaluator({ numClasses: SYNTHETIC_CLASSES.length });
    ev.add(r.labels, scene.semantic);
    const s = ev.summary();
    const f = (x: number): number | null => (Number.isFinite(x) ? x : null);
    const untrained = !checkpoint;
    const seconds = (performance.now() - t0) / 1000;
    if (json) {
      print(JSON.stringify({
        untrained, note: untrained ? DEMO_NOTE : null, config: config.name, size, seed, files,
        mIoU: f(s.mIoU), aAcc: f(s.aAcc), mAcc: f(s.mAcc),
        per_class: SYNTHETIC_CLASSES.map((c, i) => ({ class: c, IoU: f(s.IoU[i]!), Acc: f(s.Acc[i]!) })),
        shares: r.classShares.map((c) => ({ class: c.name, class_id: c.classId, share: c.share })),
        segment_ms: Math.round(r.ms), seconds,
      }));
      return 0;
    }
    if (untrained) print(`NOTE: ${DEMO_NOTE}.`);
    print(`synthetic scene ${size}x${size} (seed ${seed}), model ${config.name} (${r.numClasses} classes), ${r.copies[0]!.inputWidth}x${r.copies[0]!.inputHeight} input, ${Math.round(r.ms)} ms`);
    for (const [k, v] of Object.entries(files)) print(`  ${k.padEnd(13)} ${v}`);
    print('predicted classes:');
    for (const c of r.classShares.slice(0, 5)) print(`  ${c.name.padEnd(12)} ${pct(c.share).padStart(8)}`);
    print(ev.formatTable(SYNTHETIC_CLASSES));
    print(`mIoU vs the synthetic ground truth: ${s.mIoU === s.mIoU ? (s.mIoU * 100).toFixed(2) : 'nan'}${untrained ? ' (untrained: expect chance level)' : ''}`);
    print(`done in ${seconds.toFixed(1)} s`);
    return 0;
  },
};

/** The four commands under their CLI names, for `main.ts`. */
export const segmentationCommands: Record<'segment' | 'eval' | 'configs' | 'demo', SegCommand> = {
  segment: segmentCommand,
  eval: evalCommand,
  configs: configsCommand,
  demo: demoCommand,
};
