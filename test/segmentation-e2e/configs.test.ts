import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigError, PRESET_NAMES, classNamesOf, deepMerge, getPreset, listConfigs, loadConfig, paletteOf,
} from '../../src/tasks/segmentation/configs.js';
import { ADE20K_CLASSES, ADE20K_PALETTE } from '../../src/tasks/segmentation/classes.js';
import { buildSegmentor } from '../../src/tasks/segmentation/inference.js';
import type { ViTAdapterOptions } from '../../src/models/adapter/vit-adapter.js';
import { tinyModelOverrides, writeTinyConfig } from './helpers.js';

test('presets: the authors\' ADE20K config names and values', () => {
  for (const n of ['upernet_deit_adapter_tiny_512_160k_ade20k', 'upernet_deit_adapter_small_512_160k_ade20k',
    'upernet_deit_adapter_base_512_160k_ade20k', 'upernet_augreg_adapter_large_512_160k_ade20k',
    'fpn_deit_adapter_tiny_512_80k_ade20k', 'fpn_deit_adapter_small_512_80k_ade20k', 'fpn_deit_adapter_base_512_80k_ade20k']) {
    assert.ok(PRESET_NAMES.includes(n), n);
  }
  const sizes: [string, number, number, number, number][] = [
    ['tiny', 192, 3, 6, 0.1], ['small', 384, 6, 6, 0.2], ['base', 768, 12, 12, 0.3],
  ];
  for (const [s, D, heads, dheads, dpr] of sizes) {
    const c = getPreset(`upernet_deit_adapter_${s}_512_160k_ade20k`);
    const b = c.model.backbone as ViTAdapterOptions;
    assert.equal(b.embed_dim, D);
    assert.equal(b.depth, 12);
    assert.equal(b.num_heads, heads);
    assert.equal(b.deform_num_heads, dheads);
    assert.equal(b.drop_path_rate, dpr);
    assert.equal(b.deform_ratio, s === 'base' ? 0.5 : 1.0);
    assert.deepEqual(b.interaction_indexes, [[0, 2], [3, 5], [6, 8], [9, 11]]);
    assert.equal(b.conv_inplane, 64);
    assert.equal(b.n_points, 4);
    assert.equal(b.cffn_ratio, 0.25);
    assert.deepEqual(c.model.decode_head, {
      type: 'UPerHead', in_channels: [D, D, D, D], in_index: [0, 1, 2, 3], pool_scales: [1, 2, 3, 6], channels: 512,
      dropout_ratio: 0.1, num_classes: 150, norm_cfg: { type: 'SyncBN', requires_grad: true }, align_corners: false,
      loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 1.0 },
    });
    assert.deepEqual(c.model.auxiliary_head, {
      type: 'FCNHead', in_channels: D, in_index: 2, channels: 256, num_convs: 1, concat_input: false, dropout_ratio: 0.1,
      num_classes: 150, norm_cfg: { type: 'SyncBN', requires_grad: true }, align_corners: false,
      loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 0.4 },
    });
    assert.equal(c.model.neck, null);
    assert.deepEqual(c.model.test_cfg, { mode: 'slide', crop_size: [512, 512], stride: [341, 341] });
    assert.deepEqual(c.img_norm_cfg, { mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375], to_rgb: true });
    assert.deepEqual(c.test_pipeline, { img_scale: [2048, 512], keep_ratio: true, size_divisor: 32, flip: false, img_ratios: null });
    assert.equal(c.dataset.type, 'ADE20KDataset');
    assert.equal(c.dataset.reduce_zero_label, true);
    assert.equal(classNamesOf(c), ADE20K_CLASSES);
    assert.equal(paletteOf(c), ADE20K_PALETTE);
  }
  const L = getPreset('upernet_augreg_adapter_large_512_160k_ade20k');
  const Lb = L.model.backbone as ViTAdapterOptions;
  assert.equal(Lb.embed_dim, 1024);
  assert.equal(Lb.depth, 24);
  assert.equal(Lb.num_heads, 16);
  assert.equal(Lb.deform_num_heads, 16);
  assert.equal(Lb.deform_ratio, 0.5);
  assert.equal(Lb.drop_path_rate, 0.4);
  assert.equal(Lb.pretrain_size, 384);
  assert.deepEqual(Lb.interaction_indexes, [[0, 5], [6, 11], [12, 17], [18, 23]]);
  assert.deepEqual(L.img_norm_cfg, { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], to_rgb: true });
  assert.deepEqual(L.model.decode_head.in_channels, [1024, 1024, 1024, 1024]);
  const F = getPreset('fpn_deit_adapter_small_512_80k_ade20k');
  assert.deepEqual(F.model.neck, { type: 'FPN', in_channels: [384, 384, 384, 384], out_channels: 256, num_outs: 4 });
  assert.equal(F.model.decode_head.type, 'FPNHead');
  assert.deepEqual(F.model.decode_head.feature_strides, [4, 8, 16, 32]);
  assert.equal(F.model.decode_head.channels, 128);
  assert.equal(F.model.auxiliary_head, null);
  // listing
  const rows = listConfigs();
  assert.deepEqual(rows.map((r) => r.name), [...PRESET_NAMES]);
  assert.ok(rows.every((r) => r.num_classes > 0 && r.description.length > 0));
  // every preset validates through loadConfig
  for (const n of PRESET_NAMES) assert.equal(loadConfig(n).name, n);
  // presets are fresh copies
  getPreset('upernet_deit_adapter_tiny_512_160k_ade20k').model.backbone.embed_dim = 1;
  assert.equal(getPreset('upernet_deit_adapter_tiny_512_160k_ade20k').model.backbone.embed_dim, 192);
});

