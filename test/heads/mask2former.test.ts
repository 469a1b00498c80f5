/**
 * Parity of the Mask2Former decode head with the authors' code (`../shared/fixtures/mask2former/`): strict loading,
 * every stored tensor (pixel decoder, encoder layers, multi-scale memory, decoder inputs and positions, every stage's
 * class and mask logits, the thresholded attention-mask logits, the decoder layers, semantic scores, segmentor
 * logits) within max|out−ref|/max|ref| < 1e-4, the attention masks exactly, the label map on every pixel whose
 * reference margin exceeds our score error; the key list of the largest authors' head; config errors; the segmentor
 * integration (encode_decode, slide inference, training refused).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { type Tensor, avgPool2d, noGrad, randn, scope } from '../../src/engine/index.js';
import { Module, init, loadWeights, readStateDict } from '../../src/nn/index.js';
import { Mask2FormerHead, buildHead, resize } from '../../src/models/heads/index.js';
import { EncoderDecoder } from '../../src/tasks/segmentation/segmentor.js';
import { buildSegmentor, segmentImage, slideInference } from '../../src/tasks/segmentation/inference.js';
import { segmentorOutputs } from '../../src/tools/reference-heads.js';
import { PRESET_NAMES, loadConfig, mask2formerHeadCfg, numClassesOf } from '../../src/tasks/segmentation/configs.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { relErr } from '../helpers/numeric.js';

const DIR = 'mask2former';
const TOL = 1e-4;
const fixture = (name: string): string => fixturePath(DIR, name);

function skipUnless(...files: string[]): false | string {
  const s = skipUnlessFixtures(DIR);
  if (s) return s;
  const missing = files.filter((f) => !existsSync(fixture(f)));
  return missing.length ? `fixtures ../shared/fixtures/${DIR}/${missing.join(', ')} not found` : false;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const readJson = (name: string): Record<string, any> => JSON.parse(readFileSync(fixture(name), 'utf8')) as Record<string, any>;

/** The group a stored tensor is reported under. */
function group(name: string): string {
  if (name.startsWith('pixel_decoder.encoder.')) return 'encoder layers';
  if (name.startsWith('pixel_decoder.')) return name.replace(/\.\d+$/, '');
  if (name.startsWith('decoder.layers.')) return `decoder.layers.*.${name.split('.').pop()}`;
  return name.replace(/\.\d+$/, '');
}

const SMALL = ['mask2former_small.json', 'mask2former_small.weights.safetensors', 'mask2former_small.io.safetensors'];

