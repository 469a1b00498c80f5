/**
 * OpenCV-exact 8-bit colour conversions between BGR (or RGB) and HSV, as `cv2.cvtColor(img,
 * COLOR_BGR2HSV)` / `COLOR_HSV2BGR` compute them for `uint8` images (hue in 0..179), which mmcv's
 * `bgr2hsv` / `hsv2bgr` call inside mmseg's PhotoMetricDistortion. See
 * `../shared/fixtures/training/README.md` ("OpenCV details") for the arithmetic reproduced here.
 *
 * Images are HWC, 3 channels, row-major Uint8Array. The `order` argument says where blue is:
 * `'bgr'` (OpenCV's layout, the fixtures') or `'rgb'` (our image reader's); the HSV side is always
 * H, S, V. Converting an RGB image with `order: 'rgb'` gives exactly what OpenCV gives for the same
 * pixels stored as BGR.
 *
 * HSV→BGR is not the same arithmetic for every pixel in OpenCV: per image row, the first
 * `block · floor(W / block)` pixels go through its SIMD code (truncation, fused multiply-adds) and
 * the rest through its scalar code (rounding). `block` is 32 for the AVX2 build the fixtures were
 * made with (16 on an SSE-only CPU); {@link HSV2BGR_VECTOR_BLOCK}.
 */

/** Channel order of a 3-channel 8-bit image. */
export type ChannelOrder = 'bgr' | 'rgb';

/** Pixels per SIMD block of OpenCV's uint8 HSV→BGR on AVX2 (4 × 8 float lanes). */
export const HSV2BGR_VECTOR_BLOCK = 32;

const HSV_SHIFT = 12;

/** Round half to even of a finite double (OpenCV's cvRound). */
function rne(x: number): number {
  const r = Math.round(x); // half up
  return r - x === 0.5 && (r & 1) === 1 ? r - 1 : r;
}

/** `SDIV[i] = rne(255·4096 / i)`, `HDIV[i] = rne(180·4096 / (6·i))`, both 0 at i = 0. */
const SDIV = new Int32Array(256);
const HDIV = new Int32Array(256);
for (let i = 1; i < 256; i++) {
  SDIV[i] = rne((255 << HSV_SHIFT) / i);
  HDIV[i] = rne((180 << HSV_SHIFT) / (6 * i));
}

function check3(img: Uint8Array, h: number, w: number, what: string): void {
  if (!Number.isInteger(h) || !Number.isInteger(w) || h <= 0 || w <= 0) {
    throw new RangeError(`${what}: invalid size ${w}x${h}`);
  }
  if (img.length !== h * w * 3) {
    throw new RangeError(`${what}: expected ${h}x${w}x3 = ${h * w * 3} bytes, got ${img.length}`);
  }
}

/**
 * BGR (or RGB) → HSV, uint8, OpenCV's integer arithmetic (exact for all 2^24 colours):
 * `v = max`, `s = (diff·SDIV[v] + 2048) >> 12`, hue from the max channel scaled by `HDIV[diff]`,
 * `+180` if negative. Output is H, S, V per pixel with H in 0..179.
 *
 * @param img H×W×3 bytes
 * @param h rows
 * @param w columns
 * @param order where blue is in `img` (default 'bgr')
 * @param out optional destination (may be `img` itself); a new array otherwise
 * @returns the HSV bytes
 */
export function bgrToHsv(img: Uint8Array, h: number, w: number, order: ChannelOrder = 'bgr', out?: Uint8Array): Uint8Array {
  check3(img, h, w, 'bgrToHsv');
  const dst = out ?? new Uint8Array(img.length);
  if (dst.length !== img.length) throw new RangeError(`bgrToHsv: output has ${dst.length} bytes, expected ${img.length}`);
  const bi = order === 'bgr' ? 0 : 2;
  const ri = 2 - bi;
  const n = img.length;
  for (let i = 0; i < n; i += 3) {
    const b = img[i + bi]!;
    const g = img[i + 1]!;
    const r = img[i + ri]!;
    let v = b > g ? b : g;
    if (r > v) v = r;
    let mn = b < g ? b : g;
    if (r < mn) mn = r;
    const diff = v - mn;
    const s = (diff * SDIV[v]! + 2048) >> HSV_SHIFT;
    let hh: number;
    if (v === r) hh = g - b;
    else if (v === g) hh = b - r + 2 * diff;
    else hh = r - g + 4 * diff;
    hh = (hh * HDIV[diff]! + 2048) >> HSV_SHIFT;
    if (hh < 0) hh += 180;
    dst[i] = hh;
    dst[i + 1] = s;
    dst[i + 2] = v;
  }
  return dst;
}

