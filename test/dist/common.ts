/** Models and data shared by the distributed tests and their worker processes (same seeds → same tensors). */
import { type Tensor, manualSeed, randn, rand, noGrad, relu } from '../../src/engine/index.js';
import { BatchNorm2d, Linear, Module } from '../../src/nn/index.js';

/** SyncBatchNorm case: a 4×3×5×5 float64 batch (rank r takes samples 2r, 2r+1), loss weights and BN state. */
export function syncBnCase(): { x: Tensor; c: Tensor; weight: Tensor; bias: Tensor; runningMean: Tensor; runningVar: Tensor } {
  manualSeed(7);
  const x = randn([4, 3, 5, 5], { dtype: 'float64' }).mul(2).add(0.5);
  const c = randn([4, 3, 5, 5], { dtype: 'float64' });
  const weight = randn([3], { dtype: 'float64' }).mul(0.2).add(1);
  const bias = randn([3], { dtype: 'float64' }).mul(0.1);
  const runningMean = randn([3], { dtype: 'float64' }).mul(0.1);
  const runningVar = rand([3], { dtype: 'float64' }).add(0.5);
  return { x, c, weight, bias, runningMean, runningVar };
}

/** Sets a BatchNorm2d's parameters and running statistics to the case's. */
export function loadBn(bn: BatchNorm2d, k: ReturnType<typeof syncBnCase>): void {
  noGrad(() => {
    bn.weight!.copy_(k.weight);
    bn.bias!.copy_(k.bias);
    bn.running_mean!.copy_(k.runningMean);
    bn.running_var!.copy_(k.runningVar);
  });
}

/** A small MLP; `extra` is used only when asked, `never` never (unused-parameter cases). */
export class Net extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly extra: Linear | null;
  readonly never: Linear | null;
  constructor(withUnused: boolean) {
    super();
    this.fc1 = this.registerModule('fc1', new Linear(4, 8));
    this.fc2 = this.registerModule('fc2', new Linear(8, 3));
    this.extra = withUnused ? this.registerModule('extra', new Linear(3, 3)) : null;
    this.never = withUnused ? this.registerModule('never', new Linear(2, 2)) : null;
  }
  forward(x: Tensor, useExtra = false): Tensor {
    let y = this.fc2.forward(relu(this.fc1.forward(x)));
    if (useExtra && this.extra) y = this.extra.forward(y);
    return y;
  }
}

/** The network of seed `seed` in float64. */
export function makeNet(seed: number, withUnused: boolean): Net {
  manualSeed(seed);
  return new Net(withUnused).to('float64');
}

/** Batch i (5 samples) and its regression targets. */
export function batch(i: number): { x: Tensor; t: Tensor } {
  manualSeed(100 + i);
  return { x: randn([5, 4], { dtype: 'float64' }), t: randn([5, 3], { dtype: 'float64' }) };
}

/** Mean squared error of the net on batch i. */
export function loss(net: Net, i: number, useExtra = false): Tensor {
  const { x, t } = batch(i);
  const d = net.forward(x, useExtra).sub(t);
  return d.mul(d).mean();
}
