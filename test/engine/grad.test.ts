/**
 * Gradients of every differentiable engine operation against central finite differences in float64, and the
 * autograd API (requiresGrad, grad, zeroGrad, backward, detach, isLeaf, gradFn, noGrad, enableGrad).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Tensor, adaptiveAvgPool2d, attentionComposition, avgPool2d, backend, batchNorm, binaryCrossEntropyWithLogits, bmm, cat,
  conv2d, convTranspose2d, crossEntropy, dropout, einsum, enableGrad, gelu, gridSample, groupNorm, interpolate,
  getNumThreads, isGradEnabled, layerNorm, linear, logSoftmax, manualSeed, maxPool2d, noGrad, pad, relu, scaledDotProductAttention,
  setNumThreads, silu, softmax, sort, stack, tensor, topk, where, zeros,
} from '../../src/engine/index.js';
import { gradcheck } from '../helpers/gradcheck.js';
import { assertClose, rng, uniform, values } from '../helpers/numeric.js';

// Thousands of tiny float64 ops: one thread avoids OpenMP oversubscription on a busy 2-core machine (5× faster there).
const threadsBefore = getNumThreads();
setNumThreads(1);
after(() => setNumThreads(threadsBefore));

let seed = 1000;
/** A float64 tensor of uniform values in [lo, hi). */
function r(shape: number[], lo = -1, hi = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(uniform(n, seed++, lo, hi), { dtype: 'float64', shape });
}
/** Distinct values (a shuffled grid with gaps of 0.1) so max/sort/pool are away from ties. */
function distinct(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const g = rng(seed++);
  const v = Array.from({ length: n }, (_, i) => (i - n / 2) * 0.1);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(g() * (i + 1));
    [v[i], v[j]] = [v[j]!, v[i]!];
  }
  return tensor(v, { dtype: 'float64', shape });
}
const i64 = (v: number[], shape?: number[]): Tensor => tensor(v, { dtype: 'int64', ...(shape ? { shape } : {}) });

describe('the gradcheck helper', () => {
  test('passes a correct gradient and catches a wrong one', () => {
    const res = gradcheck((a) => a!.mul(a!), [r([4])], 1e-6, 1e-5);
    assert.ok(res.maxError < 1e-8, `max error ${res.maxError}`);
    // x·detach(x) has autograd gradient x but true derivative 2x
    assert.throws(() => gradcheck((a) => a!.mul(a!.detach()), [tensor([0.5, 1, -2], { dtype: 'float64' })]), /gradcheck: input 0/);
    // float32 inputs are refused: finite differences need float64
    assert.throws(() => gradcheck((a) => a!.exp(), [tensor([1, 2])], { wrt: [0] }), /must be float64/);
  });
});

