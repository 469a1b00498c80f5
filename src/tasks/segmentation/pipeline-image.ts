/**
 * Image operations of mmseg/mmcv's segmentation test pipeline, on plain typed arrays
 * (HWC, row-major, any channel count unless stated otherwise):
 *
 *   LoadImageFromFile → Resize(keep_ratio=True) [→ ResizeToMultiple] → RandomFlip → Normalize → ImageToTensor
 *
 * Resizing mirrors `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` as used by `mmcv.imresize`:
 * half-pixel centres (`src = (dst + 0.5) · in/out − 0.5`), clamp-to-edge, no antialiasing when
 * shrinking, coordinates computed in float32 like OpenCV.
 */

/** Typed arrays the image ops accept. */
export type PixelArray = Uint8Array | Float32Array;

function channelsOf(len: number, h: number, w: number, what: string): number {
  if (!Number.isInteger(h) || !Number.isInteger(w) || h <= 0 || w <= 0) {
    throw new RangeError(`${what}: invalid size ${w}x${h}`);
  }
  const c = len / (h * w);
  if (!Number.isInteger(c) || c < 1) {
    throw new RangeError(`${what}: ${len} values do not form a ${w}x${h} image with a whole number of channels`);
  }
  return c;
}

/** Python's `int(x + 0.5)` for the non-negative sizes mmcv rounds. */
function pyRoundSize(x: number): number {
  return Math.trunc(x + 0.5);
}

/**
 * The scale factor mmcv's `rescale_size` uses for `keep_ratio=True`.
 * For a pair, the larger entry bounds the long edge and the smaller one the short edge
 * (order does not matter): `min(maxLong / max(h, w), maxShort / min(h, w))`.
 * A number is used as the factor itself.
 *
 * @param w image width
 * @param h image height
 * @param scale `[long, short]` bounds (e.g. ADE20K's `(2048, 512)`) or a plain factor
 */
export function rescaleFactor(w: number, h: number, scale: number | readonly [number, number]): number {
  if (typeof scale === 'number') {
    if (!(scale > 0)) throw new RangeError(`rescale factor must be positive, got ${scale}`);
    return scale;
  }
  const maxLong = Math.max(scale[0], scale[1]);
  const maxShort = Math.min(scale[0], scale[1]);
  return Math.min(maxLong / Math.max(h, w), maxShort / Math.min(h, w));
}

/**
 * mmcv's `rescale_size((w, h), scale)` (keep_ratio=True): the output size after scaling by
 * {@link rescaleFactor}, each side rounded as `int(side * factor + 0.5)`.
 *
 * @param w image width
 * @param h image height
 * @param scale `[long, short]` bounds or a plain factor
 * @returns `[newW, newH]`
 */
export function rescaleSize(w: number, h: number, scale: number | readonly [number, number]): [number, number] {
  const f = rescaleFactor(w, h, scale);
  return [pyRoundSize(w * f), pyRoundSize(h * f)];
}

/**
 * mmseg's `ResizeToMultiple` / mmcv's `imresize_to_multiple(scale_factor=1)`: round each side up
 * to a multiple of `divisor`.
 *
 * @param w image width
 * @param h image height
 * @param divisor size divisor (e.g. 32), or `[divW, divH]`
 * @returns `[newW, newH]`
 */
export function sizeToMultiple(w: number, h: number, divisor: number | readonly [number, number]): [number, number] {
  const [dw, dh] = typeof divisor === 'number' ? [divisor, divisor] : divisor;
  return [Math.ceil(w / dw) * dw, Math.ceil(h / dh) * dh];
}

/** Per-output-position source indices and float32 weights for one axis. */
interface AxisCoeffs {
  i0: Int32Array;
  i1: Int32Array;
  w0: Float32Array | Float64Array;
  w1: Float32Array | Float64Array;
}

