/**
 * Multi-scale deformable attention written with gridSample (test/helpers/msda.ts) against the reference PyTorch
 * outputs and gradients in ../shared/fixtures/reference/msda_*.safetensors, in float64.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, fromBytes, op, scope, tensor } from '../../src/engine/index.js';
import { fixturePath, skipUnlessFixtures } from '../helpers/fixtures.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { msDeformAttnComposition } from '../helpers/msda.js';
import { assertClose, relErr, uniform, values } from '../helpers/numeric.js';
import { type RawTensor, engineDType, readSafetensors } from '../helpers/safetensors-mini.js';

function load(raw: RawTensor | undefined, name: string): Tensor {
  if (!raw) throw new Error(`fixture tensor ${name} missing`);
  return fromBytes(raw.data, engineDType(raw.dtype), raw.shape);
}

describe('msDeformAttnComposition by hand', () => {
  test('a point at a pixel centre returns that pixel; weights scale; outside points read zeros', () => {
    // N = 1, M = 1, D = 2, one level 2×2 (S = 4), Lq = 3, P = 1
    const value = tensor([1, 10, 2, 20, 3, 30, 4, 40], { dtype: 'float64', shape: [1, 4, 1, 2] });
    // (x, y) in [0, 1]: pixel (col 1, row 0) centre is (0.75, 0.25); the image centre (0.5, 0.5); far outside (−1, 0.5)
    const loc = tensor([0.75, 0.25, 0.5, 0.5, -1, 0.5], { dtype: 'float64', shape: [1, 3, 1, 1, 1, 2] });
    const attn = tensor([2, 1, 1], { dtype: 'float64', shape: [1, 3, 1, 1, 1] });
    const out = msDeformAttnComposition(value, [[2, 2]], [0], loc, attn);
    assert.deepEqual(out.shape, [1, 3, 2]);
    assertClose(out, [4, 40, 2.5, 25, 0, 0], { atol: 1e-15 });
  });

  test('two levels, two heads, two points: the level offsets and head layout', () => {
    // level 0: 1×2, level 1: 1×1; M = 2 heads with D = 1: value[n, s, m, 0]
    // s = 0, 1 (level 0) and 2 (level 1); head 0 values 1, 2, 5; head 1 values 10, 20, 50
    const value = tensor([1, 10, 2, 20, 5, 50], { dtype: 'float64', shape: [1, 3, 2, 1] });
    // every head/level/point samples a pixel centre: level 0 centres x = 0.25 (s=0) or 0.75 (s=1); level 1 x = 0.5
    // loc (N=1, Lq=1, M=2, L=2, P=2, 2)
    const loc = tensor([
      0.25, 0.5, 0.75, 0.5, /* head 0 level 0 */ 0.5, 0.5, 0.5, 0.5, /* head 0 level 1 */
      0.75, 0.5, 0.75, 0.5, /* head 1 level 0 */ 0.5, 0.5, 0.5, 0.5, /* head 1 level 1 */
    ], { dtype: 'float64', shape: [1, 1, 2, 2, 2, 2] });
    const attn = tensor([0.1, 0.2, 0.3, 0.4, 1, 2, 3, 4], { dtype: 'float64', shape: [1, 1, 2, 2, 2] });
    // head 0: 0.1·1 + 0.2·2 + (0.3 + 0.4)·5 = 4; head 1: (1 + 2)·20 + (3 + 4)·50 = 410
    assertClose(msDeformAttnComposition(value, [[1, 2], [1, 1]], [0, 2], loc, attn), [4, 410], { shape: [1, 1, 2], atol: 1e-13 });
  });

  test('gradients of the composition against finite differences', () => {
    const value = tensor(uniform(1 * 7 * 2 * 3, 71), { dtype: 'float64', shape: [1, 7, 2, 3] });
    const loc = tensor(uniform(1 * 2 * 2 * 2 * 2 * 2, 72, -0.1, 1.1), { dtype: 'float64', shape: [1, 2, 2, 2, 2, 2] });
    const attn = tensor(uniform(1 * 2 * 2 * 2 * 2, 73), { dtype: 'float64', shape: [1, 2, 2, 2, 2] });
    gradcheck((v, l, a) => msDeformAttnComposition(v!, [[2, 2], [1, 3]], [0, 4], l!, a!), [value, loc, attn]);
  });
});

for (const name of ['msda_small', 'msda_batch2']) {
  const file = `reference/${name}.safetensors`;
  test(`msDeformAttnComposition matches ${name} (forward and the three gradients, float64)`, { skip: skipUnlessFixtures(file) }, () => {
    const f = readSafetensors(fixturePath(file));
    const get = (k: string): Tensor => load(f.get(k), k);
    const shapes = values(get('spatial_shapes'));
    const levels: [number, number][] = [];
    for (let i = 0; i < shapes.length; i += 2) levels.push([shapes[i]!, shapes[i + 1]!]);
    const starts = values(get('level_start_index'));
    // the start index is the running sum of H·W
    let acc = 0;
    levels.forEach(([h, w], l) => { assert.equal(starts[l], acc); acc += h * w; });
    assert.equal(get('value').size(1), acc);

    const value = get('value').double().requiresGrad_();
    const loc = get('sampling_locations').double().requiresGrad_();
    const attn = get('attention_weights').double().requiresGrad_();
    const out = msDeformAttnComposition(value, levels, starts, loc, attn);
    const ref = get('output');
    assert.equal(ref.dtype, 'float64');
    assert.deepEqual(out.shape, ref.shape);
    const errors: Record<string, number> = { output: relErr(values(out), values(ref)) };
    out.mul(get('grad_output').double()).sum().backward();
    for (const [k, t] of [['grad_value', value], ['grad_sampling_locations', loc], ['grad_attention_weights', attn]] as const) {
      const g = t.grad;
      assert.ok(g, `${k}: no gradient`);
      const r = get(k);
      assert.deepEqual(g.shape, r.shape, k);
      errors[k] = relErr(values(g), values(r));
    }
    for (const [k, e] of Object.entries(errors)) assert.ok(e < 1e-4, `${name} ${k}: max|out − ref|/max|ref| = ${e}`);
    // the composition is the reference's own algorithm in float64: agreement is at rounding level
    for (const [k, e] of Object.entries(errors)) assert.ok(e < 1e-12, `${name} ${k}: ${e} (expected ~1e-15)`);
  });
}

