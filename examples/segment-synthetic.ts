/**
 * Segment a synthetic scene with the library API (no downloads):
 *
 *   npx tsc -p tsconfig.json && node dist/examples/segment-synthetic.js [OUT_DIR] [--checkpoint FILE]
 *
 * Builds ViT-Adapter-T + UperNet for the synthetic classes, segments a generated 256×256 scene, scores it against the
 * scene's ground truth and writes the label PNG and an overlay. Without a checkpoint the weights are random, so the
 * labels are not meaningful; the point is the API:
 *
 *   loadConfig → buildSegmentor / loadSegmentor → segmentImage → SegEvaluator, writeLabelPng, blendOverlay
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed } from '../src/engine/index.js';
import { blendOverlay, writeLabelPng, writeRgbPng } from '../src/io/image.js';
import {
  SYNTHETIC_CLASSES, SegEvaluator, buildSegmentor, generateScene, loadConfig, loadSegmentor, paletteOf, segmentImage,
} from '../src/tasks/segmentation/index.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const ci = args.indexOf('--checkpoint');
  const checkpoint = ci >= 0 ? args[ci + 1] : undefined;
  const outDir = args.find((a, i) => !a.startsWith('--') && (ci < 0 || i !== ci + 1)) ?? join(tmpdir(), 'vit-adapter-example');
  const size = 256;

  // The synthetic preset, tested at the scene's own size in whole mode.
  const config = loadConfig('upernet_deit_adapter_tiny_synthetic', {
    test_pipeline: { img_scale: [4 * size, size] },
    model: { test_cfg: { mode: 'whole' } },
  });
  let model;
  if (checkpoint) {
    const loaded = loadSegmentor(config, checkpoint);
    for (const n of loaded.report.notes) console.log(`note: ${n}`);
    model = loaded.model;
  } else {
    console.log('no --checkpoint: random weights (untrained), labels are not meaningful');
    manualSeed(0);
    model = buildSegmentor(config);
  }

  const scene = generateScene({ width: size, height: size, seed: 42 });
  const image = { data: scene.image, height: size, width: size };
  const result = segmentImage(model, image, config); // add { flip: true, scales: [0.75, 1, 1.25] } for TTA
  console.log(`segmented ${size}x${size} in ${result.ms.toFixed(0)} ms; classes present:`);
  for (const c of result.classShares) console.log(`  ${c.name.padEnd(12)} ${(100 * c.share).toFixed(1)}%`);

  const evaluator = new SegEvaluator({ numClasses: SYNTHETIC_CLASSES.length });
  evaluator.add(result.labels, scene.semantic);
  console.log(evaluator.formatTable(SYNTHETIC_CLASSES));

  const palette = paletteOf(config);
  await writeRgbPng(join(outDir, 'scene.png'), scene.image, size, size);
  await writeLabelPng(join(outDir, 'labels.png'), result.labels, size, size, palette);
  await writeRgbPng(join(outDir, 'overlay.png'), blendOverlay(image, result.labels, palette), size, size);
  console.log(`wrote scene.png, labels.png, overlay.png to ${outDir}`);
  model.dispose();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