test('loadConfig: JSON file overriding a base preset (deep merge, arrays replaced), overrides argument', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seg-cfg-'));
  try {
    const path = writeTinyConfig(dir, 'tiny', { extra: { model: { ...tinyModelOverrides().model, test_cfg: { stride: [40, 40] } } } });
    const c = loadConfig(path);
    assert.equal(c.name, 'tiny');
    assert.match(c.source, /based on upernet_deit_adapter_tiny_512_160k_ade20k/);
    assert.equal(c.model.backbone.embed_dim, 64);
    assert.equal(c.model.backbone.mlp_ratio, 4); // kept from the preset
    assert.deepEqual(c.model.backbone.interaction_indexes, [[0, 0], [1, 1], [2, 2], [3, 3]]); // replaced, not merged
    assert.deepEqual(c.model.decode_head.pool_scales, [1, 2, 3, 6]);
    assert.equal(c.model.decode_head.channels, 32);
    assert.deepEqual(c.model.test_cfg, { mode: 'slide', crop_size: [512, 512], stride: [40, 40] });
    assert.deepEqual(c.test_pipeline.img_scale, [256, 64]);
    assert.equal(c.test_pipeline.keep_ratio, true);
    const o = loadConfig(path, { model: { test_cfg: { mode: 'whole' } }, test_pipeline: { flip: true } });
    assert.equal(o.model.test_cfg.mode, 'whole');
    assert.equal(o.test_pipeline.flip, true);
    const p = loadConfig('upernet_deit_adapter_tiny_512_160k_ade20k', { model: { auxiliary_head: null } });
    assert.equal(p.model.auxiliary_head, null);
    assert.deepEqual(deepMerge({ a: { b: 1, c: [1, 2] } }, { a: { c: [3] } }), { a: { b: 1, c: [3] } });
    // the tiny config builds a model
    const m = buildSegmentor(c);
    assert.equal(m.training, false);
    assert.ok(m.stateDict().has('auxiliary_head.conv_seg.weight'));
    m.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadConfig errors: unknown preset, unknown keys, bad values, missing base fields', () => {
  const dir = mkdtempSync(join(tmpdir(), 'seg-cfg-'));
  try {
    assert.throws(() => loadConfig('upernet_vit_nonexistent'), (e: Error) => e instanceof ConfigError && /presets: upernet_deit/.test(e.message));
    const w = (name: string, obj: unknown): string => {
      const p = join(dir, `${name}.json`);
      writeFileSync(p, JSON.stringify(obj));
      return p;
    };
    const base = 'upernet_deit_adapter_tiny_512_160k_ade20k';
    assert.throws(() => loadConfig(w('top', { base, optimizer: { lr: 1 } })), /unknown key\(s\) optimizer/);
    assert.throws(() => loadConfig(w('nested', { base, test_pipeline: { img_scales: [1, 2] } })), /test_pipeline: unknown key\(s\) img_scales/);
    assert.throws(() => loadConfig(w('model', { base, model: { backbon: {} } })), /model: unknown key\(s\) backbon/);
    assert.throws(() => loadConfig(w('mode', { base, model: { test_cfg: { mode: 'sliding' } } })), /mode must be whole or slide/);
    assert.throws(() => loadConfig(w('classes', { base, model: { decode_head: { num_classes: 10 }, auxiliary_head: { num_classes: 10 } } })), /150 classes but decode_head.num_classes is 10/);
    assert.throws(() => loadConfig(w('nobase', { model: {} })), /missing/);
    assert.throws(() => loadConfig(w('badbase', { base: 'nope' })), /unknown config "nope"/);
    assert.throws(() => loadConfig(join(dir, 'missing.json')), /cannot read config/);
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{ not json');
    assert.throws(() => loadConfig(bad), /cannot read config/);
    assert.throws(() => loadConfig(base, { foo: 1 } as never), /overrides: unknown key\(s\) foo/);
    // backbone keys are checked when the model is built
    const typo = loadConfig(w('typo', { base, ...tinyModelOverrides(), model: { ...tinyModelOverrides().model, backbone: { embed_dims: 64 } } }));
    assert.throws(() => buildSegmentor(typo), /unknown option\(s\) embed_dims/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
