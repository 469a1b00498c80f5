/**
 * One interaction of ViT-Adapter (paper Fig. 4b): the injector puts spatial priors into the ViT tokens, a slice of
 * ViT blocks runs, then the extractor (and, on the last interaction, two extra extractors) pulls multi-scale
 * features back out. Keys: `injector`, `extractor`, `extra_extractors.{0,1}`.
 */
import { type Tensor, cat, scope } from '../../engine/index.js';
import { Module, ModuleList } from '../../nn/index.js';
import { type SpatialShapes, referencePoints } from './deformable-attention.js';
import { Extractor } from './extractor.js';
import { Injector } from './injector.js';

/** Reference points, level shapes and level starts for one direction of deformable attention. */
export interface DeformInputs {
  ref: Tensor;
  shapes: SpatialShapes;
  levelStart: number[];
}

function starts(shapes: SpatialShapes): number[] {
  const out: number[] = [];
  let s = 0;
  for (const [h, w] of shapes) {
    out.push(s);
    s += h * w;
  }
  return out;
}

/**
 * The two deform-input sets for an input of h×w pixels: `injector` (queries on the 1/16 grid, values on 1/8, 1/16,
 * 1/32) and `extractor` (queries on the three adapter levels, values on the 1/16 grid).
 */
export function deformInputs(h: number, w: number, device: string): { injector: DeformInputs; extractor: DeformInputs } {
  const three: SpatialShapes = [[h / 8, w / 8], [h / 16, w / 16], [h / 32, w / 32]].map(([a, b]) => [Math.trunc(a!), Math.trunc(b!)] as const);
  const one: SpatialShapes = [[Math.trunc(h / 16), Math.trunc(w / 16)]];
  return {
    injector: { ref: referencePoints(one, device), shapes: three, levelStart: starts(three) },
    extractor: { ref: referencePoints(three, device), shapes: one, levelStart: starts(one) },
  };
}

/** What an interaction needs of the ViT it wraps: running a slice of its blocks (ViT, BEiT). */
export interface BlockRunner {
  /** Runs blocks [from, to] (inclusive) on tokens of an H×W grid (with the cls token first when there is one). */
  runBlocks(x: Tensor, from: number, to: number, H: number, W: number): Tensor;
}

/** Options of {@link InteractionBlock}. */
export interface InteractionOptions {
  dim: number;
  numHeads: number;
  nPoints: number;
  initValues: number;
  dropPath: number;
  withCffn: boolean;
  cffnRatio: number;
  deformRatio: number;
  extraExtractor: boolean;
  normEps: number;
  withCp?: boolean;
}

/** One injector → ViT blocks → extractor(s) step. */
export class InteractionBlock extends Module {
  readonly injector: Injector;
  readonly extractor: Extractor;
  readonly extra_extractors: ModuleList<Extractor> | null = null;
  constructor(o: InteractionOptions) {
    super();
    const common = {
      dim: o.dim, numHeads: o.numHeads, nPoints: o.nPoints, deformRatio: o.deformRatio, normEps: o.normEps, withCp: o.withCp ?? false,
    };
    this.injector = this.registerModule('injector', new Injector({ ...common, nLevels: 3, initValues: o.initValues }));
    const ext = { ...common, nLevels: 1, withCffn: o.withCffn, cffnRatio: o.cffnRatio, drop: 0, dropPath: o.dropPath };
    this.extractor = this.registerModule('extractor', new Extractor(ext));
    if (o.extraExtractor) {
      this.extra_extractors = this.registerModule('extra_extractors', new ModuleList([new Extractor(ext), new Extractor(ext)]));
    }
  }

  /**
   * x: ViT tokens, c: adapter tokens; runs ViT blocks [from, to] of `vit` in between. With `cls` (the authors'
   * `InteractionBlockWithCls`, BEiT's segmentation code base) the injector sees the patch tokens only, the blocks
   * run on `cat(cls, x)`, and the result is split again before the extractor; the new cls token is returned.
   */
  forward(x: Tensor, c: Tensor, vit: BlockRunner, from: number, to: number,
    d: { injector: DeformInputs; extractor: DeformInputs }, H: number, W: number, cls?: Tensor): { x: Tensor; c: Tensor; cls?: Tensor } {
    return scope(() => this.run(x, c, vit, from, to, d, H, W, cls));
  }

  private run(x: Tensor, c: Tensor, vit: BlockRunner, from: number, to: number,
    d: { injector: DeformInputs; extractor: DeformInputs }, H: number, W: number, cls?: Tensor): { x: Tensor; c: Tensor; cls?: Tensor } {
    const inj = d.injector;
    const ext = d.extractor;
    let xi = this.injector.forward(x, inj.ref, c, inj.shapes, inj.levelStart);
    let clsOut: Tensor | undefined;
    if (cls) {
      const y = vit.runBlocks(cat([cls, xi], 1), from, to, H, W);
      clsOut = y.narrow(1, 0, 1);
      xi = y.narrow(1, 1, y.shape[1]! - 1);
    } else {
      xi = vit.runBlocks(xi, from, to, H, W);
    }
    let ci = this.extractor.forward(c, ext.ref, xi, ext.shapes, ext.levelStart, H, W);
    if (this.extra_extractors) {
      for (const e of this.extra_extractors) ci = e.forward(ci, ext.ref, xi, ext.shapes, ext.levelStart, H, W);
    }
    return clsOut ? { x: xi, c: ci, cls: clsOut } : { x: xi, c: ci };
  }
}
