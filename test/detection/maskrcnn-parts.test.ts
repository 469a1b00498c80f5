/**
 * Mask R-CNN parts beyond the fixture: mask pasting against libtorch's grid_sample (the operation mmdetection calls),
 * the whole test path from an image through a small ViT-Adapter (shapes, ranges, masks inside their boxes), empty
 * results, and clear errors for bad configs and inputs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Tensor, gridSample, manualSeed, noGrad, rand, randn, scope, tensor } from '../../src/engine/index.js';
import { ViTAdapter } from '../../src/models/adapter/index.js';
import { Module } from '../../src/nn/index.js';
import {
  AnchorGenerator, type DetectorBackbone, type ImageMeta, MaskRCNN, type MaskRCNNConfig, maskRCNNHeads, pasteMasks,
} from '../../src/models/detectors/index.js';

/** mmdet `_do_paste_mask` for one detection through grid_sample over the whole image, then the bounding region. */
function pasteOracle(prob: Tensor, box: number[], h: number, w: number, thr: number): Uint8Array {
  const [x0, y0, x1, y1] = box as [number, number, number, number];
  const g = (v: number): number => (Number.isFinite(v) ? v : 0);
  const grid = new Float64Array(h * w * 2);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      grid[2 * (y * w + x)] = g(((x + 0.5) - x0) / (x1 - x0) * 2 - 1);
      grid[2 * (y * w + x) + 1] = g(((y + 0.5) - y0) / (y1 - y0) * 2 - 1);
    }
  }
  const v = scope(() => gridSample(prob.to('float64').reshape(1, 1, prob.shape[0]!, prob.shape[1]!),
    tensor(grid, { shape: [1, h, w, 2] }), { mode: 'bilinear', paddingMode: 'zeros', alignCorners: false }).toTypedArray());
  const xa = Math.max(Math.floor(x0) - 1, 0);
  const ya = Math.max(Math.floor(y0) - 1, 0);
  const xb = Math.min(Math.ceil(x1) + 1, w);
  const yb = Math.min(Math.ceil(y1) + 1, h);
  const out = new Uint8Array(h * w);
  for (let y = ya; y < yb; y++) for (let x = xa; x < xb; x++) out[y * w + x] = v[y * w + x]! >= thr ? 1 : 0;
  return out;
}

test('pasteMasks equals grid_sample pasting in the bounding region (inside, clipped, oversized, thin and zero-width boxes)', () => {
  manualSeed(3);
  const S = 28;
  const h = 37;
  const w = 53;
  const boxes = [
    [10.3, 5.7, 30.9, 25.2], [-8.5, -3.25, 12.4, 9.9], [40.2, 20.5, 70.0, 50.0], [-20, -20, 90, 80],
    [17.5, 3.0, 17.9, 30.0], [22.0, 10.0, 22.0, 20.0], [5.0, 12.0, 45.0, 12.0], [0, 0, 53, 37], [60, 40, 70, 50],
  ];
  const probs = rand([boxes.length, S, S]);
  const p = probs.toTypedArray();
  const got = pasteMasks(p, boxes.flat(), S, h, w, 0.5);
  assert.equal(got.length, boxes.length * h * w);
  boxes.forEach((b, d) => {
    const want = pasteOracle(probs.select(0, d), b, h, w, 0.5);
    const bad: number[] = [];
    for (let i = 0; i < h * w; i++) if (got[d * h * w + i] !== want[i]) bad.push(i);
    assert.deepEqual(bad, [], `detection ${d} (${b.join(', ')}): pixels differ`);
  });
  // a box beyond the image pastes nothing; a full-image box pastes something
  assert.ok(got.subarray(8 * h * w, 9 * h * w).every((v) => v === 0));
  assert.ok(got.subarray(7 * h * w, 8 * h * w).some((v) => v === 1));
  probs.dispose();
  assert.throws(() => pasteMasks(p, [0, 0, 1], S, h, w, 0.5), /4 values per detection/);
  assert.throws(() => pasteMasks(p.subarray(1), boxes.flat(), S, h, w, 0.5), /expected 9·28·28 probabilities/);
});

