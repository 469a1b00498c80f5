/**
 * Naive reference implementations in plain JavaScript, written from the definitions, used as oracles for the
 * engine's kernels on small inputs. Arrays are flat, row-major.
 */

/** Row-major N-d index helper. */
export function idx(shape: readonly number[], ...i: number[]): number {
  let o = 0;
  for (let k = 0; k < shape.length; k++) o = o * shape[k]! + i[k]!;
  return o;
}

export interface RefConvOptions { stride?: [number, number]; padding?: [number, number]; dilation?: [number, number]; groups?: number }

/** out[n, o, y, x] = b[o] + Σ_{c in group, ky, kx} in[n, c, y·s − p + ky·d, x·s − p + kx·d] · w[o, c − g·Cin/G, ky, kx]. */
export function refConv2d(x: number[], xs: [number, number, number, number], w: number[], ws: [number, number, number, number],
  b: number[] | null, o: RefConvOptions = {}): { data: number[]; shape: [number, number, number, number] } {
  const [sh, sw] = o.stride ?? [1, 1];
  const [ph, pw] = o.padding ?? [0, 0];
  const [dh, dw] = o.dilation ?? [1, 1];
  const g = o.groups ?? 1;
  const [n, c, h, wd] = xs;
  const [oc, icg, kh, kw] = ws;
  if (icg * g !== c) throw new Error('refConv2d: channel mismatch');
  const ho = Math.floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const wo = Math.floor((wd + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  const ocg = oc / g;
  const out = new Array<number>(n * oc * ho * wo).fill(0);
  for (let b0 = 0; b0 < n; b0++) for (let oo = 0; oo < oc; oo++) {
    const grp = Math.floor(oo / ocg);
    for (let y = 0; y < ho; y++) for (let xx = 0; xx < wo; xx++) {
      let s = b ? b[oo]! : 0;
      for (let ci = 0; ci < icg; ci++) for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
        const iy = y * sh - ph + ky * dh;
        const ix = xx * sw - pw + kx * dw;
        if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
        s += x[idx(xs, b0, grp * icg + ci, iy, ix)]! * w[idx(ws, oo, ci, ky, kx)]!;
      }
      out[idx([n, oc, ho, wo], b0, oo, y, xx)] = s;
    }
  }
  return { data: out, shape: [n, oc, ho, wo] };
}

/**
 * Transposed convolution as the scatter of each input pixel: out[n, g·Cout/G + co, i·s − p + ky·d, j·s − p + kx·d]
 * += in[n, ci, i, j] · w[ci, co, ky, kx] (weight Cin × Cout/G × kH × kW); output size (H−1)s − 2p + d(k−1) + op + 1.
 */
export function refConvTranspose2d(x: number[], xs: [number, number, number, number], w: number[],
  ws: [number, number, number, number], b: number[] | null,
  o: RefConvOptions & { outputPadding?: [number, number] } = {}): { data: number[]; shape: [number, number, number, number] } {
  const [sh, sw] = o.stride ?? [1, 1];
  const [ph, pw] = o.padding ?? [0, 0];
  const [dh, dw] = o.dilation ?? [1, 1];
  const [oph, opw] = o.outputPadding ?? [0, 0];
  const g = o.groups ?? 1;
  const [n, c, h, wd] = xs;
  const [ic, ocg, kh, kw] = ws;
  if (ic !== c) throw new Error('refConvTranspose2d: channel mismatch');
  const icg = c / g;
  const oc = ocg * g;
  const ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1;
  const wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1;
  const out = new Array<number>(n * oc * ho * wo).fill(0);
  for (let b0 = 0; b0 < n; b0++) for (let oo = 0; oo < oc; oo++) for (let y = 0; y < ho; y++) for (let xx = 0; xx < wo; xx++) {
    out[idx([n, oc, ho, wo], b0, oo, y, xx)] = b ? b[oo]! : 0;
  }
  for (let b0 = 0; b0 < n; b0++) for (let ci = 0; ci < c; ci++) {
    const grp = Math.floor(ci / icg);
    for (let i = 0; i < h; i++) for (let j = 0; j < wd; j++) {
      const v = x[idx(xs, b0, ci, i, j)]!;
      for (let co = 0; co < ocg; co++) for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
        const y = i * sh - ph + ky * dh;
        const xx = j * sw - pw + kx * dw;
        if (y < 0 || y >= ho || xx < 0 || xx >= wo) continue;
        out[idx([n, oc, ho, wo], b0, grp * ocg + co, y, xx)]! += v * w[idx(ws, ci, co, ky, kx)]!;
      }
    }
  }
  return { data: out, shape: [n, oc, ho, wo] };
}

/** Keys' cubic convolution kernel with A = −0.75 (PyTorch's bicubic). */
export function cubicKernel(t: number, a = -0.75): number {
  const x = Math.abs(t);
  if (x <= 1) return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1;
  if (x < 2) return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a;
  return 0;
}

/**
 * Bicubic resize of one H×W plane: source coordinate (align corners: dst·(in−1)/(out−1); else (dst+0.5)·in/out − 0.5,
 * not clamped), taps floor(src)−1 … floor(src)+2 clamped to the border, weights cubicKernel(distance).
 * `scale` overrides in/out (the 1/scaleFactor of F.interpolate).
 */
export function refBicubic(x: number[], h: number, w: number, ho: number, wo: number, alignCorners: boolean,
  scale?: [number, number]): number[] {
  const src = (d: number, inn: number, out: number, s?: number): number => {
    if (alignCorners) return out > 1 ? (d * (inn - 1)) / (out - 1) : 0;
    return (d + 0.5) * (s ?? inn / out) - 0.5;
  };
  const out: number[] = [];
  for (let y = 0; y < ho; y++) {
    const sy = src(y, h, ho, scale?.[0]);
    const y0 = Math.floor(sy);
    for (let xx = 0; xx < wo; xx++) {
      const sx = src(xx, w, wo, scale?.[1]);
      const x0 = Math.floor(sx);
      let s = 0;
      for (let i = -1; i <= 2; i++) for (let j = -1; j <= 2; j++) {
        const iy = Math.min(Math.max(y0 + i, 0), h - 1);
        const ix = Math.min(Math.max(x0 + j, 0), w - 1);
        s += cubicKernel(sy - (y0 + i)) * cubicKernel(sx - (x0 + j)) * x[iy * w + ix]!;
      }
      out.push(s);
    }
  }
  return out;
}

/** Adaptive average pooling of one H×W plane with PyTorch's bins [floor(i·L/s), ceil((i+1)·L/s)). */
export function refAdaptiveAvg(x: number[], h: number, w: number, oh: number, ow: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < oh; i++) {
    const y0 = Math.floor((i * h) / oh);
    const y1 = Math.ceil(((i + 1) * h) / oh);
    for (let j = 0; j < ow; j++) {
      const x0 = Math.floor((j * w) / ow);
      const x1 = Math.ceil(((j + 1) * w) / ow);
      let s = 0;
      for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) s += x[y * w + xx]!;
      out.push(s / ((y1 - y0) * (x1 - x0)));
    }
  }
  return out;
}
