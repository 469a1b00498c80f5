/**
 * The heads' training losses against loss_cases.* (mmseg 0.20.2 BaseDecodeHead.losses + CrossEntropyLoss +
 * _parse_losses): decode (weight 1.0, optional class weights) + auxiliary (weight 0.4) cross entropy with ignore 255,
 * the all-ignored case, acc_seg, and the gradients w.r.t. both heads' logits, in float64 (1e-12) and float32 (~1e-6).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type DType, type Tensor, scope } from '../../src/engine/index.js';
import { FCNHead } from '../../src/models/heads/index.js';
import { SKIP, fixtureArrays, fixtureJson, maxScaledDiff, toTensor } from './helpers.js';

interface LossCase {
  name: string;
  num_classes: number;
  class_weight: number[] | null;
  results: Record<'f32' | 'f64', Record<string, number | null>>;
}

function head(numClasses: number, weight: number, classWeight: number[] | null): FCNHead {
  return new FCNHead({
    in_channels: 4, channels: 4, num_convs: 1, concat_input: false, num_classes: numClasses, align_corners: false,
    loss_decode: { type: 'CrossEntropyLoss', use_sigmoid: false, loss_weight: weight, ...(classWeight ? { class_weight: classWeight } : {}) },
  });
}

function rel(a: number, b: number): number {
  return a === b ? 0 : Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);
}

for (const [tag, dtype, tol, gradTol] of [['f64', 'float64', 1e-12, 1e-12], ['f32', 'float32', 2e-6, 2e-6]] as const) {
  test(`decode + aux cross entropy, acc_seg and logit gradients match mmseg 0.20.2 (${dtype})`, { skip: SKIP }, () => {
    const f = fixtureJson<{ cases: LossCase[] }>('loss_cases.json');
    const arrays = fixtureArrays('loss_cases.safetensors');
    assert.equal(f.cases.length, 5);
    for (const c of f.cases) {
      scope(() => {
        const want = c.results[tag];
        const dec = head(c.num_classes, 1.0, c.class_weight);
        const aux = head(c.num_classes, 0.4, null);
        const dl = toTensor(arrays.get(`${c.name}.decode_logits`)).to(dtype as DType).requiresGrad_(true);
        const al = toTensor(arrays.get(`${c.name}.aux_logits`)).to(dtype as DType).requiresGrad_(true);
        const label = toTensor(arrays.get(`${c.name}.label`));
        const d = dec.losses(dl, label);
        const a = aux.losses(al, label);
        const total: Tensor = d.loss.add(a.loss);
        assert.equal(total.dtype, dtype);
        const got: Record<string, number> = {
          'decode.loss_ce': d.terms.loss_ce!.item(), 'decode.acc_seg': d.acc_seg.item(),
          'aux.loss_ce': a.terms.loss_ce!.item(), 'aux.acc_seg': a.acc_seg.item(), loss: total.item(),
        };
        for (const k of Object.keys(got)) {
          const w = want[k] as number;
          if (k.endsWith('acc_seg')) assert.equal(got[k], w, `${c.name} ${tag} ${k}: ${got[k]} vs ${w}`);
          else assert.ok(rel(got[k]!, w) <= tol, `${c.name} ${tag} ${k}: ${got[k]} vs ${w} (relative ${rel(got[k]!, w)})`);
        }
        if (c.name === 'all_ignored') assert.equal(got.loss, 0);
        total.backward();
        const gd = maxScaledDiff(dl.grad!, toTensor(arrays.get(`${c.name}.${tag}.grad_decode_logits`)));
        const ga = maxScaledDiff(al.grad!, toTensor(arrays.get(`${c.name}.${tag}.grad_aux_logits`)));
        assert.ok(gd <= gradTol && ga <= gradTol, `${c.name} ${tag}: gradient differences decode ${gd}, aux ${ga}`);
        dec.dispose();
        aux.dispose();
      });
    }
  });
}
