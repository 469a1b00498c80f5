/**
 * AdamW and clip_grad_norm_ against adamw_steps.* (torch 1.13, float64): all four cases, every step's parameters,
 * the final state; float32 sanity; multi-tensor and per-parameter paths agree bit for bit; state dict flatten /
 * unflatten and resume equal a straight run; mismatching resume state is refused with the difference named.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type DType, type Tensor, noGrad, randn, manualSeed, zerosLike } from '../../src/engine/index.js';
import {
  AdamW, OptimizerStateError, type ParamGroupSpec, clipGradNorm, flattenOptimizerState, unflattenOptimizerState,
} from '../../src/train/index.js';
import { SKIP, fixtureArrays, fixtureJson, maxRelDiff, maxScaledDiff, toTensor } from './helpers.js';

interface AdamCase {
  name: string;
  steps: number;
  groups: { params: string[]; lr: number; weight_decay: number }[];
  grad_clip: { max_norm: number } | null;
  lr_per_step: number[][] | null;
  per_step: { step: number; lr: number[]; grad_total_norm?: number; clipped?: boolean }[];
  state_step: Record<string, number>;
  state_dict_param_groups: { lr: number; weight_decay: number; betas: number[]; eps: number; params: number[] }[];
}

function makeParams(arrays: ReturnType<typeof fixtureArrays>, c: AdamCase, dtype: DType): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const g of c.groups) for (const n of g.params) {
    const t = toTensor(arrays.get(`${c.name}.param.${n}.init`), n).to(dtype);
    t.requiresGrad = true;
    out.set(n, t);
  }
  return out;
}

function groupsOf(c: AdamCase, params: Map<string, Tensor>): ParamGroupSpec[] {
  let next = 0;
  return c.groups.map((g, i) => {
    const spec: ParamGroupSpec = {
      groupName: `g${i}`, layerId: null, lrScale: 1, lr: g.lr, weightDecay: g.weight_decay,
      params: g.params.map((n) => params.get(n)!), paramNames: [...g.params], stateIndexStart: next,
    };
    next += g.params.length;
    return spec;
  });
}

/** Runs one fixture case; returns the worst relative difference over every step's parameters and the final state. */
function runCase(c: AdamCase, arrays: ReturnType<typeof fixtureArrays>, dtype: DType, foreach = true): { worst: number; opt: AdamW; params: Map<string, Tensor> } {
  const params = makeParams(arrays, c, dtype);
  const opt = new AdamW(groupsOf(c, params), { foreach });
  let worst = 0;
  const diff = dtype === 'float64' ? maxRelDiff : maxScaledDiff;
  for (let k = 1; k <= c.steps; k++) {
    if (c.lr_per_step) opt.paramGroups.forEach((g, i) => { g.lr = c.lr_per_step![k - 1]![i]!; });
    assert.deepEqual(opt.lrs(), c.per_step[k - 1]!.lr);
    for (const [n, p] of params) p.grad = toTensor(arrays.get(`${c.name}.grad.${n}.step${k}`), n).to(dtype);
    if (c.grad_clip) {
      const total = clipGradNorm(opt.params(), c.grad_clip.max_norm, { foreach });
      const want = c.per_step[k - 1]!.grad_total_norm!;
      assert.ok(Math.abs(total - want) / want < (dtype === 'float64' ? 1e-14 : 1e-6), `step ${k}: total norm ${total} vs ${want}`);
      for (const [n, p] of params) {
        const g = p.grad!;
        worst = Math.max(worst, diff(g, toTensor(arrays.get(`${c.name}.clipped_grad.${n}.step${k}`))));
      }
    }
    opt.step();
    opt.zeroGrad();
    for (const [n, p] of params) {
      assert.equal(p.grad, null);
      assert.equal(p.dtype, dtype);
      worst = Math.max(worst, diff(p, toTensor(arrays.get(`${c.name}.param.${n}.step${k}`))));
    }
  }
  const names = c.groups.flatMap((g) => g.params);
  names.forEach((n, i) => {
    const s = opt.state.get(i)!;
    assert.equal(s.step, c.state_step[n]);
    assert.equal(s.expAvg.dtype, dtype);
    worst = Math.max(worst, diff(s.expAvg, toTensor(arrays.get(`${c.name}.state.${n}.exp_avg`))));
    worst = Math.max(worst, diff(s.expAvgSq, toTensor(arrays.get(`${c.name}.state.${n}.exp_avg_sq`))));
  });
  return { worst, opt, params };
}

