/**
 * RoIAlign (mmcv 1.4.2 `RoIAlign`, average pooling) as mmdetection's `SingleRoIExtractor` uses it: for each RoI a
 * fixed `oh × ow` grid of bins over the box, each bin the mean of `g_h × g_w` bilinear samples.
 *
 * Semantics (`aligned = true`, `samplingRatio = 0`, the detection configs' defaults), per RoI `(b, x1, y1, x2, y2)`:
 * `x0 = x1·scale − 0.5`, `roi_w = x2·scale − 0.5 − x0` (with `aligned = false`: no −0.5 and `roi_w ≥ 1`),
 * bin `b_w = roi_w / ow`, samples per bin `g_w = samplingRatio > 0 ? samplingRatio : ceil(roi_w / ow)` (adaptive),
 * sample `x = x0 + pw·b_w + (ix + 0.5)·b_w / g_w` (same for y). A sample with `y < −1`, `y > H`, `x < −1` or `x > W`
 * contributes 0; otherwise y, x are clamped below at 0, `y_low = floor(y)`, and when `y_low ≥ H − 1` both corners
 * are row `H − 1` (and `y = H − 1`); bilinear interpolation of the four neighbours. Output = sum / max(g_h·g_w, 1),
 * so an empty (or inverted) RoI gives zeros. Arithmetic is done in the input's dtype, as mmcv's CPU kernel does.
 *
 * Two implementations: the native kernel (`vit_adapter::roi_align`, CPU multi-threaded, CUDA when the addon is built
 * with CUDA; forward and backward) and a composition of libtorch tensor ops (sample positions and bilinear weights
 * computed here, then one gather, weighting and scatter-add per chunk of RoIs; slow, the test oracle). Both are differentiable w.r.t. `input`.
 */
import { type Tensor, cat, op, tensor } from '../../engine/index.js';

/** Options of {@link roiAlign}. */
export interface RoIAlignOptions {
  /** Output size `S` (S × S) or `[oh, ow]`. */
  outputSize: number | [number, number];
  /** Factor from image pixels to feature-map cells (`1 / stride`). */
  spatialScale: number;
  /** Samples per bin along each axis; 0 (default) = adaptive `ceil(roi_size / output_size)`. */
  samplingRatio?: number;
  /** mmcv `aligned` (default true): pixel-centre shift of −0.5 and no minimum RoI size. */
  aligned?: boolean;
  /** `native` (the addon kernel), `composition` (tensor ops), or `auto` (default: native when built). */
  impl?: 'native' | 'composition' | 'auto';
}

const nativeOp = op('vit_adapter::roi_align');

/** Whether the native RoIAlign kernel is built into the addon. */
export function hasNativeRoIAlign(): boolean {
  return nativeOp.available();
}

interface Checked {
  oh: number;
  ow: number;
  scale: number;
  ratio: number;
  aligned: boolean;
  rois: Tensor;
}