describe('gradcheck: element-wise', () => {
  test('add/sub/mul/div with broadcasting, alpha and scalars', () => {
    gradcheck((a, b) => a!.add(b!), [r([2, 1, 3]), r([4, 3])]);
    gradcheck((a, b) => a!.add(b!, 2.5), [r([3]), r([2, 3])]);
    gradcheck((a, b) => a!.sub(b!, 0.5), [r([2, 3]), r([3])]);
    gradcheck((a, b) => a!.mul(b!), [r([2, 1, 3]), r([4, 3])]);
    gradcheck((a, b) => a!.div(b!), [r([2, 3]), r([2, 3], 0.5, 2)]);
    gradcheck((a) => a!.add(3).mul(-2).div(5).sub(1).rsub(4), [r([5])]);
  });

  test('pow (scalar and tensor exponents), neg, abs, reciprocal', () => {
    gradcheck((a) => a!.pow(3), [r([6])]);
    gradcheck((a) => a!.pow(0.5), [r([6], 0.5, 2)]);
    gradcheck((a) => a!.pow(-1.5), [r([6], 0.5, 2)]);
    gradcheck((a, b) => a!.pow(b!), [r([2, 3], 0.5, 2), r([2, 3])]);
    gradcheck((a) => a!.neg(), [r([4])]);
    gradcheck((a) => a!.abs(), [tensor([-0.7, 0.3, -0.2, 1.1], { dtype: 'float64' })]);
    gradcheck((a) => a!.reciprocal(), [r([5], 0.5, 2)]);
  });

  test('exp/log/sqrt/rsqrt/erf/erfinv/tanh/sigmoid/sin/cos', () => {
    gradcheck((a) => a!.exp(), [r([2, 3])]);
    gradcheck((a) => a!.log(), [r([2, 3], 0.2, 3)]);
    gradcheck((a) => a!.sqrt(), [r([2, 3], 0.2, 3)]);
    gradcheck((a) => a!.rsqrt(), [r([2, 3], 0.2, 3)]);
    gradcheck((a) => a!.erf(), [r([2, 3], -2, 2)]);
    gradcheck((a) => a!.erfinv(), [r([2, 3], -0.9, 0.9)]);
    gradcheck((a) => a!.tanh(), [r([2, 3], -2, 2)]);
    gradcheck((a) => a!.sigmoid(), [r([2, 3], -3, 3)]);
    gradcheck((a) => a!.sin().add(a!.cos()), [r([5], -3, 3)]);
  });

  test('clamp, maximum/minimum, where, maskedFill', () => {
    // values away from the clamp bounds ±0.5
    gradcheck((a) => a!.clamp(-0.5, 0.5), [tensor([-0.9, -0.3, 0.1, 0.45, 0.8], { dtype: 'float64' })]);
    gradcheck((a) => a!.clamp(null, 0), [tensor([-0.9, 0.3], { dtype: 'float64' })]);
    gradcheck((a, b) => a!.maximum(b!).add(a!.minimum(b!).mul(3)), [distinct([6]), distinct([6])]);
    const cond = tensor([true, false, true, false, false, true], { dtype: 'bool', shape: [2, 3] });
    gradcheck((a, b) => where(cond, a!, b!), [r([2, 3]), r([3])]);
    gradcheck((a) => where(cond, a!, 0), [r([2, 3])]);
    gradcheck((a) => a!.maskedFill(cond, 2), [r([2, 3])]);
  });
});

describe('gradcheck: reductions', () => {
  test('sum/mean over dims with keepdim', () => {
    gradcheck((a) => a!.sum(), [r([2, 3])]);
    gradcheck((a) => a!.sum(1, true), [r([2, 3, 2])]);
    gradcheck((a) => a!.sum([0, 2]), [r([2, 3, 2])]);
    gradcheck((a) => a!.mean(), [r([2, 3])]);
    gradcheck((a) => a!.mean(-1, true), [r([2, 3])]);
    gradcheck((a) => a!.mean([0, 1]), [r([2, 3, 2])]);
  });

  test('max/min/amax/amin (no ties)', () => {
    gradcheck((a) => a!.max(), [distinct([2, 3])]);
    gradcheck((a) => a!.min(), [distinct([2, 3])]);
    gradcheck((a) => a!.max(1).values, [distinct([3, 4])]);
    gradcheck((a) => a!.min(0, true).values, [distinct([3, 4])]);
    gradcheck((a) => a!.amax(1), [distinct([3, 4])]);
    gradcheck((a) => a!.amin([0, 1]), [distinct([3, 4])]);
  });

  test('var/std/norm/cumsum', () => {
    gradcheck((a) => a!.var(), [r([2, 3])]);
    gradcheck((a) => a!.var(1, { unbiased: false, keepdim: true }), [r([2, 4])]);
    gradcheck((a) => a!.std(0), [r([3, 2])]);
    gradcheck((a) => a!.std(undefined, { unbiased: false }), [r([5])]);
    gradcheck((a) => a!.norm(), [r([2, 3])]);
    gradcheck((a) => a!.norm(2, 1, true), [r([2, 3])]);
    gradcheck((a) => a!.norm(1), [tensor([-0.7, 0.3, -0.2, 1.1], { dtype: 'float64' })]);
    gradcheck((a) => a!.cumsum(1), [r([2, 4])]);
  });
});

