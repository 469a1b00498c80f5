/**
 * COCOeval speed on a seeded synthetic result set shaped like a real detector's output on COCO val:
 * 5,000 images of COCO-like sizes, 80 classes, ~7 GT objects per image (1% crowd regions) and 100 detections per image
 * (jittered true positives with duplicates and confused classes at higher scores, background boxes at low scores).
 *
 *   node dist/bench/coco-eval.js [--images 5000] [--segm-images 500] [--quick] [--json] [--python EXE | --no-python]
 *
 * Prints the absolute evaluation time (results validation + evaluate + accumulate + summarize, as `eval-coco` runs
 * them after reading the files) and the cost per image, for bbox on the full set and segm (polygon GT rasterised,
 * compressed-RLE detections) on a subset; also the JSON parse time of the results file. The target: bbox on
 * 5,000 images in under 30 s on a 2-core CPU (the evaluation is single-threaded).
 *
 * Baseline: when `EXE -c "import pycocotools"` works (standalone default `python3`), the same files are evaluated by
 * pycocotools in a child process, timed the same way (`loadRes` of the parsed list + evaluate + accumulate +
 * summarize; reading the JSON and indexing the GT excluded on both sides); the bench prints the time ratio and the
 * largest difference of the 12 stats and of the per-category APs (a parity check on a large set).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mulberry32 } from '../src/train/random.js';
import { type CocoJson, type CocoResult, countsToString, evaluateCoco, frPolyData, parseCocoJson } from '../src/tasks/detection/coco/index.js';

/** Options of {@link benchCocoEval}. */
export interface CocoBenchOptions {
  /** Images of the bbox set (default 5000; 500 with `quick`). */
  images?: number;
  /** Images of the segm subset (default 500; 100 with `quick`). */
  segmImages?: number;
  /** A small, fast run (for smoke tests and `bench/detect.ts` quick mode). */
  quick?: boolean;
  /** Seed of the synthetic data (default 1). */
  seed?: number;
  /** A Python with pycocotools to time as the baseline (none by default; standalone runs default to `python3`). */
  python?: string;
}

/** The pycocotools side: argv = gt.json results.json iouType; prints one JSON line. */
const PYCOCO_SCRIPT = `
import contextlib, io, json, sys, time
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
gt_path, res_path, iou_type = sys.argv[1:4]
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
res = json.load(open(res_path))
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    dt = gt.loadRes(res)
    E = COCOeval(gt, dt, iou_type)
    E.evaluate(); E.accumulate(); E.summarize()
sec = time.perf_counter() - t0
p = E.eval['precision']
per_cat = []
for k in range(p.shape[2]):
    x = p[:, :, k, 0, -1]
    per_cat.append(float(np.mean(x[x > -1])) if (x > -1).any() else -1.0)
print(json.dumps({'seconds': sec, 'stats': [float(v) for v in E.stats], 'per_category': per_cat}))
`;

/** Why pycocotools cannot run with `exe`, or null. */
function pycocoProblem(exe: string): string | null {
  const r = spawnSync(exe, ['-c', 'import pycocotools.cocoeval'], { encoding: 'utf8' });
  if (r.error) return `${exe}: ${r.error.message}`;
  if (r.status !== 0) return `${exe} -c "import pycocotools.cocoeval" failed: ${(r.stderr || '').trim().split('\n').pop()}`;
  return null;
}

