/**
 * Multi-scale deformable attention written with gridSample (test/helpers/msda.ts) against the reference PyTorch
 * outputs and gradients in ../shared/fixtures/reference/msda_*.safetensors, in float64.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Tensor, fromBytes, tensor } from '../../src/engine/index.js';
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
