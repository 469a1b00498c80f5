/**
 * EncoderDecoder with a tiny ViT-Adapter backbone, a small UPerHead and an FCNHead auxiliary head: inference shape,
 * finite training losses, gradients reaching the backbone, and one SGD step lowering the loss on a fixed batch.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, noGrad, randint, randn } from '../../src/engine/index.js';
import { ViTAdapter } from '../../src/models/adapter/index.js';
import { EncoderDecoder } from '../../src/tasks/segmentation/segmentor.js';

const SYNC_BN = { type: 'SyncBN', requires_grad: true } as const;

function tinySegmentor(): EncoderDecoder {
  return new EncoderDecoder({
    backbone: new ViTAdapter({
      embed_dim: 64, depth: 4, num_heads: 2, conv_inplane: 16, deform_num_heads: 2,
      interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]],
    }),
    decode_head: {
      type: 'UPerHead', in_channels: [64, 64, 64, 64], in_index: [0, 1, 2, 3], pool_scales: [1, 2, 3, 6], channels: 32,
      dropout_ratio: 0.1, num_classes: 5, norm_cfg: SYNC_BN, align_corners: false,
      loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 1.0 },
    },
    auxiliary_head: {
      type: 'FCNHead', in_channels: 64, in_index: 2, channels: 16, num_convs: 1, concat_input: false, dropout_ratio: 0.1,
      num_classes: 5, norm_cfg: SYNC_BN, align_corners: false,
      loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 0.4 },
    },
  });
}

test('EncoderDecoder + tiny ViTAdapter: encodeDecode, training losses, backbone gradients, one SGD step', (t) => {
  manualSeed(0);
  const model = tinySegmentor();
  const keys = [...model.stateDict().keys()];
  assert.ok(keys[0]!.startsWith('backbone.'));
  assert.ok(keys.includes('decode_head.psp_modules.3.1.conv.weight'));
  assert.ok(keys.includes('auxiliary_head.convs.0.bn.running_var'));

  // inference: logits at the input size
  model.eval();
  const one = randn([1, 3, 64, 64]);
  const logits = noGrad(() => model.encodeDecode(one));
  assert.deepEqual(logits.shape, [1, 5, 64, 64]);
  assert.ok(Array.from(logits.toTypedArray()).every(Number.isFinite), 'non-finite logits');

  // training (batch 2: BatchNorm needs more than one value per channel on the 1×1 pooling branch)
  model.train();
  const img = randn([2, 3, 64, 64]);
  const label = randint(0, 5, [2, 64, 64]);
  // some ignored pixels
  noGrad(() => label.narrow(1, 0, 8).fill_(255));
  const run = (): ReturnType<EncoderDecoder['forwardTrain']> => {
    manualSeed(123); // same dropout / drop-path masks on every evaluation of the fixed batch
    return model.forwardTrain(img, label);
  };
  const l0 = run();
  for (const [k, v] of [['loss', l0.loss], ['loss_decode', l0.loss_decode], ['loss_aux', l0.loss_aux!], ['acc', l0.acc]] as const) {
    assert.ok(Number.isFinite(v.item()), `${k} is not finite`);
  }
  assert.ok(l0.loss_decode.item() > 0 && l0.loss_aux!.item() > 0);
  assert.ok(Math.abs(l0.loss.item() - l0.loss_decode.item() - l0.loss_aux!.item()) < 1e-5);
  assert.ok(l0.acc.item() >= 0 && l0.acc.item() <= 100);

  model.zeroGrad();
  l0.loss.backward();
  const bb = model.backbone.namedParameters();
  const withGrad = bb.filter(([, p]) => {
    const g = p.grad;
    return g !== null && g.abs().sum().item() > 0;
  });
  const names = new Set(withGrad.map(([n]) => n));
  for (const n of ['spm.stem.0.weight', 'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight', 'level_embed', 'norm1.weight']) {
    assert.ok(names.has(n), `no gradient reached backbone.${n}`);
  }
  assert.ok(withGrad.length > bb.length / 2, `${withGrad.length} of ${bb.length} backbone parameters got a gradient`);
  for (const [n, p] of model.decode_head.namedParameters()) assert.ok(p.grad !== null, `decode_head.${n} has no gradient`);

  const lr = 0.2;
  noGrad(() => {
    for (const p of model.parameters()) {
      const g = p.grad;
      if (g) p.add_(g, -lr);
    }
  });
  const l1 = run();
  t.diagnostic(`loss ${l0.loss.item().toFixed(6)} -> ${l1.loss.item().toFixed(6)} after one SGD step (lr ${lr})`);
  assert.ok(l1.loss.item() < l0.loss.item(), `loss did not decrease: ${l0.loss.item()} -> ${l1.loss.item()}`);
  model.dispose();
});
