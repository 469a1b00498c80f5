/**
 * Semantic-segmentation commands of the `vit-adapter` CLI: `segment`, `eval`, `configs`, `demo`. Each export has the
 * shape of the `commands` entries in `main.ts` (`{ summary, usage, options, run(p) }`).
 *
 * Human-readable output goes to stdout; warnings and the progress bar go to stderr, so `--json` output on stdout stays
 * one parseable JSON object.
 */
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { cuda, manualSeed, setNumThreads } from '../engine/index.js';
import { blendOverlay, readImage, writeLabelPng, writeRgbPng } from '../io/image.js';
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
import { type OptionSpec, type Parsed, UsageError, intOption } from './args.js';

/** A CLI command (the shape of `main.ts`'s `commands` entries). */
export interface SegCommand {
  summary: string;
  usage: string;
  options: OptionSpec;
  run(p: Parsed): Promise<number> | number;
}

const print = (s: string): void => { process.stdout.write(`${s}\n`); };
const warn = (s: string): void => { process.stderr.write(`${s}\n`); };

/** The warning printed whenever a model runs without trained weights. */
export const UNTRAINED_WARNING =
  'WARNING: no --checkpoint given: the model has RANDOM, UNTRAINED weights. Its labels are not meaningful; ' +
  'pass --checkpoint FILE (an mmseg/ViT-Adapter .pth or .safetensors) for real predictions.';

/** The note the demo prints (no trained checkpoint for the synthetic classes exists yet). */
export const DEMO_NOTE = 'untrained demo model — labels are not meaningful until a trained checkpoint exists';

const DEFAULT_CONFIG = 'upernet_deit_adapter_tiny_512_160k_ade20k';

/** The trained synthetic-scene model that ships with the package (see README "Training"), and its preset. */
export const SYNTH_CHECKPOINT = fileURLToPath(new URL('../../../assets/vit-adapter-synth.safetensors', import.meta.url));
export const SYNTH_CONFIG = 'upernet_vit_adapter_synth';

/** The shipped checkpoint for a config without `--checkpoint`: the trained synthetic model for its preset, else none. */
function defaultCheckpoint(config: SegConfig): string | undefined {
  return config.name === SYNTH_CONFIG && existsSync(SYNTH_CHECKPOINT) ? SYNTH_CHECKPOINT : undefined;
}
const IMAGE_EXTS = new Set(['.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff']);

function str(p: Parsed, key: string): string | undefined {
  const v = p.options[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`--${key} expects a value`);
  return v;
}

function threads(p: Parsed): void {
  if (p.options.threads !== undefined) setNumThreads(intOption(p, 'threads', 1));
}

function deviceOption(p: Parsed): string {
  const d = str(p, 'device') ?? 'cpu';
  if (!/^(cpu|cuda(:\d+)?)$/.test(d)) throw new UsageError(`--device must be cpu, cuda or cuda:N, got ${JSON.stringify(d)}`);
  if (d !== 'cpu' && !cuda.isAvailable()) throw new Error(`--device ${d}: CUDA is not available in this libtorch build / machine`);
  return d;
}

function modeOption(p: Parsed): 'whole' | 'slide' | undefined {
  const m = str(p, 'mode');
  if (m === undefined) return undefined;
  if (m !== 'whole' && m !== 'slide') throw new UsageError(`--mode must be whole or slide, got ${JSON.stringify(m)}`);
  return m;
}