describe('gradcheck: shape operations', () => {
  test('view/reshape/permute/transpose/flatten/unflatten/unsqueeze/squeeze/contiguous/clone', () => {
    gradcheck((a) => a!.view(3, 2).mul(a!.view(3, 2)), [r([2, 3])]);
    gradcheck((a) => a!.reshape(6), [r([2, 3])]);
    gradcheck((a) => a!.permute(2, 0, 1).contiguous(), [r([2, 3, 2])]);
    gradcheck((a) => a!.transpose(0, 1).clone(), [r([2, 3])]);
    gradcheck((a) => a!.flatten(1), [r([2, 2, 2])]);
    gradcheck((a) => a!.unflatten(1, [2, 2]), [r([2, 4])]);
    gradcheck((a) => a!.unsqueeze(1).squeeze(1).unsqueeze(0).squeeze(), [r([2, 3])]);
  });

  test('expand/repeat/flip', () => {
    gradcheck((a) => a!.expand(4, 3), [r([1, 3])]);
    gradcheck((a) => a!.expand(2, -1, 3), [r([2, 1])]);
    gradcheck((a) => a!.repeat(2, 3), [r([2, 2])]);
    gradcheck((a) => a!.flip(0, 1), [r([2, 3])]);
  });

  test('cat/stack/split/chunk/unbind', () => {
    gradcheck((a, b) => cat([a!, b!, a!], 1), [r([2, 1]), r([2, 3])]);
    gradcheck((a, b) => stack([a!, b!], 1), [r([2, 3]), r([2, 3])]);
    // pieces scaled differently so that a wrong routing of gradients shows
    gradcheck((a) => cat(a!.split(2).map((t, i) => t.mul(i + 1))), [r([5, 2])]);
    gradcheck((a) => cat(a!.split([1, 3], 1).map((t, i) => t.mul(i + 2)), 1), [r([2, 4])]);
    gradcheck((a) => cat(a!.chunk(3, 1).map((t, i) => t.mul(i - 1.5)), 1), [r([2, 5])]);
    gradcheck((a) => stack(a!.unbind(1).map((t, i) => t.mul(i + 1))), [r([2, 3])]);
  });

  test('narrow/slice/select/indexSelect/gather/scatterAdd', () => {
    gradcheck((a) => a!.narrow(1, 1, 2), [r([2, 4])]);
    gradcheck((a) => a!.slice(1, 0, null, 2), [r([2, 5])]);
    gradcheck((a) => a!.slice(0, -2), [r([3, 2])]);
    gradcheck((a) => a!.select(1, -1), [r([2, 3])]);
    // duplicate indices accumulate
    gradcheck((a) => a!.indexSelect(1, i64([2, 0, 2])), [r([2, 3])]);
    gradcheck((a) => a!.gather(1, i64([0, 0, 2, 1, 1, 1], [2, 3])), [r([2, 3])]);
    gradcheck((a, s) => a!.scatterAdd(0, i64([0, 1, 0, 2]), s!), [r([3]), r([4])]);
    gradcheck((a, s) => a!.scatterAdd(1, i64([0, 0, 2, 1, 1, 1], [2, 3]), s!), [r([2, 3]), r([2, 3])]);
  });

  test('pad: constant, reflect, replicate', () => {
    gradcheck((a) => pad(a!, [1, 2, 0, 1], 'constant', 0.5), [r([1, 1, 2, 3])]);
    gradcheck((a) => pad(a!, [-1, 1]), [r([2, 3])]);
    gradcheck((a) => pad(a!, [2, 1], 'reflect'), [r([1, 2, 4])]);
    gradcheck((a) => pad(a!, [1, 1, 2, 1], 'reflect'), [r([1, 1, 3, 3])]);
    gradcheck((a) => pad(a!, [2, 1], 'replicate'), [r([1, 2, 3])]);
    gradcheck((a) => pad(a!, [1, 0, 2, 1], 'replicate'), [r([1, 1, 2, 3])]);
  });
});

