/** BEiT-Adapter segmentation presets: the authors' values, backbone dispatch, segment/eval with a tiny override. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed } from '../../src/engine/index.js';
import { writeRgbPng } from '../../src/io/image.js';
import { BEiTAdapter } from '../../src/models/adapter/beit-adapter.js';
import { ViTAdapter } from '../../src/models/adapter/vit-adapter.js';
import { saveSafetensors } from '../../src/nn/serialization.js';
import { ConfigError, getPreset, listConfigs, loadConfig } from '../../src/tasks/segmentation/configs.js';
import { buildBackbone, buildSegmentor, loadSegmentor } from '../../src/tasks/segmentation/inference.js';
import { generateScene } from '../../src/tasks/segmentation/synthetic.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { runCli } from './helpers.js';

const NAME = 'upernet_beit_adapter_large_640_160k_ade20k_ss';

/** The preset with a micro backbone (64×64 relative position grid) and tiny heads. */
function tinyBeitConfig(dir: string): string {
  const cfg = {
    base: NAME,
    model: {
      backbone: {
        img_size: 64, embed_dim: 32, depth: 4, num_heads: 2, deform_num_heads: 2, conv_inplane: 8, with_cp: false,
        drop_path_rate: 0, interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]],
      },
      decode_head: { in_channels: [32, 32, 32, 32], channels: 16 },
      auxiliary_head: { in_channels: 32, channels: 8 },
      test_cfg: { mode: 'slide', crop_size: [64, 64], stride: [43, 43] },
    },
    test_pipeline: { img_scale: [256, 64] },
  };
  const path = join(dir, 'tiny_beit.json');
  writeFileSync(path, JSON.stringify(cfg));
  return path;
}

test(`${NAME}: the authors' values (backbone kwargs as the key-list fixture, UperNet 1024 channels, slide 640/426)`, { skip: skipUnlessFixtures('beit/beit_adapter_large_keys.json') }, () => {
  const c = getPreset(NAME);
  const keys = JSON.parse(readFileSync(fixturePath('beit', 'beit_adapter_large_keys.json'), 'utf8')) as {
    configs: Record<string, { backbone_kwargs: Record<string, unknown> }>;
  };
  const { type, ...kwargs } = c.model.backbone;
  assert.equal(type, 'BEiTAdapter');
  // The fixture's 640 Mask2Former config builds the same backbone as this UperNet config.
  assert.deepEqual(kwargs, keys.configs.mask2former_beit_adapter_large_640_160k_ade20k_ss!.backbone_kwargs);
  assert.equal(c.model.decode_head.type, 'UPerHead');
  assert.equal(c.model.decode_head.channels, 1024);
  assert.deepEqual(c.model.decode_head.in_channels, [1024, 1024, 1024, 1024]);
  assert.equal(c.model.auxiliary_head?.in_channels, 1024);
  assert.deepEqual(c.model.test_cfg, { mode: 'slide', crop_size: [640, 640], stride: [426, 426] });
  assert.deepEqual(c.test_pipeline.img_scale, [2048, 640]);
  assert.deepEqual(c.img_norm_cfg.mean, [123.675, 116.28, 103.53]);
  const row = listConfigs().find((r) => r.name === NAME)!;
  assert.match(row.backbone, /^BEiT-Adapter \(1024-wide, 24 blocks\)$/);
});

test('buildBackbone dispatches on type; an unknown type is a config error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'beit-cfg-'));
  try {
    const c = loadConfig(tinyBeitConfig(dir));
    const b = buildBackbone(c.model.backbone);
    assert.ok(b instanceof BEiTAdapter);
    b.dispose();
    const v = buildBackbone({ embed_dim: 32, depth: 4, num_heads: 2, conv_inplane: 8, deform_num_heads: 2 });
    assert.ok(v instanceof ViTAdapter);
    v.dispose();
    writeFileSync(join(dir, 'bad.json'), JSON.stringify({ base: NAME, model: { backbone: { type: 'Swin' } } }));
    assert.throws(() => loadConfig(join(dir, 'bad.json')), (e: unknown) => e instanceof ConfigError && /backbone\.type must be one of ViTAdapter, BEiTAdapter, ViTBaseline, got "Swin"/.test((e as Error).message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('segment CLI with the BEiT-Adapter preset (tiny override): slide windows, checkpoint round trip loads strictly', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'beit-seg-'));
  try {
    const cfgPath = tinyBeitConfig(dir);
    mkdirSync(join(dir, 'in'));
    const s = generateScene({ width: 128, height: 96, seed: 3 });
    await writeRgbPng(join(dir, 'in', 'a.png'), s.image, 96, 128);
    manualSeed(7);
    const model = buildSegmentor(loadConfig(cfgPath));
    const ckpt = join(dir, 'model.safetensors');
    saveSafetensors(model, ckpt);
    model.dispose();
    const { model: loaded, report } = loadSegmentor(loadConfig(cfgPath), ckpt);
    assert.ok(loaded.backbone instanceof BEiTAdapter);
    assert.equal(report.loaded, [...loaded.stateDict().keys()].length);
    loaded.dispose();
    const r = runCli(['segment', join(dir, 'in'), '--config', cfgPath, '--checkpoint', ckpt, '--out', join(dir, 'out'), '--json', '--threads', '1']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { mode: string; images: { height: number; width: number; shares: { share: number }[] }[] };
    assert.equal(j.mode, 'slide');
    assert.deepEqual([j.images[0]!.height, j.images[0]!.width], [96, 128]);
    assert.ok(Math.abs(j.images[0]!.shares.reduce((a, x) => a + x.share, 0) - 1) < 1e-9);
    // whole-image inference does not fit the 64×64 relative position table: a clear error, not a crash.
    const w = runCli(['segment', join(dir, 'in'), '--config', cfgPath, '--checkpoint', ckpt, '--out', join(dir, 'out2'), '--mode', 'whole']);
    assert.equal(w.code, 1);
    assert.match(w.stderr, /relative position table is for 17 tokens .*build the model with img_size matching the input/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
