import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed, noGrad } from '../../src/engine/index.js';
import { StateDictError } from '../../src/nn/index.js';
import { saveSafetensors } from '../../src/nn/serialization.js';
import { type SegConfig, loadConfig } from '../../src/tasks/segmentation/configs.js';
import { buildSegmentor, loadSegmentor, segmentImage } from '../../src/tasks/segmentation/inference.js';
import { generateScene } from '../../src/tasks/segmentation/synthetic.js';
import { tinyModelOverrides } from './helpers.js';

function tiny(aux = true): SegConfig {
  return loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k', {
    ...tinyModelOverrides(),
    ...(aux ? {} : { model: { ...tinyModelOverrides().model, auxiliary_head: null } }),
    test_pipeline: { img_scale: [256, 64] },
  });
}

test('loadSegmentor: exact round trip, auxiliary_head keys skipped with a note, missing aux tolerated, other keys strict', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seg-load-'));
  try {
    manualSeed(5);
    const src = buildSegmentor(tiny(true));
    const full = join(dir, 'full.safetensors');
    saveSafetensors(src, full);
    const sd = src.stateDict();
    const auxCount = [...sd.keys()].filter((k) => k.startsWith('auxiliary_head.')).length;
    assert.ok(auxCount > 0);

    // same architecture: every tensor loads, predictions agree
    const { model: same, report } = loadSegmentor(tiny(true), full);
    assert.equal(report.skippedAuxKeys, 0);
    assert.equal(report.auxHeadMissing, false);
    assert.deepEqual(report.notes, []);
    assert.equal(report.loaded, sd.size);
    const s = generateScene({ width: 96, height: 64, seed: 3 });
    const img = { data: s.image, height: 64, width: 96 };
    assert.deepEqual(segmentImage(same, img, tiny()).labels, segmentImage(src, img, tiny()).labels);

    // a model without auxiliary head: aux keys skipped and reported
    const { model: noAux, report: r2 } = loadSegmentor(tiny(false), full);
    assert.equal(noAux.auxiliary_head, null);
    assert.equal(r2.skippedAuxKeys, auxCount);
    assert.equal(r2.notes.length, 1);
    assert.match(r2.notes[0]!, new RegExp(`skipped ${auxCount} auxiliary_head`));
    assert.deepEqual(segmentImage(noAux, img, tiny()).labels, segmentImage(src, img, tiny()).labels);

    // a checkpoint without auxiliary keys into a model with one: loads, with a note
    const noAuxCkpt = join(dir, 'noaux.safetensors');
    saveSafetensors(noAux, noAuxCkpt);
    const { report: r3 } = loadSegmentor(tiny(true), noAuxCkpt);
    assert.equal(r3.auxHeadMissing, true);
    assert.match(r3.notes.join(' '), /no auxiliary_head\.\* keys/);

    // a decode-head key missing: strict error naming it
    const partial = new Map([...sd].filter(([k]) => k !== 'decode_head.conv_seg.bias'));
    const partialPath = join(dir, 'partial.safetensors');
    saveSafetensors(partial, partialPath);
    assert.throws(() => loadSegmentor(tiny(true), partialPath), (e: Error) => e instanceof StateDictError && /decode_head\.conv_seg\.bias/.test(e.message));
    // a backbone of another width: size mismatches
    const other = loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k', {
      model: { ...tinyModelOverrides().model, backbone: { ...tinyModelOverrides().model!.backbone!, embed_dim: 32 }, decode_head: { in_channels: [32, 32, 32, 32], channels: 32 }, auxiliary_head: { in_channels: 32 } },
    });
    assert.throws(() => loadSegmentor(other, full), /size mismatch/);
    for (const m of [src, same, noAux]) m.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the real tiny model on an image that is not a multiple of 32 (no ResizeToMultiple): whole and slide pad and crop', () => {
  const cfg = tiny(false);
  cfg.test_pipeline = { img_scale: [70, 50], keep_ratio: true, size_divisor: null, flip: false, img_ratios: null };
  manualSeed(2);
  const m = buildSegmentor(cfg);
  const s = generateScene({ width: 70, height: 50, seed: 9 });
  const img = { data: s.image, height: 50, width: 70 };
  const whole = segmentImage(m, img, cfg, { mode: 'whole' });
  assert.deepEqual([whole.copies[0]!.inputWidth, whole.copies[0]!.inputHeight], [70, 50]);
  assert.equal(whole.labels.length, 70 * 50);
  cfg.model.test_cfg = { mode: 'slide', crop_size: [64, 64], stride: [48, 48] };
  const slide = segmentImage(m, img, cfg);
  assert.equal(slide.labels.length, 70 * 50);
  assert.ok(slide.labels.every((v) => v < 150));
  // a Semantic FPN preset builds and runs (tiny widths)
  const fpn = loadConfig('fpn_deit_adapter_tiny_512_80k_ade20k', {
    model: { backbone: tinyModelOverrides().model!.backbone!, neck: { in_channels: [64, 64, 64, 64], out_channels: 32 },
      decode_head: { in_channels: [32, 32, 32, 32], channels: 16 } },
    test_pipeline: { img_scale: [128, 64] },
  });
  const fm = buildSegmentor(fpn);
  assert.ok(fm.stateDict().has('neck.lateral_convs.0.conv.weight'));
  const fr = noGrad(() => segmentImage(fm, img, fpn));
  assert.equal(fr.labels.length, 70 * 50);
  m.dispose();
  fm.dispose();
});