function checkArgs(input: Tensor, rois: Tensor, opts: RoIAlignOptions): Checked {
  const where = 'roiAlign';
  if (input.ndim !== 4) throw new Error(`${where}: input must be 4-D (N, C, H, W), got shape [${input.shape.join(', ')}]`);
  if (input.dtype !== 'float32' && input.dtype !== 'float64') {
    throw new Error(`${where}: input must be float32 or float64, got ${input.dtype}`);
  }
  if (rois.ndim !== 2 || rois.shape[1] !== 5) {
    throw new Error(`${where}: rois must be (K, 5) rows of (batch index, x1, y1, x2, y2), got shape [${rois.shape.join(', ')}]`);
  }
  if (rois.device !== input.device) throw new Error(`${where}: rois are on ${rois.device} but input is on ${input.device}`);
  if (rois.dtype !== 'float32' && rois.dtype !== 'float64') throw new Error(`${where}: rois must be float32 or float64, got ${rois.dtype}`);
  const size = opts.outputSize;
  const [oh, ow] = typeof size === 'number' ? [size, size] : size;
  for (const [k, v] of [['output height', oh], ['output width', ow]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${where}: ${k} must be a positive integer, got ${v}`);
  }
  const scale = opts.spatialScale;
  if (!(Number.isFinite(scale) && scale > 0)) throw new Error(`${where}: spatialScale must be a positive finite number, got ${scale}`);
  const ratio = opts.samplingRatio ?? 0;
  if (!Number.isInteger(ratio) || ratio < 0) throw new Error(`${where}: samplingRatio must be an integer >= 0, got ${ratio}`);
  const impl = opts.impl ?? 'auto';
  if (impl !== 'auto' && impl !== 'native' && impl !== 'composition') {
    throw new Error(`${where}: impl must be 'native', 'composition' or 'auto', got ${JSON.stringify(impl)}`);
  }
  return { oh, ow, scale, ratio, aligned: opts.aligned ?? true, rois: rois.dtype === input.dtype ? rois : rois.to(input.dtype) };
}

/**
 * RoIAlign of `rois` over `input`.
 * input (N, C, H, W) float32/float64; rois (K, 5) = (batch index, x1, y1, x2, y2) in image pixels (converted to the
 * input's dtype); returns (K, C, oh, ow); differentiable w.r.t. input (not w.r.t. rois, as mmcv).
 */
export function roiAlign(input: Tensor, rois: Tensor, opts: RoIAlignOptions): Tensor {
  const c = checkArgs(input, rois, opts);
  const impl = opts.impl ?? 'auto';
  const native = impl === 'native' || (impl === 'auto' && hasNativeRoIAlign());
  if (native) {
    if (!hasNativeRoIAlign()) throw new Error('roiAlign: the native roi_align kernel is not built into this addon');
    return nativeOp.t([input.handle, c.rois.handle, c.oh, c.ow, c.scale, c.ratio, c.aligned]);
  }
  return roiAlignComposition(input, c);
}

/** Rounds to the dtype's precision after every operation, so that positions equal the kernel's float32 ones. */
function rounder(dtype: string): (x: number) => number {
  return dtype === 'float32' ? Math.fround : (x: number): number => x;
}

/** Sample entries per gather in the composition (bounds its (entries × C) intermediate). */
const CHUNK_ENTRIES = 1 << 16;

function roiAlignComposition(input: Tensor, c: Checked): Tensor {
  const [N, C, H, W] = input.shape as [number, number, number, number];
  const K = c.rois.shape[0]!;
  const dt = input.dtype;
  const dev = input.device;
  const r = c.rois.toTypedArray();
  const f = rounder(dt);
  const { oh, ow, ratio, aligned } = c;
  const bins = oh * ow;
  const scale = f(c.scale);
  const off = aligned ? 0.5 : 0;
  // channels-last rows: row (b·H + y)·W + x holds the C values of pixel (y, x) of image b
  const rowsCL = input.permute(0, 2, 3, 1).reshape(N * H * W, C);
  // zeros connected to `input` in the autograd graph (an empty sum), so that every output has a gradient path
  const zeroRows = (n: number): Tensor => rowsCL.narrow(0, 0, 0).sum(0, true).expand(n, C).contiguous();
  const counts = new Float64Array(K);
  const parts: Tensor[] = [];
  let idx: number[] = [];
  let dst: number[] = [];
  let wts: number[] = [];
  let k0 = 0;
  const flush = (k1: number): void => {
    // RoIs [k0, k1): output rows (k - k0)·bins + bin
    if (k1 === k0) return;
    let out = zeroRows((k1 - k0) * bins);
    if (idx.length > 0) {
      const E = idx.length;
      const vals = rowsCL.indexSelect(0, tensor(idx, { dtype: 'int64', device: dev }))
        .mul(tensor(wts, { dtype: dt, device: dev }).view(E, 1));
      out = out.scatterAdd(0, tensor(dst, { dtype: 'int64', device: dev }).view(E, 1).expand(E, C), vals);
    }
    const cnt = tensor(Array.from(counts.subarray(k0, k1)), { dtype: dt, device: dev }).view(k1 - k0, 1, 1);
    parts.push(out.view(k1 - k0, bins, C).div(cnt).view(k1 - k0, oh, ow, C).permute(0, 3, 1, 2));
    idx = [];
    dst = [];
    wts = [];
    k0 = k1;
  };
  for (let k = 0; k < K; k++) {
    const b = r[5 * k]!;
    if (!Number.isInteger(b) || b < 0 || b >= N) {
      throw new Error(`roiAlign: roi ${k} has batch index ${b}; expected an integer in [0, ${N})`);
    }
    for (let j = 1; j < 5; j++) {
      if (!Number.isFinite(r[5 * k + j]!)) throw new Error(`roiAlign: roi ${k} has a non-finite coordinate ${r[5 * k + j]}`);
    }
    if (idx.length >= CHUNK_ENTRIES) flush(k);
    const sx = f(f(r[5 * k + 1]! * scale) - off);
    const sy = f(f(r[5 * k + 2]! * scale) - off);
    const ex = f(f(r[5 * k + 3]! * scale) - off);
    const ey = f(f(r[5 * k + 4]! * scale) - off);
    let rw = f(ex - sx);
    let rh = f(ey - sy);
    if (!aligned) {
      rw = Math.max(rw, 1);
      rh = Math.max(rh, 1);
    }
    const bh = f(rh / oh);
    const bw = f(rw / ow);
    const gh = ratio > 0 ? ratio : Math.ceil(f(rh / oh));
    const gw = ratio > 0 ? ratio : Math.ceil(f(rw / ow));
    counts[k] = Math.max(gh * gw, 1);
    if (H === 0 || W === 0) continue;
    const base = b * H * W;
    for (let ph = 0; ph < oh; ph++) {
      for (let pw = 0; pw < ow; pw++) {
        const row = (k - k0) * bins + ph * ow + pw;
        for (let iy = 0; iy < gh; iy++) {
          const yy = f(f(sy + f(ph * bh)) + f(f((iy + 0.5) * bh) / gh));
          for (let ix = 0; ix < gw; ix++) {
            const xx = f(f(sx + f(pw * bw)) + f(f((ix + 0.5) * bw) / gw));
            let y = yy;
            let x = xx;
            if (y < -1 || y > H || x < -1 || x > W) continue;
            if (y <= 0) y = 0;
            if (x <= 0) x = 0;
            let yl = Math.floor(y);
            let xl = Math.floor(x);
            let yh: number;
            let xh: number;
            if (yl >= H - 1) { yl = yh = H - 1; y = yl; } else yh = yl + 1;
            if (xl >= W - 1) { xl = xh = W - 1; x = xl; } else xh = xl + 1;
            const ly = f(y - yl);
            const lx = f(x - xl);
            const hy = f(1 - ly);
            const hx = f(1 - lx);
            idx.push(base + yl * W + xl, base + yl * W + xh, base + yh * W + xl, base + yh * W + xh);
            wts.push(f(hy * hx), f(hy * lx), f(ly * hx), f(ly * lx));
            dst.push(row, row, row, row);
          }
        }
      }
    }
  }
  flush(K);
  if (K === 0) return input.narrow(0, 0, 0).narrow(2, 0, 0).narrow(3, 0, 0).reshape(0, C, oh, ow);
  return parts.length === 1 ? parts[0]!.contiguous() : cat(parts, 0);
}
