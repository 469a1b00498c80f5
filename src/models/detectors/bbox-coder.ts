/**
 * mmdetection 2.x `DeltaXYWHBBoxCoder.decode` (`delta2bbox`): deltas (dx, dy, dw, dh) relative to a box's centre and
 * size, de-normalised by `target_stds` / `target_means`, `dw, dh` clamped to `|log(wh_ratio_clip)|`, boxes clamped to
 * the image (`max_shape` = (h, w)) when `clip_border`. Computed with tensor ops in the inputs' dtype, in mmdet's order.
 */
import { type Tensor, cat, scope, tensor } from '../../engine/index.js';
import { checkKeys } from '../heads/conv-module.js';

/** mmdet `bbox_coder` config (snake_case, verbatim). */
export interface DeltaXYWHBBoxCoderConfig {
  type?: 'DeltaXYWHBBoxCoder';
  target_means?: number[];
  target_stds?: number[];
  clip_border?: boolean;
  add_ctr_clamp?: boolean;
  ctr_clamp?: number;
}

function four(where: string, name: string, v: unknown, dflt: number[]): number[] {
  if (v === undefined) return dflt;
  if (!Array.isArray(v) || v.length !== 4 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new Error(`${where}: ${name} must be 4 finite numbers, got ${JSON.stringify(v)}`);
  }
  return [...v] as number[];
}

/** The delta-xywh box coder (decoding only). */
export class DeltaXYWHBBoxCoder {
  readonly means: number[];
  readonly stds: number[];
  readonly clipBorder: boolean;
  readonly addCtrClamp: boolean;
  readonly ctrClamp: number;

  constructor(cfg: DeltaXYWHBBoxCoderConfig = {}) {
    const where = 'DeltaXYWHBBoxCoder';
    checkKeys(where, cfg, ['type', 'target_means', 'target_stds', 'clip_border', 'add_ctr_clamp', 'ctr_clamp']);
    if (cfg.type !== undefined && cfg.type !== 'DeltaXYWHBBoxCoder') {
      throw new Error(`${where}: only type DeltaXYWHBBoxCoder is implemented, got ${JSON.stringify(cfg.type)}`);
    }
    this.means = four(where, 'target_means', cfg.target_means, [0, 0, 0, 0]);
    this.stds = four(where, 'target_stds', cfg.target_stds, [1, 1, 1, 1]);
    this.clipBorder = cfg.clip_border ?? true;
    this.addCtrClamp = cfg.add_ctr_clamp ?? false;
    this.ctrClamp = cfg.ctr_clamp ?? 32;
  }

  /**
   * Decodes `deltas` (N, 4k) against `rois` (N, 4): k boxes per row (class-specific deltas), returned as (N, 4k).
   * `maxShape` = (h, w) clamps x to [0, w] and y to [0, h] (when `clip_border`). `whRatioClip` defaults to 16/1000.
   */
  decode(rois: Tensor, deltas: Tensor, maxShape?: readonly [number, number] | null, whRatioClip = 16 / 1000): Tensor {
    if (rois.ndim !== 2 || rois.shape[1] !== 4) throw new Error(`DeltaXYWHBBoxCoder.decode: rois must be (N, 4), got [${rois.shape.join(', ')}]`);
    const [n, c] = deltas.shape as [number, number];
    if (deltas.ndim !== 2 || c % 4 !== 0 || n !== rois.shape[0]) {
      throw new Error(`DeltaXYWHBBoxCoder.decode: deltas must be (N, 4k) with N = ${rois.shape[0]}, got [${deltas.shape.join(', ')}]`);
    }
    if (n === 0) return deltas.clone();
    const k = c / 4;
    return scope(() => {
      const dt = deltas.dtype;
      const d = deltas.reshape(-1, 4);
      const stds = tensor(this.stds, { dtype: dt, device: deltas.device }).reshape(1, 4);
      const means = tensor(this.means, { dtype: dt, device: deltas.device }).reshape(1, 4);
      const den = d.mul(stds).add(means);
      const dxy = den.slice(1, 0, 2);
      let dwh = den.slice(1, 2, 4);
      const r = rois.repeat(1, k).reshape(-1, 4);
      const pxy = r.slice(1, 0, 2).add(r.slice(1, 2, 4)).mul(0.5);
      const pwh = r.slice(1, 2, 4).sub(r.slice(1, 0, 2));
      let dxyWh = pwh.mul(dxy);
      const maxRatio = Math.abs(Math.log(whRatioClip));
      if (this.addCtrClamp) {
        dxyWh = dxyWh.clamp(-this.ctrClamp, this.ctrClamp);
        dwh = dwh.clamp(null, maxRatio);
      } else {
        dwh = dwh.clamp(-maxRatio, maxRatio);
      }
      const gxy = pxy.add(dxyWh);
      const gwh = pwh.mul(dwh.exp());
      const half = gwh.mul(0.5);
      let boxes = cat([gxy.sub(half), gxy.add(half)], 1);
      if (this.clipBorder && maxShape) {
        const [h, w] = maxShape;
        const x1 = boxes.select(1, 0).clamp(0, w);
        const y1 = boxes.select(1, 1).clamp(0, h);
        const x2 = boxes.select(1, 2).clamp(0, w);
        const y2 = boxes.select(1, 3).clamp(0, h);
        boxes = cat([x1.unsqueeze(1), y1.unsqueeze(1), x2.unsqueeze(1), y2.unsqueeze(1)], 1);
      }
      return boxes.reshape(n, c);
    });
  }
}