/**
 * OpenCV's INTER_LINEAR coefficients. `clampFraction` reproduces the x axis, where a sample left
 * of the first (or right of the last) pixel gets weights (1, 0); along y OpenCV keeps the
 * fractional weights and clips the row indices instead (same value up to rounding).
 * `float32` computes positions and weights in float32 as OpenCV does (needed for the bit-exact
 * 8-bit path); otherwise in double.
 */
function linearCoeffs(src: number, dst: number, clampFraction: boolean, float32: boolean): AxisCoeffs {
  const scale = 1 / (dst / src);
  const i0 = new Int32Array(dst);
  const i1 = new Int32Array(dst);
  const w0 = float32 ? new Float32Array(dst) : new Float64Array(dst);
  const w1 = float32 ? new Float32Array(dst) : new Float64Array(dst);
  const fr = float32 ? Math.fround : (x: number) => x;
  for (let d = 0; d < dst; d++) {
    let f = fr((d + 0.5) * scale - 0.5);
    let s = Math.floor(f);
    f = fr(f - s);
    if (clampFraction) {
      if (s < 0) {
        f = 0;
        s = 0;
      }
      if (s >= src - 1) {
        f = 0;
        s = src - 1;
      }
    }
    const a = s < 0 ? 0 : s > src - 1 ? src - 1 : s;
    const b = s + 1 < 0 ? 0 : s + 1 > src - 1 ? src - 1 : s + 1;
    i0[d] = a;
    i1[d] = b;
    w0[d] = fr(1 - f);
    w1[d] = f;
  }
  return { i0, i1, w0, w1 };
}

/**
 * Bilinear resize of an HWC image, as `cv2.resize(img, (newW, newH), interpolation=cv2.INTER_LINEAR)`
 * (half-pixel centres, clamp-to-edge, no antialiasing when shrinking), keeping the array type:
 *
 * - Uint8Array: bit-exact with OpenCV's 8-bit fixed-point arithmetic
 *   (delegates to {@link resizeBilinearHWCFixedPoint}; checked against opencv-python 4.14).
 * - Float32Array: {@link resizeBilinearHWCFloat} (exact bilinear values rounded once to float32;
 *   OpenCV's float path agrees to within a couple of float32 ulps).
 *
 * @param img H*W*C pixels (C inferred from the length)
 * @param h source height
 * @param w source width
 * @param newH output height
 * @param newW output width
 * @returns a new array of the same type, newH*newW*C
 */
export function resizeBilinearHWC(img: Uint8Array, h: number, w: number, newH: number, newW: number): Uint8Array;
export function resizeBilinearHWC(img: Float32Array, h: number, w: number, newH: number, newW: number): Float32Array;
export function resizeBilinearHWC(img: PixelArray, h: number, w: number, newH: number, newW: number): PixelArray;
export function resizeBilinearHWC(img: PixelArray, h: number, w: number, newH: number, newW: number): PixelArray {
  return img instanceof Uint8Array ? resizeBilinearHWCFixedPoint(img, h, w, newH, newW) : resizeBilinearHWCFloat(img, h, w, newH, newW);
}

/**
 * The floating-point version of OpenCV's `INTER_LINEAR` resize: the same sampling positions
 * (`src = (dst + 0.5) · in/out − 0.5`, x clamped with weights (1, 0) outside the image, y rows
 * clipped to the edge), computed in double precision and rounded once to float32. No rounding
 * to integers, so for 8-bit input it returns the ideal bilinear value; OpenCV's 8-bit path uses
 * 11-bit fixed-point weights and truncating shifts instead, so rounding the result of this
 * function differs from `cv2.resize` by ±1 on a fraction of pixels (around 10% for random
 * images; e.g. an exact x.5 comes out as x in OpenCV). For float32 input, OpenCV (IPP-dispatched
 * in the official wheels) agrees with this to within about 2 float32 ulps.
 *
 * @param img H*W*C pixels (bytes or floats; C inferred)
 * @param h source height
 * @param w source width
 * @param newH output height
 * @param newW output width
 * @returns Float32Array of newH*newW*C
 */