test('mask2former_small: strict load, every stored tensor within 1e-4, attention masks exact, labels on confident pixels',
  { skip: skipUnless(...SMALL) }, (t) => {
    const cfg = readJson('mask2former_small.json');
    const head = buildHead(cfg.decode_head);
    assert.ok(head instanceof Mask2FormerHead);
    assert.deepEqual([...head.stateDict().keys()].map((k) => `decode_head.${k}`), cfg.weights.keys);
    assert.equal(head.numParameters(), cfg.weights.num_params);
    const res = loadWeights(head, fixture('mask2former_small.weights.safetensors'), { select: 'decode_head.' });
    assert.deepEqual(res, { missing: [], unexpected: [], mismatched: [] });
    head.eval();
    const io = readStateDict(fixture('mask2former_small.io.safetensors'));
    const inputs = [0, 1, 2, 3].map((i) => io.get(`in${i}`)!);
    const got = new Map<string, Tensor>();
    noGrad(() => {
      const segMask = head.forward(inputs, (n, x) => got.set(n, x.keep()));
      const out = segmentorOutputs(segMask, cfg.img_shape, cfg.ori_shape, false);
      got.set('seg_logits', out.seg_logits);
      got.set('seg', out.seg);
      got.set('seg_margin', out.seg_margin);
    });
    const worst = new Map<string, [string, number]>();
    let compared = 0;
    for (const [name, ref] of io) {
      if (/^in\d$/.test(name) || name === 'seg') continue;
      const out = got.get(name);
      assert.ok(out, `the head did not report ${name}`);
      assert.deepEqual(out.shape, ref.shape, `${name} shape`);
      const e = relErr(out.toTypedArray(), ref.toTypedArray());
      if (name.startsWith('attn_mask.')) {
        assert.equal(e, 0, `${name}: the attention mask differs from the reference`);
      } else {
        assert.ok(e < TOL, `${name}: max|out-ref|/max|ref| = ${e} >= ${TOL}`);
      }
      const g = group(name);
      if (!worst.has(g) || worst.get(g)![1] < e) worst.set(g, [name, e]);
      compared++;
    }
    assert.equal(compared, io.size - 5, 'every stored tensor but the 4 inputs and seg was compared');
    // labels: where the reference margin exceeds twice our score error, the argmax cannot differ
    const ref = io.get('seg_logits')!.toTypedArray();
    const ours = got.get('seg_logits')!.toTypedArray();
    let err = 0;
    for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(ours[i]! - ref[i]!));
    const seg = got.get('seg')!.toTypedArray();
    const refSeg = io.get('seg')!.toTypedArray();
    const margin = io.get('seg_margin')!.toTypedArray();
    let confident = 0;
    let wrong = 0;
    for (let i = 0; i < refSeg.length; i++) {
      if (margin[i]! <= 2 * err) continue;
      confident++;
      if (seg[i] !== refSeg[i]) wrong++;
    }
    assert.equal(wrong, 0, `seg: ${wrong} of ${confident} confidently-labelled pixels differ`);
    assert.ok(confident >= refSeg.length - 92, `only ${confident} of ${refSeg.length} pixels compared`);
    const lines = [...worst].map(([g, [n, e]]) => `${g} ${e.toExponential(2)} (${n})`);
    t.diagnostic(`mask2former_small worst rel. error per group: ${lines.join('; ')}; seg: 0 of ${confident} pixels differ ` +
      `(score abs err ${err.toExponential(2)})`);
    got.forEach((x) => x.dispose());
    head.dispose();
  });

test('mask2former_small: the all-masked fallback — rows whose resized mask logits are all < 0 attend everywhere',
  { skip: skipUnless(...SMALL) }, () => {
    const cfg = readJson('mask2former_small.json');
    const head = buildHead(cfg.decode_head) as Mask2FormerHead;
    loadWeights(head, fixture('mask2former_small.weights.safetensors'), { select: 'decode_head.' });
    head.eval();
    const io = readStateDict(fixture('mask2former_small.io.safetensors'));
    const got = new Map<string, Tensor>();
    noGrad(() => head.predictions([0, 1, 2, 3].map((i) => io.get(`in${i}`)!), (n, x) => got.set(n, x.keep())));
    const stats = cfg.attention_masks as { layer: number; rows_all_masked_fallback: number }[];
    assert.equal(stats.length, 3);
    for (const s of stats) {
      const logits = got.get(`attn_mask_logits.${s.layer}`)!;
      const mask = got.get(`attn_mask.${s.layer}`)!;
      const [B, Q] = logits.shape as [number, number];
      const lv = logits.flatten(2).toTypedArray();
      const mv = mask.toTypedArray();
      const hw = lv.length / (B * Q);
      let fallback = 0;
      for (let r = 0; r < B * Q; r++) {
        const row = Array.from(lv.subarray(r * hw, (r + 1) * hw));
        const m = Array.from(mv.subarray(r * hw, (r + 1) * hw));
        if (row.every((v) => v < 0)) {
          fallback++;
          assert.ok(m.every((v) => v === 0), `layer ${s.layer} row ${r}: an all-masked row must become unmasked`);
        } else {
          assert.deepEqual(m, row.map((v) => (v < 0 ? 1 : 0)), `layer ${s.layer} row ${r}: mask = logit < 0`);
        }
      }
      assert.equal(fallback, s.rows_all_masked_fallback, `layer ${s.layer}: fallback rows`);
      assert.ok(fallback > 0);
    }
    got.forEach((x) => x.dispose());
    head.dispose();
  });