// ---- non-finite inputs: the native kernel propagates NaN exactly as the grid_sample composition does -------------

const nativeMsda = op('vit_adapter::ms_deform_attn');

test('native ms_deform_attn and the composition agree on NaN / ±Inf sampling locations and weights (forward and gradients)', {
  skip: nativeMsda.available() ? false : 'native kernel not built',
}, () => {
  // libtorch 1.13 grid_sample (zero padding, align_corners=False) on a non-finite coordinate: NaN sample in every
  // channel; backward: no grad_input, grad of the *other* coordinate NaN, its own 0. The native kernel must match,
  // including the NaN output rows and the exact 0 / NaN pattern of the gradients.
  const levels: [number, number][] = [[4, 5], [2, 3]];
  const starts = [0, 20];
  const [N, Lq, M, L, P, D] = [2, 6, 2, 2, 3, 16];
  for (const dtype of ['float64', 'float32'] as const) {
    scope(() => {
      const loc0 = tensor(uniform(N * Lq * M * L * P * 2, 91, -0.2, 1.2), { dtype: 'float64', shape: [N, Lq, M, L, P, 2] });
      const attn0 = tensor(uniform(N * Lq * M * L * P, 92, 0, 1), { dtype: 'float64', shape: [N, Lq, M, L, P] });
      const locs = values(loc0);
      const ws = values(attn0);
      const at = (n: number, q: number, m: number, l: number, p: number): number => ((((n * Lq + q) * M + m) * L + l) * P + p);
      // (n, q, m, l, p) → what to put there
      locs[2 * at(0, 0, 0, 0, 0)] = NaN;                                          // x NaN, y finite
      locs[2 * at(0, 1, 1, 1, 2) + 1] = Infinity;                                  // y +Inf, x finite
      locs[2 * at(1, 2, 0, 0, 1)] = -Infinity; locs[2 * at(1, 2, 0, 0, 1) + 1] = NaN; // both
      locs[2 * at(1, 3, 1, 1, 0)] = Infinity;                                      // x +Inf
      locs[2 * at(0, 4, 0, 1, 1) + 1] = -Infinity;                                 // y −Inf
      locs[2 * at(0, 5, 1, 0, 2)] = 1e30;                                          // huge but finite: outside
      locs[2 * at(1, 4, 0, 0, 0)] = 5; locs[2 * at(1, 4, 0, 0, 0) + 1] = 0.5;       // outside, weight Inf
      ws[at(1, 4, 0, 0, 0)] = Infinity;
      locs[2 * at(1, 5, 1, 1, 1)] = -3;                                            // outside, weight NaN
      ws[at(1, 5, 1, 1, 1)] = NaN;
      locs[2 * at(0, 3, 0, 0, 2)] = 0.5; locs[2 * at(0, 3, 0, 0, 2) + 1] = 0.5;     // inside, weight NaN
      ws[at(0, 3, 0, 0, 2)] = NaN;
      const S = 26;
      const mk = (): [Tensor, Tensor, Tensor] => [
        tensor(uniform(N * S * M * D, 93), { dtype, shape: [N, S, M, D] }).requiresGrad_(),
        tensor(locs, { dtype, shape: [N, Lq, M, L, P, 2] }).requiresGrad_(),
        tensor(ws, { dtype, shape: [N, Lq, M, L, P] }).requiresGrad_(),
      ];
      const go = tensor(uniform(N * Lq * M * D, 94), { dtype, shape: [N, Lq, M * D] });
      const [v1, l1, a1] = mk();
      const ref = msDeformAttnComposition(v1, levels, starts, l1, a1);
      ref.mul(go).sum().backward();
      const [v2, l2, a2] = mk();
      const ss = tensor(levels.flat(), { dtype: 'int64', shape: [L, 2] });
      const ls = tensor(starts, { dtype: 'int64' });
      const out = nativeMsda.t([v2.handle, ss.handle, ls.handle, l2.handle, a2.handle]);
      out.mul(go).sum().backward();
      const tol = dtype === 'float64' ? { atol: 1e-12, rtol: 1e-10 } : { atol: 2e-5, rtol: 2e-5 };
      // the composition's output really has NaN rows here (the test would be vacuous otherwise)
      const nanRef = values(ref).filter(Number.isNaN).length;
      assert.equal(nanRef, 8 * D, `${dtype}: NaN outputs of the composition`);
      assertClose(out, values(ref), { ...tol, msg: `${dtype} output` });
      assertClose(v2.grad!, values(v1.grad!), { ...tol, msg: `${dtype} grad_value` });
      assertClose(l2.grad!, values(l1.grad!), { ...tol, msg: `${dtype} grad_sampling_locations` });
      assertClose(a2.grad!, values(a1.grad!), { ...tol, msg: `${dtype} grad_attention_weights` });
      // and the exact pattern for the first point: x NaN, y finite → grad x 0, grad y NaN, grad weight NaN
      const gl = values(l2.grad!);
      assert.equal(gl[0], 0);
      assert.ok(Number.isNaN(gl[1]!));
      assert.ok(Number.isNaN(values(a2.grad!)[0]!));
    });
  }
});