/**
 * `float32(1 − a·b)` rounded once (a fused multiply-add `fma(−a, b, 1)` in float32), for float32
 * `a, b` with `|a·b| ≤ 1`. The product is exact in double; the difference is computed with its exact
 * error term, and the one case where rounding that double to float32 could differ from rounding the
 * exact value (the double lands exactly on a float32 midpoint) is resolved with the error's sign.
 */
function fmaOneMinus(a: number, b: number): number {
  const p = a * b; // exact: 24 + 24 bits
  const r = 1 - p;
  const e = 1 - r - p; // Fast2Sum error (|1| ≥ |p|): exact value = r + e
  const f = Math.fround(r);
  if (e === 0 || f === r) return f;
  const d = r - f; // exact
  const g = f + 2 * d;
  if (Math.fround(g) !== g) return f; // r is not a midpoint: f is correctly rounded
  return e * d > 0 ? g : f; // midpoint: the exact value lies on the side of e
}

const SECTOR_TABLE = [1, 3, 0, 1, 0, 2, 3, 0, 1, 0, 2, 1, 0, 1, 3, 2, 1, 0];
const F_INV255 = Math.fround(1 / 255);
const F_HSCALE = Math.fround(6 / 180);

/**
 * Tables for the vector path, indexed by byte values (built on first use, ~0.6 MB):
 * `s`, `v`, `1 − s`, `trunc(255·v)`, the sector of each hue and, per (H, S), the fused
 * `1 − s·h` and `1 − s·(1 − h)` (float32 values).
 */
interface VectorTables {
  v: Float32Array;
  oneMinusS: Float32Array;
  vOut: Uint8Array;
  sector: Uint8Array;
  a: Float32Array;
  b: Float32Array;
}
let vectorTables: VectorTables | null = null;
function getVectorTables(): VectorTables {
  if (vectorTables !== null) return vectorTables;
  const fr = Math.fround;
  const v = new Float32Array(256);
  const oneMinusS = new Float32Array(256);
  const vOut = new Uint8Array(256);
  const sector = new Uint8Array(256);
  const a = new Float32Array(256 * 256);
  const b = new Float32Array(256 * 256);
  const sf = new Float64Array(256);
  for (let i = 0; i < 256; i++) {
    sf[i] = fr(i * F_INV255);
    v[i] = sf[i]!;
    oneMinusS[i] = fr(1 - sf[i]!);
    vOut[i] = Math.trunc(fr(sf[i]! * 255));
  }
  for (let H = 0; H < 256; H++) {
    const hh = fr(H * F_HSCALE);
    const pre = Math.trunc(hh);
    const hf = fr(hh - pre);
    sector[H] = pre - Math.trunc(pre / 6) * 6;
    const omh = fr(1 - hf);
    for (let S = 0; S < 256; S++) {
      a[(H << 8) | S] = fmaOneMinus(sf[S]!, hf);
      b[(H << 8) | S] = fmaOneMinus(sf[S]!, omh);
    }
  }
  return (vectorTables = { v, oneMinusS, vOut, sector, a, b });
}