describe('gradcheck: linear algebra and convolution', () => {
  test('matmul/bmm/linear/einsum', () => {
    gradcheck((a, b) => a!.matmul(b!), [r([2, 3]), r([3, 4])]);
    gradcheck((a, b) => a!.matmul(b!), [r([2, 1, 2, 3]), r([3, 3, 2])]);
    gradcheck((a, b) => a!.matmul(b!), [r([3]), r([3, 2])]);
    gradcheck((a, b) => bmm(a!, b!), [r([2, 2, 3]), r([2, 3, 2])]);
    gradcheck((x, w, b) => linear(x!, w!, b!), [r([2, 3, 4]), r([2, 4]), r([2])]);
    gradcheck((x, w) => linear(x!, w!), [r([3, 4]), r([2, 4])]);
    gradcheck((a, b) => einsum('bij,bjk->bik', a!, b!), [r([2, 2, 3]), r([2, 3, 2])]);
    gradcheck((a, b) => einsum('i,j->ij', a!, b!), [r([3]), r([2])]);
    gradcheck((a) => einsum('ii->', a!), [r([3, 3])]);
  });

  test('conv2d: plain, stride, padding, dilation, groups', () => {
    gradcheck((x, w, b) => conv2d(x!, w!, b!), [r([1, 2, 4, 4]), r([3, 2, 2, 2]), r([3])]);
    gradcheck((x, w, b) => conv2d(x!, w!, b!, { stride: 2, padding: 1 }), [r([1, 2, 5, 4]), r([2, 2, 3, 3]), r([2])]);
    gradcheck((x, w) => conv2d(x!, w!, null, { dilation: [2, 1], padding: [1, 0] }), [r([1, 1, 5, 4]), r([2, 1, 2, 2])]);
    gradcheck((x, w, b) => conv2d(x!, w!, b!, { groups: 2, stride: [1, 2] }), [r([2, 4, 3, 4]), r([4, 2, 2, 2]), r([4])]);
  });

  test('convTranspose2d: stride, padding, output padding, groups, dilation', () => {
    gradcheck((x, w, b) => convTranspose2d(x!, w!, b!), [r([1, 2, 2, 3]), r([2, 3, 2, 2]), r([3])]);
    gradcheck((x, w, b) => convTranspose2d(x!, w!, b!, { stride: 2, padding: 1, outputPadding: 1 }),
      [r([1, 2, 2, 2]), r([2, 1, 3, 3]), r([1])]);
    gradcheck((x, w) => convTranspose2d(x!, w!, null, { groups: 2, dilation: 2 }), [r([1, 4, 2, 2]), r([4, 1, 2, 2])]);
  });
});

describe('gradcheck: normalisation and activations', () => {
  test('batchNorm in training (batch statistics) and in eval (running statistics)', () => {
    gradcheck((x, w, b) => batchNorm(x!, null, null, w!, b!, true, 0.1, 1e-5), [r([3, 2, 2, 2]), r([2]), r([2])]);
    // with running statistics: fresh buffers each call, so every evaluation sees the same state
    gradcheck((x, w, b) => batchNorm(x!, zeros([2], { dtype: 'float64' }), tensor([1, 1], { dtype: 'float64' }), w!, b!, true),
      [r([4, 2]), r([2]), r([2])]);
    const rm = tensor([0.1, -0.2], { dtype: 'float64' });
    const rv = tensor([0.5, 2], { dtype: 'float64' });
    gradcheck((x, w, b) => batchNorm(x!, rm, rv, w!, b!, false), [r([2, 2, 2, 1]), r([2]), r([2])]);
    gradcheck((x) => batchNorm(x!, rm, rv, null, null, false), [r([3, 2])]);
  });

  test('layerNorm/groupNorm', () => {
    gradcheck((x, w, b) => layerNorm(x!, [4], w!, b!), [r([2, 3, 4]), r([4]), r([4])]);
    gradcheck((x) => layerNorm(x!, [2, 3]), [r([2, 2, 3])]);
    gradcheck((x, w, b) => groupNorm(x!, 2, w!, b!), [r([2, 4, 2, 1]), r([4]), r([4])]);
  });

  test('relu/gelu (erf and tanh)/silu/softmax/logSoftmax', () => {
    gradcheck((x) => relu(x!), [tensor([-0.7, 0.3, -0.2, 1.1, 0.05], { dtype: 'float64' })]);
    gradcheck((x) => gelu(x!), [r([2, 4], -3, 3)]);
    gradcheck((x) => gelu(x!, 'tanh'), [r([2, 4], -3, 3)]);
    gradcheck((x) => silu(x!), [r([2, 4], -3, 3)]);
    gradcheck((x) => softmax(x!, 1), [r([2, 4], -2, 2)]);
    gradcheck((x) => softmax(x!, 0), [r([3, 2], -2, 2)]);
    gradcheck((x) => logSoftmax(x!, -1), [r([2, 4], -2, 2)]);
  });

  test('dropout in training (fixed mask via manualSeed) and in eval', () => {
    const f = (x: Tensor): Tensor => {
      manualSeed(42);
      return dropout(x, 0.4, true);
    };
    const res = gradcheck((x) => f(x!), [r([4, 5])]);
    // the gradient is the mask scaled by 1/(1 − p): every entry 0 or 1/0.6 times its output weight
    assert.ok(res.analytic[0]!.some((v) => v === 0), 'some entries dropped');
    gradcheck((x) => dropout(x!, 0.4, false), [r([4])]);
  });
});

