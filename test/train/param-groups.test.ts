/**
 * Parameter groups of the authors' LayerDecayOptimizerConstructor against param_groups_tiny.json (the real
 * ViT-Adapter-T + UperNet + FCN segmentor): every group, name, order, lr scale, lr, weight decay and state index.
 * Also the plain constructor, freezing, a 24-block layout, and bad input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type LrConfig, LrScheduler, type OptimizerConfig, buildOptimizer, buildParamGroups, buildPlainParamGroups, describeParamGroups, isNoDecay, layerIdForVit,
} from '../../src/train/index.js';
import { buildSegmentor } from '../../src/tasks/segmentation/inference.js';
import { getPreset } from '../../src/tasks/segmentation/configs.js';
import { SKIP, fixtureJson } from './helpers.js';

interface PGFixture {
  optimizer_cfg: { lr: number; weight_decay: number; betas: [number, number]; paramwise_cfg: { num_layers: number; layer_decay_rate: number } };
  num_params: number;
  numel: number;
  groups: Record<string, unknown>[];
  params: { name: string; shape: number[]; state_index: number; group: string }[];
}

test('ViT-Adapter-T UperNet+FCN: groups equal the authors\' constructor exactly', { skip: SKIP }, () => {
  const f = fixtureJson<PGFixture>('param_groups_tiny.json');
  const model = buildSegmentor(getPreset('upernet_deit_adapter_tiny_512_160k_ade20k'));
  try {
    const oc = f.optimizer_cfg;
    const groups = buildParamGroups(model, {
      lr: oc.lr, weightDecay: oc.weight_decay, numLayers: oc.paramwise_cfg.num_layers, layerDecayRate: oc.paramwise_cfg.layer_decay_rate,
    });
    const d = describeParamGroups(groups, { betas: oc.betas });
    assert.equal(d.groups.length, f.groups.length);
    d.groups.forEach((g, i) => {
      const want = f.groups[i]!;
      // every field the fixture has, compared exactly (numbers with ===)
      for (const k of Object.keys(want)) assert.deepEqual((g as unknown as Record<string, unknown>)[k], want[k], `group ${i} field ${k}`);
      assert.deepEqual(Object.keys(g).sort(), Object.keys(want).sort(), `group ${i}: same fields`);
    });
    // per parameter: shape and state index
    const byName = new Map(model.namedParameters());
    let n = 0;
    let numel = 0;
    for (const p of f.params) {
      const t = byName.get(p.name);
      assert.ok(t, `model has ${p.name}`);
      assert.deepEqual(t.shape, p.shape, p.name);
      const g = groups.find((x) => x.groupName === p.group)!;
      assert.equal(g.stateIndexStart + g.paramNames.indexOf(p.name), p.state_index, p.name);
      n++;
      numel += t.numel();
    }
    assert.equal(n, f.num_params);
    assert.equal(numel, f.numel);
  } finally {
    model.dispose();
  }
});

test('frozen parameters are skipped; the plain constructor makes one group', { skip: SKIP }, () => {
  const model = buildSegmentor(getPreset('upernet_deit_adapter_tiny_512_160k_ade20k'));
  try {
    const all = model.namedParameters().length;
    const plain = buildPlainParamGroups(model, { lr: 1e-3, weightDecay: 0.05 });
    assert.equal(plain.length, 1);
    assert.equal(plain[0]!.groupName, 'default');
    assert.equal(plain[0]!.params.length, all);
    assert.equal(plain[0]!.weightDecay, 0.05);
    const frozen = buildParamGroups(model, { lr: 1e-4, weightDecay: 0.01, numLayers: 12, layerDecayRate: 0.95, freeze: ['backbone.'] });
    const names = frozen.flatMap((g) => g.paramNames);
    assert.ok(names.length > 0 && names.every((x) => !x.startsWith('backbone.')));
    assert.deepEqual(frozen.map((g) => g.groupName), ['layer_13_decay', 'layer_13_no_decay']);
    assert.equal(frozen[1]!.stateIndexStart, frozen[0]!.params.length);
    const frozenPlain = buildPlainParamGroups(model, { lr: 1e-3, weightDecay: 0.05 });
    assert.equal(frozenPlain[0]!.params.length, names.length);
    assert.throws(() => buildParamGroups(model, { lr: 1e-4, weightDecay: 0.01, numLayers: 12, layerDecayRate: 0.95, freeze: ['bakbone.'] }), /no parameter name starts with "bakbone\."/);
    model.freeze();
    assert.throws(() => buildPlainParamGroups(model, { lr: 1, weightDecay: 0 }), /no trainable parameters/);
  } finally {
    model.dispose();
  }
});

test('layer ids and decay exemptions follow the authors\' rules', () => {
  assert.equal(layerIdForVit('backbone.pos_embed', 14), 0);
  assert.equal(layerIdForVit('backbone.patch_embed.proj.weight', 14), 0);
  assert.equal(layerIdForVit('decode_head.query_feat.weight', 14), 0);
  assert.equal(layerIdForVit('backbone.blocks.0.attn.qkv.weight', 14), 1);
  assert.equal(layerIdForVit('backbone.blocks.11.norm1.bias', 14), 12);
  assert.equal(layerIdForVit('backbone.blocks.23.mlp.fc1.weight', 26), 24);
  assert.equal(layerIdForVit('backbone.level_embed', 14), 13);
  assert.equal(layerIdForVit('backbone.interactions.0.injector.gamma', 14), 13);
  assert.equal(layerIdForVit('auxiliary_head.conv_seg.weight', 14), 13);
  assert.ok(isNoDecay('backbone.blocks.0.gamma1', [192]));
  assert.ok(isNoDecay('decode_head.conv_seg.bias', [150]));
  assert.ok(!isNoDecay('backbone.pos_embed', [1, 197, 192]));
  assert.ok(!isNoDecay('backbone.level_embed', [3, 192]));
  assert.throws(() => layerIdForVit('backbone.blocks.x.weight', 14), /cannot read a block index/);
});

test('a 24-block backbone (the L layout) gets 26 layer ids and scales rate ** (25 - id)', () => {
  const cfg = getPreset('upernet_augreg_adapter_large_512_160k_ade20k');
  // the L structure (24 blocks, interaction indexes of L) at a small width so the test stays fast
  Object.assign(cfg.model.backbone, { embed_dim: 32, num_heads: 2, deform_num_heads: 2, conv_inplane: 8, img_size: 64, pretrain_size: 64, with_cp: false });
  cfg.model.decode_head = { ...cfg.model.decode_head, in_channels: [32, 32, 32, 32], channels: 16 };
  cfg.model.auxiliary_head = { ...cfg.model.auxiliary_head!, in_channels: 32, channels: 8 };
  const model = buildSegmentor(cfg);
  try {
    const groups = buildParamGroups(model, { lr: 2e-5, weightDecay: 0.05, numLayers: 24, layerDecayRate: 0.9 });
    const ids = [...new Set(groups.map((g) => g.layerId))].sort((a, b) => a! - b!);
    assert.deepEqual(ids, Array.from({ length: 26 }, (_, i) => i));
    for (const g of groups) {
      assert.ok(Math.abs(g.lrScale / Math.pow(0.9, 25 - g.layerId!) - 1) < 1e-14, g.groupName);
      assert.equal(g.lr, g.lrScale * 2e-5);
    }
    assert.equal(groups.find((g) => g.layerId === 25)!.lrScale, 1);
    assert.throws(() => buildParamGroups(model, { lr: 2e-5, weightDecay: 0.05, numLayers: 12, layerDecayRate: 0.9 }), /is in block 12, but numLayers is 12/);
  } finally {
    model.dispose();
  }
});

test('the recipe\'s optimizer and lr_config build the fixture\'s groups and schedule', { skip: SKIP }, () => {
  const recipe = fixtureJson<{ optimizer: OptimizerConfig; lr_config: LrConfig; runner: { max_iters: number } }>('recipe_tiny.json');
  const pg = fixtureJson<PGFixture>('param_groups_tiny.json');
  const lrf = fixtureJson<{ schedules: { name: string; rows: { iter: number; lr_all_groups?: number[] }[] }[] }>('lr_schedule_tiny.json');
  const model = buildSegmentor(getPreset('upernet_deit_adapter_tiny_512_160k_ade20k'));
  try {
    const opt = buildOptimizer(model, recipe.optimizer);
    assert.deepEqual(describeParamGroups(opt.paramGroups).groups.map((g) => [g.group_name, g.lr, g.weight_decay, g.num_params]),
      pg.groups.map((g) => [g.group_name, g.lr, g.weight_decay, g.num_params]));
    const sched = new LrScheduler(opt, recipe.lr_config, { maxIters: recipe.runner.max_iters });
    const rows = lrf.schedules.find((s) => s.name === 'poly_warmup_tiny_recipe')!.rows;
    for (const r of rows) assert.deepEqual(sched.step(r.iter), r.lr_all_groups, `iter ${r.iter}`);
    // mmcv logs param_groups[0]['lr'], i.e. layer_0_decay's
    assert.equal(opt.paramGroups[0]!.groupName, 'layer_0_decay');
    const plain = buildOptimizer(model, { type: 'AdamW', lr: 1e-3 });
    assert.equal(plain.paramGroups.length, 1);
    assert.equal(plain.paramGroups[0]!.weightDecay, 0.01);
    assert.throws(() => buildOptimizer(model, { ...recipe.optimizer, type: 'SGD' as 'AdamW' }), /type "SGD" is not supported/);
    assert.throws(() => buildOptimizer(model, { ...recipe.optimizer, paramwise_cfg: undefined }), /needs paramwise_cfg/);
    assert.throws(() => buildOptimizer(model, { ...recipe.optimizer, momentum: 0.9 } as OptimizerConfig), /unknown key "momentum"/);
  } finally {
    model.dispose();
  }
});
