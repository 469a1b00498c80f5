/**
 * Unit tests of the heads: ConvModule keys, config checking, strict loading errors, Dropout2d, the loss and accuracy
 * against hand computations, FCNHead variants, input transforms, and the Semantic FPN neck/head structure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  type Tensor, avgPool2d, conv2d, interpolate, manualSeed, noGrad, ones, randn, tensor, zeros,
} from '../../src/engine/index.js';
import { Module, StateDictError } from '../../src/nn/index.js';
import {
  ConvModule, FCNHead, FPN, FPNHead, UPerHead, accuracy, buildHead, buildNeck, dropout2d, resize,
} from '../../src/models/heads/index.js';
import { EncoderDecoder } from '../../src/tasks/segmentation/segmentor.js';
import { relErr, values } from '../helpers/numeric.js';

const SYNC_BN = { type: 'SyncBN', requires_grad: true } as const;

function smallUper(extra: Record<string, unknown> = {}): UPerHead {
  return new UPerHead({
    in_channels: [8, 8, 8, 8], in_index: [0, 1, 2, 3], pool_scales: [1, 2, 3, 6], channels: 6, dropout_ratio: 0.1,
    num_classes: 3, norm_cfg: SYNC_BN, align_corners: false, ...extra,
  });
}

function smallFcn(extra: Record<string, unknown> = {}): FCNHead {
  return new FCNHead({
    in_channels: 8, in_index: 2, channels: 4, num_convs: 1, concat_input: false, dropout_ratio: 0.1, num_classes: 3,
    norm_cfg: SYNC_BN, align_corners: false, ...extra,
  });
}

function pyramid(n: number, c: number, h: number, w: number): Tensor[] {
  return [1, 2, 4, 8].map((s) => randn([n, c, h / s, w / s]));
}

test('ConvModule: mmcv keys with and without a norm, conv bias only without one', () => {
  const a = new ConvModule(4, 6, { kernelSize: 3, norm: { type: 'SyncBN' } });
  assert.deepEqual([...a.stateDict().keys()], [
    'conv.weight', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var', 'bn.num_batches_tracked',
  ]);
  assert.deepEqual(a.conv.padding, [1, 1]);
  const b = new ConvModule(4, 6, { kernelSize: 1, norm: null, act: null });
  assert.deepEqual([...b.stateDict().keys()], ['conv.weight', 'conv.bias']);
  const c = new ConvModule(4, 6, { kernelSize: 3, dilation: 2, norm: { type: 'BN', requires_grad: false } });
  assert.deepEqual(c.conv.padding, [2, 2]);
  assert.equal(c.bn!.weight!.requiresGrad, false);
  // eval forward = relu(bn(conv(x))) with running statistics
  noGrad(() => {
    a.eval();
    const x = randn([2, 4, 5, 5]);
    const bn = a.bn!;
    bn.running_mean!.copy_(randn([6]));
    bn.running_var!.copy_(randn([6]).abs().add(0.5));
    const conv = conv2d(x, a.conv.weight, null, { padding: 1 });
    const ref = conv.sub(bn.running_mean!.view(1, 6, 1, 1)).div(bn.running_var!.add(1e-5).sqrt().view(1, 6, 1, 1))
      .mul(bn.weight!.view(1, 6, 1, 1)).add(bn.bias!.view(1, 6, 1, 1)).clamp(0);
    assert.ok(relErr(values(a.forward(x)), values(ref)) < 1e-6);
  });
  // batch statistics of a single value per channel are refused in training (as PyTorch)
  a.train();
  assert.throws(() => a.forward(randn([1, 4, 1, 1])), /more than 1 value per channel/);
});

test('buildHead: unknown keys and unsupported norm/act/conv configs are errors naming them', () => {
  const base = {
    type: 'FCNHead', in_channels: 8, in_index: 2, channels: 4, num_convs: 1, concat_input: false, num_classes: 3,
    norm_cfg: SYNC_BN,
  };
  assert.ok(buildHead(base) instanceof FCNHead);
  assert.throws(() => buildHead({ ...base, foo: 1, bar_baz: 2 }), /unknown config key\(s\) foo, bar_baz/);
  assert.throws(() => buildHead({ ...base, norm_cfg: { type: 'BN', num_groups: 2 } }), /norm_cfg: unknown config key\(s\) num_groups/);
  assert.throws(() => buildHead({ ...base, norm_cfg: { type: 'GN' } }), /GN needs num_groups/);
  assert.throws(() => buildHead({ ...base, norm_cfg: { type: 'GN', num_groups: 2, momentum: 0.1 } }), /unknown config key\(s\) momentum/);
  assert.throws(() => buildHead({ ...base, norm_cfg: { type: 'LN' } }), /norm_cfg type "LN" is not supported/);
  // GroupNorm: mmcv's `gn.*` keys, no buffers, no conv bias (bias 'auto')
  const gn = buildHead({ ...base, norm_cfg: { type: 'GN', num_groups: 2 } });
  assert.deepEqual([...gn.stateDict().keys()].slice(2), ['convs.0.conv.weight', 'convs.0.gn.weight', 'convs.0.gn.bias']);
  assert.throws(() => buildHead({ ...base, act_cfg: { type: 'GELU' } }), /act_cfg type "GELU" is not supported/);
  assert.throws(() => buildHead({ ...base, conv_cfg: { type: 'DCNv2' } }), /conv_cfg type "DCNv2" is not supported/);
  assert.throws(() => buildHead({ ...base, loss_decode: { type: 'LovaszLoss' } }), /LovaszLoss/);
  assert.throws(() => buildHead({ ...base, sampler: { type: 'OHEMPixelSampler' } }), /sampler/);
  assert.throws(() => buildHead({ ...base, type: 'ASPPHead' }), /unknown head type "ASPPHead"/);
  const uper = { type: 'UPerHead', in_channels: [8, 8], in_index: [0, 1], channels: 4, num_classes: 3, norm_cfg: SYNC_BN };
  assert.ok(buildHead(uper) instanceof UPerHead);
  assert.throws(() => buildHead({ ...uper, input_transform: 'multiple_select' }), /input_transform cannot be configured/);
  assert.throws(() => buildHead({ ...uper, num_convs: 1 }), /UPerHead: unknown config key\(s\) num_convs/);
  assert.throws(() => buildHead({ type: 'UPerHead', in_channels: 8, in_index: 0, channels: 4, num_classes: 3 }),
    /in_channels and in_index must be lists/);
  assert.throws(() => buildNeck({ type: 'FPN', in_channels: [8], out_channels: 4, num_outs: 1, upsample: 2 }), /unknown config key\(s\) upsample/);
  // act_cfg null → no activation; norm_cfg null (mmseg's default) → conv bias
  const h = buildHead({ ...base, norm_cfg: null, act_cfg: null });
  assert.deepEqual([...h.stateDict().keys()], ['conv_seg.weight', 'conv_seg.bias', 'convs.0.conv.weight', 'convs.0.conv.bias']);
});

test('strict loading: a missing key, an unexpected key and a wrong shape are all listed', () => {
  const src = smallFcn();
  const dst = smallFcn();
  const sd = new Map(src.stateDict());
  sd.delete('conv_seg.bias');
  sd.set('convs.0.conv.weight', zeros([4, 8, 1, 1]));
  sd.set('convs.1.conv.weight', zeros([4, 4, 3, 3]));
  let err: unknown;
  try {
    dst.loadStateDict(sd);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof StateDictError, 'expected a StateDictError');
  assert.deepEqual(err.result.missing, ['conv_seg.bias']);
  assert.deepEqual(err.result.unexpected, ['convs.1.conv.weight']);
  assert.deepEqual(err.result.mismatched, [{ key: 'convs.0.conv.weight', expected: [4, 8, 3, 3], got: [4, 8, 1, 1] }]);
  assert.match(err.message, /missing keys \(1\): conv_seg\.bias/);
  assert.match(err.message, /unexpected keys \(1\): convs\.1\.conv\.weight/);
  assert.match(err.message, /size mismatch for convs\.0\.conv\.weight: checkpoint has \[4, 8, 1, 1\], the model has \[4, 8, 3, 3\]/);
  // num_batches_tracked may be absent (older checkpoints); everything else loads
  const ok = new Map(src.stateDict());
  ok.delete('convs.0.bn.num_batches_tracked');
  assert.deepEqual(dst.loadStateDict(ok), { missing: [], unexpected: [], mismatched: [] });
  assert.deepEqual(values(dst.conv_seg.weight), values(src.conv_seg.weight));
});

test('dropout2d: whole (n, c) planes dropped, survivors scaled by 1/(1-p); identity in eval', () => {
  manualSeed(7);
  const x = ones([8, 16, 3, 3]);
  assert.equal(dropout2d(x, 0.5, false), x);
  const y = dropout2d(x, 0.5, true);
  const v = values(y);
  let dropped = 0;
  for (let p = 0; p < 8 * 16; p++) {
    const plane = v.slice(p * 9, p * 9 + 9);
    assert.ok(plane.every((e) => e === plane[0]), 'a plane is not uniform');
    assert.ok(plane[0] === 0 || plane[0] === 2, `plane value ${plane[0]}`);
    if (plane[0] === 0) dropped++;
  }
  assert.ok(dropped > 32 && dropped < 96, `dropped ${dropped} of 128 planes`);
  // cls_seg uses it in training only
  const head = smallFcn({ dropout_ratio: 0.5 });
  const feat = randn([2, 4, 5, 5]);
  head.eval();
  const a = values(head.clsSeg(feat));
  assert.deepEqual(values(head.clsSeg(feat)), a);
  head.train();
  assert.notDeepEqual(values(head.clsSeg(feat)), a);
});

/** −log softmax(z)[y] for one pixel. */
function ce(z: number[], y: number): number {
  const m = Math.max(...z);
  const lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
  return lse - z[y]!;
}