describe('gradcheck: resampling and pooling', () => {
  test('interpolate nearest/bilinear/bicubic with size and scaleFactor', () => {
    gradcheck((x) => interpolate(x!, { size: [3, 5] }), [r([1, 2, 2, 3])]);
    gradcheck((x) => interpolate(x!, { scaleFactor: 2 }), [r([1, 1, 2, 2])]);
    gradcheck((x) => interpolate(x!, { size: [4, 3], mode: 'bilinear' }), [r([1, 2, 3, 2])]);
    gradcheck((x) => interpolate(x!, { size: [4, 5], mode: 'bilinear', alignCorners: true }), [r([1, 1, 3, 3])]);
    gradcheck((x) => interpolate(x!, { scaleFactor: 1.5, mode: 'bilinear' }), [r([1, 1, 3, 2])]);
    gradcheck((x) => interpolate(x!, { size: [2, 2], mode: 'bilinear' }), [r([1, 1, 4, 5])]);
    gradcheck((x) => interpolate(x!, { size: [5, 4], mode: 'bicubic' }), [r([1, 1, 3, 3])]);
    gradcheck((x) => interpolate(x!, { size: [4, 4], mode: 'bicubic', alignCorners: true }), [r([1, 1, 3, 2])]);
  });

  test('maxPool2d/avgPool2d/adaptiveAvgPool2d', () => {
    gradcheck((x) => maxPool2d(x!, 2), [distinct([1, 2, 4, 4])]);
    gradcheck((x) => maxPool2d(x!, 3, { stride: 2, padding: 1, ceilMode: true }), [distinct([1, 1, 5, 4])]);
    gradcheck((x) => maxPool2d(x!, 2, { stride: 1, dilation: 2 }), [distinct([1, 1, 4, 4])]);
    gradcheck((x) => avgPool2d(x!, 2), [r([1, 2, 4, 4])]);
    gradcheck((x) => avgPool2d(x!, 3, { stride: 2, padding: 1, countIncludePad: false }), [r([1, 1, 4, 5])]);
    gradcheck((x) => avgPool2d(x!, 2, { ceilMode: true, divisorOverride: 3 }), [r([1, 1, 3, 3])]);
    gradcheck((x) => adaptiveAvgPool2d(x!, [3, 2]), [r([1, 2, 5, 7])]);
    gradcheck((x) => adaptiveAvgPool2d(x!, [4, 4]), [r([1, 1, 3, 5])]);
  });

  test('gridSample bilinear w.r.t. input and grid (zeros/border, alignCorners both); nearest w.r.t. input', () => {
    // grid points in (−1.2, 1.2): some outside, none on pixel boundaries for these seeds
    for (const paddingMode of ['zeros', 'border'] as const) {
      for (const alignCorners of [false, true]) {
        gradcheck((x, g) => gridSample(x!, g!, { paddingMode, alignCorners }), [r([2, 2, 3, 4]), r([2, 3, 2, 2], -1.2, 1.2)],
          { tol: 1e-5 });
      }
    }
    const g = r([1, 2, 3, 2], -1, 1);
    gradcheck((x) => gridSample(x!, g, { mode: 'nearest' }), [r([1, 2, 3, 3])]);
  });

  test('topk/sort values', () => {
    gradcheck((x) => topk(x!, 3).values, [distinct([2, 5])]);
    gradcheck((x) => topk(x!, 2, 0, false).values, [distinct([4, 3])]);
    gradcheck((x) => sort(x!, -1, true).values, [distinct([2, 4])]);
  });
});