function scalesOption(p: Parsed): number[] | undefined {
  const s = str(p, 'scales');
  if (s === undefined) return undefined;
  const v = s.split(',').map((x) => x.trim()).filter((x) => x !== '').map(Number);
  if (v.length === 0 || v.some((x) => !Number.isFinite(x) || x <= 0)) {
    throw new UsageError(`--scales expects comma-separated positive ratios (e.g. 0.5,0.75,1.0,1.25,1.5,1.75), got ${JSON.stringify(s)}`);
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

/** Builds or loads the model; prints the untrained warning or the loader's notes to stderr. */
function prepareModel(config: SegConfig, checkpoint: string | undefined, device: string):
  { model: EncoderDecoder; report: LoadReport | null } {
  if (!checkpoint) {
    warn(UNTRAINED_WARNING);
    return { model: buildSegmentor(config, { device }), report: null };
  }
  const { model, report } = loadSegmentor(config, checkpoint, { device });
  for (const n of report.notes) warn(`note: ${n}`);
  return { model, report };
}

function listImages(inputs: readonly string[]): string[] {
  const out: string[] = [];
  for (const inp of inputs) {
    let st;
    try {
      st = statSync(inp);
    } catch {
      throw new UsageError(`segment: no such file or folder: ${inp}`);
    }
    if (st.isDirectory()) {
      const files = readdirSync(inp)
        .filter((f) => !f.startsWith('.') && IMAGE_EXTS.has(extname(f).toLowerCase()))
        // Skip this command's own outputs when a folder is segmented again.
        .filter((f) => !/_(labels|overlay)\.png$/i.test(f))
        .sort()
        .map((f) => join(inp, f))
        .filter((f) => statSync(f).isFile());
      if (files.length === 0) throw new UsageError(`segment: no images (${[...IMAGE_EXTS].join(' ')}) in folder ${inp}`);
      out.push(...files);
    } else {
      out.push(inp);
    }
  }
  return out;
}

const pct = (x: number): string => `${(x * 100).toFixed(2)}%`;

/** `segment <image|folder>...`: label PNGs, overlays and class shares. */
export const segmentCommand: SegCommand = {
  summary: 'semantic segmentation of images: palette label PNGs, overlays and per-class pixel shares',
  usage: 'vit-adapter segment <image|folder>... --config NAME|file.json [--checkpoint FILE] [--out DIR] [--mode whole|slide] ' +
    '[--flip] [--scales 0.5,0.75,...] [--device cpu|cuda] [--threads N] [--top K] [--json]',
  options: {
    config: 'string', checkpoint: 'string', out: 'string', mode: 'string', flip: 'boolean', scales: 'string',
    device: 'string', threads: 'number', json: 'boolean', top: 'number',
  },
  async run(p) {
    threads(p);
    if (p.positionals.length === 0) throw new UsageError('segment: give at least one image or folder');
    const config = loadConfig(str(p, 'config') ?? DEFAULT_CONFIG);
    const device = deviceOption(p);
    const opts = segmentOptions(p, device);
    const top = intOption(p, 'top', 5);
    const files = listImages(p.positionals);
    const outDir = str(p, 'out') ?? 'segment-output';
    const numClasses = numClassesOf(config);
    if (numClasses > 256) throw new Error(`segment: ${numClasses} classes do not fit an 8-bit label PNG`);
    const palette = paletteOf(config);
    const checkpoint = str(p, 'checkpoint') ?? defaultCheckpoint(config);
    const { model } = prepareModel(config, checkpoint, device);
    mkdirSync(outDir, { recursive: true });
    const json = Boolean(p.options.json);
    if (!json) print(`config ${config.name}${checkpoint ? `, checkpoint ${checkpoint}` : ' (untrained)'}, ${files.length} image(s) → ${resolve(outDir)}`);
    const bar = files.length > 1 ? new ProgressBar(files.length, { label: 'segment' }) : null;
    const used = new Map<string, number>();
    const images: unknown[] = [];
    try {
      for (const file of files) {
        const image = await readImage(file);
        const r = segmentImage(model, image, config, opts);
        let name = basename(file, extname(file));
        const k = used.get(name) ?? 0;
        used.set(name, k + 1);
        if (k > 0) name = `${name}_${k + 1}`;
        const labelsPath = join(outDir, `${name}_labels.png`);
        const overlayPath = join(outDir, `${name}_overlay.png`);
        await writeLabelPng(labelsPath, r.labels, r.height, r.width, palette);
        await writeRgbPng(overlayPath, blendOverlay(image, r.labels, palette, 0.5), r.height, r.width);
        const shares = r.classShares.map((s) => ({ class: s.name, class_id: s.classId, share: s.share }));
        images.push({ input: file, labels: labelsPath, overlay: overlayPath, height: r.height, width: r.width, ms: Math.round(r.ms), shares });
        if (!json) {
          if (bar && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
          print(`${file}: ${r.width}x${r.height}, ${Math.round(r.ms)} ms → ${labelsPath}, ${overlayPath}`);
          for (const s of r.classShares.slice(0, top)) print(`  ${s.name.trim().padEnd(24)} ${pct(s.share).padStart(8)}`);
          if (r.classShares.length > top) print(`  (${r.classShares.length - top} more classes)`);
        }
        bar?.tick(1, basename(file));
      }
    } finally {
      bar?.finish();
    }
    if (json) {
      print(JSON.stringify({
        config: config.name, checkpoint: checkpoint ?? null, untrained: !checkpoint, device,
        mode: opts.mode ?? config.model.test_cfg.mode, flip: opts.flip ?? config.test_pipeline.flip,
        scales: opts.scales ?? config.test_pipeline.img_ratios ?? [1], images,
      }));
    }
    return 0;
  },
};

/** `eval`: aAcc / mIoU / mAcc over a labelled dataset. */
export const evalCommand: SegCommand = {
  summary: 'evaluate a segmentor on a labelled dataset (aAcc, mIoU, mAcc and the per-class table, as mmseg)',
  usage: 'vit-adapter eval --config NAME|file.json --checkpoint FILE --data ROOT [--dataset ade20k|custom] [--img-dir DIR] ' +
    '[--ann-dir DIR] [--img-suffix .jpg] [--seg-map-suffix .png] [--classes a,b,c] [--reduce-zero-label] [--limit N] ' +
    '[--mode whole|slide] [--flip] [--scales 0.5,...] [--device cpu|cuda] [--threads N] [--out results.json] [--json]',
  options: {
    config: 'string', checkpoint: 'string', data: 'string', dataset: 'string', 'img-dir': 'string', 'ann-dir': 'string',
    'img-suffix': 'string', 'seg-map-suffix': 'string', classes: 'string', 'reduce-zero-label': 'boolean', limit: 'number',
    out: 'string', json: 'boolean', mode: 'string', flip: 'boolean', scales: 'string', device: 'string', threads: 'number',
  },
  async run(p) {
    threads(p);
    if (p.positionals.length) throw new UsageError(`eval: unexpected argument ${JSON.stringify(p.positionals[0])}`);
    const data = str(p, 'data');
    if (!data) throw new UsageError('eval: --data ROOT is required');
    const config = loadConfig(str(p, 'config') ?? DEFAULT_CONFIG);
    const kind = str(p, 'dataset');
    if (kind !== undefined && kind !== 'ade20k' && kind !== 'custom') throw new UsageError('--dataset must be ade20k or custom');
    const classes = str(p, 'classes')?.split(',').map((c) => c.trim()).filter((c) => c !== '');
    if (classes && classes.length === 0) throw new UsageError('--classes expects comma-separated class names');
    const dataset = datasetFromConfig(config, {
      dataRoot: data,
      ...(kind ? { kind } : {}),
      ...(str(p, 'img-dir') ? { imgDir: str(p, 'img-dir') } : {}),
      ...(str(p, 'ann-dir') ? { annDir: str(p, 'ann-dir') } : {}),
      ...(str(p, 'img-suffix') ? { imgSuffix: str(p, 'img-suffix') } : {}),
      ...(str(p, 'seg-map-suffix') ? { segMapSuffix: str(p, 'seg-map-suffix') } : {}),
      ...(classes ? { classes } : {}),
      ...(p.options['reduce-zero-label'] ? { reduceZeroLabel: true } : {}),
    });
    const limit = p.options.limit === undefined ? undefined : intOption(p, 'limit', 1);
    const device = deviceOption(p);
    const opts = segmentOptions(p, device);
    const checkpoint = str(p, 'checkpoint');
    const { model } = prepareModel(config, checkpoint, device);
    let bar: ProgressBar | null = null;
    const r = await evaluateDataset(model, config, dataset, {
      ...opts, ...(limit !== undefined ? { limit } : {}),
      onProgress: (done, total, name) => {
        bar ??= new ProgressBar(total, { label: 'eval' });
        bar.tick(1, name);
        if (done === total) bar.finish();
      },
    });
    const result = { ...r, checkpoint: checkpoint ?? null, untrained: !checkpoint };
    const out = str(p, 'out');
    if (out) {
      mkdirSync(dirname(resolve(out)), { recursive: true });
      writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
    }
    if (p.options.json) {
      print(JSON.stringify(result));
    } else {
      print(`evaluated ${r.images} image(s) of ${r.dataset} with ${r.config} (${r.mode}${r.flip ? ', flip' : ''}, scales ${r.scales.join(',')}) ` +
        `in ${r.seconds.toFixed(1)} s (${r.ms_per_image.toFixed(0)} ms/image)`);
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
    threads(p);
    if (p.positionals.length) throw new UsageError('demo: takes no positional arguments');
    const checkpointOpt = str(p, 'checkpoint');
    // With the shipped trained model (and no --checkpoint): its preset, at the scene size it was trained on.
    const trained = checkpointOpt === undefined && existsSync(SYNTH_CHECKPOINT);
    const size = intOption(p, 'size', trained ? getPreset(SYNTH_CONFIG).test_pipeline.img_scale[1] : 512, 32);
    if (size > 2048) throw new UsageError('--size must be at most 2048');
    const seed = intOption(p, 'seed', 1, 0);
    const outDir = str(p, 'out') ?? 'demo-output';
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
