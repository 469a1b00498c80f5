/**
 * The authors' ViT-Adapter Mask R-CNN presets: the tiny preset's state dict has exactly the 452 keys, shapes, dtypes
 * and buffers of `mask_rcnn_deit_adapter_tiny_fpn_3x_coco` (fixture `mask_rcnn_adapter_tiny_keys.json`), a synthetic
 * state dict with those keys loads strictly, and a damaged one is refused naming the key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { type Tensor, zeros } from '../../src/engine/index.js';
import { StateDictError, init } from '../../src/nn/index.js';
import { DETECTOR_PRESETS, buildMaskRCNN, detectorPreset } from '../../src/models/detectors/index.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';

const KEYS = fixturePath('detection', 'mask_rcnn_adapter_tiny_keys.json');

function skip(): false | string {
  return skipUnlessFixtures('detection') || (existsSync(KEYS) ? false : 'fixture ../shared/fixtures/detection/mask_rcnn_adapter_tiny_keys.json not found');
}

test('detector presets: the three ViT-Adapter Mask R-CNN configs, neck width = backbone width, authors\' test_cfg', () => {
  assert.deepEqual(Object.keys(DETECTOR_PRESETS).sort(), [
    'mask_rcnn_deit_adapter_base_fpn_3x_coco', 'mask_rcnn_deit_adapter_small_fpn_3x_coco', 'mask_rcnn_deit_adapter_tiny_fpn_3x_coco',
  ]);
  for (const [name, p] of Object.entries(DETECTOR_PRESETS)) {
    const D = p.backbone!.embed_dim!;
    assert.deepEqual(p.neck.in_channels, [D, D, D, D], name);
    assert.equal(p.roi_head.bbox_head.num_classes, 80);
    assert.equal(p.test_cfg.rcnn.max_per_img, 100);
  }
  const a = detectorPreset('mask_rcnn_deit_adapter_tiny_fpn_3x_coco');
  a.test_cfg.rcnn.score_thr = 0.3;
  assert.equal(DETECTOR_PRESETS.mask_rcnn_deit_adapter_tiny_fpn_3x_coco!.test_cfg.rcnn.score_thr, 0.05, 'presets are copied');
  assert.throws(() => detectorPreset('mask_rcnn_nope'), /unknown detector preset "mask_rcnn_nope"; expected one of/);
});

test('tiny preset: the 452 state-dict keys, order, shapes, dtypes and buffers of the authors\' model; strict load of a synthetic state dict',
  { skip: skip() }, () => {
    const ref = JSON.parse(readFileSync(KEYS, 'utf8')) as {
      model: Record<string, any>; keys: string[]; shapes: Record<string, number[]>; buffers: string[];
      non_float32: Record<string, string>; num_params: number; num_buffer_elements: number; num_tensors: number;
      per_module: Record<string, { tensors: number }>;
    };
    const cfg = detectorPreset('mask_rcnn_deit_adapter_tiny_fpn_3x_coco');
    // the preset's backbone options are the fixture's (the authors' config as mmdetection built it)
    for (const [k, v] of Object.entries(ref.model.backbone)) {
      if (k === 'type' || k === 'pretrained') continue;
      assert.deepEqual((cfg.backbone as Record<string, unknown>)[k], v, `backbone.${k}`);
    }
    assert.deepEqual(cfg.test_cfg, ref.model.test_cfg);
    // structure only: skip the random initialisers (the weights are loaded below)
    const model = init.withoutInit(() => buildMaskRCNN(cfg));
    try {
      const sd = model.stateDict();
      assert.equal(sd.size, ref.num_tensors);
      assert.deepEqual([...sd.keys()], ref.keys);
      for (const [k, t] of sd) {
        assert.deepEqual(t.shape, ref.shapes[k], `shape of ${k}`);
        assert.equal(t.dtype, ref.non_float32[k] ?? 'float32', `dtype of ${k}`);
      }
      for (const [mod, v] of Object.entries(ref.per_module)) {
        assert.equal([...sd.keys()].filter((k) => k.startsWith(`${mod}.`)).length, v.tensors, `tensors of ${mod}`);
      }
      const buffers = new Set(model.namedBuffers().map(([k]) => k));
      assert.deepEqual([...buffers].sort(), [...ref.buffers].sort());
      assert.equal(model.numParameters(), ref.num_params);
      let bufferElements = 0;
      for (const k of ref.buffers) bufferElements += sd.get(k)!.numel();
      assert.equal(bufferElements, ref.num_buffer_elements);
      // a synthetic checkpoint with exactly these keys loads strictly
      const synth = new Map<string, Tensor>();
      for (const k of ref.keys) synth.set(k, zeros(ref.shapes[k]!, { dtype: (ref.non_float32[k] ?? 'float32') as 'float32' }));
      // (zeros are finite: skipping the NaN/Inf scan only saves time; key, shape and dtype checks stay strict)
      assert.deepEqual(model.loadStateDict(synth, { strict: true, allowNonfinite: true }), { missing: [], unexpected: [], mismatched: [] });
      // damaged: one key missing, one shape wrong, one extra
      synth.delete('roi_head.mask_head.conv_logits.bias');
      synth.set('rpn_head.rpn_cls.weight', zeros([4, 256, 1, 1]));
      synth.set('roi_head.bbox_head.fc_extra.weight', zeros([1]));
      assert.throws(() => model.loadStateDict(synth, { allowNonfinite: true }), (e: unknown) => e instanceof StateDictError
        && /missing keys \(1\): roi_head\.mask_head\.conv_logits\.bias/.test(e.message)
        && /unexpected keys \(1\): roi_head\.bbox_head\.fc_extra\.weight/.test(e.message)
        && /size mismatch for rpn_head\.rpn_cls\.weight/.test(e.message));
      synth.forEach((t) => t.dispose());
    } finally {
      model.dispose();
    }
  });
