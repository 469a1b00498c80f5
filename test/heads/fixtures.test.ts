/**
 * Parity of the decode heads with the mmseg 0.x reference fixtures (`../shared/fixtures/heads/`): strict loading of
 * the reference weights, eval forward, every stored output and debug intermediate within max|out−ref|/max|ref| < 1e-4;
 * and the key list / order / shapes / parameter count of the ViT-Adapter-T head configuration.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { type Tensor, noGrad } from '../../src/engine/index.js';
import { Module, loadWeights, readStateDict } from '../../src/nn/index.js';
import { buildHead, resize } from '../../src/models/heads/index.js';
import { EncoderDecoder } from '../../src/tasks/segmentation/segmentor.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { relErr } from '../helpers/numeric.js';

const DIR = 'heads';
const TOL = 1e-4;

function fixture(name: string): string {
  return fixturePath(DIR, name);
}

function readJson(name: string): Record<string, any> {
  return JSON.parse(readFileSync(fixture(name), 'utf8')) as Record<string, any>;
}

function skipUnless(...files: string[]): false | string {
  const s = skipUnlessFixtures(DIR);
  if (s) return s;
  const missing = files.filter((f) => !existsSync(fixture(f)));
  return missing.length ? `fixtures ../shared/fixtures/${DIR}/${missing.join(', ')} not found` : false;
}

/** Runs a head on the fixture inputs in eval mode and compares every stored tensor that the head captured. */
function checkParity(t: { diagnostic(msg: string): void }, name: string, cfgKey: 'decode_head' | 'auxiliary_head',
  expectedNames: string[]): void {
  const cfg = readJson(`${name}.json`);
  const head = buildHead(cfg[cfgKey]);
  // strict: throws on any missing / unexpected / mis-shaped key (num_batches_tracked present in the file)
  const res = loadWeights(head, fixture(`${name}.weights.safetensors`), { select: `${cfgKey}.` });
  assert.deepEqual(res, { missing: [], unexpected: [], mismatched: [] });
  assert.deepEqual([...head.stateDict().keys()].map((k) => `${cfgKey}.${k}`), cfg.weights.keys);
  head.eval();
  const io = readStateDict(fixture(`${name}.io.safetensors`));
  const inputs = [0, 1, 2, 3].map((i) => io.get(`in${i}`)!);
  const got = new Map<string, Tensor>();
  noGrad(() => head.forward(inputs, (n, x) => got.set(n, x.keep())));
  const refs = [...io.keys()].filter((k) => !/^in\d$/.test(k));
  for (const n of expectedNames) assert.ok(refs.includes(n), `${name}: io file lacks ${n}`);
  const errs: string[] = [];
  for (const k of refs) {
    const out = got.get(k);
    assert.ok(out, `${name}: the head did not report ${k}`);
    const ref = io.get(k)!;
    assert.deepEqual(out.shape, ref.shape, `${name} ${k} shape`);
    const e = relErr(out.toTypedArray(), ref.toTypedArray());
    errs.push(`${k} ${e.toExponential(2)}`);
    assert.ok(e < TOL, `${name} ${k}: max|out-ref|/max|ref| = ${e} >= ${TOL}`);
  }
  t.diagnostic(`${name} rel. errors: ${errs.join(', ')}`);
}

test('uperhead_small: strict load, eval forward matches logits and every intermediate',
  { skip: skipUnless('uperhead_small.json', 'uperhead_small.weights.safetensors', 'uperhead_small.io.safetensors') }, (t) => {
    checkParity(t, 'uperhead_small', 'decode_head', [
      'logits', 'psp_out', 'fpn_out', 'ppm_pool.0', 'ppm.3', 'lateral.0', 'topdown.3', 'fpn.2',
    ]);
  });

test('fcnhead_small: strict load, eval forward matches feat and logits',
  { skip: skipUnless('fcnhead_small.json', 'fcnhead_small.weights.safetensors', 'fcnhead_small.io.safetensors') }, (t) => {
    checkParity(t, 'fcnhead_small', 'auxiliary_head', ['logits', 'feat']);
  });

