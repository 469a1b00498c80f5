/**
 * COCO commands of the `vit-adapter` CLI: `eval-coco` (COCOeval of a results file against a COCO annotation file,
 * with pycocotools' numbers and printed summary). The export has the shape of the `commands` entries in `main.ts`.
 *
 * The summary and the per-category table go to stdout; notes and the progress bar go to stderr, so `--json` output on
 * stdout stays one parseable JSON object.
 */
import { dirname, resolve } from 'node:path';
import { ensureDir, writeFileAtomic } from '../io/files.js';
import { type CocoEvalOutput, evaluateCoco, formatPythonFixed, loadCocoJson, readJsonFile } from '../tasks/detection/coco/index.js';
import { ProgressBar } from '../tools/progress.js';
import { type OptionSpec, type Parsed, UsageError, stringOption } from './args.js';
import { print, warn } from './output.js';

/** A CLI command (the shape of `main.ts`'s `commands` entries). */
export interface CocoCommand {
  summary: string;
  usage: string;
  options: OptionSpec;
  run(p: Parsed): Promise<number> | number;
}


/**
 * The `--json` object: `stats` (12 numbers) and `per_category` keyed by category name (by id where a name is empty
 * or shared by several categories), plus the iou type and the counts.
 */
export function cocoEvalJson(r: CocoEvalOutput): Record<string, unknown> {
  const count = new Map<string, number>();
  for (const c of r.perCategoryAp) count.set(c.name, (count.get(c.name) ?? 0) + 1);
  const perCategory: Record<string, number> = {};
  for (const c of r.perCategoryAp) perCategory[c.name !== '' && count.get(c.name) === 1 ? c.name : String(c.categoryId)] = c.ap;
  return {
    iou_type: r.iouType, stats: r.stats, per_category: perCategory, images: r.numImages, categories: r.numCategories,
    detections: r.numDetections, dropped_detections: r.numDroppedDetections,
  };
}

/** `eval-coco`: COCOeval (bbox or segm) of a results file. */
export const evalCocoCommand: CocoCommand = {
  summary: 'COCO evaluation (pycocotools COCOeval, bbox or segm) of a detection results file against a COCO annotation file',
  usage: 'vit-adapter eval-coco --gt ANNOTATIONS.json --results RESULTS.json --iou-type bbox|segm [--out FILE.json] [--json]',
  options: { gt: 'string', results: 'string', 'iou-type': 'string', out: 'string', json: 'boolean' },
  run(p) {
    if (p.positionals.length) throw new UsageError(`eval-coco: takes no positional arguments (got ${p.positionals.join(' ')}); use --gt and --results`);
    const gtPath = stringOption(p, 'gt');
    const resPath = stringOption(p, 'results');
    const iouType = stringOption(p, 'iou-type');
    if (!gtPath) throw new UsageError('eval-coco: --gt ANNOTATIONS.json is required (a COCO annotation file)');
    if (!resPath) throw new UsageError('eval-coco: --results RESULTS.json is required (a list of {image_id, category_id, bbox|segmentation, score})');
    if (iouType !== 'bbox' && iouType !== 'segm') {
      throw new UsageError(`eval-coco: --iou-type must be bbox or segm${iouType === undefined ? ' (required)' : `, got ${JSON.stringify(iouType)}`}`);
    }
    const out = stringOption(p, 'out');
    if (out) ensureDir(dirname(resolve(out)));
    const t0 = performance.now();
    const gt = loadCocoJson(gtPath);
    const results = readJsonFile(resPath, 'results file');
    if (Array.isArray(results) && results.length === 0) {
      warn('eval-coco: the results file holds no detections: every AP and AR is 0 where ground truth exists ' +
        '(pycocotools\' loadRes fails on an empty list instead)');
    }
    let bar: ProgressBar | null = null;
    const r = evaluateCoco(gt, results, iouType, {
      onProgress: (done, total) => {
        bar ??= new ProgressBar(total, { label: `eval-coco ${iouType}` });
        bar.tick(1);
        if (done === total) bar.finish();
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    if (r.numDroppedDetections > 0) {
      warn(`eval-coco: ${r.numDroppedDetections} detection(s) of categories not in ${gtPath} were not evaluated (as pycocotools)`);
    }
    const json = { ...cocoEvalJson(r), seconds };
    if (out) writeFileAtomic(out, `${JSON.stringify({ ...json, summary: r.summary, per_category_ap: r.perCategoryAp }, null, 2)}\n`);
    if (p.options.json) {
      print(JSON.stringify(json));
      return 0;
    }
    print(`eval-coco: ${r.numImages} images, ${r.numCategories} categories, ${gt.annotations.length} annotations; ` +
      `${r.numDetections} detections; iouType ${iouType}; ${seconds.toFixed(2)} s`);
    print(r.summary.replace(/\n$/, ''));
    const w = Math.max(8, ...r.perCategoryAp.map((c) => c.name.length));
    print(`\nper-category AP (IoU=0.50:0.95, area=all, maxDets=100; "-" = no ground truth):`);
    print(`  ${'id'.padStart(6)}  ${'category'.padEnd(w)}  AP`);
    for (const c of r.perCategoryAp) {
      print(`  ${String(c.categoryId).padStart(6)}  ${c.name.padEnd(w)}  ${c.ap === -1 ? '-' : formatPythonFixed(c.ap, 3)}`);
    }
    if (out) print(`wrote ${out}`);
    return 0;
  },
};

/** The COCO commands, keyed by name (spread into `main.ts`'s table). */
export const cocoCommands: Record<string, CocoCommand> = { 'eval-coco': evalCocoCommand };