/**
 * HSV → BGR (or RGB), uint8, as OpenCV 4.6 (AVX2 build) computes it: per row, the first
 * `block · floor(W / block)` pixels with the vector arithmetic (`sector = trunc(hh)`, fused
 * `1 − s·h` and `1 − s·(1 − h)`, output `trunc(255·x)`), the remaining pixels with the scalar
 * arithmetic (`fmod(hh, 6)`, `floor`, fused `1 − s·h` but unfused `1 − s·(1 − h)`, output
 * `rne(255·x)`, `s = 0` → grey). All intermediates are float32.
 *
 * @param hsv H×W×3 bytes (H, S, V)
 * @param h rows
 * @param w columns
 * @param order where blue goes in the output (default 'bgr')
 * @param out optional destination (may be `hsv` itself); a new array otherwise
 * @param block SIMD block width in pixels ({@link HSV2BGR_VECTOR_BLOCK}; 16 emulates an SSE build,
 *   1 makes every pixel take the vector path, a value above W makes every pixel scalar)
 * @returns the colour bytes
 */
export function hsvToBgr(
  hsv: Uint8Array,
  h: number,
  w: number,
  order: ChannelOrder = 'bgr',
  out?: Uint8Array,
  block: number = HSV2BGR_VECTOR_BLOCK,
): Uint8Array {
  check3(hsv, h, w, 'hsvToBgr');
  if (!Number.isInteger(block) || block < 1) throw new RangeError(`hsvToBgr: block must be a positive integer, got ${block}`);
  const dst = out ?? new Uint8Array(hsv.length);
  if (dst.length !== hsv.length) throw new RangeError(`hsvToBgr: output has ${dst.length} bytes, expected ${hsv.length}`);
  const bi = order === 'bgr' ? 0 : 2;
  const ri = 2 - bi;
  const nVec = block * Math.floor(w / block);
  const fr = Math.fround;
  const tab = [0, 0, 0, 0];
  const T = getVectorTables();
  for (let y = 0; y < h; y++) {
    const row = y * w * 3;
    for (let x = 0; x < w; x++) {
      const i = row + x * 3;
      let b: number;
      let g: number;
      let r: number;
      if (x < nVec) {
        // Vector path (tables hold exactly the float32 values the per-pixel code would compute).
        const H = hsv[i]!;
        const S = hsv[i + 1]!;
        const V = hsv[i + 2]!;
        const vv = T.v[V]!;
        const k = (H << 8) | S;
        const t0 = T.vOut[V]!;
        const t1 = Math.trunc(fr(fr(vv * T.oneMinusS[S]!) * 255));
        const t2 = Math.trunc(fr(fr(vv * T.a[k]!) * 255));
        const t3 = Math.trunc(fr(fr(vv * T.b[k]!) * 255));
        switch (T.sector[H]) {
          case 0: b = t1; g = t3; r = t0; break;
          case 1: b = t1; g = t0; r = t2; break;
          case 2: b = t3; g = t0; r = t1; break;
          case 3: b = t0; g = t2; r = t1; break;
          case 4: b = t0; g = t1; r = t3; break;
          default: b = t2; g = t1; r = t0; break;
        }
      } else if (hsv[i + 1] === 0) {
        b = g = r = rne(fr(fr(hsv[i + 2]! * F_INV255) * 255));
      } else {
        const s = fr(hsv[i + 1]! * F_INV255);
        const v = fr(hsv[i + 2]! * F_INV255);
        const hh = fr(hsv[i]! * F_HSCALE) % 6; // fmod (hh ≥ 0)
        let sector = Math.floor(hh);
        let hf = fr(hh - sector);
        if (sector < 0 || sector >= 6) {
          sector = 0;
          hf = 0;
        }
        tab[0] = v;
        tab[1] = fr(v * fr(1 - s));
        tab[2] = fr(v * fmaOneMinus(s, hf));
        tab[3] = fr(v * fr(1 - fr(s * fr(1 - hf))));
        const k = sector * 3;
        b = rne(fr(tab[SECTOR_TABLE[k]!]! * 255));
        g = rne(fr(tab[SECTOR_TABLE[k + 1]!]! * 255));
        r = rne(fr(tab[SECTOR_TABLE[k + 2]!]! * 255));
      }
      dst[i + bi] = b < 0 ? 0 : b > 255 ? 255 : b;
      dst[i + 1] = g < 0 ? 0 : g > 255 ? 255 : g;
      dst[i + ri] = r < 0 ? 0 : r > 255 ? 255 : r;
    }
  }
  return dst;
}