test('losses: cross entropy with ignore_index 255, loss_weight, mmseg-0.20 mean (all pixels) and avg_non_ignore', () => {
  // logits 1×3×1×4, labels [0, 255, 2, 1]
  const z = [[0.5, -1, 2], [1, 1, 1], [0.2, 0.1, -0.3], [3, -2, 0.5]];
  const logits = tensor(z.flatMap((p) => p), { shape: [1, 4, 3] }).permute(0, 2, 1).unsqueeze(2).contiguous(); // 1×3×1×4
  const label = tensor([[[0, 255, 2, 1]]], { dtype: 'int64' });
  const per = [ce(z[0]!, 0), 0, ce(z[2]!, 2), ce(z[3]!, 1)];
  const sum = per.reduce((a, b) => a + b, 0);
  const close = (a: number, b: number): void => assert.ok(Math.abs(a - b) < 1e-5 * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

  const h1 = smallFcn();
  const l1 = h1.losses(logits, label);
  close(l1.loss.item(), sum / 4); // mmseg 0.20.2: mean over all 4 label pixels
  close(l1.terms.loss_ce!.item(), sum / 4);
  // accuracy: argmax per pixel = [2, *, 0, 0]; labelled pixels 0, 2, 1 → 0 correct... check by hand
  const pred = z.map((p) => p.indexOf(Math.max(...p)));
  const lab = [0, 255, 2, 1];
  const correct = pred.filter((p, i) => lab[i] !== 255 && p === lab[i]).length;
  close(l1.acc_seg.item(), (100 * correct) / 4); // mmseg 0.20.2: over all 4 label pixels, the ignored one counted as wrong

  const h2 = smallFcn({ loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: 0.4, avg_non_ignore: true } });
  close(h2.losses(logits, label).loss.item(), (0.4 * sum) / 3);

  const cw = [1, 2, 0.5];
  const h3 = smallFcn({ loss_decode: { type: 'CrossEntropyLoss', class_weight: cw, loss_weight: 1 } });
  close(h3.losses(logits, label).loss.item(), (per[0]! * cw[0]! + per[2]! * cw[2]! + per[3]! * cw[1]!) / 4);

  // two losses with different names are both reported and summed
  const h4 = smallFcn({ loss_decode: [{ type: 'CrossEntropyLoss', loss_weight: 1 }, { type: 'CrossEntropyLoss', loss_weight: 0.5, loss_name: 'loss_b' }] });
  const l4 = h4.losses(logits, label);
  assert.deepEqual(Object.keys(l4.terms), ['loss_ce', 'loss_b']);
  close(l4.loss.item(), 1.5 * sum / 4);

  // logits are resized (bilinear, align_corners false) to the label size first; N×1×H×W labels are accepted
  const small = randn([2, 3, 2, 3]);
  const big = randn([2, 1, 4, 6]).abs().mul(1.4).floor().clamp(0, 2).to('int64');
  const up = interpolate(small, { size: [4, 6], mode: 'bilinear', alignCorners: false });
  close(h1.losses(small, big).loss.item(), h1.losses(up, big.squeeze(1)).loss.item());
});