test('AnchorGenerator: mmdet base anchors (float32) on the cell corners, row (y·w + x)·A + a', () => {
  const g = new AnchorGenerator({ type: 'AnchorGenerator', scales: [8], ratios: [0.5, 1.0, 2.0], strides: [4, 8] });
  const a = g.levelPriors(0, [2, 3], 'float64');
  assert.deepEqual(a.shape, [18, 4]);
  const v = a.toTypedArray();
  // base sizes of stride 4: w = 4·8/sqrt(r), h = 4·8·sqrt(r), in float32 arithmetic
  const f = Math.fround;
  const ws = [0.5, 1, 2].map((r) => f(f(4 * f(1 / f(Math.sqrt(r)))) * 8));
  const hs = [0.5, 1, 2].map((r) => f(f(4 * f(Math.sqrt(r))) * 8));
  for (let y = 0; y < 2; y++) {
    for (let x = 0; x < 3; x++) {
      for (let k = 0; k < 3; k++) {
        const row = (y * 3 + x) * 3 + k;
        assert.deepEqual(Array.from(v.subarray(4 * row, 4 * row + 4)),
          [f(-0.5 * ws[k]!) + 4 * x, f(-0.5 * hs[k]!) + 4 * y, f(0.5 * ws[k]!) + 4 * x, f(0.5 * hs[k]!) + 4 * y]);
      }
    }
  }
  assert.ok(Math.abs(ws[0]! - 45.254833) < 1e-5 && ws[1] === 32 && Math.abs(ws[2]! - 22.627417) < 1e-5);
  a.dispose();
  assert.throws(() => new AnchorGenerator({ strides: [4], ratios: [1] }), /either scales or octave_base_scale/);
  assert.throws(() => g.levelPriors(2, [1, 1]), /level 2 out of range/);
});

function smallConfig(D: number): MaskRCNNConfig {
  const c = maskRCNNHeads(D, 3);
  c.neck.out_channels = 16;
  c.rpn_head.in_channels = 16;
  c.rpn_head.feat_channels = 16;
  c.roi_head.bbox_roi_extractor.out_channels = 16;
  c.roi_head.mask_roi_extractor!.out_channels = 16;
  c.roi_head.bbox_head.in_channels = 16;
  c.roi_head.bbox_head.fc_out_channels = 32;
  c.roi_head.mask_head!.in_channels = 16;
  c.roi_head.mask_head!.conv_out_channels = 8;
  c.test_cfg.rpn.nms_pre = 200;
  c.test_cfg.rpn.max_per_img = 60;
  return c;
}

function microBackbone(): ViTAdapter {
  return new ViTAdapter({
    variant: 'detection', embed_dim: 64, depth: 4, num_heads: 2, conv_inplane: 16, deform_num_heads: 2, n_points: 4,
    interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]], window_attn: [true, false, true, false], window_size: 4,
  });
}

