import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Tensor, manualSeed, noGrad, randn, setNumThreads } from '../../src/engine/index.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import type { RawTensor } from '../../src/io/raw.js';
import { VisionTransformer } from '../../src/models/vit.js';
import { PretrainedError, formatPretrainedReport, loadPretrainedViT } from '../../src/train/pretrained.js';
import { buildSegmentor } from '../../src/tasks/segmentation/inference.js';
import { T, torchZip, type StorageDesc, type Value } from '../io/torchfile.js';
import { tinyTrainConfig } from './train-helpers.js';

setNumThreads(1);

const rawOf = (t: Tensor): RawTensor => ({ dtype: 'float32', shape: t.shape, data: noGrad(() => t.toBytes()) });

/** A timm/DeiT-layout state dict of a ViT (plus class token, final norm and classifier). */
function timmViT(o: { dim?: number; imgSize?: number; depth?: number } = {}): Map<string, RawTensor> {
  manualSeed(123);
  const dim = o.dim ?? 32;
  const vit = new VisionTransformer({ embed_dim: dim, depth: o.depth ?? 4, num_heads: 2, img_size: o.imgSize ?? 64, layer_scale: false });
  const sd = new Map<string, RawTensor>();
  sd.set('cls_token', rawOf(randn([1, 1, dim])));
  for (const [k, t] of vit.stateDict()) sd.set(k, rawOf(t.mul(1).add(0.5)));
  sd.set('norm.weight', rawOf(randn([dim])));
  sd.set('norm.bias', rawOf(randn([dim])));
  sd.set('head.weight', rawOf(randn([10, dim])));
  sd.set('head.bias', rawOf(randn([10])));
  vit.dispose();
  return sd;
}

function writePth(path: string, sd: Map<string, RawTensor>, key: string | null): void {
  const storages: Record<string, StorageDesc> = {};
  const dict: Record<string, Value> = {};
  let i = 0;
  for (const [k, t] of sd) {
    storages[String(i)] = { type: 'FloatStorage', numel: t.data.length / 4, data: t.data };
    dict[k] = T(String(i), t.shape);
    i++;
  }
  writeFileSync(path, torchZip('deit', key ? { [key]: dict, epoch: 300 } : dict, storages));
}

const bytesOf = (t: Tensor): Buffer => Buffer.from(noGrad(() => t.toBytes()));

test('pretrained: a timm/DeiT .pth (model key) loads into the ViT part; adapter and heads keep their init; extras skipped', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pretrained-'));
  try {
    const sd = timmViT();
    const file = join(dir, 'deit_tiny_like.pth');
    writePth(file, sd, 'model');
    const model = buildSegmentor(tinyTrainConfig());
    const before = new Map([...model.stateDict()].map(([k, t]) => [k, bytesOf(t)]));
    const r = loadPretrainedViT(model.backbone, file);
    const own = model.backbone.stateDict();
    const vitKeys = [...sd.keys()].filter((k) => /^(pos_embed|patch_embed\.|blocks\.)/.test(k));
    assert.deepEqual([...r.loaded].sort(), [...vitKeys].sort());
    for (const k of vitKeys) assert.ok(bytesOf(own.get(k)!).equals(Buffer.from(sd.get(k)!.data)), `${k} loaded`);
    assert.deepEqual(r.skipped.map((s) => s.key).sort(), ['cls_token', 'head.bias', 'head.weight', 'norm.bias', 'norm.weight']);
    assert.match(r.skipped.find((s) => s.key === 'head.weight')!.reason, /classifier/);
    assert.ok(r.missing.includes('level_embed') && r.missing.some((k) => k.startsWith('spm.')) && r.missing.includes('blocks.0.gamma1'));
    for (const [k, b] of before) {
      const now = bytesOf(model.stateDict().get(k)!);
      if (k.startsWith('backbone.') && vitKeys.includes(k.slice(9))) assert.ok(!now.equals(b), `${k} changed`);
      else assert.ok(now.equals(b), `${k} (adapter / heads / layer scale) unchanged`);
    }
    const text = formatPretrainedReport(r);
    assert.match(text, /loaded \d+ tensors into the backbone/);
    assert.match(text, /skipped 2 \(ImageNet classifier head\)/);
    assert.match(text, /missing \d+ \(kept at their initialisation\): .*spm/);
    model.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pretrained: bare safetensors, a pos_embed of another grid is resized, another architecture is a clear error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pretrained2-'));
  try {
    const model = buildSegmentor(tinyTrainConfig());
    // 128-px table (8×8 grid + class slot) into the 64-px backbone (4×4): resized
    const big = timmViT({ imgSize: 128 });
    const st = join(dir, 'augreg_like.safetensors');
    writeSafetensors(st, big);
    const r = loadPretrainedViT(model.backbone, st);
    assert.ok(r.loaded.includes('pos_embed'));
    assert.ok(r.notes.some((n) => /pos_embed resized from a 8×8 to a 4×4 grid/.test(n)));
    assert.deepEqual(model.backbone.stateDict().get('pos_embed')!.shape, [1, 17, 32]);
    // class-token slot kept as is
    const slot = Buffer.from(big.get('pos_embed')!.data.subarray(0, 32 * 4));
    assert.ok(bytesOf(model.backbone.stateDict().get('pos_embed')!).subarray(0, 32 * 4).equals(slot));

    const wide = join(dir, 'wider.pth');
    writePth(wide, timmViT({ dim: 48 }), 'state_dict');
    assert.throws(() => loadPretrainedViT(model.backbone, wide), (e: unknown) => e instanceof PretrainedError &&
      e.message.includes(wide) && /another architecture/.test(e.message) && /patch_embed\.proj\.weight: file \[48, 3, 16, 16\] vs backbone \[32, 3, 16, 16\]/.test(e.message));
    const deeper = join(dir, 'deeper.pth');
    writePth(deeper, timmViT({ depth: 6 }), null);
    assert.throws(() => loadPretrainedViT(model.backbone, deeper), /the file has 6 blocks, the backbone 4/);
    const resnet = join(dir, 'resnet.safetensors');
    writeSafetensors(resnet, new Map([['conv1.weight', rawOf(randn([8, 3, 7, 7]))], ['fc.weight', rawOf(randn([10, 8]))]]));
    assert.throws(() => loadPretrainedViT(model.backbone, resnet), /not a ViT checkpoint: none of its 2 keys .*conv1\.weight/);
    model.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