test('AdamW float64: plain, lr_changes, large_lr_wd and clip equal torch to 1e-12 relative', { skip: SKIP }, () => {
  const f = fixtureJson<{ cases: AdamCase[] }>('adamw_steps.json');
  const arrays = fixtureArrays('adamw_steps.safetensors');
  assert.deepEqual(f.cases.map((c) => c.name), ['plain', 'lr_changes', 'large_lr_wd', 'clip']);
  for (const c of f.cases) {
    const { worst, opt } = runCase(c, arrays, 'float64');
    assert.ok(worst <= 1e-12, `${c.name}: worst relative difference ${worst}`);
    console.log(`${c.name}: float64 worst relative difference ${worst}`);
    // torch's state-dict layout
    const sd = opt.stateDict();
    sd.param_groups.forEach((g, i) => {
      const want = c.state_dict_param_groups[i]!;
      assert.deepEqual([g.lr, g.weight_decay, g.betas, g.eps, g.params], [want.lr, want.weight_decay, want.betas, want.eps, want.params]);
    });
    opt.dispose();
  }
});

test('AdamW float32 sanity: float32 state, close to the float64 reference', { skip: SKIP }, () => {
  const f = fixtureJson<{ cases: AdamCase[] }>('adamw_steps.json');
  const arrays = fixtureArrays('adamw_steps.safetensors');
  for (const c of f.cases) {
    const { worst, opt } = runCase(c, arrays, 'float32');
    assert.ok(worst <= 1e-6, `${c.name}: float32 worst difference ${worst} (relative to each tensor's largest value)`);
    console.log(`${c.name}: float32 worst scaled difference ${worst}`);
    opt.dispose();
  }
});

test('multi-tensor and per-parameter paths agree bit for bit', { skip: SKIP }, () => {
  const f = fixtureJson<{ cases: AdamCase[] }>('adamw_steps.json');
  const arrays = fixtureArrays('adamw_steps.safetensors');
  for (const c of f.cases) {
    const a = runCase(c, arrays, 'float64', true);
    const b = runCase(c, arrays, 'float64', false);
    for (const [n, p] of a.params) assert.deepEqual(p.toBytes(), b.params.get(n)!.toBytes(), `${c.name} ${n}`);
    a.opt.dispose();
    b.opt.dispose();
  }
});

function toyParams(): { params: Tensor[]; groups: ParamGroupSpec[] } {
  manualSeed(7);
  const params = [randn([4, 3]), randn([5]), randn([2, 2, 2])].map((t) => t.requiresGrad_(true));
  const groups: ParamGroupSpec[] = [
    { groupName: 'a', layerId: 0, lrScale: 0.5, lr: 0.01, weightDecay: 0.1, params: [params[0]!, params[2]!], paramNames: ['w', 'z'], stateIndexStart: 0 },
    { groupName: 'b', layerId: 1, lrScale: 1, lr: 0.02, weightDecay: 0, params: [params[1]!], paramNames: ['bias'], stateIndexStart: 2 },
  ];
  return { params, groups };
}

function cloneGroups(groups: ParamGroupSpec[], map: Map<Tensor, Tensor>): ParamGroupSpec[] {
  return groups.map((g) => ({ ...g, params: g.params.map((p) => map.get(p)!) }));
}