/** Runs pycocotools on the same data; returns its seconds, stats and per-category APs. */
function runPycoco(exe: string, gt: unknown, resultsText: string, iouType: string): { seconds: number; stats: number[]; per_category: number[] } {
  const dir = mkdtempSync(join(tmpdir(), 'coco-bench-'));
  try {
    writeFileSync(join(dir, 'gt.json'), JSON.stringify(gt));
    writeFileSync(join(dir, 'res.json'), resultsText);
    const r = spawnSync(exe, ['-c', PYCOCO_SCRIPT, join(dir, 'gt.json'), join(dir, 'res.json'), iouType], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`pycocotools baseline failed (status ${r.status}):\n${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { seconds: number; stats: number[]; per_category: number[] };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const maxDiff = (a: number[], b: number[]): number => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));

const SIZES: [number, number][] = [[640, 480], [480, 640], [640, 427], [427, 640], [500, 375], [640, 360], [612, 612]];
const NUM_CLASSES = 80;
const DETS_PER_IMAGE = 100;

/** An ellipse inscribed in a box, as a 12-vertex polygon. */
function ellipse(x: number, y: number, w: number, h: number): number[] {
  const p: number[] = [];
  for (let i = 0; i < 12; i++) {
    const a = (2 * Math.PI * i) / 12;
    p.push(+(x + w / 2 + (w / 2) * Math.cos(a)).toFixed(2), +(y + h / 2 + (h / 2) * Math.sin(a)).toFixed(2));
  }
  return p;
}

/** The seeded synthetic ground truth and detections (boxes always; polygons / RLE masks when `masks`). */
export function synthCoco(images: number, seed: number, masks: boolean): { gt: CocoJson; results: CocoResult[] } {
  const rnd = mulberry32(seed);
  const gauss = (): number => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const gt: CocoJson = {
    images: [], annotations: [],
    categories: Array.from({ length: NUM_CLASSES }, (_, i) => ({ id: i + 1 + (i >= 11 ? 1 : 0) + (i >= 24 ? 1 : 0), name: `class_${i + 1}` })),
  };
  const catIds = gt.categories.map((c) => c.id);
  const results: CocoResult[] = [];
  let annId = 1;
  const clip = (b: number[], W: number, H: number): [number, number, number, number] => {
    const x0 = Math.max(0, Math.min(W - 1, b[0]!));
    const y0 = Math.max(0, Math.min(H - 1, b[1]!));
    const x1 = Math.max(x0 + 1, Math.min(W, b[0]! + b[2]!));
    const y1 = Math.max(y0 + 1, Math.min(H, b[1]! + b[3]!));
    return [+x0.toFixed(2), +y0.toFixed(2), +(x1 - x0).toFixed(2), +(y1 - y0).toFixed(2)];
  };
  for (let i = 0; i < images; i++) {
    const [W, H] = SIZES[Math.floor(rnd() * SIZES.length)]!;
    const imageId = 100000 + i * 7;
    gt.images.push({ id: imageId, width: W, height: H, file_name: `${imageId}.jpg` });
    const nGt = 1 + Math.floor(rnd() * 13);
    const objs: { cat: number; box: [number, number, number, number] }[] = [];
    for (let g = 0; g < nGt; g++) {
      const cat = catIds[Math.floor(Math.pow(rnd(), 1.5) * NUM_CLASSES)]!; // a few frequent classes, a long tail
      const w = Math.exp(Math.log(8) + rnd() * (Math.log(0.9 * W) - Math.log(8)));
      const h = Math.max(4, Math.min(0.9 * H, w * Math.exp(gauss() * 0.5)));
      const box = clip([rnd() * (W - w), rnd() * (H - h), w, h], W, H);
      const crowd = rnd() < 0.01 ? 1 : 0;
      objs.push({ cat, box });
      gt.annotations.push({
        id: annId++, image_id: imageId, category_id: cat, bbox: box, area: +(box[2] * box[3] * (0.55 + 0.3 * rnd())).toFixed(2), iscrowd: crowd,
        ...(masks ? { segmentation: [ellipse(...box)] } : {}),
      });
    }
    const dets: { cat: number; box: [number, number, number, number]; score: number }[] = [];
    for (const o of objs) {
      const copies = 1 + Math.floor(rnd() * 4);
      const found = rnd() < 0.85;
      for (let c = 0; c < copies && found; c++) {
        const j = c === 0 ? 0.05 : 0.2;
        const [x, y, w, h] = o.box;
        const b = clip([x + gauss() * j * w, y + gauss() * j * h, w * Math.exp(gauss() * j), h * Math.exp(gauss() * j)], W, H);
        const confused = rnd() < 0.1;
        const cat = confused ? catIds[Math.floor(rnd() * NUM_CLASSES)]! : o.cat;
        dets.push({ cat, box: b, score: (c === 0 ? 0.5 + 0.5 * rnd() : 0.1 + 0.6 * rnd()) * (confused ? 0.5 : 1) });
      }
    }
    while (dets.length < DETS_PER_IMAGE) {
      const w = Math.exp(Math.log(6) + rnd() * (Math.log(0.7 * W) - Math.log(6)));
      const h = w * Math.exp(gauss() * 0.5);
      dets.push({ cat: catIds[Math.floor(rnd() * NUM_CLASSES)]!, box: clip([rnd() * W, rnd() * H, w, h], W, H), score: 0.3 * Math.pow(rnd(), 2) });
    }
    dets.length = DETS_PER_IMAGE;
    for (const d of dets) {
      const score = +d.score.toFixed(5);
      if (masks) {
        const rle = frPolyData(ellipse(...d.box), H, W);
        results.push({ image_id: imageId, category_id: d.cat, segmentation: { size: [H, W], counts: countsToString(rle.cnts) }, score });
      } else results.push({ image_id: imageId, category_id: d.cat, bbox: d.box, score });
    }
  }
  return { gt, results };
}

/**
 * Times COCOeval on the synthetic sets: bbox on `images` images, segm on `segmImages`. Returns the figures (seconds,
 * ms per image, sizes, and the first stats as a sanity check) as a JSON-able record.
 */
export async function benchCocoEval(opts: CocoBenchOptions = {}): Promise<Record<string, unknown>> {
  const images = opts.images ?? (opts.quick ? 500 : 5000);
  const segmImages = opts.segmImages ?? (opts.quick ? 100 : 500);
  const seed = opts.seed ?? 1;
  const out: Record<string, unknown> = { images, categories: NUM_CLASSES, detections_per_image: DETS_PER_IMAGE };

  const tg = performance.now();
  const box = synthCoco(images, seed, false);
  out.generate_s = (performance.now() - tg) / 1000;
  out.gt_annotations = box.gt.annotations.length;
  out.detections = box.results.length;
  const text = JSON.stringify(box.results);
  out.results_json_mb = text.length / 1e6;
  const tp = performance.now();
  const parsed = JSON.parse(text) as unknown;
  out.json_parse_s = (performance.now() - tp) / 1000;
  const gt = parseCocoJson(box.gt, 'synthetic');
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const r = evaluateCoco(gt, parsed, 'bbox');
  const cpu = process.cpuUsage(c0);
  out.bbox_s = (performance.now() - t0) / 1000;
  out.bbox_cpu_s = (cpu.user + cpu.system) / 1e6;
  out.bbox_ms_per_image = ((out.bbox_s as number) * 1000) / images;
  out.bbox_ap = r.stats[0];
  out.bbox_ap50 = r.stats[1];
  out.bbox_ar100 = r.stats[8];
  const problem = opts.python ? pycocoProblem(opts.python) : 'not requested';
  out.pycocotools = problem ?? opts.python;
  if (!problem) {
    const py = runPycoco(opts.python!, box.gt, text, 'bbox');
    out.pycocotools_bbox_s = py.seconds;
    out.bbox_ratio_vs_pycocotools = (out.bbox_s as number) / py.seconds;
    out.bbox_max_stat_diff = maxDiff(r.stats, py.stats);
    out.bbox_max_per_category_diff = maxDiff(r.perCategoryAp.map((c) => c.ap), py.per_category);
  }

  if (segmImages > 0) {
    const seg = synthCoco(segmImages, seed + 1, true);
    const sgt = parseCocoJson(seg.gt, 'synthetic-segm');
    const segText = JSON.stringify(seg.results);
    const parsedSeg = JSON.parse(segText) as unknown;
    const t1 = performance.now();
    const rs = evaluateCoco(sgt, parsedSeg, 'segm');
    out.segm_images = segmImages;
    out.segm_detections = seg.results.length;
    out.segm_s = (performance.now() - t1) / 1000;
    out.segm_ms_per_image = ((out.segm_s as number) * 1000) / segmImages;
    out.segm_ap = rs.stats[0];
    if (!problem) {
      const py = runPycoco(opts.python!, seg.gt, segText, 'segm');
      out.pycocotools_segm_s = py.seconds;
      out.segm_ratio_vs_pycocotools = (out.segm_s as number) / py.seconds;
      out.segm_max_stat_diff = maxDiff(rs.stats, py.stats);
      out.segm_max_per_category_diff = maxDiff(rs.perCategoryAp.map((c) => c.ap), py.per_category);
    }
  }
  return out;
}

async function mainCli(argv: string[]): Promise<void> {
  const o: CocoBenchOptions = { python: 'python3' };
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) throw new Error(`${a}: expected a non-negative integer, got ${JSON.stringify(argv[i])}`);
      return v;
    };
    if (a === '--images') o.images = val();
    else if (a === '--segm-images') o.segmImages = val();
    else if (a === '--seed') o.seed = val();
    else if (a === '--quick') o.quick = true;
    else if (a === '--json') json = true;
    else if (a === '--python') o.python = argv[++i] ?? '';
    else if (a === '--no-python') o.python = '';
    else if (a === '-h' || a === '--help') {
      console.log('usage: node dist/bench/coco-eval.js [--images 5000] [--segm-images 500] [--seed 1] [--quick] [--json] [--python EXE | --no-python]');
      return;
    } else throw new Error(`unknown argument ${a}`);
  }
  const r = await benchCocoEval(o);
  if (json) {
    console.log(JSON.stringify(r));
    return;
  }
  const f = (x: unknown, d = 2): string => (typeof x === 'number' ? x.toFixed(d) : String(x));
  console.log(`COCOeval synthetic set: ${r.images} images, ${r.categories} classes, ${r.gt_annotations} GT, ${r.detections} detections (${f(r.results_json_mb, 1)} MB JSON, parsed in ${f(r.json_parse_s)} s)`);
  console.log(`bbox: ${f(r.bbox_s)} s (${f(r.bbox_cpu_s)} s CPU), ${f(r.bbox_ms_per_image, 3)} ms per image; AP ${f(r.bbox_ap, 3)} AP50 ${f(r.bbox_ap50, 3)} AR100 ${f(r.bbox_ar100, 3)}`);
  if (r.segm_images !== undefined) {
    console.log(`segm: ${r.segm_images} images, ${r.segm_detections} detections: ${f(r.segm_s)} s, ${f(r.segm_ms_per_image, 3)} ms per image; AP ${f(r.segm_ap, 3)}`);
  }
  if (r.pycocotools_bbox_s !== undefined) {
    console.log(`pycocotools (${r.pycocotools}), same data: bbox ${f(r.pycocotools_bbox_s)} s → ratio ${f(r.bbox_ratio_vs_pycocotools, 3)}; ` +
      `max |stats diff| ${String(r.bbox_max_stat_diff)}, per-category ${String(r.bbox_max_per_category_diff)}`);
    if (r.pycocotools_segm_s !== undefined) {
      console.log(`  segm ${f(r.pycocotools_segm_s)} s → ratio ${f(r.segm_ratio_vs_pycocotools, 3)}; max |stats diff| ${String(r.segm_max_stat_diff)}, ` +
        `per-category ${String(r.segm_max_per_category_diff)}`);
    }
  } else console.log(`pycocotools baseline: ${String(r.pycocotools)}`);
  console.log(`machine load average: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log('target (issue 10): bbox on 5,000 images under 30 s on a 2-core CPU');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  mainCli(process.argv.slice(2)).catch((e: Error) => {
    console.error(`coco-eval bench: ${e.message}`);
    process.exit(1);
  });
}