test('mask2former_large_keys: the authors\' largest head has their key list, order, shapes and parameter count',
  { skip: skipUnless('mask2former_large_keys.json') }, () => {
    const d = readJson('mask2former_large_keys.json');
    // structure only: the initialisers are skipped (240 M parameters would take seconds to fill)
    const head = init.withoutInit(() => buildHead(d.decode_head));
    const sd = head.stateDict();
    assert.deepEqual([...sd.keys()].map((k) => `decode_head.${k}`), d.keys);
    let n = 0;
    for (const [k, v] of sd) {
      assert.deepEqual(v.shape, d.shapes[`decode_head.${k}`], `shape of ${k}`);
      n += v.numel();
    }
    assert.equal(n, d.num_params);
    assert.equal(n, 239_652_759);
    // the 640 configs: 100 queries
    const h640 = init.withoutInit(() => buildHead({ ...d.decode_head, num_queries: 100 }));
    assert.equal(h640.numParameters(), d.other_ade20k_configs.mask2former_beit_adapter_large_640_160k_ade20k_ss.num_params);
    head.dispose();
    h640.dispose();
  });

/** The small fixture's config (what the tests below build), or a self-contained equivalent without fixtures. */
function smallConfig(): Record<string, unknown> {
  const layer = (attn: Record<string, unknown>, order: string[]) => ({
    type: order[0] === 'cross_attn' ? 'DetrTransformerDecoderLayer' : 'BaseTransformerLayer', attn_cfgs: attn,
    ffn_cfgs: { type: 'FFN', embed_dims: 32, feedforward_channels: 64, num_fcs: 2, ffn_drop: 0, act_cfg: { type: 'ReLU', inplace: true } },
    operation_order: order,
  });
  return {
    type: 'Mask2FormerHead', in_channels: [16, 16, 16, 16], feat_channels: 32, out_channels: 32, in_index: [0, 1, 2, 3],
    num_things_classes: 2, num_stuff_classes: 1, num_queries: 5, num_transformer_feat_level: 3,
    pixel_decoder: {
      type: 'MSDeformAttnPixelDecoder', num_outs: 3, norm_cfg: { type: 'GN', num_groups: 8 }, act_cfg: { type: 'ReLU' },
      encoder: {
        type: 'DetrTransformerEncoder', num_layers: 1,
        transformerlayers: layer({ type: 'MultiScaleDeformableAttention', embed_dims: 32, num_heads: 2, num_levels: 3, num_points: 2,
          dropout: 0, batch_first: false, norm_cfg: null, init_cfg: null }, ['self_attn', 'norm', 'ffn', 'norm']),
      },
      positional_encoding: { type: 'SinePositionalEncoding', num_feats: 16, normalize: true },
    },
    enforce_decoder_input_project: false,
    positional_encoding: { type: 'SinePositionalEncoding', num_feats: 16, normalize: true },
    transformer_decoder: {
      type: 'DetrTransformerDecoder', return_intermediate: true, num_layers: 2,
      transformerlayers: layer({ type: 'MultiheadAttention', embed_dims: 32, num_heads: 4, attn_drop: 0, proj_drop: 0 },
        ['cross_attn', 'norm', 'self_attn', 'norm', 'ffn', 'norm']),
    },
  };
}

