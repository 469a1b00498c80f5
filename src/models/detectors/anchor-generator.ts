/**
 * mmdetection 2.x `AnchorGenerator` (test-time part): per level a set of base anchors centred on the cell's top-left
 * corner (`center_offset` 0) and shifted over the feature grid.
 *
 * Base anchors are computed in float32, as mmdetection does (its ratios and scales are float32 tensors):
 * `h_ratio = sqrt(ratio)`, `w_ratio = 1 / h_ratio`, `ws = base_size · w_ratio · scale`, `hs = base_size · h_ratio ·
 * scale` (scale-major: ratio outer, scale inner), anchor `(cx − ws/2, cy − hs/2, cx + ws/2, cy + hs/2)` with
 * `cx = cy = center_offset · base_size`. The grid shifts `(x·s, y·s, x·s, y·s)` are added in the requested dtype;
 * anchor `(y·w + x)·A + a` is base anchor `a` at cell (y, x).
 */
import { type DType, type Tensor, arange, scope, stack, tensor } from '../../engine/index.js';
import { checkKeys } from '../heads/conv-module.js';

/** mmdet `anchor_generator` config (snake_case, verbatim). */
export interface AnchorGeneratorConfig {
  type?: 'AnchorGenerator';
  strides: (number | [number, number])[];
  ratios: number[];
  scales?: number[];
  base_sizes?: number[] | null;
  scale_major?: boolean;
  octave_base_scale?: number | null;
  scales_per_octave?: number | null;
  center_offset?: number;
  centers?: null;
}

const KEYS = ['type', 'strides', 'ratios', 'scales', 'base_sizes', 'scale_major', 'octave_base_scale', 'scales_per_octave',
  'center_offset', 'centers'];

const f32 = Math.fround;