test('accuracy: top-1 / top-k, with and without ignored pixels', () => {
  const logits = tensor([[[[3, 0, 1]], [[1, 2, 0]], [[0, 1, 2]]]]); // 1×3×1×3: argmax per pixel = [0, 1, 2]
  const label = tensor([[[0, 255, 0]]], { dtype: 'int64' });
  const a = (t: Tensor): number => t.item();
  assert.ok(Math.abs(a(accuracy(logits, label, { ignoreIndex: 255 })) - 50) < 1e-3);
  assert.ok(Math.abs(a(accuracy(logits, label)) - 100 / 3) < 1e-3);
  // top-2: pixel 2's classes by score are [2, 0] → its label 0 counts
  assert.ok(Math.abs(a(accuracy(logits, label, { ignoreIndex: 255, topk: 2 })) - 100) < 1e-3);
});

test('UPerHead: keys in mmseg order, logits at stride 4, negative in_index, eval determinism', () => {
  const head = smallUper();
  const keys = [...head.stateDict().keys()];
  assert.equal(keys.length, 2 + 6 * (4 + 1 + 3 + 3 + 1));
  assert.deepEqual(keys.slice(0, 3), ['conv_seg.weight', 'conv_seg.bias', 'psp_modules.0.1.conv.weight']);
  assert.equal(keys[keys.length - 1], 'fpn_bottleneck.bn.num_batches_tracked');
  assert.deepEqual(head.bottleneck.conv.weight.shape, [6, 8 + 4 * 6, 3, 3]);
  assert.deepEqual(head.fpn_bottleneck.conv.weight.shape, [6, 4 * 6, 3, 3]);
  head.eval();
  const xs = pyramid(2, 8, 32, 40);
  const names: string[] = [];
  const out = noGrad(() => head.forward(xs, (n) => names.push(n)));
  assert.deepEqual(out.shape, [2, 3, 32, 40]);
  for (const n of ['ppm_pool.0', 'ppm.3', 'psp_out', 'lateral.2', 'topdown.0', 'topdown.3', 'fpn.0', 'fpn_out', 'logits']) {
    assert.ok(names.includes(n), `missing capture ${n}`);
  }
  const neg = smallUper({ in_index: [-4, -3, -2, -1] });
  neg.loadStateDict(head.stateDict());
  neg.eval();
  assert.deepEqual(values(noGrad(() => neg.forward(xs))), values(out));
  assert.deepEqual(values(noGrad(() => head.forward(xs))), values(out));
});

