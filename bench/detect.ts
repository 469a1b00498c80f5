/**
 * Detection benchmark (`npm run bench:detect`), three sections:
 *
 *  1. kernels: RoIAlign and NMS, native vs their compositions, forward and backward (bench/detect-kernels.ts);
 *  2. model: the whole Mask R-CNN with ViT-Adapter-T (`mask_rcnn_deit_adapter_tiny_fpn_3x_coco`) on one 800×1333
 *     image (padded to 800×1344), per-image time of `detectImage` (normalise + pad + backbone + FPN + RPN + RoI heads +
 *     masks pasted at the original size) vs bench/torch_maskrcnn.py, the same architecture in PyTorch, with the same
 *     weights (written here to a safetensors file with mmdetection's keys) and the same image, in the same run;
 *     target: TS / PyTorch ≤ 0.7;
 *  3. COCOeval: bbox evaluation of a synthetic 5,000-image, 80-class result set (bench/coco-eval.ts).
 *
 * Random weights give near-uniform class scores (1/81 < score_thr 0.05), so no detection would reach the mask
 * branch; the box classifier's weights are multiplied by `--cls-scale` (default 100) on both sides so that the RoI
 * heads produce detections and the mask head and pasting run (their counts are printed for both sides).
 *
 *   node dist/bench/detect.js [--quick] [--no-kernels] [--no-model] [--no-coco] [--repeats 1] [--warmup 1]
 *     [--threads N] [--height 800] [--width 1333] [--cls-scale 100] [--no-python] [--python /usr/bin/python3] [--json]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { getNumThreads, manualSeed, noGrad, setNumThreads } from '../src/engine/index.js';
import { saveSafetensors } from '../src/nn/serialization.js';
import { getDetPreset } from '../src/tasks/detection/configs.js';
import { buildDetector, detectImage } from '../src/tasks/detection/detector.js';
import {
  type Stats, envLine, intArg, loadEndLine, machineLine, ms, openblasEnv, parseFlags, printRows, pythonBaseline, reporters,
  runPython, timeCalls,
} from './common.js';
import { benchDetectKernels } from './detect-kernels.js';
import { benchCocoEval } from './coco-eval.js';

interface Options {
  quick: boolean;
  kernels: boolean;
  model: boolean;
  coco: boolean;
  repeats: number;
  warmup: number;
  threads: number;
  height: number;
  width: number;
  clsScale: number;
  pythonExe: string;
  json: boolean;
}

const USAGE = `usage: node dist/bench/detect.js [--quick] [--no-kernels] [--no-model] [--no-coco] [--repeats 1] [--warmup 1]
  [--threads N] [--height 800] [--width 1333] [--cls-scale 100] [--no-python] [--python /usr/bin/python3] [--json]`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false, kernels: true, model: true, coco: true, repeats: 1, warmup: 1, threads: 0, height: 800, width: 1333,
    clsScale: 100, pythonExe: '/usr/bin/python3', json: false,
  };
  parseFlags(argv, USAGE, (flag, val) => {
    switch (flag) {
      case '--quick': o.quick = true; break;
      case '--no-kernels': o.kernels = false; break;
      case '--no-model': o.model = false; break;
      case '--no-coco': o.coco = false; break;
      case '--repeats': o.repeats = intArg(flag, val(), 1); break;
      case '--warmup': o.warmup = intArg(flag, val(), 0); break;
      case '--threads': o.threads = intArg(flag, val(), 1); break;
      case '--height': o.height = intArg(flag, val(), 32); break;
      case '--width': o.width = intArg(flag, val(), 32); break;
      case '--cls-scale': {
        const v = Number(val());
        if (!(v > 0)) throw new Error('--cls-scale: expected a positive number');
        o.clsScale = v;
        break;
      }
      case '--no-python': o.pythonExe = ''; break;
      case '--python': o.pythonExe = val(); break;
      case '--json': o.json = true; break;
      default: return false;
    }
    return true;
  });
  return o;
}

/** A deterministic random RGB image. */
function randomImage(h: number, w: number): { data: Uint8Array; height: number; width: number } {
  const data = new Uint8Array(h * w * 3);
  let s = 2024;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { data, height: h, width: w };
}