function positive(where: string, name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new Error(`${where}: ${name} must be a positive finite number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** The anchor generator of mmdetection 2.x (`AnchorGenerator`). */
export class AnchorGenerator {
  /** Per level (stride_w, stride_h). */
  readonly strides: [number, number][];
  readonly ratios: number[];
  readonly scales: number[];
  readonly baseSizes: number[];
  readonly scaleMajor: boolean;
  readonly centerOffset: number;
  /** Per level the float32 base anchors, `numBaseAnchors` rows of (x1, y1, x2, y2). */
  readonly baseAnchors: Float32Array[];

  constructor(cfg: AnchorGeneratorConfig) {
    const where = 'AnchorGenerator';
    checkKeys(where, cfg, KEYS);
    if (cfg.type !== undefined && cfg.type !== 'AnchorGenerator') {
      throw new Error(`${where}: only type AnchorGenerator is implemented, got ${JSON.stringify(cfg.type)}`);
    }
    if (cfg.centers !== undefined && cfg.centers !== null) throw new Error(`${where}: explicit centers are not supported`);
    if (!Array.isArray(cfg.strides) || cfg.strides.length === 0) throw new Error(`${where}: strides must be a non-empty list`);
    this.strides = cfg.strides.map((s, i) => {
      const p: [number, number] = Array.isArray(s) ? [s[0], s[1]] : [s, s];
      positive(where, `strides[${i}]`, p[0]);
      positive(where, `strides[${i}]`, p[1]);
      return p;
    });
    if (!Array.isArray(cfg.ratios) || cfg.ratios.length === 0) throw new Error(`${where}: ratios must be a non-empty list`);
    this.ratios = cfg.ratios.map((r, i) => positive(where, `ratios[${i}]`, r));
    const octave = cfg.octave_base_scale ?? null;
    const perOctave = cfg.scales_per_octave ?? null;
    if (cfg.scales !== undefined && cfg.scales !== null) {
      if (octave !== null || perOctave !== null) throw new Error(`${where}: give either scales or octave_base_scale/scales_per_octave, not both`);
      if (!Array.isArray(cfg.scales) || cfg.scales.length === 0) throw new Error(`${where}: scales must be a non-empty list`);
      this.scales = cfg.scales.map((s, i) => positive(where, `scales[${i}]`, s));
    } else if (octave !== null && perOctave !== null) {
      positive(where, 'octave_base_scale', octave);
      if (!Number.isInteger(perOctave) || perOctave < 1) throw new Error(`${where}: scales_per_octave must be a positive integer`);
      this.scales = Array.from({ length: perOctave }, (_, i) => f32(f32(2 ** (i / perOctave)) * octave));
    } else {
      throw new Error(`${where}: either scales or octave_base_scale and scales_per_octave are required`);
    }
    const base = cfg.base_sizes ?? null;
    if (base !== null) {
      if (!Array.isArray(base) || base.length !== this.strides.length) {
        throw new Error(`${where}: base_sizes must list one size per stride (${this.strides.length}), got ${JSON.stringify(base)}`);
      }
      this.baseSizes = base.map((b, i) => positive(where, `base_sizes[${i}]`, b));
    } else {
      this.baseSizes = this.strides.map(([w, h]) => Math.min(w, h));
    }
    this.scaleMajor = cfg.scale_major ?? true;
    this.centerOffset = cfg.center_offset ?? 0;
    if (!(this.centerOffset >= 0 && this.centerOffset <= 1)) throw new Error(`${where}: center_offset must be in [0, 1], got ${this.centerOffset}`);
    this.baseAnchors = this.baseSizes.map((b) => this.levelBaseAnchors(b));
  }

  /** Number of levels. */
  get numLevels(): number { return this.strides.length; }

  /** Anchors per location (the same on every level). */
  get numBaseAnchors(): number { return this.ratios.length * this.scales.length; }

  /** mmdet `gen_single_level_base_anchors` in float32 arithmetic. */
  private levelBaseAnchors(baseSize: number): Float32Array {
    const w = baseSize;
    const h = baseSize;
    const cx = f32(this.centerOffset * w);
    const cy = f32(this.centerOffset * h);
    const ws: number[] = [];
    const hs: number[] = [];
    const hr = this.ratios.map((r) => f32(Math.sqrt(f32(r))));
    const wr = hr.map((v) => f32(1 / v));
    const sc = this.scales.map(f32);
    if (this.scaleMajor) {
      for (let i = 0; i < hr.length; i++) {
        for (const s of sc) {
          ws.push(f32(f32(w * wr[i]!) * s));
          hs.push(f32(f32(h * hr[i]!) * s));
        }
      }
    } else {
      for (const s of sc) {
        for (let i = 0; i < hr.length; i++) {
          ws.push(f32(f32(w * s) * wr[i]!));
          hs.push(f32(f32(h * s) * hr[i]!));
        }
      }
    }
    const out = new Float32Array(ws.length * 4);
    for (let k = 0; k < ws.length; k++) {
      out[4 * k] = f32(cx - f32(0.5 * ws[k]!));
      out[4 * k + 1] = f32(cy - f32(0.5 * hs[k]!));
      out[4 * k + 2] = f32(cx + f32(0.5 * ws[k]!));
      out[4 * k + 3] = f32(cy + f32(0.5 * hs[k]!));
    }
    return out;
  }

  /**
   * Anchors of one level for a feature map of `size` = (h, w): `(h·w·A, 4)` in `dtype` (the float32 base anchors
   * converted to `dtype`, plus the shifts computed in `dtype`), row `(y·w + x)·A + a`.
   */
  levelPriors(level: number, size: readonly [number, number], dtype: DType = 'float32', device = 'cpu'): Tensor {
    if (!Number.isInteger(level) || level < 0 || level >= this.numLevels) {
      throw new Error(`AnchorGenerator: level ${level} out of range (0..${this.numLevels - 1})`);
    }
    const [h, w] = size;
    if (!Number.isInteger(h) || !Number.isInteger(w) || h < 0 || w < 0) {
      throw new Error(`AnchorGenerator: feature map size must be two non-negative integers, got ${JSON.stringify(size)}`);
    }
    const [sw, sh] = this.strides[level]!;
    const A = this.numBaseAnchors;
    return scope(() => {
      const base = tensor(this.baseAnchors[level]!, { shape: [A, 4] }).to({ dtype, device });
      const sx = arange(0, w, 1, { dtype: 'int64', device }).to(dtype).mul(sw);
      const sy = arange(0, h, 1, { dtype: 'int64', device }).to(dtype).mul(sh);
      const xx = sx.unsqueeze(0).expand(h, w).reshape(-1);
      const yy = sy.unsqueeze(1).expand(h, w).reshape(-1);
      const shifts = stack([xx, yy, xx, yy], 1);
      return base.unsqueeze(0).add(shifts.unsqueeze(1)).reshape(-1, 4);
    });
  }

  /** Anchors of every level ({@link levelPriors}) for the given feature map sizes. */
  gridPriors(sizes: readonly (readonly [number, number])[], dtype: DType = 'float32', device = 'cpu'): Tensor[] {
    if (sizes.length !== this.numLevels) throw new Error(`AnchorGenerator: expected ${this.numLevels} feature map sizes, got ${sizes.length}`);
    return sizes.map((s, i) => this.levelPriors(i, s, dtype, device));
  }
}
