/**
 * mmdetection 2.x `SingleRoIExtractor` with mmcv's `RoIAlign`: each RoI is pooled from one pyramid level chosen by
 * its scale, `level = clamp(floor(log2(sqrt(w·h) / finest_scale + 1e-6)), 0, L − 1)` (an empty box maps to level 0),
 * with spatial scale `1 / featmap_strides[level]`. Holds no state (mmdet's RoIAlign layers have no parameters).
 */
import { type Tensor, cat, scope, tensor, zeros } from '../../engine/index.js';
import { Module, roiAlign } from '../../nn/index.js';
import { checkKeys } from '../heads/conv-module.js';
import { checkWidth } from '../validate.js';

/** mmcv `roi_layer` config. */
export interface RoIAlignLayerConfig {
  type?: 'RoIAlign';
  output_size: number | [number, number];
  sampling_ratio?: number;
  pool_mode?: 'avg';
  aligned?: boolean;
  use_torchvision?: false;
}

/** mmdet `bbox_roi_extractor` / `mask_roi_extractor` config (snake_case, verbatim). */
export interface SingleRoIExtractorConfig {
  type?: 'SingleRoIExtractor';
  roi_layer: RoIAlignLayerConfig;
  out_channels: number;
  featmap_strides: number[];
  finest_scale?: number;
  init_cfg?: unknown;
}

/** The single-level RoI extractor. */
export class SingleRoIExtractor extends Module {
  readonly outputSize: [number, number];
  readonly samplingRatio: number;
  readonly aligned: boolean;
  readonly outChannels: number;
  readonly featmapStrides: number[];
  readonly finestScale: number;

  constructor(cfg: SingleRoIExtractorConfig) {
    super();
    const where = 'SingleRoIExtractor';
    checkKeys(where, cfg, ['type', 'roi_layer', 'out_channels', 'featmap_strides', 'finest_scale', 'init_cfg']);
    if (cfg.type !== undefined && cfg.type !== 'SingleRoIExtractor') throw new Error(`${where}: type must be SingleRoIExtractor, got ${JSON.stringify(cfg.type)}`);
    const l = cfg.roi_layer;
    if (typeof l !== 'object' || l === null) throw new Error(`${where}: roi_layer must be a dict like {type: 'RoIAlign', output_size: 7, sampling_ratio: 0}`);
    checkKeys(`${where}: roi_layer`, l, ['type', 'output_size', 'sampling_ratio', 'pool_mode', 'aligned', 'use_torchvision']);
    if (l.type !== undefined && l.type !== 'RoIAlign') throw new Error(`${where}: roi_layer type ${JSON.stringify(l.type)} is not supported; only RoIAlign`);
    if (l.pool_mode !== undefined && l.pool_mode !== 'avg') throw new Error(`${where}: roi_layer pool_mode ${JSON.stringify(l.pool_mode)} is not supported; only avg`);
    if (l.use_torchvision) throw new Error(`${where}: roi_layer use_torchvision is not supported`);
    const os = l.output_size;
    this.outputSize = typeof os === 'number' ? [os, os] : Array.isArray(os) && os.length === 2 ? [os[0], os[1]] : [NaN, NaN];
    if (!this.outputSize.every((v) => Number.isInteger(v) && v >= 1 && v <= 1024)) {
      throw new Error(`${where}: roi_layer.output_size must be a positive integer or two, got ${JSON.stringify(os)}`);
    }
    this.samplingRatio = l.sampling_ratio ?? 0;
    if (!Number.isInteger(this.samplingRatio) || this.samplingRatio < 0) throw new Error(`${where}: roi_layer.sampling_ratio must be an integer >= 0`);
    this.aligned = l.aligned ?? true;
    checkWidth(where, 'out_channels', cfg.out_channels);
    this.outChannels = cfg.out_channels;
    if (!Array.isArray(cfg.featmap_strides) || cfg.featmap_strides.length === 0 || cfg.featmap_strides.some((s) => !(typeof s === 'number' && s > 0))) {
      throw new Error(`${where}: featmap_strides must be a non-empty list of positive numbers, got ${JSON.stringify(cfg.featmap_strides)}`);
    }
    this.featmapStrides = [...cfg.featmap_strides];
    this.finestScale = cfg.finest_scale ?? 56;
    if (!(this.finestScale > 0)) throw new Error(`${where}: finest_scale must be positive`);
  }

  /** Number of input levels used (`len(featmap_strides)`). */
  get numInputs(): number { return this.featmapStrides.length; }

  /** The level of every RoI (K, 5) as plain numbers (mmdet `map_roi_levels`, computed in the RoIs' dtype). */
  mapRoiLevels(rois: Tensor): Int32Array {
    const L = this.numInputs;
    return scope(() => {
      const w = rois.select(1, 3).sub(rois.select(1, 1));
      const h = rois.select(1, 4).sub(rois.select(1, 2));
      const scale = w.mul(h).sqrt().div(this.finestScale).add(1e-6).toTypedArray();
      // torch.log2 rounds to the dtype before the floor
      const f = rois.dtype === 'float32' ? Math.fround : (x: number): number => x;
      const out = new Int32Array(scale.length);
      for (let i = 0; i < scale.length; i++) {
        const v = Math.floor(f(Math.log2(scale[i]!)));
        out[i] = Number.isNaN(v) ? 0 : Math.min(Math.max(v, 0), L - 1);
      }
      return out;
    });
  }

  /** RoI features (K, C, oh, ow) of `rois` (K, 5: batch index, x1, y1, x2, y2) from `feats` (the first L levels). */
  forward(feats: readonly Tensor[], rois: Tensor): Tensor {
    const L = this.numInputs;
    if (feats.length < L) throw new Error(`SingleRoIExtractor: expected at least ${L} feature maps, got ${feats.length}`);
    if (rois.ndim !== 2 || rois.shape[1] !== 5) throw new Error(`SingleRoIExtractor: rois must be (K, 5), got [${rois.shape.join(', ')}]`);
    const K = rois.shape[0]!;
    const [oh, ow] = this.outputSize;
    const f0 = feats[0]!;
    if (f0.shape[1] !== this.outChannels) throw new Error(`SingleRoIExtractor: features have ${f0.shape[1]} channels, expected out_channels ${this.outChannels}`);
    if (K === 0) return zeros([0, this.outChannels, oh, ow], { dtype: f0.dtype, device: f0.device });
    return scope(() => {
      const levels = this.mapRoiLevels(rois);
      const parts: Tensor[] = [];
      const order: number[] = [];
      for (let l = 0; l < L; l++) {
        const inds: number[] = [];
        for (let i = 0; i < K; i++) if (levels[i] === l) inds.push(i);
        if (inds.length === 0) continue;
        const sel = rois.indexSelect(0, tensor(inds, { dtype: 'int64', device: rois.device }));
        parts.push(roiAlign(feats[l]!, sel, {
          outputSize: [oh, ow], spatialScale: 1 / this.featmapStrides[l]!, samplingRatio: this.samplingRatio, aligned: this.aligned,
        }));
        order.push(...inds);
      }
      const all = parts.length === 1 ? parts[0]! : cat(parts, 0);
      const inv = new Array<number>(K);
      order.forEach((orig, pos) => { inv[orig] = pos; });
      return all.indexSelect(0, tensor(inv, { dtype: 'int64', device: rois.device }));
    });
  }
}