describe('gradcheck: losses and attention', () => {
  test('crossEntropy (weights, ignoreIndex, label smoothing, spatial, reductions)', () => {
    const t = i64([2, 0, 1, -100]);
    gradcheck((x) => crossEntropy(x!, t), [r([4, 3], -2, 2)]);
    gradcheck((x) => crossEntropy(x!, t, { reduction: 'sum' }), [r([4, 3], -2, 2)]);
    gradcheck((x) => crossEntropy(x!, t, { reduction: 'none' }), [r([4, 3], -2, 2)]);
    const w = tensor([1, 2, 0.5], { dtype: 'float64' });
    gradcheck((x) => crossEntropy(x!, t, { weight: w }), [r([4, 3], -2, 2)]);
    gradcheck((x) => crossEntropy(x!, i64([2, 0, 1, 1]), { ignoreIndex: 1, labelSmoothing: 0.2 }), [r([4, 3], -2, 2)]);
    gradcheck((x) => crossEntropy(x!, i64([0, 2, 1, 1, 0, 2], [1, 2, 3])), [r([1, 3, 2, 3], -2, 2)]);
  });

  test('binaryCrossEntropyWithLogits w.r.t. logits and targets', () => {
    gradcheck((x, y) => binaryCrossEntropyWithLogits(x!, y!), [r([2, 3], -3, 3), r([2, 3], 0, 1)]);
    gradcheck((x) => binaryCrossEntropyWithLogits(x!, tensor([1, 0, 1], { dtype: 'float64' }), {
      posWeight: tensor([2, 0.5, 1], { dtype: 'float64' }), weight: tensor([1, 3, 0.2], { dtype: 'float64' }), reduction: 'sum',
    }), [r([3], -3, 3)]);
  });

  test('scaledDotProductAttention and attentionComposition w.r.t. q, k, v', () => {
    gradcheck((q, k, v) => scaledDotProductAttention(q!, k!, v!), [r([1, 2, 3, 4]), r([1, 2, 2, 4]), r([1, 2, 2, 4])]);
    const mask = tensor([true, false, true, true, false, true], { dtype: 'bool', shape: [3, 2] });
    gradcheck((q, k, v) => attentionComposition(q!, k!, v!, 0.7, mask), [r([2, 3, 2]), r([2, 2, 2]), r([2, 2, 3])]);
    gradcheck((q, k, v) => scaledDotProductAttention(q!, k!, v!, { attnMask: mask, scale: 0.7 }),
      [r([2, 3, 2]), r([2, 2, 2]), r([2, 2, 3])]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
describe('autograd API', () => {
  test('requiresGrad, isLeaf, gradFn', () => {
    const x = tensor([1, 2, 3], { dtype: 'float64' });
    assert.equal(x.requiresGrad, false);
    assert.equal(x.isLeaf, true);
    assert.equal(x.gradFn, null);
    x.requiresGrad = true;
    assert.equal(x.requiresGrad, true);
    assert.equal(x.isLeaf, true);
    const y = x.mul(x);
    assert.equal(y.requiresGrad, true);
    assert.equal(y.isLeaf, false);
    assert.equal(y.gradFn, 'MulBackward0'); // mul.Tensor
    assert.equal(x.mul(2).gradFn, 'MulBackward1'); // mul.Scalar
    assert.equal(y.add(x).gradFn, 'AddBackward0');
    assert.equal(y.sum().gradFn, 'SumBackward0');
    // ops on tensors that do not require grad give leaves without a grad_fn
    const z = tensor([1, 2]).mul(2);
    assert.equal(z.requiresGrad, false);
    assert.equal(z.isLeaf, true);
    assert.equal(z.gradFn, null);
    assert.equal(x.requiresGrad_(false), x);
    assert.equal(x.requiresGrad, false);
    assert.equal(tensor([1]).requiresGrad_().requiresGrad, true);
    // integer tensors cannot require gradients
    assert.throws(() => { tensor([1], { dtype: 'int64' }).requiresGrad = true; }, /floating point|only Tensors of floating/i);
  });

  test('backward accumulates into grad; zeroGrad clears; grad setter', () => {
    const x = tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
    assert.equal(x.grad, null);
    x.mul(x).sum().backward(); // d/dx Σx² = 2x
    assertClose(x.grad!, [2, 4, 6]);
    x.mul(x).sum().backward();
    assertClose(x.grad!, [4, 8, 12]);
    x.zeroGrad();
    assert.equal(x.grad, null);
    x.mul(3).sum().backward();
    assertClose(x.grad!, [3, 3, 3]);
    x.grad = tensor([1, 1, 1], { dtype: 'float64' });
    assertClose(x.grad!, [1, 1, 1]);
    x.mul(2).sum().backward();
    assertClose(x.grad!, [3, 3, 3]);
    x.grad = null;
    assert.equal(x.grad, null);
  });

  test('backward with an explicit gradient, retainGraph, createGraph', () => {
    const x = tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    const y = x.mul(x); // non-scalar
    assert.throws(() => y.backward(), /scalar|grad can be implicitly created/i);
    y.backward(tensor([1, 10], { dtype: 'float64' }), { retainGraph: true });
    assertClose(x.grad!, [2, 40]);
    y.backward(tensor([1, 1], { dtype: 'float64' }));
    assertClose(x.grad!, [4, 44]);
    // the graph is freed: a second backward without retainGraph is a JS error, not a crash
    assert.throws(() => y.backward(tensor([1, 1], { dtype: 'float64' })), /backward through the graph a second time|freed/i);
    // second derivative: d/dx Σ 3x² = 6x
    const z = tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    const [g] = backend().autogradGrad([z.pow(3).sum().handle], [z.handle], [null], false, true, false);
    const gt = new Tensor(g!);
    assertClose(gt, [3, 12]);
    assert.equal(gt.requiresGrad, true);
    gt.sum().backward();
    assertClose(z.grad!, [6, 12]);
  });

  test('autogradGrad with allowUnused returns null for unused inputs; leaves keep no grad', () => {
    const a = tensor([1], { dtype: 'float64', requiresGrad: true });
    const b = tensor([1], { dtype: 'float64', requiresGrad: true });
    const out = a.mul(5).sum();
    const gs = backend().autogradGrad([out.handle], [a.handle, b.handle], [null], false, false, true);
    assert.equal(gs[1], null);
    assertClose(new Tensor(gs[0]!), [5]);
    assert.equal(a.grad, null); // grad() does not accumulate into .grad
    const out2 = a.mul(5).sum();
    assert.throws(() => backend().autogradGrad([out2.handle], [a.handle, b.handle], [null], false, false, false),
      /not have been used|allow_unused/i);
  });

  test('noGrad / enableGrad / isGradEnabled', () => {
    const x = tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    assert.equal(isGradEnabled(), true);
    const y = noGrad(() => {
      assert.equal(isGradEnabled(), false);
      const inner = enableGrad(() => {
        assert.equal(isGradEnabled(), true);
        return x.mul(2);
      });
      assert.equal(inner.requiresGrad, true);
      assert.equal(isGradEnabled(), false);
      return x.mul(2);
    });
    assert.equal(isGradEnabled(), true);
    assert.equal(y.requiresGrad, false);
    assert.equal(y.gradFn, null);
    // restored when the function throws
    assert.throws(() => noGrad(() => { throw new Error('boom'); }), /boom/);
    assert.equal(isGradEnabled(), true);
    // nested noGrad keeps it off, then restores on
    noGrad(() => noGrad(() => assert.equal(isGradEnabled(), false)));
    assert.equal(isGradEnabled(), true);
    // an SGD-style in-place update of a leaf is allowed under noGrad, refused outside it
    assert.throws(() => x.add_(1), /leaf Variable that requires grad|in-place/i);
    noGrad(() => x.add_(1));
    assertClose(x, [2, 3]);
    assert.equal(x.isLeaf, true);
  });

  test('detach cuts the graph and shares storage', () => {
    const x = tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    const d = x.mul(3).detach();
    assert.equal(d.requiresGrad, false);
    assert.equal(d.isLeaf, true);
    assert.equal(d.gradFn, null);
    const x2 = x.detach();
    assert.ok(backend().sameData(x2.handle, x.handle));
    // gradient flows only through the non-detached path
    x.mul(x.detach()).sum().backward();
    assertClose(x.grad!, [1, 2]);
  });

  test('gradients of a small network agree with finite differences end to end', () => {
    const x = r([2, 1, 4, 4]);
    const t = i64([1, 0]);
    gradcheck((w1, b1, w2, b2) => {
      const h = gelu(conv2d(x, w1!, b1!, { padding: 1 }));
      const p = adaptiveAvgPool2d(h, 2).flatten(1);
      return crossEntropy(linear(p, w2!, b2!), t);
    }, [r([2, 1, 3, 3]), r([2]), r([3, 8]), r([3])]);
    assert.ok(values(x).length === 32);
  });
});