test('MaskRCNN.simpleTest: image → detections in original-image pixels, masks inside their boxes, empty results', () => {
  manualSeed(11);
  const model = new MaskRCNN(smallConfig(64), microBackbone() as unknown as DetectorBackbone).eval();
  try {
    // original 50x75 resized by 1.28 to 64x96 (scale factors as float32), padded to 64x96
    const meta: ImageMeta = { oriShape: [50, 75], imgShape: [64, 96], padShape: [64, 96], scaleFactor: [96 / 75, 64 / 50, 96 / 75, 64 / 50] };
    const img = randn([1, 3, 64, 96]);
    const det = model.simpleTest(img, meta);
    const D = det.scores.length;
    assert.ok(D > 0 && D <= 100, `${D} detections`);
    assert.equal(det.boxes.length, 4 * D);
    assert.equal(det.masks!.length, D * 50 * 75);
    const wMax = 96 / Math.fround(96 / 75) + 1e-3;
    const hMax = 64 / Math.fround(64 / 50) + 1e-3;
    for (let i = 0; i < D; i++) {
      const [x0, y0, x1, y1] = det.boxes.subarray(4 * i, 4 * i + 4) as unknown as number[];
      assert.ok(x0! >= 0 && y0! >= 0 && x1! <= wMax && y1! <= hMax && x0! <= x1! && y0! <= y1!, `box ${i}`);
      assert.ok(det.labels[i]! >= 0 && det.labels[i]! < 3);
      assert.ok(det.scores[i]! > 0.05 && det.scores[i]! <= 1);
      if (i > 0) assert.ok(det.scores[i]! <= det.scores[i - 1]!);
      for (let y = 0; y < 50; y++) {
        for (let x = 0; x < 75; x++) {
          if (det.masks![i * 3750 + y * 75 + x]) {
            assert.ok(x >= Math.floor(x0!) - 1 && x < Math.ceil(x1!) + 1 && y >= Math.floor(y0!) - 1 && y < Math.ceil(y1!) + 1, `mask ${i} pixel outside its box region`);
          }
        }
      }
    }
    // without masks, from the backbone's features: the same detections
    noGrad(() => scope(() => {
      const feats = model.backbone.forward(img);
      const noMask = model.simpleTestFromFeatures(feats, meta, { withMask: false });
      assert.equal(noMask.masks, undefined);
      assert.deepEqual(Array.from(noMask.labels), Array.from(det.labels));
      assert.deepEqual(Array.from(noMask.boxes), Array.from(det.boxes));
      // a score threshold nothing passes, and no proposals at all: no detections, empty masks
      const x = model.neck.forward(feats);
      const rcnn = { ...model.testCfg.rcnn, score_thr: 1 };
      const proposals = randn([5, 5]).abs().mul(20);
      for (const [props, cfg] of [[proposals, rcnn], [proposals.slice(0, 0, 0), model.testCfg.rcnn]] as const) {
        const r = model.roi_head.simpleTest(x, props, meta, cfg);
        assert.deepEqual(r.detBboxes.shape, [0, 5]);
        assert.deepEqual(r.detLabels.shape, [0]);
        assert.equal(r.masks!.length, 0);
      }
    }));
    // a model left in training mode is run in eval mode (the backbone's BatchNorms use running statistics) and restored
    model.train();
    const again = model.simpleTest(img, meta, { withMask: false });
    assert.equal(model.training, true);
    assert.deepEqual(Array.from(again.boxes), Array.from(det.boxes));
    model.eval();
    // bad inputs
    assert.throws(() => model.simpleTest(img, { ...meta, padShape: [64, 128] }), /img is 64x96 but meta.padShape is 64x128/);
    assert.throws(() => model.simpleTest(img, { ...meta, scaleFactor: [1, 1, 1] as never }), /scaleFactor must be 4 positive numbers/);
    assert.throws(() => model.simpleTest(img.slice(1, 0, 1), meta), /img must be \(1, 3, H, W\)/);
    assert.throws(() => noGrad(() => model.simpleTestFromFeatures([img], meta)), /expected 4 input maps/);
    img.dispose();
  } finally {
    model.dispose();
  }
});

/** A backbone stand-in for config checks (never run). */
class NoBackbone extends Module implements DetectorBackbone {
  forward(): Tensor[] { throw new Error('not run'); }
}

test('Mask R-CNN configs: unknown keys and unsupported options are errors naming them', () => {
  const bb = (): DetectorBackbone => new NoBackbone();
  const bad = (edit: (c: any) => void, re: RegExp): void => {
    const c = smallConfig(64) as any;
    edit(c);
    assert.throws(() => new MaskRCNN(c, bb()), re);
  };
  bad((c) => { c.rpn_head.anchor_genrator = {}; }, /RPNHead: unknown config key\(s\) anchor_genrator/);
  bad((c) => { c.test_cfg.rcnn.nms = { type: 'soft_nms', iou_threshold: 0.5 }; }, /nms type "soft_nms" is not supported/);
  bad((c) => { c.test_cfg.rpn.nms = { type: 'nms', iou_thr: 0.7 }; }, /unknown nms key\(s\) iou_thr/);
  bad((c) => { c.roi_head.bbox_roi_extractor.roi_layer.type = 'RoIPool'; }, /roi_layer type "RoIPool" is not supported/);
  bad((c) => { c.roi_head.mask_head.upsample_cfg = { type: 'bilinear', scale_factor: 2 }; }, /only upsample_cfg \{type: 'deconv'/);
  bad((c) => { c.roi_head.mask_head.num_classes = 4; }, /mask_head.num_classes 4 differs from bbox_head.num_classes 3/);
  bad((c) => { c.neck.num_outs = 4; }, /the neck gives 4 levels but the anchor generator has 5 strides/);
  bad((c) => { delete c.test_cfg; }, /config needs test_cfg/);
  bad((c) => { c.roi_head.bbox_head.bbox_coder.target_stds = [0.1, 0.1]; }, /target_stds must be 4 finite numbers/);
  assert.throws(() => new MaskRCNN(smallConfig(64), {} as DetectorBackbone), /a backbone module is required/);
});