test('state dict: flatten/unflatten round trip; resume equals a straight run bit for bit', () => {
  const { params, groups } = toyParams();
  const copy = new Map(params.map((p) => [p, noGrad(() => p.clone()).requiresGrad_(true)] as [Tensor, Tensor]));
  const gradsAt = (k: number): Tensor[] => { manualSeed(100 + k); return params.map((p) => randn(p.shape, { dtype: p.dtype })); };
  // straight: 6 steps
  const a = new AdamW(groups);
  for (let k = 0; k < 6; k++) {
    const gs = gradsAt(k);
    params.forEach((p, i) => { p.grad = gs[i]!; });
    a.paramGroups[0]!.lr *= 0.9;
    a.step();
    a.zeroGrad();
  }
  // 3 steps, save (flatten), new optimizer, load (unflatten), 3 more steps
  const cp = [...copy.values()];
  const b1 = new AdamW(cloneGroups(groups, copy));
  for (let k = 0; k < 3; k++) {
    const gs = gradsAt(k);
    cp.forEach((p, i) => { p.grad = gs[i]!; });
    b1.paramGroups[0]!.lr *= 0.9;
    b1.step();
    b1.zeroGrad();
  }
  const { tensors, meta } = flattenOptimizerState(b1.stateDict(), 'optimizer.');
  assert.deepEqual(Object.keys(tensors).sort(), ['optimizer.state.0.exp_avg', 'optimizer.state.0.exp_avg_sq', 'optimizer.state.1.exp_avg',
    'optimizer.state.1.exp_avg_sq', 'optimizer.state.2.exp_avg', 'optimizer.state.2.exp_avg_sq']);
  const metaJson = JSON.parse(JSON.stringify(meta));
  const saved = new Map(Object.entries(tensors).map(([k, t]) => [k, t.clone()] as [string, Tensor]));
  b1.dispose();
  const b2 = new AdamW(cloneGroups(groups, copy));
  b2.loadStateDict(unflattenOptimizerState(saved, metaJson, 'optimizer.'));
  assert.equal(b2.paramGroups[0]!.lr, groups[0]!.lr * 0.9 * 0.9 * 0.9);
  assert.equal(b2.paramGroups[0]!.initialLr, groups[0]!.lr);
  for (let k = 3; k < 6; k++) {
    const gs = gradsAt(k);
    cp.forEach((p, i) => { p.grad = gs[i]!; });
    b2.paramGroups[0]!.lr *= 0.9;
    b2.step();
    b2.zeroGrad();
  }
  params.forEach((p, i) => assert.deepEqual(p.toBytes(), cp[i]!.toBytes(), `param ${i}`));
  for (const i of [0, 1, 2]) {
    assert.deepEqual(a.state.get(i)!.expAvgSq.toBytes(), b2.state.get(i)!.expAvgSq.toBytes());
    assert.equal(b2.state.get(i)!.step, 6);
  }
  // a parameter without a gradient is skipped and gets no state
  const c = new AdamW(cloneGroups(groups, copy));
  cp[0]!.grad = zerosLike(cp[0]!).add(1);
  c.step();
  assert.deepEqual([...c.state.keys()], [0]);
});

test('loading a state that does not match the groups names every difference', () => {
  const { groups } = toyParams();
  const a = new AdamW(groups);
  groups[0]!.params.forEach((p) => { p.grad = zerosLike(p).add(1); });
  groups[1]!.params.forEach((p) => { p.grad = zerosLike(p).add(1); });
  a.step();
  const sd = a.stateDict();
  const other = new AdamW([{ ...groups[0]!, groupName: 'layer_0_decay' }]);
  assert.throws(() => other.loadStateDict(sd), (e: unknown) => {
    assert.ok(e instanceof OptimizerStateError);
    assert.match(e.message, /2 parameter groups saved, the model has 1/);
    assert.match(e.message, /group 0: saved name a, the model's is layer_0_decay/);
    assert.match(e.message, /state for index 2, but the model has 2 parameters/);
    return true;
  });
  const renamed = new AdamW([{ ...groups[0]!, paramNames: ['w', 'q'] }, groups[1]!]);
  assert.throws(() => renamed.loadStateDict(sd), /parameter 1 is z in the file, q in the model/);
  const { tensors, meta } = flattenOptimizerState(sd);
  delete tensors['state.1.exp_avg'];
  assert.throws(() => unflattenOptimizerState(tensors, meta), /state 1: exp_avg missing/);
  assert.throws(() => unflattenOptimizerState({ ...tensors, 'state.x.exp_avg': tensors['state.0.exp_avg']! }, meta), /unexpected optimizer key state\.x\.exp_avg/);
  assert.throws(() => new AdamW(groups, { betas: [0.9, 1.5] }), /betas must be two numbers in \[0, 1\)/);
  assert.throws(() => clipGradNorm(groups[0]!.params, 0), /maxNorm must be a positive number/);
});
