/**
 * Spatial prior module (paper Fig. 4c): a ResNet-style convolutional stem and three stride-2 convolutions give
 * features at strides 4, 8, 16 and 32; 1×1 projections `fc1..fc4` map them to the ViT width.
 * Keys: `stem.{0,1,3,4,6,7}`, `conv2.{0,1}`, `conv3.{0,1}`, `conv4.{0,1}`, `fc1..fc4` (BatchNorm = the authors' SyncBN).
 */
import type { Tensor } from '../../engine/index.js';
import { BatchNorm2d, Conv2d, MaxPool2d, Module, ReLU, Sequential } from '../../nn/index.js';

function convBnRelu(cin: number, cout: number, stride: number): [Conv2d, BatchNorm2d, ReLU] {
  return [new Conv2d(cin, cout, 3, { stride, padding: 1, bias: false }), new BatchNorm2d(cout), new ReLU()];
}

/** The four SPM outputs: c1 as a map B×D×H/4×W/4, c2..c4 as tokens B×N×D. */
export interface SpmOutputs { c1: Tensor; c2: Tensor; c3: Tensor; c4: Tensor }

/** The spatial prior module. */
export class SpatialPriorModule extends Module {
  readonly stem: Sequential;
  readonly conv2: Sequential;
  readonly conv3: Sequential;
  readonly conv4: Sequential;
  readonly fc1: Conv2d;
  readonly fc2: Conv2d;
  readonly fc3: Conv2d;
  readonly fc4: Conv2d;

  constructor(readonly inplanes = 64, readonly embedDim = 384) {
    super();
    const p = inplanes;
    this.stem = this.registerModule('stem', new Sequential(
      ...convBnRelu(3, p, 2), ...convBnRelu(p, p, 1), ...convBnRelu(p, p, 1), new MaxPool2d(3, 2, 1)));
    this.conv2 = this.registerModule('conv2', new Sequential(...convBnRelu(p, 2 * p, 2)));
    this.conv3 = this.registerModule('conv3', new Sequential(...convBnRelu(2 * p, 4 * p, 2)));
    this.conv4 = this.registerModule('conv4', new Sequential(...convBnRelu(4 * p, 4 * p, 2)));
    this.fc1 = this.registerModule('fc1', new Conv2d(p, embedDim, 1));
    this.fc2 = this.registerModule('fc2', new Conv2d(2 * p, embedDim, 1));
    this.fc3 = this.registerModule('fc3', new Conv2d(4 * p, embedDim, 1));
    this.fc4 = this.registerModule('fc4', new Conv2d(4 * p, embedDim, 1));
  }

  forward(x: Tensor): SpmOutputs {
    const s1 = this.stem.forward(x);
    const s2 = this.conv2.forward(s1);
    const s3 = this.conv3.forward(s2);
    const s4 = this.conv4.forward(s3);
    const tokens = (t: Tensor): Tensor => t.flatten(2).transpose(1, 2);
    return {
      c1: this.fc1.forward(s1),
      c2: tokens(this.fc2.forward(s2)),
      c3: tokens(this.fc3.forward(s3)),
      c4: tokens(this.fc4.forward(s4)),
    };
  }
}