test('FCNHead: num_convs, concat_input (conv_cat), dilation, num_convs 0, resize_concat inputs', () => {
  const a = smallFcn({ num_convs: 2, concat_input: true, dilation: 2 });
  assert.deepEqual([...a.stateDict().keys()].filter((k) => k.endsWith('conv.weight')),
    ['convs.0.conv.weight', 'convs.1.conv.weight', 'conv_cat.conv.weight']);
  assert.deepEqual(a.conv_cat!.conv.weight.shape, [4, 8 + 4, 3, 3]);
  assert.deepEqual((a.convs as any).at(0).conv.dilation, [2, 2]);
  assert.deepEqual((a.convs as any).at(0).conv.padding, [2, 2]);
  assert.deepEqual(a.conv_cat!.conv.padding, [1, 1]);
  a.eval();
  const xs = pyramid(1, 8, 16, 16);
  assert.deepEqual(noGrad(() => a.forward(xs)).shape, [1, 3, 4, 4]);

  const z = smallFcn({ in_channels: 8, channels: 8, num_convs: 0, concat_input: false });
  assert.deepEqual([...z.stateDict().keys()], ['conv_seg.weight', 'conv_seg.bias']);
  z.eval();
  noGrad(() => assert.deepEqual(values(z.forward(xs)), values(z.conv_seg.forward(xs[2]!))));
  assert.throws(() => smallFcn({ num_convs: 0 }), /in_channels \(8\) == channels \(4\)/);

  const rc = new FCNHead({
    in_channels: [4, 6], in_index: [0, 1], input_transform: 'resize_concat', channels: 4, num_convs: 1,
    concat_input: false, num_classes: 3, norm_cfg: SYNC_BN,
  });
  assert.deepEqual((rc.convs as any).at(0).conv.weight.shape, [4, 10, 3, 3]);
  rc.eval();
  const maps = [randn([1, 4, 8, 8]), randn([1, 6, 4, 4])];
  const cat = noGrad(() => rc.transformInputs(maps)) as Tensor;
  assert.deepEqual(cat.shape, [1, 10, 8, 8]);
  noGrad(() => assert.deepEqual(values(cat.narrow(1, 4, 6)), values(resize(maps[1]!, [8, 8]))));
  assert.deepEqual(noGrad(() => rc.forward(maps)).shape, [1, 3, 8, 8]);
});

