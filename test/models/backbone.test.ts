/** ViT-Adapter backbone: parity with the authors' modules (fixtures), presets, input checks, training path. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { manualSeed, noGrad, randn, scope, softmax } from '../../src/engine/index.js';
import {
  BACKBONE_PRESETS, ViTAdapter, backbonePreset, hasNativeMsDeformAttn, msDeformAttnComposition, msDeformAttnCore,
  setMsDeformAttnImpl,
} from '../../src/models/adapter/index.js';
import { loadWeights } from '../../src/nn/index.js';
import { checkBackboneFixture, checkMsdaFixture } from '../../src/tools/reference.js';
import { fixturePath, repoRoot, skipUnlessFixtures } from '../helpers/fixtures.js';

const BACKBONES = ['vit_adapter_micro', 'vit_adapter_micro_window', 'vit_adapter_micro_det', 'vit_adapter_tiny'];
const impls: [string, boolean][] = [['composition', false], ...(hasNativeMsDeformAttn() ? [['native', true] as [string, boolean]] : [])];

for (const [implName, native] of impls) {
  for (const name of BACKBONES) {
    test(`parity ${name} (${implName} deformable attention): f1..f4 and every intermediate < 1e-4`, { skip: skipUnlessFixtures(`reference/${name}.json`) }, () => {
      setMsDeformAttnImpl(native);
      try {
        const rows = checkBackboneFixture(fixturePath('reference', name));
        assert.ok(rows.length >= 4 + 4 + 8, `expected outputs and intermediates, got ${rows.length} rows`);
        for (const r of rows) assert.ok(r.ok, `${name} ${r.name}: max_rel_err ${r.maxRelErr}`);
      } finally {
        setMsDeformAttnImpl(null);
      }
    });
  }
  for (const f of ['msda_small', 'msda_batch2']) {
    test(`parity ${f} (${implName}): output and three gradients in float32 and float64`, { skip: skipUnlessFixtures(`reference/${f}.safetensors`) }, () => {
      setMsDeformAttnImpl(native);
      try {
        for (const dtype of ['float32', 'float64'] as const) {
          const rows = checkMsdaFixture(fixturePath('reference', `${f}.safetensors`), { dtype });
          assert.deepEqual(rows.map((r) => r.name), ['output', 'grad_value', 'grad_sampling_locations', 'grad_attention_weights']);
          for (const r of rows) assert.ok(r.ok && r.maxRelErr < (dtype === 'float64' ? 1e-10 : 1e-4), `${f} ${dtype} ${r.name}: ${r.maxRelErr}`);
        }
      } finally {
        setMsDeformAttnImpl(null);
      }
    });
  }
}

test('the .pth checkpoint loads into the backbone (select backbone.) and gives the same outputs as the safetensors weights', { skip: skipUnlessFixtures('reference/vit_adapter_micro.pth') }, () => {
  const cfg = { embed_dim: 64, depth: 4, num_heads: 2, conv_inplane: 16, deform_num_heads: 2, interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]] as [number, number][] };
  const a = new ViTAdapter(cfg).eval();
  const b = new ViTAdapter(cfg).eval();
  loadWeights(a, fixturePath('reference', 'vit_adapter_micro.pth'), { select: 'backbone.' });
  loadWeights(b, fixturePath('reference', 'vit_adapter_micro.weights.safetensors'));
  scope(() => {
    manualSeed(1);
    const x = randn([1, 3, 64, 64]);
    const fa = noGrad(() => a.forward(x));
    const fb = noGrad(() => b.forward(x));
    fa.forEach((t, i) => assert.equal(t.sub(fb[i]!).abs().max().item(), 0));
  });
  a.dispose();
  b.dispose();
});

test('presets: parameter counts within 0.5 M of the paper (Table 10: 8.0 / 27.5 / 99.8 / 327.0 M)', () => {
  const paper: Record<string, number> = { tiny: 8.0e6, small: 27.5e6, base: 99.8e6, large: 327.0e6 };
  assert.deepEqual(Object.keys(BACKBONE_PRESETS), Object.keys(paper));
  for (const [name, expected] of Object.entries(paper)) {
    const m = new ViTAdapter(backbonePreset(name));
    const n = m.numParameters();
    m.dispose();
    assert.ok(Math.abs(n - expected) < 0.5e6, `${name}: ${n} parameters, paper ${expected}`);
  }
});

test('input checks: sizes not divisible by 32 and wrong channel counts are refused with a clear message', () => {
  const m = new ViTAdapter({ embed_dim: 32, depth: 4, num_heads: 2, conv_inplane: 8, deform_num_heads: 2 }).eval();
  scope(() => {
    assert.throws(() => m.forward(randn([1, 3, 64, 80])), /multiples of 32.*64×80/);
    assert.throws(() => m.forward(randn([1, 4, 64, 64])), /expected input B×3×H×W, got \[1, 4, 64, 64\]/);
  });
  assert.throws(() => new ViTAdapter({ embed_dim: 32, depth: 4, num_heads: 2, bogus: 1 } as never), /unknown option\(s\) bogus/);
  assert.throws(() => new ViTAdapter({ depth: 4, interaction_indexes: [[0, 5]] }), /out of range/);
  m.dispose();
});

test('training path: gradients reach every parameter of a micro backbone (segmentation and detection variants)', () => {
  for (const variant of ['segmentation', 'detection'] as const) {
    manualSeed(0);
    const m = new ViTAdapter({
      embed_dim: 32, depth: 4, num_heads: 2, conv_inplane: 8, deform_num_heads: 2, drop_path_rate: 0.1, init_values: 0.5,
      interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]], window_attn: [true, false, false, false], window_size: 3, variant,
    }).train();
    scope(() => {
      const outs = m.forward(randn([2, 3, 64, 96]));
      outs.map((t) => t.pow(2).mean()).reduce((a, b) => a.add(b)).backward();
    });
    const noGradParams = m.namedParameters().filter(([, p]) => p.grad === null).map(([n]) => n);
    assert.deepEqual(noGradParams, [], `${variant}: parameters without gradient`);
    m.dispose();
  }
});

test('deformable attention core: native and composition agree on random inputs incl. points outside [0, 1]', { skip: hasNativeMsDeformAttn() ? false : 'native kernel not built' }, () => {
  scope(() => {
    manualSeed(5);
    const shapes: [number, number][] = [[6, 5], [3, 4], [2, 2]];
    const S = shapes.reduce((a, [h, w]) => a + h * w, 0);
    const value = randn([2, S, 3, 8], { dtype: 'float64' });
    const loc = randn([2, 7, 3, 3, 4, 2], { dtype: 'float64' }).mul(0.6).add(0.5);
    const attn = softmax(randn([2, 7, 3, 12], { dtype: 'float64' }), -1).view(2, 7, 3, 3, 4);
    const starts = [0, 30, 42];
    setMsDeformAttnImpl(true);
    const a = msDeformAttnCore(value, shapes, starts, loc, attn);
    setMsDeformAttnImpl(null);
    const b = msDeformAttnComposition(value, shapes, loc, attn);
    assert.ok(a.sub(b).abs().max().item() < 1e-12);
  });
});

test('check-reference CLI: one line per tensor, "parity: ok", exit 0; a broken prefix exits non-zero with the reason', { skip: skipUnlessFixtures('reference/vit_adapter_micro.json') }, () => {
  const bin = join(repoRoot(), 'dist/src/cli/bin.js');
  const ok = spawnSync(process.execPath, [bin, 'check-reference', fixturePath('reference', 'vit_adapter_micro'), fixturePath('reference', 'msda_small.safetensors')], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  const lines = ok.stdout.trim().split('\n');
  assert.equal(lines.at(-1), 'parity: ok');
  assert.ok(lines.some((l) => /^interactions\.3\.c max_rel_err=\S+ ok$/.test(l)));
  assert.ok(lines.some((l) => /^grad_sampling_locations max_rel_err=\S+ ok$/.test(l)));
  const bad = spawnSync(process.execPath, [bin, 'check-reference', '/nonexistent/thing'], { encoding: 'utf8' });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /nonexistent\/thing\.json not found/);
});

test('reference points and level starts of the deform inputs follow the authors (pixel centres, normalised)', async () => {
  const { deformInputs } = await import('../../src/models/adapter/interaction.js');
  scope(() => {
    const d = deformInputs(64, 96, 'cpu');
    assert.deepEqual(d.injector.shapes, [[8, 12], [4, 6], [2, 3]]);
    assert.deepEqual(d.injector.levelStart, [0, 96, 120]);
    assert.deepEqual(d.extractor.shapes, [[4, 6]]);
    assert.deepEqual(d.injector.ref.shape, [1, 24, 1, 2]);
    assert.deepEqual(d.extractor.ref.shape, [1, 96 + 24 + 6, 1, 2]);
    const first = Array.from(d.injector.ref.flatten().toTypedArray()).slice(0, 4);
    // token (0,0): x = 0.5/6, y = 0.5/4; token (0,1): x = 1.5/6, y = 0.5/4
    assert.deepEqual(first.map((v) => Math.round(v * 1e6) / 1e6), [0.083333, 0.125, 0.25, 0.125]);
  });
});

test('with_cp (gradient checkpointing): same outputs and gradients as without, drop path replayed', () => {
  const cfg = {
    embed_dim: 32, depth: 4, num_heads: 2, conv_inplane: 8, deform_num_heads: 2, drop_path_rate: 0.3, init_values: 0.5,
    interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]] as [number, number][],
  };
  manualSeed(3);
  const plain = new ViTAdapter(cfg).train();
  const cp = new ViTAdapter({ ...cfg, with_cp: true }).train();
  cp.loadStateDict(plain.stateDict());
  const run = (m: ViTAdapter): number[] => scope(() => {
    manualSeed(11);
    const x = randn([1, 3, 64, 64]);
    manualSeed(12);
    const loss = m.forward(x).map((t) => t.pow(2).mean()).reduce((a, b) => a.add(b));
    loss.backward();
    return [loss.item()];
  });
  const [la] = run(plain);
  const [lb] = run(cp);
  assert.ok(Math.abs(la! - lb!) < 1e-6 * Math.abs(la!), `loss ${la} vs ${lb}`);
  const gb = new Map(cp.namedParameters());
  for (const [n, p] of plain.namedParameters()) {
    const g1 = p.grad;
    const g2 = gb.get(n)!.grad;
    assert.ok(g1 && g2, `${n}: missing gradient`);
    const err = g1.sub(g2).abs().max().item() / Math.max(1e-12, g1.abs().max().item());
    assert.ok(err < 1e-4, `${n}: gradient differs by ${err}`);
  }
  plain.dispose();
  cp.dispose();
});
