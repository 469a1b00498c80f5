/**
 * Mixed precision on CPU: bf16 autocast (matmul/linear outputs bf16, state restored, nesting, errors) and the
 * GradScaler logic with float32 CPU tensors (inf/NaN → skipped step and backoff, growth after N clean steps,
 * unscale before clipping, power-of-two scaling is exact, state dict, misuse errors).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Tensor, autocast, autocastState, autocastSupported, linear, manualSeed, noGrad, randn, tensor } from '../../src/engine/index.js';
import { AdamW, GradScaler, type ParamGroupSpec, clipGradNorm, gradNorm } from '../../src/train/index.js';

test('CPU bf16 autocast: matmul and linear run in bfloat16 inside, float32 outside; regions nest and restore', () => {
  assert.ok(autocastSupported());
  const a = randn([4, 8]);
  const w = randn([3, 8]).requiresGrad_(true);
  const before = autocastState('cpu');
  const out = autocast('bfloat16', 'cpu', () => {
    assert.equal(autocastState('cpu').enabled, true);
    assert.equal(autocastState('cpu').dtype, 'bfloat16');
    const inner = autocast('bfloat16', 'cpu', () => a.matmul(a.transpose(0, 1)));
    assert.equal(autocastState('cpu').enabled, true, 'still on after the inner region');
    assert.equal(inner.dtype, 'bfloat16');
    return linear(a, w);
  });
  assert.equal(out.dtype, 'bfloat16');
  assert.deepEqual(autocastState('cpu'), before);
  assert.equal(a.matmul(a.transpose(0, 1)).dtype, 'float32');
  // gradients reach the float32 parameter as float32
  out.float().sum().backward();
  assert.equal(w.grad!.dtype, 'float32');
  // state restored after an exception too
  assert.throws(() => autocast('bfloat16', 'cpu', () => { throw new Error('boom'); }), /boom/);
  assert.equal(autocastState('cpu').enabled, before.enabled);
  assert.throws(() => autocast('float16', 'cpu', () => 0), /CPU autocast supports bfloat16 only/);
  assert.throws(() => autocast('float32', 'cpu', () => 0), /dtype must be bfloat16 or float16/);
  assert.throws(() => autocast('bfloat16', 'tpu', () => 0), /device must be cpu or cuda/);
});

function setup(): { p: Tensor[]; opt: AdamW } {
  manualSeed(3);
  const p = [randn([5, 4]).requiresGrad_(true), randn([4]).requiresGrad_(true)];
  const groups: ParamGroupSpec[] = [{ groupName: 'g', layerId: null, lrScale: 1, lr: 1e-2, weightDecay: 0.01, params: p, paramNames: ['w', 'b'], stateIndexStart: 0 }];
  return { p, opt: new AdamW(groups) };
}

function lossOf(p: Tensor[], x: Tensor): Tensor {
  return linear(x, p[0]!.transpose(0, 1), p[1]!).pow(2).mean();
}

test('GradScaler: an inf/NaN gradient skips the step and backs off; N clean steps grow the scale', () => {
  const { p, opt } = setup();
  const s = new GradScaler({ initScale: 512, growthInterval: 3 });
  assert.equal(s.getScale(), 512);
  const x = randn([6, 5]);
  const snapshot = p.map((t) => t.toBytes());
  // overflow: an inf in the input makes gradients non-finite
  const bad = noGrad(() => x.clone());
  noGrad(() => bad.select(0, 0).fill_(Infinity));
  s.scale(lossOf(p, bad)).backward();
  assert.equal(s.step(opt), false, 'step skipped');
  p.forEach((t, i) => assert.deepEqual(t.toBytes(), snapshot[i], 'parameters unchanged'));
  assert.equal(opt.state.size, 0, 'no optimizer state created');
  s.update();
  assert.equal(s.getScale(), 256);
  assert.equal(s.getGrowthTracker(), 0);
  opt.zeroGrad();
  // clean steps: tracker 1, 2, then growth to 512 and reset
  const scales: number[] = [];
  for (let k = 0; k < 4; k++) {
    s.scale(lossOf(p, x)).backward();
    assert.equal(s.step(opt), true);
    s.update();
    opt.zeroGrad();
    scales.push(s.getScale(), s.getGrowthTracker());
  }
  assert.deepEqual(scales, [256, 1, 256, 2, 512, 0, 512, 1]);
  // NaN also counts as an overflow
  const nan = noGrad(() => x.clone());
  noGrad(() => nan.select(0, 1).fill_(NaN));
  s.scale(lossOf(p, nan)).backward();
  assert.equal(s.unscale(opt), true);
  assert.equal(s.step(opt), false);
  s.update();
  assert.equal(s.getScale(), 256);
});

test('GradScaler: unscale before clipping sees the true gradients; power-of-two scaling changes nothing', () => {
  const a = setup();
  const b = setup();
  const x = randn([6, 5]);
  const s = new GradScaler({ initScale: 2 ** 16 });
  // a: plain step with clipping; b: scaled loss, unscale, clip, scaler step
  lossOf(a.p, x).backward();
  const plainNorm = gradNorm(a.p);
  const na = clipGradNorm(a.p, 0.5);
  a.opt.step();
  s.scale(lossOf(b.p, x)).backward();
  assert.ok(Math.abs(gradNorm(b.p) / plainNorm - 2 ** 16) < 1e-3, 'gradients are scaled before unscale');
  assert.equal(s.unscale(b.opt), false);
  const nb = clipGradNorm(b.p, 0.5);
  assert.equal(nb, na, 'clip sees the unscaled norm');
  assert.equal(s.step(b.opt), true);
  s.update();
  a.p.forEach((t, i) => assert.deepEqual(t.toBytes(), b.p[i]!.toBytes(), `param ${i} identical`));
});

test('GradScaler: misuse errors, state dict, disabled pass-through', () => {
  const { p, opt } = setup();
  const s = new GradScaler({ initScale: 1024, growthInterval: 5 });
  assert.throws(() => s.update(), /no inf checks were recorded/);
  s.scale(lossOf(p, randn([2, 5]))).backward();
  s.unscale(opt);
  assert.throws(() => s.unscale(opt), /already been called on this optimizer/);
  s.step(opt);
  assert.throws(() => s.step(opt), /already been called since the last update/);
  s.update();
  const st = JSON.parse(JSON.stringify(s.stateDict()));
  assert.deepEqual(st, { scale: 1024, growth_factor: 2, backoff_factor: 0.5, growth_interval: 5, _growth_tracker: 1 });
  const t = new GradScaler({ growthInterval: 5 });
  t.loadStateDict(st);
  assert.equal(t.getScale(), 1024);
  assert.equal(t.getGrowthTracker(), 1);
  assert.throws(() => new GradScaler({ growthInterval: 7 }).loadStateDict(st), /growth_interval 5 vs 7/);
  assert.throws(() => new GradScaler({ backoffFactor: 1.5 }), /backoffFactor out of range/);
  const off = new GradScaler({ enabled: false });
  const l = tensor([3]);
  assert.equal(off.scale(l), l);
  assert.equal(off.getScale(), 1);
});