test('Semantic FPN: neck keys (conv bias, no norm/act), nearest top-down pass; FPNHead scale_heads keys', () => {
  const neck = buildNeck({ type: 'FPN', in_channels: [8, 8, 8, 8], out_channels: 6, num_outs: 4 });
  const keys = [...neck.stateDict().keys()];
  assert.deepEqual(keys, [
    ...[0, 1, 2, 3].flatMap((i) => [`lateral_convs.${i}.conv.weight`, `lateral_convs.${i}.conv.bias`]),
    ...[0, 1, 2, 3].flatMap((i) => [`fpn_convs.${i}.conv.weight`, `fpn_convs.${i}.conv.bias`]),
  ]);
  const xs = pyramid(1, 8, 16, 24);
  const outs = noGrad(() => neck.forward(xs));
  assert.deepEqual(outs.map((o) => o.shape), [[1, 6, 16, 24], [1, 6, 8, 12], [1, 6, 4, 6], [1, 6, 2, 3]]);
  // by hand: level 2 = fpn_conv2(lat2 + nearest(lat3))
  noGrad(() => {
    const lat = (i: number): Tensor => conv2d(xs[i]!, neck.lateral_convs.at(i).conv.weight, neck.lateral_convs.at(i).conv.bias);
    const l2 = lat(2).add(interpolate(lat(3), { size: [4, 6], mode: 'nearest' }));
    const f = neck.fpn_convs.at(2).conv;
    const ref = conv2d(l2, f.weight, f.bias, { padding: 1 });
    assert.ok(relErr(values(outs[2]!), values(ref)) < 1e-5);
  });
  // extra levels by max-pool when num_outs > inputs (no extra convs)
  const neck5 = new FPN({ in_channels: [8, 8, 8, 8], out_channels: 6, num_outs: 5 });
  assert.deepEqual(noGrad(() => neck5.forward(xs))[4]!.shape, [1, 6, 1, 2]);

  const head = new FPNHead({
    in_channels: [6, 6, 6, 6], in_index: [0, 1, 2, 3], feature_strides: [4, 8, 16, 32], channels: 5, dropout_ratio: 0.1,
    num_classes: 3, norm_cfg: SYNC_BN, align_corners: false,
  });
  const convKeys = [...head.stateDict().keys()].filter((k) => k.endsWith('conv.weight'));
  assert.deepEqual(convKeys, [
    'scale_heads.0.0.conv.weight', 'scale_heads.1.0.conv.weight', 'scale_heads.2.0.conv.weight', 'scale_heads.2.2.conv.weight',
    'scale_heads.3.0.conv.weight', 'scale_heads.3.2.conv.weight', 'scale_heads.3.4.conv.weight',
  ]);
  head.eval();
  const ys = pyramid(1, 6, 32, 32);
  assert.deepEqual(noGrad(() => head.forward(ys)).shape, [1, 3, 32, 32]);
});