export function resizeBilinearHWCFloat(img: PixelArray, h: number, w: number, newH: number, newW: number): Float32Array {
  const c = channelsOf(img.length, h, w, 'resizeBilinearHWCFloat');
  channelsOf(newH * newW, newH, newW, 'resizeBilinearHWCFloat (output)');
  const out = new Float32Array(newH * newW * c);
  if (newH === h && newW === w) {
    out.set(img);
    return out;
  }
  const xs = linearCoeffs(w, newW, true, false);
  const ys = linearCoeffs(h, newH, false, false);
  const rowLen = newW * c;
  // Horizontally resized source rows; consecutive output rows usually share them.
  const cache = new Map<number, Float64Array>();
  const hrow = (sy: number): Float64Array => {
    let dst = cache.get(sy);
    if (dst !== undefined) return dst;
    dst = new Float64Array(rowLen);
    const base = sy * w * c;
    for (let dx = 0; dx < newW; dx++) {
      const o0 = base + xs.i0[dx]! * c;
      const o1 = base + xs.i1[dx]! * c;
      const a0 = xs.w0[dx]!;
      const a1 = xs.w1[dx]!;
      for (let k = 0; k < c; k++) dst[dx * c + k] = a1 === 0 ? img[o0 + k]! : img[o0 + k]! * a0 + img[o1 + k]! * a1;
    }
    if (cache.size >= 2) cache.delete(cache.keys().next().value as number);
    cache.set(sy, dst);
    return dst;
  };
  for (let dy = 0; dy < newH; dy++) {
    const r0 = hrow(ys.i0[dy]!);
    const r1 = hrow(ys.i1[dy]!);
    const b0 = ys.w0[dy]!;
    const b1 = ys.w1[dy]!;
    const o = dy * rowLen;
    for (let i = 0; i < rowLen; i++) out[o + i] = b1 === 0 ? r0[i]! : r0[i]! * b0 + r1[i]! * b1;
  }
  return out;
}

/**
 * Bit-exact emulation of OpenCV's 8-bit `INTER_LINEAR` resize (generic, non-IPP code path):
 * 11-bit fixed-point weights (`saturate_cast<short>(w · 2048)`), integer horizontal pass,
 * vertical pass `((b0·(S0>>4))>>16 + (b1·(S1>>4))>>16 + 2) >> 2`, and OpenCV's switch to the
 * 2×2 box-average (`INTER_AREA` fast path, `(a+b+c+d+2)>>2`) for an exact 2× shrink.
 *
 * @param img H*W*C bytes
 * @param h source height
 * @param w source width
 * @param newH output height
 * @param newW output width
 * @returns newH*newW*C bytes
 */
export function resizeBilinearHWCFixedPoint(img: Uint8Array, h: number, w: number, newH: number, newW: number): Uint8Array {
  return resizeBilinearHWCFixedPointRegion(img, h, w, newH, newW, 0, newH, 0, newW);
}

/** OpenCV's `cvRound` (round half to even) of a finite double. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && (r & 1) === 1 ? r - 1 : r;
}

/**
 * A rectangle of {@link resizeBilinearHWCFixedPoint}'s output, computed without the rest: rows
 * `[y0, y1)` and columns `[x0, x1)` of the `newH × newW` resize, byte for byte the same as cropping
 * the full result (every output pixel depends only on its own coordinates). The training pipeline
 * resizes only the random crop this way.
 *
 * @param img H*W*C bytes
 * @param h source height
 * @param w source width
 * @param newH full output height
 * @param newW full output width
 * @param y0 first output row
 * @param y1 end output row (exclusive)
 * @param x0 first output column
 * @param x1 end output column (exclusive)
 * @returns (y1−y0)*(x1−x0)*C bytes
 */