test('Mask2FormerHead: config errors name what is wrong', () => {
  const base = smallConfig();
  assert.ok(buildHead(base) instanceof Mask2FormerHead);
  assert.throws(() => buildHead({ ...base, num_classes: 3 }), /Mask2FormerHead: unknown config key\(s\) num_classes/);
  assert.throws(() => buildHead({ ...base, in_index: 0 }), /in_channels and in_index must be lists/);
  const pd = base.pixel_decoder as Record<string, unknown>;
  assert.throws(() => buildHead({ ...base, pixel_decoder: { ...pd, norm_cfg: { type: 'GN' } } }), /GN needs num_groups/);
  assert.throws(() => buildHead({ ...base, pixel_decoder: { ...pd, type: 'PixelDecoder' } }), /MSDeformAttnPixelDecoder/);
  assert.throws(() => buildHead({ ...base, positional_encoding: { type: 'SinePositionalEncoding', num_feats: 8, normalize: true } }),
    /num_feats \(8\) must be half the decoder width \(32\)/);
  const td = base.transformer_decoder as Record<string, any>;
  assert.throws(() => buildHead({ ...base, transformer_decoder: { ...td, transformerlayers: { ...td.transformerlayers,
    operation_order: ['self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm'] } } }), /must start with cross_attn/);
  assert.throws(() => buildHead({ ...base, transformer_decoder: { ...td, transformerlayers: { ...td.transformerlayers,
    attn_cfgs: { ...td.transformerlayers.attn_cfgs, num_heads: 5 } } } }), /not divisible by num_heads 5/);
  assert.throws(() => buildHead({ ...base, num_transformer_feat_level: 4 }), /exceeds the pixel decoder's num_outs 3/);
});

/** Returns its input list as the backbone's pyramid (for segmentor tests without a ViT). */
class PyramidBackbone extends Module {
  forward(x: Tensor): Tensor[] {
    const x16 = x.repeat(1, 6, 1, 1).narrow(1, 0, 16);
    return [4, 8, 16, 32].map((s) => avgPool2d(x16, s));
  }
}

test('EncoderDecoder with a Mask2FormerHead: encode_decode resizes the semantic scores; slide windows; training refused', () => {
  noGrad(() => scope(() => {
    const model = new EncoderDecoder({ backbone: new PyramidBackbone(), decode_head: smallConfig() as never });
    model.eval();
    assert.ok(model.decode_head instanceof Mask2FormerHead);
    assert.deepEqual([...model.stateDict().keys()].filter((k) => !k.startsWith('decode_head.')), []);
    const img = randn([1, 3, 64, 96]);
    const logits = model.encodeDecode(img);
    assert.deepEqual(logits.shape, [1, 3, 64, 96]);
    const direct = resize(model.decode_head.forward(model.extractFeat(img)), [64, 96], false);
    assert.equal(relErr(logits.toTypedArray(), direct.toTypedArray()), 0);
    // scores are softmax probabilities × sigmoids summed over 5 queries: in [0, 5]
    assert.ok(logits.min().item() >= 0 && logits.max().item() <= 5);
    // slide: windows of 64×64 at stride 32 over 64×96 → 2 windows, averaged where they overlap
    const slid = slideInference(model, img, [64, 64], [32, 32]);
    assert.deepEqual(slid.shape, [1, 3, 64, 96]);
    const left = model.encodeDecode(img.narrow(3, 0, 64).contiguous());
    assert.ok(relErr(slid.narrow(3, 0, 32).contiguous().toTypedArray(), left.narrow(3, 0, 32).contiguous().toTypedArray()) < 1e-6);
    assert.throws(() => model.forwardTrain(img, randn([1, 64, 96]).gt(0).to('int64')),
      /not implemented yet: training Mask2Former needs the matching losses/);
    assert.throws(() => new EncoderDecoder({ backbone: new PyramidBackbone(), decode_head: smallConfig() as never,
      auxiliary_head: smallConfig() as never }), /Mask2FormerHead cannot be an auxiliary head/);
    model.dispose();
  }));
});

test('mask2formerHeadCfg: the authors\' merged decode_head configs (largest config; the small fixture with its sizes)',
  { skip: skipUnless('mask2former_large_keys.json', 'mask2former_small.json') }, () => {
    const large = readJson('mask2former_large_keys.json').decode_head;
    assert.deepEqual(mask2formerHeadCfg({ inChannels: 1024, channels: 1024, numQueries: 200, numThings: 100, numStuff: 50,
      heads: 32, ffn: 4096, withCp: true }), large);
    const small = readJson('mask2former_small.json').decode_head;
    assert.deepEqual(mask2formerHeadCfg({ inChannels: 48, channels: 64, numQueries: 10, numThings: 3, numStuff: 2,
      heads: 4, ffn: 128, encoderLayers: 2, decoderLayers: 3, withCp: true }), small);
  });

const M2F_PRESETS = [
  'mask2former_beit_adapter_large_640_160k_ade20k_ss', 'mask2former_beit_adapter_large_640_160k_ade20k_ms',
  'mask2former_beit_adapter_large_896_80k_ade20k_ss', 'mask2former_beit_adapter_large_896_80k_ade20k_ms',
  'mask2former_beitv2_adapter_large_896_80k_ade20k_ss', 'mask2former_beitv2_adapter_large_896_80k_ade20k_ms',
  'mask2former_beitv2_adapter_large_896_160k_ade20k_ss',
];

/** A backbone without state (the preset's decode head alone inside the segmentor). */
class NoBackbone extends Module {
  forward(x: Tensor): Tensor[] { return [x]; }
}

test('Mask2Former presets: the preset segmentor\'s decode head has the authors\' key list, order, shapes; backbone kwargs as theirs',
  { skip: skipUnless('mask2former_large_keys.json') }, () => {
    assert.deepEqual(PRESET_NAMES.filter((n) => n.startsWith('mask2former_')), M2F_PRESETS);
    const d = readJson('mask2former_large_keys.json');
    const beitKeys = fixturePath('beit', 'beit_adapter_large_keys.json');
    const beit = existsSync(beitKeys) ? JSON.parse(readFileSync(beitKeys, 'utf8')) as { configs: Record<string, { backbone_kwargs: unknown }> } : null;
    const heads = new Map<number, Record<string, unknown>>();
    for (const name of M2F_PRESETS) {
      const cfg = loadConfig(name);
      const crop = name.includes('_896_') ? 896 : 640;
      assert.equal(cfg.model.backbone.type, 'BEiTAdapter');
      assert.equal(cfg.model.auxiliary_head, null);
      assert.equal(numClassesOf(cfg), 150);
      assert.deepEqual(cfg.model.test_cfg, { mode: 'slide', crop_size: [crop, crop], stride: crop === 896 ? [512, 512] : [426, 426] });
      const { type: _t, ...kwargs } = cfg.model.backbone;
      const ref = beit?.configs[name.replace('beitv2', 'beit').replace('_ms', '_ss').replace('_160k_ade20k', crop === 896 ? '_80k_ade20k' : '_160k_ade20k')];
      if (ref) assert.deepEqual(kwargs, ref.backbone_kwargs, `${name}: backbone kwargs`);
      // every preset of a crop size has the same decode head
      const head = cfg.model.decode_head as Record<string, unknown>;
      if (heads.has(crop)) assert.deepEqual(head, heads.get(crop), `${name}: decode head`);
      else heads.set(crop, head);
    }
    assert.deepEqual(heads.get(896), d.decode_head);
    for (const [crop, head] of heads) {
      const model = init.withoutInit(() => new EncoderDecoder({ backbone: new NoBackbone(), decode_head: head as never }));
      const sd = model.stateDict();
      assert.deepEqual([...sd.keys()], d.keys, `${crop}: decode_head keys and order`);
      let n = 0;
      for (const [k, v] of sd) {
        const want = /query_(embed|feat)\.weight$/.test(k) && crop === 640 ? [100, 1024] : d.shapes[k];
        assert.deepEqual(v.shape, want, `${crop}: shape of ${k}`);
        n += v.numel();
      }
      assert.equal(n, crop === 896 ? d.num_params : d.other_ade20k_configs.mask2former_beit_adapter_large_640_160k_ade20k_ss.num_params);
      model.dispose();
    }
  });

test('a Mask2Former preset shrunk to a micro BEiT-Adapter runs segmentImage (slide windows, flip)', () => {
  const cfg = loadConfig('mask2former_beit_adapter_large_640_160k_ade20k_ss', {
    model: {
      backbone: { img_size: 64, embed_dim: 64, depth: 4, num_heads: 4, deform_num_heads: 4, with_cp: false, drop_path_rate: 0,
        interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]] },
      decode_head: mask2formerHeadCfg({ inChannels: 64, channels: 64, numQueries: 6, numThings: 100, numStuff: 50, heads: 4, ffn: 64,
        encoderLayers: 1, decoderLayers: 2 }),
      test_cfg: { mode: 'slide', crop_size: [64, 64], stride: [32, 32] },
    },
    test_pipeline: { img_scale: [96, 64] },
  });
  const model = buildSegmentor(cfg);
  const data = new Uint8Array(64 * 96 * 3).map((_, i) => (i * 37) % 251);
  const r = segmentImage(model, { data, height: 64, width: 96 }, cfg, { flip: true });
  assert.equal(r.labels.length, 64 * 96);
  assert.equal(r.numClasses, 150);
  assert.equal(r.copies.length, 2);
  assert.ok(r.classShares.length >= 1);
  assert.ok(Math.abs(r.classShares.reduce((a, c) => a + c.share, 0) - 1) < 1e-9);
  model.dispose();
});