/** A parameter-free stand-in backbone: average pools of the image at strides 4, 8, 16, 32, tiled to `c` channels. */
class PoolBackbone extends Module {
  constructor(readonly c: number) { super(); }
  forward(x: Tensor): Tensor[] {
    return [4, 8, 16, 32].map((s) => avgPool2d(x, s).repeat(1, this.c / 3, 1, 1));
  }
}

test('EncoderDecoder: registration names/order with a neck, encodeDecode resizes to the input', () => {
  const model = new EncoderDecoder({
    backbone: new PoolBackbone(6),
    neck: { type: 'FPN', in_channels: [6, 6, 6, 6], out_channels: 6, num_outs: 4 },
    decode_head: {
      type: 'FPNHead', in_channels: [6, 6, 6, 6], in_index: [0, 1, 2, 3], feature_strides: [4, 8, 16, 32], channels: 4,
      num_classes: 3, norm_cfg: SYNC_BN,
    },
    auxiliary_head: [
      { type: 'FCNHead', in_channels: 6, in_index: 2, channels: 4, num_convs: 1, concat_input: false, num_classes: 3, norm_cfg: SYNC_BN },
      { type: 'FCNHead', in_channels: 6, in_index: 1, channels: 4, num_convs: 1, concat_input: false, num_classes: 3, norm_cfg: SYNC_BN },
    ],
  });
  const prefixes = [...new Set([...model.stateDict().keys()].map((k) => k.split('.')[0]))];
  assert.deepEqual(prefixes, ['neck', 'decode_head', 'auxiliary_head']);
  assert.ok(model.stateDict().has('auxiliary_head.1.convs.0.conv.weight'));
  model.eval();
  const img = randn([1, 3, 64, 96]);
  assert.deepEqual(noGrad(() => model.encodeDecode(img)).shape, [1, 3, 64, 96]);
  model.train();
  const l = model.forwardTrain(randn([2, 3, 64, 64]), zeros([2, 64, 64], { dtype: 'int64' }));
  assert.deepEqual(Object.keys(l.log), ['decode.loss_ce', 'decode.acc_seg', 'aux_0.loss_ce', 'aux_0.acc_seg', 'aux_1.loss_ce', 'aux_1.acc_seg']);
  assert.ok(Math.abs(l.loss.item() - (l.loss_decode.item() + l.loss_aux!.item())) < 1e-5);
});