export function resizeBilinearHWCFixedPointRegion(
  img: Uint8Array,
  h: number,
  w: number,
  newH: number,
  newW: number,
  y0: number,
  y1: number,
  x0: number,
  x1: number,
): Uint8Array {
  const c = channelsOf(img.length, h, w, 'resizeBilinearHWCFixedPoint');
  channelsOf(newH * newW, newH, newW, 'resizeBilinearHWCFixedPoint (output)');
  if (!(Number.isInteger(y0) && Number.isInteger(y1) && Number.isInteger(x0) && Number.isInteger(x1) && 0 <= y0 && y0 <= y1 && y1 <= newH && 0 <= x0 && x0 <= x1 && x1 <= newW)) {
    throw new RangeError(`resizeBilinearHWCFixedPoint: region rows [${y0}, ${y1}) x cols [${x0}, ${x1}) is not inside ${newW}x${newH}`);
  }
  const oh = y1 - y0;
  const ow = x1 - x0;
  const out = new Uint8Array(oh * ow * c);
  const stride = w * c;
  const rowLen = ow * c;
  if (newH === h && newW === w) {
    for (let y = 0; y < oh; y++) out.set(img.subarray((y0 + y) * stride + x0 * c, (y0 + y) * stride + x1 * c), y * rowLen);
    return out;
  }
  const scaleX = 1 / (newW / w);
  const scaleY = 1 / (newH / h);
  if (scaleX === 2 && scaleY === 2) {
    // OpenCV switches INTER_LINEAR to its INTER_AREA fast path for an exact 2x shrink.
    let o = 0;
    for (let dy = y0; dy < y1; dy++) {
      const r0 = 2 * dy * stride;
      const r1 = r0 + stride;
      for (let dx = x0; dx < x1; dx++) {
        const s = 2 * dx * c;
        for (let k = 0; k < c; k++) {
          out[o++] = (img[r0 + s + k]! + img[r0 + s + c + k]! + img[r1 + s + k]! + img[r1 + s + c + k]! + 2) >> 2;
        }
      }
    }
    return out;
  }
  // Column taps/weights: x clamped with weights (2048, 0) outside the image.
  const xo0 = new Int32Array(ow);
  const xo1 = new Int32Array(ow);
  const a0 = new Int32Array(ow);
  const a1 = new Int32Array(ow);
  for (let j = 0; j < ow; j++) {
    let f = Math.fround((x0 + j + 0.5) * scaleX - 0.5);
    let s = Math.floor(f);
    f = Math.fround(f - s);
    if (s < 0) {
      s = 0;
      f = 0;
    }
    if (s >= w - 1) {
      s = w - 1;
      f = 0;
    }
    xo0[j] = s * c;
    xo1[j] = Math.min(s + 1, w - 1) * c;
    a0[j] = roundHalfEven(Math.fround(1 - f) * 2048);
    a1[j] = roundHalfEven(f * 2048);
  }
  // Horizontal passes of two source rows, reused while consecutive output rows share them.
  const slots = [new Int32Array(rowLen), new Int32Array(rowLen)];
  const slotRow = [-1, -1];
  const hpass = (sy: number, dst: Int32Array): void => {
    const base = sy * stride;
    if (c === 3) {
      for (let j = 0, o = 0; j < ow; j++, o += 3) {
        const p0 = base + xo0[j]!;
        const p1 = base + xo1[j]!;
        const wa = a0[j]!;
        const wb = a1[j]!;
        dst[o] = img[p0]! * wa + img[p1]! * wb;
        dst[o + 1] = img[p0 + 1]! * wa + img[p1 + 1]! * wb;
        dst[o + 2] = img[p0 + 2]! * wa + img[p1 + 2]! * wb;
      }
    } else {
      for (let j = 0, o = 0; j < ow; j++) {
        const p0 = base + xo0[j]!;
        const p1 = base + xo1[j]!;
        const wa = a0[j]!;
        const wb = a1[j]!;
        for (let k = 0; k < c; k++, o++) dst[o] = img[p0 + k]! * wa + img[p1 + k]! * wb;
      }
    }
  };
  const fetch = (sy: number, keep: number): Int32Array => {
    if (slotRow[0] === sy) return slots[0]!;
    if (slotRow[1] === sy) return slots[1]!;
    const k = slotRow[0] === keep ? 1 : 0;
    hpass(sy, slots[k]!);
    slotRow[k] = sy;
    return slots[k]!;
  };
  let o = 0;
  for (let dy = y0; dy < y1; dy++) {
    // Rows: weights are not reset at the borders; the row indices are clamped.
    const fy0 = Math.fround((dy + 0.5) * scaleY - 0.5);
    const sy = Math.floor(fy0);
    const fy = Math.fround(fy0 - sy);
    const b0 = roundHalfEven(Math.fround(1 - fy) * 2048);
    const b1 = roundHalfEven(fy * 2048);
    const r0 = sy < 0 ? 0 : sy > h - 1 ? h - 1 : sy;
    const r1 = sy + 1 < 0 ? 0 : sy + 1 > h - 1 ? h - 1 : sy + 1;
    const R0 = fetch(r0, r1);
    const R1 = fetch(r1, r0);
    for (let i = 0; i < rowLen; i++) {
      const v = (((b0 * (R0[i]! >> 4)) >> 16) + ((b1 * (R1[i]! >> 4)) >> 16) + 2) >> 2;
      out[o++] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

/**
 * Nearest-neighbour resize of an HWC array, as `cv2.resize(..., interpolation=cv2.INTER_NEAREST)`
 * (mmcv's `'nearest'`, used for label maps): source index `min(floor(d · (1 / (dst / src))), src − 1)`
 * per axis, in double precision like OpenCV (no half-pixel offset).
 *
 * @param img H*W*C values (C inferred; C = 1 for a label map)
 * @param h source height
 * @param w source width
 * @param newH output height
 * @param newW output width
 * @returns a new array of the same type, newH*newW*C
 */
export function resizeNearestHWC<T extends PixelArray>(img: T, h: number, w: number, newH: number, newW: number): T {
  const c = channelsOf(img.length, h, w, 'resizeNearestHWC');
  channelsOf(newH * newW, newH, newW, 'resizeNearestHWC (output)');
  const out = (img instanceof Float32Array ? new Float32Array(newH * newW * c) : new Uint8Array(newH * newW * c)) as T;
  const ifx = 1 / (newW / w);
  const ify = 1 / (newH / h);
  const xo = new Int32Array(newW);
  for (let dx = 0; dx < newW; dx++) xo[dx] = Math.min(Math.floor(dx * ifx), w - 1) * c;
  for (let dy = 0; dy < newH; dy++) {
    const sy = Math.min(Math.floor(dy * ify), h - 1);
    const srow = sy * w * c;
    let o = dy * newW * c;
    if (c === 1) {
      for (let dx = 0; dx < newW; dx++) out[o++] = img[srow + xo[dx]!]!;
    } else {
      for (let dx = 0; dx < newW; dx++) {
        const s = srow + xo[dx]!;
        for (let k = 0; k < c; k++) out[o++] = img[s + k]!;
      }
    }
  }
  return out;
}

/**
 * mmcv's `imnormalize` followed by `ImageToTensor`'s HWC→CHW transpose, for 3-channel RGB input
 * (as returned by `readImage`). `toRgb` has the meaning of mmseg's `img_norm_cfg.to_rgb`: mmcv
 * loads BGR and `to_rgb=True` turns it into RGB, so here `toRgb=true` keeps our RGB order and
 * `toRgb=false` produces BGR planes. `mean` and `std` are given in the *output* channel order, as
 * in mmseg configs. Arithmetic reproduces mmcv's `cv2.subtract` / `cv2.multiply` on float32
 * images bit for bit (checked against opencv-python 4.14): `out = f32(f32(x − f32(mean)) · (1 / f32(std)))`,
 * the reciprocal taken in double of the float32 std (mmseg's `Normalize` stores mean and std as float32
 * arrays; the unrounded std gives 1-ulp differences on 84 of the 768 byte values of the ImageNet
 * constants — checked against `../shared/fixtures/training` `normalize.lut_rgb_by_value`).
 *
 * @param img H*W*3 RGB pixels (bytes or floats)
 * @param h height
 * @param w width
 * @param mean per-channel mean, output order (e.g. [123.675, 116.28, 103.53])
 * @param std per-channel std, output order (e.g. [58.395, 57.12, 57.375])
 * @param toRgb mmseg's `to_rgb` flag (true for the usual ImageNet configs)
 * @returns Float32Array of shape 3×H×W
 */
export function normalizeToCHW(
  img: PixelArray,
  h: number,
  w: number,
  mean: readonly number[],
  std: readonly number[],
  toRgb: boolean,
): Float32Array {
  const c = channelsOf(img.length, h, w, 'normalizeToCHW');
  if (c !== 3) throw new RangeError(`normalizeToCHW: expected 3 channels, got ${c}`);
  if (mean.length !== 3 || std.length !== 3) throw new RangeError('normalizeToCHW: mean and std need 3 entries');
  const plane = h * w;
  const out = new Float32Array(3 * plane);
  for (let oc = 0; oc < 3; oc++) {
    const ic = toRgb ? oc : 2 - oc;
    const m = Math.fround(mean[oc]!);
    const s = Math.fround(std[oc]!); // mmseg: np.array(std, dtype=np.float32)
    if (!(s !== 0)) throw new RangeError(`normalizeToCHW: std[${oc}] must be non-zero`);
    const inv = 1 / s; // mmcv: 1 / np.float64(std); OpenCV multiplies the float32 difference by it, then rounds.
    const base = oc * plane;
    for (let p = 0; p < plane; p++) {
      out[base + p] = Math.fround(Math.fround(img[p * 3 + ic]! - m) * inv);
    }
  }
  return out;
}

/**
 * Mirror an HWC image left–right (mmcv `imflip(direction='horizontal')`).
 *
 * @param img H*W*C pixels (C inferred)
 * @param h height
 * @param w width
 * @returns a new array of the same type
 */
export function flipHorizontalHWC<T extends PixelArray>(img: T, h: number, w: number): T {
  const c = channelsOf(img.length, h, w, 'flipHorizontalHWC');
  const out = (img instanceof Float32Array ? new Float32Array(img.length) : new Uint8Array(img.length)) as T;
  for (let y = 0; y < h; y++) {
    const row = y * w * c;
    for (let x = 0; x < w; x++) {
      const src = row + x * c;
      const dst = row + (w - 1 - x) * c;
      for (let k = 0; k < c; k++) out[dst + k] = img[src + k]!;
    }
  }
  return out;
}

/**
 * mmcv's `imrescale(img, scale)` with bilinear interpolation (mmseg's `Resize(keep_ratio=True)`):
 * {@link rescaleSize} then {@link resizeBilinearHWC}.
 *
 * @param img H*W*C pixels
 * @param h height
 * @param w width
 * @param scale `[long, short]` bounds or a plain factor
 */
export function rescaleImageHWC<T extends PixelArray>(
  img: T,
  h: number,
  w: number,
  scale: number | readonly [number, number],
): { data: T; height: number; width: number; scaleFactor: number } {
  const [nw, nh] = rescaleSize(w, h, scale);
  const data = resizeBilinearHWC(img, h, w, nh, nw) as T;
  return { data, height: nh, width: nw, scaleFactor: rescaleFactor(w, h, scale) };
}