/** A backbone with no state: returns its input list (for key checks of the heads inside an EncoderDecoder). */
class NoBackbone extends Module {
  forward(x: Tensor): Tensor[] { return [x]; }
}

test('segmentor_tiny_head: ViT-Adapter-T heads have the reference key list, order, shapes and parameter count',
  { skip: skipUnless('segmentor_tiny_head.json') }, () => {
    const cfg = readJson('segmentor_tiny_head.json');
    const model = new EncoderDecoder({
      backbone: new NoBackbone(), decode_head: cfg.decode_head, auxiliary_head: cfg.auxiliary_head,
    });
    const sd = model.stateDict();
    assert.equal(sd.size, cfg.weights.num_tensors);
    assert.deepEqual([...sd.keys()], cfg.weights.keys);
    for (const [k, v] of sd) assert.deepEqual(v.shape, cfg.weights.shapes[k], `shape of ${k}`);
    // the JSON counts every floating-point state entry (parameters and BN running statistics, not num_batches_tracked)
    let n = 0;
    for (const [k, v] of sd) if (!k.endsWith('num_batches_tracked')) n += v.numel();
    assert.equal(n, cfg.weights.num_params);
    assert.equal(n, 28_108_588);
    // trainable parameters = that minus the running statistics (2 × channels per BN)
    let stats = 0;
    for (const [k, v] of sd) if (/running_(mean|var)$/.test(k)) stats += v.numel();
    assert.equal(model.numParameters(), n - stats);
    model.dispose();
  });

test('segmentor_tiny_head: parity at ViT-Adapter-T sizes (when its weights and io files are shipped)',
  { skip: skipUnless('segmentor_tiny_head.json', 'segmentor_tiny_head.weights.safetensors', 'segmentor_tiny_head.io.safetensors') },
  (t) => {
    const cfg = readJson('segmentor_tiny_head.json');
    const model = new EncoderDecoder({ backbone: new NoBackbone(), decode_head: cfg.decode_head, auxiliary_head: cfg.auxiliary_head });
    loadWeights(model, fixture('segmentor_tiny_head.weights.safetensors'));
    model.eval();
    const io = readStateDict(fixture('segmentor_tiny_head.io.safetensors'));
    const inputs = [0, 1, 2, 3].map((i) => io.get(`in${i}`)!);
    noGrad(() => {
      const caps = new Map<string, Tensor>();
      const logits = model.decode_head.forward(inputs, (n, x) => caps.set(n, x.keep()));
      const aux = model.auxiliaryHeads[0]!.forward(inputs);
      const errs: string[] = [];
      for (const [k, out] of [['logits', logits], ['aux_logits', aux], ['psp_out', caps.get('psp_out')!]] as const) {
        const ref = io.get(k)!;
        assert.deepEqual(out.shape, ref.shape);
        const e = relErr(out.toTypedArray(), ref.toTypedArray());
        errs.push(`${k} ${e.toExponential(2)}`);
        assert.ok(e < TOL, `${k}: ${e}`);
      }
      // seg: argmax of the logits resized to the 512×512 input, on pixels whose reference margin exceeds our error
      const a = logits.toTypedArray();
      const r = io.get('logits')!.toTypedArray();
      let maxAbs = 0;
      for (let i = 0; i < r.length; i++) maxAbs = Math.max(maxAbs, Math.abs(a[i]! - r[i]!));
      const [H, W] = cfg.image_size as [number, number];
      const pred = resize(logits, [H, W], false).argmax(1).toTypedArray();
      const seg = io.get('seg')!.toTypedArray();
      const margin = io.get('seg_margin')!.toTypedArray();
      let compared = 0;
      let wrong = 0;
      for (let i = 0; i < seg.length; i++) {
        if (margin[i]! <= 4 * maxAbs + 1e-5) continue; // resize adds float32 rounding on top of the logit error
        compared++;
        if (pred[i] !== seg[i]) wrong++;
      }
      assert.equal(wrong, 0, `seg: ${wrong} of ${compared} confidently-labelled pixels differ`);
      assert.ok(compared > seg.length * 0.99);
      t.diagnostic(`segmentor_tiny_head rel. errors: ${errs.join(', ')}; logits max abs err ${maxAbs.toExponential(2)}`);
    });
  });
