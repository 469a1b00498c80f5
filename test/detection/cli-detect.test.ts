import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readImage } from '../../src/io/image.js';
import { type CocoResult, evaluateCoco, loadCocoJson, rleArea } from '../../src/tasks/detection/coco/index.js';
import { DET_PRESET_NAMES } from '../../src/tasks/detection/configs.js';
import { manualSeed } from '../../src/engine/index.js';
import { saveSafetensors } from '../../src/nn/serialization.js';
import { loadDetConfig } from '../../src/tasks/detection/configs.js';
import { buildDetector } from '../../src/tasks/detection/detector.js';
import { runBin } from '../cli/helpers.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { T, type StorageDesc, type Value, torchZip } from '../io/torchfile.js';

/** A tiny random-weight detector for 64×64 synthetic scenes (seconds to build and run). */
function writeTinyDetConfig(dir: string): string {
  const path = join(dir, 'tiny_det.json');
  writeFileSync(path, JSON.stringify({
    base: 'mask_rcnn_vit_adapter_synth',
    model: {
      backbone: { embed_dim: 32, depth: 4, num_heads: 2, deform_num_heads: 2, conv_inplane: 8, interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]] },
      neck: { in_channels: [32, 32, 32, 32], out_channels: 16 },
      rpn_head: { in_channels: 16, feat_channels: 16 },
      roi_head: {
        bbox_roi_extractor: { out_channels: 16 }, mask_roi_extractor: { out_channels: 16 },
        bbox_head: { in_channels: 16, fc_out_channels: 32 }, mask_head: { in_channels: 16, conv_out_channels: 8 },
      },
    },
    test_pipeline: { img_scale: [256, 64] },
  }));
  return path;
}

interface EvalJson {
  task: string; images: number; detections: number; untrained: boolean;
  bbox: { stats: number[]; per_category: { category_id: number; name: string; ap: number }[]; summary: string } | null;
  segm: { stats: number[]; summary: string } | null;
}

