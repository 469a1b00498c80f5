/**
 * Parity of the Mask R-CNN (FPN neck, RPN, standard RoI head with box and mask branches) with the mmdetection 2.22
 * fixture `../shared/fixtures/detection/maskrcnn_small`: strict loading of the 42 reference tensors, every stored
 * stage within max|out−ref|/max|ref| < 1e-4 in float32 (and far tighter in float64), the same proposals and
 * detections in the same order, identical labels, RoI levels and binary masks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { noGrad, scope } from '../../src/engine/index.js';
import { loadWeights, readStateDict } from '../../src/nn/index.js';
import { pastedProbability } from '../../src/models/detectors/index.js';
import {
  type DetectionFixtureRun, buildDetectionFixtureModel, checkDetectionFixture,
} from '../../src/tools/reference-detection.js';
import { checkReference } from '../../src/tools/reference.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

const NAME = 'maskrcnn_small';
const prefix = fixturePath('detection', NAME);
const FILES = [`${NAME}.json`, `${NAME}.weights.safetensors`, `${NAME}.io.safetensors`];

function skip(): false | string {
  const s = skipUnlessFixtures('detection');
  if (s) return s;
  const missing = FILES.filter((f) => !existsSync(fixturePath('detection', f)));
  return missing.length ? `fixtures ../shared/fixtures/detection/${missing.join(', ')} not found` : false;
}

function readCfg(): Record<string, any> {
  return JSON.parse(readFileSync(`${prefix}.json`, 'utf8')) as Record<string, any>;
}

/** Names of the io file that the parity check must report (everything but inputs and the mask side data). */
function expectedRows(): string[] {
  const io = readStateDict(`${prefix}.io.safetensors`);
  const names = [...io.keys()].filter((n) => !/^in\d+$/.test(n) && !['scale_factor', 'extra.rois', 'segm_ambiguous', 'segm_ambiguous_prob'].includes(n));
  io.forEach((t) => t.dispose());
  return names.sort();
}

test('maskrcnn_small: strict load of the 42 reference tensors in the reference key order', { skip: skip() }, () => {
  const cfg = readCfg();
  const model = buildDetectionFixtureModel(cfg);
  try {
    assert.deepEqual([...model.stateDict().keys()], cfg.weights.keys);
    assert.equal(cfg.weights.keys.length, cfg.weights.num_tensors);
    const res = loadWeights(model, `${prefix}.weights.safetensors`, { strict: true });
    assert.deepEqual(res, { missing: [], unexpected: [], mismatched: [] });
    assert.equal(model.numParameters(), cfg.weights.num_params);
  } finally {
    model.dispose();
  }
});

/** Detail checks on one run: counts, order, labels, every mask pixel, pasted probabilities at the ambiguous pixels. */
function inspectRun(t: { diagnostic(msg: string): void }, dtype: 'float32' | 'float64', cfg: Record<string, any>, run: DetectionFixtureRun): void {
  const { detections: det, stages, io } = run;
  const counts = cfg.counts;
  assert.equal(stages.get('proposals')!.shape[0], counts.proposals);
  assert.equal(det.scores.length, counts.detections);
  const perClass = new Array<number>(cfg.sizes.num_classes).fill(0);
  det.labels.forEach((l) => { perClass[l]!++; });
  assert.deepEqual(perClass, counts.detections_per_class);
  assert.deepEqual(Array.from(det.labels), Array.from(io.get('det_labels')!.toTypedArray()));
  for (let i = 1; i < det.scores.length; i++) assert.ok(det.scores[i - 1]! > det.scores[i]!, 'scores descending');
  // Detections carry det_bboxes (as float32)
  const db = stages.get('det_bboxes')!.toTypedArray();
  det.scores.forEach((s, i) => assert.equal(s, Math.fround(db[5 * i + 4]!)));
  const r = io.get('segm_masks')!.toTypedArray();
  let diff = 0;
  for (let i = 0; i < r.length; i++) if (det.masks![i] !== r[i]) diff++;
  let fg = 0;
  for (const v of det.masks!) fg += v;
  assert.equal(fg, counts.mask_foreground_pixels);
  const amb = io.get('segm_ambiguous')!.toTypedArray();
  const ambProb = io.get('segm_ambiguous_prob')!.toTypedArray();
  const mp = stages.get('mask_pred')!;
  const S = mp.shape[2]!;
  const lab = stages.get('det_labels')!;
  const probs = mp.flatten(2).gather(1, lab.reshape(-1, 1, 1).expand(-1, 1, S * S)).sigmoid().toTypedArray();
  const boxes = stages.get('mask_rois')!.slice(1, 1, 5).div(io.get('scale_factor')!.to(dtype)).toTypedArray();
  let probErr = 0;
  for (let q = 0; q < ambProb.length; q++) {
    const d = amb[3 * q]!;
    const p = pastedProbability(probs, d, Array.from(boxes.slice(4 * d, 4 * d + 4)), S, amb[3 * q + 1]!, amb[3 * q + 2]!);
    probErr = Math.max(probErr, Math.abs(p - ambProb[q]!));
  }
  t.diagnostic(`${dtype}: ${diff} of ${r.length} mask pixels differ; pasted probability at the ${ambProb.length} ambiguous pixels within ${probErr.toExponential(2)}`);
  assert.equal(diff, 0, 'every mask pixel, the ambiguous ones included');
  assert.ok(probErr < (dtype === 'float64' ? 1e-12 : 1e-5), `pasted probability error ${probErr}`);
}

for (const dtype of ['float32', 'float64'] as const) {
  test(`maskrcnn_small: every stage matches the reference in ${dtype}; same proposals, detections, labels and masks`, { skip: skip() }, (t) => {
    const cfg = readCfg();
    let inspected = false;
    const rows = noGrad(() => scope(() => checkDetectionFixture(prefix, cfg, { dtype }, (run) => {
      inspectRun(t, dtype, cfg, run);
      inspected = true;
    })));
    assert.ok(inspected);
    assert.deepEqual(rows.map((r) => r.name).sort(), expectedRows());
    t.diagnostic(`${dtype} max|out-ref|/max|ref|: ${rows.map((r) => `${r.name} ${r.maxRelErr.toExponential(2)}`).join(', ')}`);
    const failed = rows.filter((r) => !r.ok);
    assert.deepEqual(failed, [], `failed: ${failed.map((r) => `${r.name} (${r.maxRelErr})`).join(', ')}`);
    if (dtype === 'float64') {
      // the same float64 computation differs from the reference only by summation order (≈1e-15 here); 1e-12 still
      // catches any stage that silently ran in float32 (≥1e-8)
      const worst = Math.max(...rows.map((r) => r.maxRelErr));
      t.diagnostic(`float64 worst relative error ${worst.toExponential(2)}`);
      assert.ok(worst < 1e-12, `float64 worst relative error ${worst}`);
    }
  });
}

test('maskrcnn_small: check-reference accepts the detection fixture', { skip: skip() }, () => {
  const rows = checkReference(prefix);
  assert.ok(rows.length > 30);
  assert.ok(rows.every((r) => r.ok), rows.filter((r) => !r.ok).map((r) => r.name).join(', '));
});
