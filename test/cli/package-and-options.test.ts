import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildHead, buildNeck } from '../../src/models/heads/index.js';
import { ViTAdapter } from '../../src/models/adapter/vit-adapter.js';
import { VisionTransformer } from '../../src/models/vit.js';
import { resizeForTest } from '../../src/tasks/segmentation/inference.js';
import { getPreset } from '../../src/tasks/segmentation/configs.js';
import { REPO_ROOT, runBin, writeScenePng, writeTinyWholeConfig } from './helpers.js';

test('package entry: main/types/exports exist and `import("vit-adapter")` works from outside the repository', () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; main: string; types: string };
  assert.ok(existsSync(join(REPO_ROOT, pkg.main)), `${pkg.main} exists`);
  assert.ok(existsSync(join(REPO_ROOT, pkg.types)), `${pkg.types} exists`);
  const dir = mkdtempSync(join(tmpdir(), 'cli-pkg-'));
  try {
    mkdirSync(join(dir, 'node_modules'));
    symlinkSync(REPO_ROOT, join(dir, 'node_modules', pkg.name), 'dir');
    const code = `
      const m = await import('vit-adapter');
      const t = m.tensor([1, 2, 3]);
      const out = {
        tensor: t.shape, ViTAdapter: typeof m.ViTAdapter, loadConfig: typeof m.loadConfig, readImage: typeof m.readImage,
        loadWeights: typeof m.loadWeights, ns: [typeof m.engine.tensor, typeof m.io.readSafetensors, typeof m.nn.Module,
          typeof m.models.UPerHead, typeof m.segmentation.segmentImage],
      };
      console.log(JSON.stringify(out));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { tensor: number[]; ViTAdapter: string; loadConfig: string; readImage: string; loadWeights: string; ns: string[] };
    assert.deepEqual(j.tensor, [3]);
    assert.deepEqual([j.ViTAdapter, j.loadConfig, j.readImage, j.loadWeights], ['function', 'function', 'function', 'function']);
    assert.deepEqual(j.ns, ['function', 'function', 'function', 'function', 'function']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('model options are validated before allocation, with the option and the expected range named', () => {
  const small = { embed_dim: 64, depth: 2, num_heads: 2, deform_num_heads: 2, conv_inplane: 8, interaction_indexes: [[0, 0], [1, 1]] as [number, number][] };
  assert.throws(() => new ViTAdapter({ ...small, depth: -1, interaction_indexes: undefined }), /ViTAdapter: depth must be an integer ≥ 1 and ≤ 1024, got -1/);
  assert.throws(() => new VisionTransformer({ depth: -3 }), /VisionTransformer: depth must be an integer ≥ 1/);
  assert.throws(() => new ViTAdapter({ ...small, n_points: 0 }), /n_points must be an integer ≥ 1 and ≤ 256, got 0/);
  assert.throws(() => new ViTAdapter({ ...small, embed_dim: 1_000_000_000 }), /embed_dim must be an integer ≥ 1 and ≤ 65536, got 1000000000/);
  assert.throws(() => new ViTAdapter({ ...small, num_heads: 3 }), /embed_dim 64 is not divisible by num_heads 3/);
  assert.throws(() => new ViTAdapter({ ...small, deform_num_heads: 5 }), /embed_dim × deform_ratio 64 is not divisible by deform_num_heads 5/);
  assert.throws(() => new ViTAdapter({ ...small, conv_inplane: 0 }), /conv_inplane must be an integer ≥ 1/);
  assert.throws(() => new ViTAdapter({ ...small, mlp_ratio: -1 }), /mlp_ratio must be a number > 0/);
  assert.throws(() => new ViTAdapter({ ...small, drop_path_rate: 2 }), /drop_path_rate must be a number ≥ 0 and ≤ 1/);
  assert.throws(() => new ViTAdapter({ ...small, patch_size: 0 }), /patch_size must be an integer ≥ 1/);
  assert.throws(() => new ViTAdapter({ ...small, window_size: [7] }), /window_size: list of 1 entries, expected one per block \(depth 2\)/);
  assert.throws(() => new ViTAdapter({ ...small, interaction_indexes: [] }), /interaction_indexes must be a non-empty list/);
  assert.throws(() => buildHead({ type: 'FCNHead', in_channels: 64, channels: 0, num_classes: 3 }), /FCNHead: channels must be an integer ≥ 1 and ≤ 65536, got 0/);
  assert.throws(() => buildHead({ type: 'FCNHead', in_channels: -4, channels: 8, num_classes: 3 }), /in_channels must be an integer ≥ 1/);
  assert.throws(() => buildHead({ type: 'FCNHead', in_channels: 8, channels: 8, num_classes: 3, num_convs: 1e9 }), /FCNHead: num_convs must be an integer ≥ 0 and ≤ 64/);
  assert.throws(() => buildHead({ type: 'UPerHead', in_channels: [8, 8], in_index: [0, 1], channels: 8, num_classes: 3, pool_scales: [1, 1e6] }),
    /UPerHead: pool_scales\[1\] must be an integer ≥ 1 and ≤ 1024/);
  assert.throws(() => buildNeck({ type: 'FPN', in_channels: [8, 8], out_channels: 0, num_outs: 2 }), /FPN: out_channels must be an integer ≥ 1/);
  // A valid small model still builds.
  assert.equal(new ViTAdapter(small).interactions.length, 2);
});

test('an absurd test scale ratio is refused with the ratio and the resulting size named (not "Invalid typed array length")', async () => {
  const cfg = getPreset('upernet_deit_adapter_tiny_512_160k_ade20k');
  const img = { data: new Uint8Array(64 * 64 * 3), height: 64, width: 64 };
  assert.throws(() => resizeForTest(img, cfg.test_pipeline, 100), /test scale ratio 100 would resize the 64x64 image to 51200x51200/);
  const dir = mkdtempSync(join(tmpdir(), 'cli-scales-'));
  try {
    const png = join(dir, 'a.png');
    await writeScenePng(png, 1);
    const r = runBin(['segment', png, '--config', writeTinyWholeConfig(dir), '--scales', '100', '--out', join(dir, 'o')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--scales: ratio 100 is above 8; ratios are fractions of the config's img_scale/);
    assert.doesNotMatch(r.stderr, /Invalid typed array length/);
    const neg = join(dir, 'neg.json');
    const c = JSON.parse(readFileSync(writeTinyWholeConfig(dir, 'n'), 'utf8')) as { model: { backbone: Record<string, unknown> } };
    c.model.backbone.depth = -1;
    await import('node:fs').then((fs) => fs.writeFileSync(neg, JSON.stringify(c)));
    const d = runBin(['segment', png, '--config', neg, '--out', join(dir, 'o')]);
    assert.equal(d.code, 1);
    assert.match(d.stderr, /depth must be an integer ≥ 1/);
    assert.doesNotMatch(d.stderr, /Invalid array length/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
