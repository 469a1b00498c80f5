/**
 * Detection and instance segmentation on a synthetic COCO set with the library API (no downloads):
 *
 *   npx tsc -p tsconfig.json && node dist/examples/detect-synthetic.js [OUT_DIR] [--checkpoint FILE] [--count 6]
 *
 * Writes a small synthetic dataset with COCO instance annotations (the `synth --coco` layout), builds the compact
 * Mask R-CNN preset for its 5 object classes, runs it over the val split, writes an overlay of the first image and
 * the COCO results JSON, and evaluates bbox and segm AP with the COCO API. Without a checkpoint the weights are
 * random, so the numbers are near 0; the point is the chain:
 *
 *   writeSyntheticSplits + writeSyntheticCoco → loadDetConfig → buildDetector / loadDetector → evaluateDetection
 *   (detectImage → detectionsToCocoResults → evaluateCoco) → writeOverlay
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed } from '../src/engine/index.js';
import { readImage } from '../src/io/image.js';
import { writeFileAtomic } from '../src/io/files.js';
import { writeSyntheticSplits } from '../src/tasks/segmentation/synth-splits.js';
import {
  buildDetector, detectImage, detectionPalette, evaluateDetection, loadDetConfig, loadDetector, writeOverlay, writeSyntheticCoco,
} from '../src/tasks/detection/index.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const checkpoint = flag('--checkpoint');
  const count = Number(flag('--count') ?? 6);
  const outDir = args.find((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--')) ?? join(tmpdir(), 'vit-adapter-detect-example');

  // 1. the dataset: images + semantic maps (img_dir/, ann_dir/) and COCO instances (annotations/instances_{train,val}.json)
  const size = 128;
  const split = { count, size, seed: 3, val: Math.max(1, Math.floor(count / 2)) };
  await writeSyntheticSplits(outDir, split);
  const coco = writeSyntheticCoco(outDir, split);
  console.log(`dataset: ${outDir} (${coco.images.val} val images, ${coco.annotations.val} instances)`);

  // 2. the detector: the compact synthetic preset (its dataset defaults: annotations/instances_val.json, img_dir/val)
  const config = loadDetConfig('mask_rcnn_vit_adapter_synth');
  let model;
  if (checkpoint) {
    const loaded = loadDetector(config, checkpoint);
    for (const n of loaded.report.notes) console.log(`note: ${n}`);
    model = loaded.model;
  } else {
    console.log('no --checkpoint: random weights (untrained); expect AP near 0');
    manualSeed(0);
    model = buildDetector(config);
  }

  // 3. one image: detections and an overlay
  const first = join(coco.imageDirs.val, 'synthetic_' + String(split.count - split.val).padStart(4, '0') + '.png');
  const image = await readImage(first);
  const r = detectImage(model, config, image);
  const overlay = join(outDir, 'example_detections.png');
  await writeOverlay(overlay, image, r.detections, { classNames: config.classes, palette: detectionPalette(config.classes.length), scoreThr: 0.3 });
  console.log(`${first}: ${r.detections.scores.length} detections in ${r.ms.toFixed(0)} ms → ${overlay}`);

  // 4. the val split: COCO results and COCOeval (bbox and segm)
  const ev = await evaluateDetection(model, config, { dataRoot: outDir });
  const results = join(outDir, 'results.json');
  writeFileAtomic(results, JSON.stringify(ev.results));
  console.log(`evaluated ${ev.images} images, ${ev.detections} detections → ${results}`);
  for (const [name, m] of [['bbox', ev.bbox], ['segm', ev.segm]] as const) {
    if (m) console.log(`${name}:\n${m.summary}`);
  }
  model.dispose();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
