/**
 * Multi-scale deformable attention written with engine operations (the oracle for the native kernel):
 * per level l, the value slice (N, H_l·W_l, M, D) becomes (N·M, D, H_l, W_l); the sampling locations (x, y) in [0, 1]
 * become grid_sample coordinates 2·loc − 1 laid out (N·M, Lq, P, 2); bilinear sampling with zero padding and
 * align_corners=false gives (N·M, D, Lq, P); the samples of all levels are weighted by the attention weights and
 * summed over (level, point).
 */
import { Tensor, cat, gridSample, scope } from '../../src/engine/index.js';

/**
 * value (N, S, M, D); shapes [[H, W], ...] per level; levelStart offsets into S; loc (N, Lq, M, L, P, 2);
 * attn (N, Lq, M, L, P). Returns (N, Lq, M·D).
 */
export function msDeformAttnComposition(value: Tensor, shapes: ReadonlyArray<readonly [number, number]>,
  levelStart: readonly number[], loc: Tensor, attn: Tensor): Tensor {
  return scope(() => {
    const [n, , m, d] = value.shape as [number, number, number, number];
    const [, lq, , levels, p] = loc.shape as [number, number, number, number, number, number];
    if (levels !== shapes.length || levelStart.length !== shapes.length) {
      throw new Error(`msDeformAttnComposition: ${levels} levels in loc, ${shapes.length} shapes, ${levelStart.length} starts`);
    }
    // (N, Lq, M, L, P, 2) -> (N, M, Lq, L, P, 2), grid coordinates in [-1, 1]
    const grid = loc.mul(2).sub(1).permute(0, 2, 1, 3, 4, 5);
    const sampled: Tensor[] = [];
    shapes.forEach(([h, w], l) => {
      // (N, H·W, M, D) -> (N, M, D, H·W) -> (N·M, D, H, W)
      const v = value.narrow(1, levelStart[l]!, h * w).permute(0, 2, 3, 1).reshape(n * m, d, h, w);
      // (N, M, Lq, P, 2) -> (N·M, Lq, P, 2)
      const g = grid.select(3, l).reshape(n * m, lq, p, 2);
      // (N·M, D, Lq, P)
      sampled.push(gridSample(v, g, { mode: 'bilinear', paddingMode: 'zeros', alignCorners: false }));
    });
    // (N·M, D, Lq, L·P), level-major like the weights below
    const all = cat(sampled, 3);
    // (N, Lq, M, L, P) -> (N, M, Lq, L·P) -> (N·M, 1, Lq, L·P)
    const a = attn.permute(0, 2, 1, 3, 4).reshape(n * m, 1, lq, levels * p);
    // (N·M, D, Lq) -> (N, M·D, Lq) -> (N, Lq, M·D)
    return all.mul(a).sum(-1).reshape(n, m * d, lq).transpose(1, 2).contiguous();
  });
}