test('detection chain on a synthetic COCO set with a tiny random detector: synth --coco → detect → eval --task detection → COCOeval', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'det-cli-'));
  try {
    const s = runBin(['synth', '--out', dir, '--count', '3', '--size', '64', '--seed', '1', '--val', '2', '--coco']);
    assert.equal(s.code, 0, s.stderr);
    const cfg = writeTinyDetConfig(dir);

    // detect: overlay PNG + COCO results per image, --json summary
    const out = join(dir, 'out');
    const d = runBin(['detect', join(dir, 'img_dir', 'val'), '--config', cfg, '--out', out, '--score-thr', '0', '--threads', '1', '--json']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stderr, /RANDOM, UNTRAINED weights/);
    const dj = JSON.parse(d.stdout) as {
      untrained: boolean; classes: string[];
      images: { input: string; overlay: string; results: string; height: number; width: number; detections: { class: string; score: number; bbox: number[]; mask_area: number }[] }[];
    };
    assert.equal(dj.untrained, true);
    assert.deepEqual(dj.classes, ['disc', 'box', 'triangle', 'ring', 'cross']);
    assert.equal(dj.images.length, 2);
    let anyDetections = 0;
    for (const im of dj.images) {
      assert.ok(existsSync(im.overlay) && existsSync(im.results));
      const ov = readFileSync(im.overlay);
      assert.deepEqual([...ov.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG');
      const results = JSON.parse(readFileSync(im.results, 'utf8')) as CocoResult[];
      assert.equal(results.length, im.detections.length, 'the results file holds the listed detections');
      anyDetections += results.length;
      for (const r of results) {
        assert.equal(r.bbox!.length, 4);
        assert.ok(r.category_id >= 1 && r.category_id <= 5);
        assert.deepEqual(r.segmentation!.size, [64, 64]);
        assert.equal(typeof r.segmentation!.counts, 'string');
      }
      // the same detections in both outputs: mask areas, scores and boxes (x1 y1 x2 y2 vs x y w h) agree
      const a = results.map((r) => rleArea(r.segmentation!)).sort((x, y) => x - y);
      const b = im.detections.map((x) => x.mask_area).sort((x, y) => x - y);
      assert.deepEqual(a, b);
      const key = (score: number, x: number, y: number): string => `${score.toFixed(6)} ${x.toFixed(3)} ${y.toFixed(3)}`;
      assert.deepEqual(results.map((r) => key(r.score, r.bbox![0]!, r.bbox![1]!)).sort(), im.detections.map((x) => key(x.score, x.bbox[0]!, x.bbox[1]!)).sort());
    }
    assert.ok(anyDetections > 0, 'the random detector makes detections at --score-thr 0 (5 classes: softmax scores above 0.05)');
    const img = await readImage(dj.images[0]!.overlay);
    assert.deepEqual([img.height, img.width], [64, 64]);
    {
      // eval: explicit --task, --ann and --img-dir, results written
      const resFile = join(dir, 'dt.json');
      const e = runBin(['eval', '--task', 'detection', '--config', cfg, '--data', dir, '--ann', 'annotations/instances_val.json', '--img-dir', 'img_dir/val',
        '--results', resFile, '--threads', '1', '--json']);
      assert.equal(e.code, 0, e.stderr);
      const ej = JSON.parse(e.stdout) as EvalJson;
      assert.equal(ej.task, 'detection');
      assert.equal(ej.images, 2);
      assert.ok(ej.detections > 0);
      assert.ok(ej.bbox && ej.segm, 'both iou types evaluated');
      for (const m of [ej.bbox, ej.segm]) {
        assert.equal(m.stats.length, 12);
        assert.ok(m.stats.every((x) => x === -1 || (x >= 0 && x <= 1)), JSON.stringify(m.stats));
        assert.match(m.summary, /Average Precision {2}\(AP\) @\[ IoU=0\.50:0\.95 \| area= {3}all \| maxDets=100 \]/);
      }
      // consistency: the written results evaluated again with the coco API give the reported stats
      const gt = loadCocoJson(join(dir, 'annotations', 'instances_val.json'));
      const dts = JSON.parse(readFileSync(resFile, 'utf8')) as CocoResult[];
      assert.equal(dts.length, ej.detections);
      assert.deepEqual(evaluateCoco(gt, dts.map(({ segmentation: _s, ...r }) => r), 'bbox').stats, ej.bbox.stats);
      assert.deepEqual(evaluateCoco(gt, dts.map(({ bbox: _b, ...r }) => r), 'segm').stats, ej.segm.stats);

      // the task follows from a detection config; the dataset layout from its preset; text output
      const t = runBin(['eval', '--config', cfg, '--data', dir, '--limit', '1', '--threads', '1']);
      assert.equal(t.code, 0, t.stderr);
      assert.match(t.stdout, /evaluated 1 image\(s\)/);
      assert.match(t.stdout, /Evaluating bbox:/);
      assert.match(t.stderr, /UNTRAINED/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('detection CLI: clear errors for missing files, wrong configs and mixed-up options; configs lists the detection presets', () => {
  const dir = mkdtempSync(join(tmpdir(), 'det-cli-err-'));
  try {
    const cfg = writeTinyDetConfig(dir);
    const noData = runBin(['eval', '--task', 'detection', '--config', cfg]);
    assert.equal(noData.code, 2);
    assert.match(noData.stderr, /--data COCO_ROOT is required/);
    const missing = runBin(['eval', '--task', 'detection', '--config', cfg, '--data', join(dir, 'nowhere'), '--threads', '1']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nowhere\/annotations\/instances_val\.json/);
    const bogus = runBin(['eval', '--task', 'tracking', '--data', dir]);
    assert.equal(bogus.code, 2);
    assert.match(bogus.stderr, /--task must be segmentation or detection/);
    const mixed = runBin(['eval', '--task', 'detection', '--config', cfg, '--data', dir, '--mode', 'whole']);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /--mode apply to segmentation only/);
    const segWithAnn = runBin(['eval', '--config', 'upernet_deit_adapter_tiny_512_160k_ade20k', '--data', dir, '--ann', 'x.json']);
    assert.equal(segWithAnn.code, 2);
    assert.match(segWithAnn.stderr, /--ann apply to --task detection only/);
    const badCfg = runBin(['detect', dir, '--config', 'mask_rcnn_nonexistent']);
    assert.equal(badCfg.code, 1);
    assert.match(badCfg.stderr, /unknown detection config "mask_rcnn_nonexistent": not a preset and not a .json file; presets: mask_rcnn_deit_adapter_tiny_fpn_3x_coco/);
    const wrongClasses = join(dir, 'wrong.json');
    writeFileSync(wrongClasses, JSON.stringify({ base: 'mask_rcnn_vit_adapter_synth', classes: ['a', 'b'] }));
    const wc = runBin(['detect', dir, '--config', wrongClasses]);
    assert.equal(wc.code, 1);
    assert.match(wc.stderr, /2 classes but model\.roi_head\.bbox_head\.num_classes is 5/);
    assert.equal(runBin(['detect', '--config', cfg]).code, 2);
    const thr = runBin(['detect', dir, '--config', cfg, '--score-thr', '2']);
    assert.equal(thr.code, 2);
    const nofile = runBin(['detect', join(dir, 'missing.png'), '--config', cfg, '--out', join(dir, 'o'), '--json']);
    assert.equal(nofile.code, 1);
    const nj = JSON.parse(nofile.stdout) as { failures: { input: string; error: string }[] };
    assert.match(nj.failures[0]!.error, /no such file/);

    const c = runBin(['configs', '--json']);
    assert.equal(c.code, 0, c.stderr);
    const rows = JSON.parse(c.stdout) as { name: string; task?: string }[];
    for (const n of DET_PRESET_NAMES) assert.ok(rows.some((r) => r.name === n && r.task === 'detection'), n);
    assert.ok(rows.some((r) => r.name === 'upernet_deit_adapter_tiny_512_160k_ade20k'), 'segmentation presets still listed');
    const txt = runBin(['configs']);
    assert.match(txt.stdout, /Detection \(vit-adapter detect/);
    assert.match(txt.stdout, /mask_rcnn_deit_adapter_base_fpn_3x_coco/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('detect --checkpoint: an mmdetection .pth (state_dict + meta.CLASSES) and a safetensors file load strictly; bad checkpoints are clear errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'det-ckpt-'));
  try {
    const cfg = writeTinyDetConfig(dir);
    const s = runBin(['synth', '--out', dir, '--count', '2', '--size', '64', '--seed', '4', '--val', '1']);
    assert.equal(s.code, 0, s.stderr);
    const img = join(dir, 'img_dir', 'val', 'synthetic_0001.png');
    // the random model of seed 0, saved: loading it must give the detections of `--seed 0` without a checkpoint
    manualSeed(0);
    const model = buildDetector(loadDetConfig(cfg));
    const st = join(dir, 'tiny.safetensors');
    saveSafetensors(model, st);
    const storages: Record<string, StorageDesc> = {};
    const sd: Record<string, Value> = {};
    let i = 0;
    for (const [k, t] of model.stateDict()) {
      const key = String(i++);
      const type = t.dtype === 'float32' ? 'FloatStorage' : t.dtype === 'int64' ? 'LongStorage' : null;
      assert.ok(type, `${k}: ${t.dtype}`);
      storages[key] = { type, numel: t.shape.reduce((a, b) => a * b, 1), data: t.toBytes() };
      sd[k] = T(key, t.shape);
    }
    model.dispose();
    const classes = ['disc', 'box', 'triangle', 'ring', 'cross'];
    const pth = join(dir, 'tiny_mmdet.pth');
    writeFileSync(pth, torchZip('archive', { meta: { CLASSES: classes, mmdet_version: '2.22.0' }, state_dict: sd }, storages));
    const wrong = join(dir, 'tiny_wrong_classes.pth');
    writeFileSync(wrong, torchZip('archive', { meta: { CLASSES: ['a', 'b', 'c'] }, state_dict: sd }, storages));

    const run = (extra: string[]): { code: number | null; stdout: string; stderr: string } =>
      runBin(['detect', img, '--config', cfg, '--out', join(dir, `o${extra.length}_${Math.random().toString(36).slice(2)}`), '--score-thr', '0', '--threads', '1', '--json', ...extra]);
    const results = (r: { stdout: string }): string => readFileSync((JSON.parse(r.stdout) as { images: { results: string }[] }).images[0]!.results, 'utf8');
    const rand = run(['--seed', '0']);
    assert.equal(rand.code, 0, rand.stderr);
    for (const ck of [st, pth]) {
      const r = run(['--checkpoint', ck]);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /UNTRAINED/);
      assert.equal((JSON.parse(r.stdout) as { untrained: boolean }).untrained, false);
      assert.equal(results(r), results(rand), `${ck}: the saved weights give the same detections`);
    }
    const w = run(['--checkpoint', wrong]);
    assert.equal(w.code, 1);
    assert.match(w.stderr, /trained for 3 classes \(meta\.CLASSES\) but config tiny_det has 5/);
    // a checkpoint of another model (the 5-class synth preset's full width): missing / mismatched keys are listed
    const other = runBin(['detect', img, '--config', 'mask_rcnn_vit_adapter_synth', '--checkpoint', st, '--out', join(dir, 'x')]);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /size mismatch for|missing keys/);
    const none = runBin(['detect', img, '--config', cfg, '--checkpoint', join(dir, 'nope.pth'), '--out', join(dir, 'y')]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /nope\.pth/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the COCO ViT-Adapter-T preset builds the authors\' Mask R-CNN: state-dict keys and shapes of the fixture key list', { skip: skipUnlessFixtures('detection/mask_rcnn_adapter_tiny_keys.json') }, () => {
  const want = (JSON.parse(readFileSync(fixturePath('detection/mask_rcnn_adapter_tiny_keys.json'), 'utf8')) as { shapes: Record<string, number[]> }).shapes;
  const cfg = loadDetConfig('mask_rcnn_deit_adapter_tiny_fpn_3x_coco');
  assert.equal(cfg.classes.length, 80);
  assert.equal(cfg.category_ids[79], 90);
  const model = buildDetector(cfg);
  try {
    const got = Object.fromEntries([...model.stateDictShapes()].map(([k, s]) => [k, s]));
    assert.deepEqual(got, want);
  } finally {
    model.dispose();
  }
});