interface ModelResult {
  height: number;
  width: number;
  pad: [number, number];
  threads: number;
  ts: Stats & { detections: number; mask_pixels: number };
  torch: (Stats & { detections: number; mask_pixels: number; threads: number; torch_version: string }) | null;
  torch_problem: string | null;
  keys_equal: boolean | null;
  key_differences: string[];
  ratio: number | null;
  target: number;
}

function benchModel(o: Options, log: (s: string) => void): ModelResult {
  const config = getDetPreset('mask_rcnn_deit_adapter_tiny_fpn_3x_coco');
  // The image is at the test scale already (no resize), as the issue's benchmark asks: 800×1333 → padded 800×1344.
  manualSeed(0);
  const model = buildDetector(config);
  const dir = mkdtempSync(join(tmpdir(), 'bench-detect-'));
  try {
    noGrad(() => {
      for (const [k, t] of model.namedParameters()) if (k === 'roi_head.bbox_head.fc_cls.weight') t.mul_(o.clsScale);
    });
    const image = randomImage(o.height, o.width);
    const weights = join(dir, 'maskrcnn_tiny.safetensors');
    const imgPath = join(dir, 'image.rgb');
    saveSafetensors(model, weights);
    writeFileSync(imgPath, image.data);
    let detections = 0;
    let maskPixels = 0;
    let pad: [number, number] = [0, 0];
    log(`  TypeScript: ${o.warmup} warm-up + ${o.repeats} timed image(s) ...`);
    const ts = timeCalls(() => {
      const r = detectImage(model, config, image);
      detections = r.detections.scores.length;
      maskPixels = 0;
      for (const v of r.detections.masks ?? []) maskPixels += v;
      pad = r.meta.padShape;
    }, o.repeats, o.warmup);
    const { script, problem } = pythonBaseline(o.pythonExe, 'torch_maskrcnn.py');
    let torch: ModelResult['torch'] = null;
    let keysEqual: boolean | null = null;
    const diffs: string[] = [];
    if (script) {
      const pyKeys = JSON.parse(runPython(o.pythonExe, script, ['--keys'])) as Record<string, number[]>;
      const own = model.stateDictShapes();
      for (const [k, s] of own) if (!(k in pyKeys) || pyKeys[k]!.join() !== s.join()) diffs.push(`${k} [${s.join(', ')}] vs ${k in pyKeys ? `[${pyKeys[k]!.join(', ')}]` : 'missing in PyTorch'}`);
      for (const k of Object.keys(pyKeys)) if (!own.has(k)) diffs.push(`${k}: only in PyTorch`);
      keysEqual = diffs.length === 0;
      log(`  PyTorch: ${o.warmup} warm-up + ${o.repeats} timed image(s) ...`);
      torch = JSON.parse(runPython(o.pythonExe, script, [
        '--bench', '--weights', weights, '--image', imgPath, '--height', String(o.height), '--width', String(o.width),
        '--repeats', String(o.repeats), '--warmup', String(o.warmup), '--threads', String(o.threads), '--json',
      ])) as NonNullable<ModelResult['torch']>;
    }
    return {
      height: o.height, width: o.width, pad, threads: o.threads, ts: { ...ts, detections, mask_pixels: maskPixels }, torch,
      torch_problem: problem, keys_equal: keysEqual, key_differences: diffs.slice(0, 20),
      ratio: torch ? ts.median_s / torch.median_s : null, target: 0.7,
    };
  } finally {
    model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

const num = (x: unknown, d = 1): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '-');

/** The kernel section's table (fields of `benchDetectKernels`' record). */
function printKernels(r: Record<string, unknown>): void {
  if (r.skipped) {
    console.log(`  skipped: ${String(r.skipped)}`);
    return;
  }
  const ra = r.roi_align as { image: number[]; channels: number; rois: number; cases: Record<string, Record<string, number> | number>[] };
  console.log(`  RoIAlign: ${ra.rois} RoIs, ${ra.channels} channels, FPN maps of a ${ra.image.join('×')} image`);
  const rows = [['op', 'native ms', 'composition ms', 'speed-up']];
  for (const c of ra.cases) {
    for (const pass of ['forward', 'forward_backward'] as const) {
      const x = c[pass] as Record<string, number>;
      rows.push([`RoIAlign ${String(c.output)}×${String(c.output)} ${pass.replace('_', '+')}`, num(x.native_ms), num(x.composition_ms), `${num(x.speedup)}×`]);
    }
  }
  const nm = r.nms as { cases: Record<string, number | string>[] };
  for (const c of nm.cases) {
    rows.push([`${String(c.op)} ${String(c.boxes)} boxes (ref: scalar TS)`, num(c.native_ms, 2), num(c.reference_ms, 2), `${num(c.speedup)}×`]);
  }
  printRows(rows, '  ', 1);
}

/** The COCOeval section's lines (fields of `benchCocoEval`'s record). */
function printCoco(r: Record<string, unknown>): void {
  console.log(`  ${String(r.images)} images, ${String(r.categories)} classes, ${String(r.gt_annotations)} GT, ${String(r.detections)} detections`);
  console.log(`  bbox: ${num(r.bbox_s, 2)} s (${num(r.bbox_cpu_s, 2)} s CPU), ${num(r.bbox_ms_per_image, 3)} ms per image (target: under 30 s for 5,000 images)`);
  if (r.segm_images !== undefined) console.log(`  segm: ${String(r.segm_images)} images: ${num(r.segm_s, 2)} s, ${num(r.segm_ms_per_image, 3)} ms per image`);
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.threads) setNumThreads(o.threads);
  o.threads = getNumThreads();
  const { log } = reporters(o.json);
  const env = openblasEnv();
  const loadStart = loadavg();
  log(`bench:detect — CPU float32, ${o.threads} threads${o.quick ? ', --quick' : ''}`);
  log(envLine(env));
  log(machineLine(loadStart, '  [busy: timings are noisy; compare the ratios]'));
  const out: Record<string, unknown> = { threads: o.threads, env, load_start: loadStart };

  if (o.kernels) {
    log('\n(1) RoIAlign / NMS kernels vs their compositions (bench/detect-kernels.ts)');
    const k = await benchDetectKernels({ quick: o.quick });
    out.kernels = k;
    if (!o.json) printKernels(k);
  }

  if (o.model) {
    log(`\n(2) Mask R-CNN + ViT-Adapter-T, one ${o.width}×${o.height} image, random weights (fc_cls × ${o.clsScale}), vs bench/torch_maskrcnn.py`);
    const m = benchModel(o, log);
    out.model = m;
    if (!o.json) {
      const rows = [['side', 'median ms', 'min ms', 'CPU ms', 'detections', 'mask px']];
      rows.push(['TypeScript', ms(m.ts.median_s), ms(m.ts.min_s), ms(m.ts.cpu_median_s), String(m.ts.detections), String(m.ts.mask_pixels)]);
      if (m.torch) rows.push([`PyTorch ${m.torch.torch_version}`, ms(m.torch.median_s), ms(m.torch.min_s), ms(m.torch.cpu_median_s), String(m.torch.detections), String(m.torch.mask_pixels)]);
      printRows(rows, '  ', 1);
      log(`  input padded to ${m.pad[0]}×${m.pad[1]}; state dicts ${m.keys_equal === null ? 'not compared' : m.keys_equal ? 'equal (keys and shapes)' : `DIFFER: ${m.key_differences.join('; ')}`}`);
      if (m.ratio !== null) log(`  TS / PyTorch (median wall): ${m.ratio.toFixed(2)}  (target ≤ ${m.target}: ${m.ratio <= m.target ? 'met' : 'NOT met'})`);
      else log(`  PyTorch baseline not run: ${m.torch_problem}`);
    }
  }

  if (o.coco) {
    log('\n(3) COCOeval of a synthetic result set (bench/coco-eval.ts)');
    const c = await benchCocoEval({ quick: o.quick });
    out.coco_eval = c;
    if (!o.json) printCoco(c);
  }
  out.load_end = loadavg();
  if (o.json) console.log(JSON.stringify(out));
  else log(loadEndLine(loadavg()));
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? String(e));
  process.exit(1);
});
