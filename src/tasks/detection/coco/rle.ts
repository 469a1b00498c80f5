/**
 * The COCO run-length-encoded (RLE) mask API with the semantics of pycocotools' `mask` module (`maskApi.c`):
 * encode / decode, area, bounding box, polygon rasterisation, merge (union / intersection), and IoU of masks and boxes.
 *
 * Conventions (as pycocotools):
 * - `size` is `[height, width]`; run lengths count pixels in column-major (Fortran) order: down the first column
 *   (x = 0, y = 0..h-1), then the next one. Runs alternate 0s and 1s and start with a (possibly empty) run of 0s.
 * - `counts` is either a list of run lengths (uncompressed) or the compressed string: each count as 6-bit groups, least
 *   significant first, written as the character `48 + group` (5 data bits, `0x20` = more groups follow, the last
 *   group's `0x10` is the sign); from the 4th count on the stored value is `counts[i] - counts[i-2]`.
 * - Masks handed to or returned by this module's public functions are ROW-MAJOR 0/1 arrays (pixel (x, y) at
 *   `y * w + x`), the natural layout of images in this project; only the runs are column-major.
 *
 * Internally the evaluation works on {@link RleData} (`h`, `w` and the run lengths as a `Uint32Array`) to avoid
 * re-parsing strings; the `*Data` functions are the fast paths behind the public ones.
 */

/** A COCO RLE: `size` = [h, w]; `counts` compressed (string) or uncompressed (run lengths). */
export interface RLE {
  size: [number, number];
  counts: string | number[];
}

/** Decoded run lengths of one mask (the C struct `RLE` of `maskApi.c`). */
export interface RleData {
  h: number;
  w: number;
  cnts: Uint32Array;
}

const UINT_MOD = 4294967296;

/** Error for malformed RLE / polygon input (what was wrong and what was expected). */
export class RleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RleError';
  }
}

function checkSize(size: unknown, what: string): [number, number] {
  if (!Array.isArray(size) || size.length !== 2 || !size.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= 0)) {
    throw new RleError(`${what}: size must be [height, width] (two non-negative integers), got ${JSON.stringify(size)}`);
  }
  return [size[0] as number, size[1] as number];
}

// ---- compressed string codec ---------------------------------------------------------------------------------

/**
 * Decodes a compressed counts string (`rleFrString`). Throws on characters outside '0'..'o', on a string that ends
 * in the middle of a value, and on a negative run length (which pycocotools would wrap to a huge unsigned count).
 */
export function countsFromString(s: string, what = 'RLE counts'): Uint32Array {
  const n = s.length;
  const out = new Uint32Array(n);
  let m = 0;
  let p = 0;
  while (p < n) {
    let x = 0;
    let k = 0;
    let more = true;
    let scale = 1;
    while (more) {
      if (p >= n) throw new RleError(`${what}: compressed string ends inside a value (last character has the 0x20 "more" bit)`);
      const code = s.charCodeAt(p);
      if (code < 48 || code > 111) {
        throw new RleError(`${what}: invalid character ${JSON.stringify(s[p])} at ${p} in a compressed RLE string (expected '0'..'o')`);
      }
      const c = code - 48;
      x += (c & 0x1f) * scale;
      more = (c & 0x20) !== 0;
      p++;
      k++;
      scale *= 32;
      if (!more && (c & 0x10)) x -= scale;
    }
    if (m > 2) x += out[m - 2]!;
    if (x < 0 || x >= UINT_MOD) throw new RleError(`${what}: run ${m} decodes to ${x} (expected 0..2^32-1)`);
    out[m++] = x;
  }
  return out.slice(0, m);
}

/** Encodes run lengths as the compressed counts string (`rleToString`). */
export function countsToString(cnts: ArrayLike<number>): string {
  const m = cnts.length;
  const codes: number[] = [];
  for (let i = 0; i < m; i++) {
    let x = cnts[i]!;
    if (i > 2) x -= cnts[i - 2]!;
    let more = true;
    while (more) {
      let c = x - Math.floor(x / 32) * 32; // x & 0x1f for any sign
      x = Math.floor(x / 32); // arithmetic shift right by 5
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      codes.push(c + 48);
    }
  }
  let s = '';
  for (let i = 0; i < codes.length; i += 4096) s += String.fromCharCode(...codes.slice(i, i + 4096));
  return s;
}

// ---- conversions ---------------------------------------------------------------------------------------------

/**
 * The run lengths of an RLE (compressed or uncompressed) with its size, validated: counts must be non-negative
 * integers below 2^32 and, when `checkTotal` is set, sum to h*w.
 */
export function rleToData(rle: RLE, what = 'RLE', checkTotal = false): RleData {
  if (rle === null || typeof rle !== 'object') throw new RleError(`${what}: expected {size: [h, w], counts}, got ${JSON.stringify(rle)}`);
  const [h, w] = checkSize((rle as { size?: unknown }).size, what);
  const counts = (rle as { counts?: unknown }).counts;
  let cnts: Uint32Array;
  if (typeof counts === 'string') cnts = countsFromString(counts, what);
  else if (Array.isArray(counts)) {
    cnts = new Uint32Array(counts.length);
    for (let i = 0; i < counts.length; i++) {
      const v = counts[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= UINT_MOD) {
        throw new RleError(`${what}: counts[${i}] = ${JSON.stringify(v)} (expected a non-negative integer run length)`);
      }
      cnts[i] = v;
    }
  } else throw new RleError(`${what}: counts must be a string (compressed) or a list of run lengths, got ${JSON.stringify(counts)}`);
  if (checkTotal) {
    let total = 0;
    for (let i = 0; i < cnts.length; i++) total += cnts[i]!;
    if (total !== h * w) throw new RleError(`${what}: run lengths sum to ${total}, expected height*width = ${h}*${w} = ${h * w}`);
  }
  return { h, w, cnts };
}

/** The compressed RLE of run lengths. */
export function dataToRle(d: RleData): RLE {
  return { size: [d.h, d.w], counts: countsToString(d.cnts) };
}

/** Converts an uncompressed RLE to its compressed form (`frPyObjects` of an uncompressed RLE; uses its own size). */
export function compressRle(rle: RLE): RLE {
  return dataToRle(rleToData(rle));
}

// ---- encode / decode / area / bbox ---------------------------------------------------------------------------

let scratch = new Uint32Array(1024);

/** Run lengths of a row-major 0/1 mask (`rleEncode`, column-major runs). Values other than 0 and 1 are an error. */
export function encodeMaskData(mask: ArrayLike<number>, h: number, w: number): RleData {
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 0 || w < 0) throw new RleError(`encodeMask: bad size ${h}x${w}`);
  const a = h * w;
  if (mask.length !== a) throw new RleError(`encodeMask: mask has ${mask.length} values, expected h*w = ${h}*${w} = ${a}`);
  if (scratch.length < a + 1) scratch = new Uint32Array(a + 1);
  const cnts = scratch;
  let k = 0;
  let p = 0;
  let c = 0;
  for (let x = 0; x < w; x++) {
    for (let i = x; i < a; i += w) {
      const v = mask[i]!;
      if (v !== p) {
        if (v !== 0 && v !== 1) throw new RleError(`encodeMask: value ${v} at index ${i} (expected a 0/1 mask)`);
        cnts[k++] = c;
        c = 0;
        p = v;
      }
      c++;
    }
  }
  cnts[k++] = c;
  return { h, w, cnts: cnts.slice(0, k) };
}

/**
 * Encodes a ROW-MAJOR 0/1 mask (pixel (x, y) at `y * w + x`) as a compressed RLE (pycocotools `encode`).
 * @throws RleError when the length is not h*w or a value is neither 0 nor 1.
 */
export function encodeMask(mask: Uint8Array, h: number, w: number): RLE {
  return dataToRle(encodeMaskData(mask, h, w));
}

/**
 * Decodes an RLE (compressed or uncompressed) to a ROW-MAJOR 0/1 mask of length h*w (pycocotools `decode`).
 * @throws RleError when the runs do not sum to h*w.
 */
export function decodeMask(rle: RLE): Uint8Array {
  const d = rleToData(rle, 'decodeMask', true);
  return decodeMaskData(d);
}

/** Row-major 0/1 mask of run lengths that sum to h*w. */
export function decodeMaskData(d: RleData): Uint8Array {
  const { h, w, cnts } = d;
  const out = new Uint8Array(h * w);
  let pos = 0; // column-major position
  for (let j = 0; j < cnts.length; j++) {
    const c = cnts[j]!;
    if (j & 1) {
      for (let q = pos; q < pos + c; q++) {
        const x = Math.floor(q / h);
        out[(q - x * h) * w + x] = 1;
      }
    }
    pos += c;
  }
  return out;
}

/** Foreground pixel count of run lengths (`rleArea`: the sum of the odd runs). */
export function areaOfData(d: RleData): number {
  let a = 0;
  const c = d.cnts;
  for (let j = 1; j < c.length; j += 2) a += c[j]!;
  return a;
}

/** Number of foreground pixels of an RLE (pycocotools `area`). */
export function rleArea(rle: RLE): number {
  return areaOfData(rleToData(rle, 'rleArea'));
}

/**
 * Bounding box `[x, y, w, h]` of run lengths, as current pycocotools' `rleToBbox` (zero-length foreground runs add
 * nothing; a trailing background run is ignored; unsigned arithmetic as the C code).
 */
export function bboxOfData(d: RleData, out: Float64Array | number[] = new Array<number>(4), o = 0): Float64Array | number[] {
  const h = d.h;
  const w = d.w;
  const cn = d.cnts;
  const m = Math.floor(cn.length / 2) * 2;
  if (m === 0) {
    out[o] = out[o + 1] = out[o + 2] = out[o + 3] = 0;
    return out;
  }
  let xs = w;
  let ys = h;
  let xe = 0;
  let ye = 0;
  let cc = 0;
  for (let j = 0; j < m; j++) {
    const start = cc;
    cc = (cc + cn[j]!) % UINT_MOD;
    if (j % 2 === 0) continue;
    if (cn[j] === 0) continue;
    const yStart = start % h;
    const xStart = (start - yStart) / h;
    const last = (cc - 1 + UINT_MOD) % UINT_MOD;
    const yEnd = last % h;
    const xEnd = (last - yEnd) / h;
    if (xStart < xs) xs = xStart;
    if (xEnd > xe) xe = xEnd;
    if (xStart < xEnd) {
      ys = 0;
      ye = h - 1;
    } else {
      if (yStart < ys) ys = yStart;
      if (yEnd > ye) ye = yEnd;
    }
  }
  out[o] = xs;
  out[o + 1] = ys;
  out[o + 2] = (xe - xs + 1 + UINT_MOD) % UINT_MOD;
  out[o + 3] = (ye - ys + 1 + UINT_MOD) % UINT_MOD;
  return out;
}

/** Bounding box `[x, y, w, h]` of an RLE's foreground (pycocotools `toBbox`). */
export function rleToBbox(rle: RLE): [number, number, number, number] {
  return bboxOfData(rleToData(rle, 'rleToBbox')) as [number, number, number, number];
}

// ---- polygons and boxes --------------------------------------------------------------------------------------

/**
 * Rasterises one polygon `[x0, y0, x1, y1, ...]` (`rleFrPoly`, ported line by line): the vertices are upsampled by 5
 * and rounded with `(int)(5*v + .5)`, the edges walked densely, one boundary point kept per column step, and the runs
 * built from the sorted boundary points. An odd trailing coordinate is ignored (as pycocotools' `len(p)/2`).
 */
export function frPolyData(xy: ArrayLike<number>, h: number, w: number): RleData {
  const k = Math.floor(xy.length / 2);
  const scale = 5;
  const x = new Int32Array(k + 1);
  const y = new Int32Array(k + 1);
  for (let j = 0; j < k; j++) x[j] = Math.trunc(scale * xy[j * 2]! + 0.5);
  x[k] = x[0]!;
  for (let j = 0; j < k; j++) y[j] = Math.trunc(scale * xy[j * 2 + 1]! + 0.5);
  y[k] = y[0]!;
  let m = 0;
  for (let j = 0; j < k; j++) m += Math.max(Math.abs(x[j]! - x[j + 1]!), Math.abs(y[j]! - y[j + 1]!)) + 1;
  const u = new Int32Array(m);
  const v = new Int32Array(m);
  m = 0;
  for (let j = 0; j < k; j++) {
    let xs = x[j]!;
    let xe = x[j + 1]!;
    let ys = y[j]!;
    let ye = y[j + 1]!;
    const dx = Math.abs(xe - xs);
    const dy = Math.abs(ys - ye);
    const flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      let t = xs;
      xs = xe;
      xe = t;
      t = ys;
      ys = ye;
      ye = t;
    }
    const s = dx >= dy ? (ye - ys) / dx : (xe - xs) / dy;
    if (dx >= dy) {
      for (let d = 0; d <= dx; d++) {
        const t = flip ? dx - d : d;
        u[m] = t + xs;
        v[m] = Math.trunc(ys + s * t + 0.5); // NaN (0/0 for a repeated vertex) is never read back, see README
        m++;
      }
    } else {
      for (let d = 0; d <= dy; d++) {
        const t = flip ? dy - d : d;
        v[m] = t + ys;
        u[m] = Math.trunc(xs + s * t + 0.5);
        m++;
      }
    }
  }
  // points along the y-boundary, downsampled
  const kk = m;
  m = 0;
  const bx = new Int32Array(kk);
  const by = new Int32Array(kk);
  const wMax = w === 0 ? 18446744073709552000 : w - 1; // size_t arithmetic: w-1 wraps for w = 0
  for (let j = 1; j < kk; j++) {
    if (u[j] !== u[j - 1]) {
      let xd = u[j]! < u[j - 1]! ? u[j]! : u[j]! - 1;
      xd = (xd + 0.5) / scale - 0.5;
      if (Math.floor(xd) !== xd || xd < 0 || xd > wMax) continue;
      let yd = v[j]! < v[j - 1]! ? v[j]! : v[j - 1]!;
      yd = (yd + 0.5) / scale - 0.5;
      if (yd < 0) yd = 0;
      else if (yd > h) yd = h;
      yd = Math.ceil(yd);
      bx[m] = xd;
      by[m] = yd;
      m++;
    }
  }
  // runs from the boundary points
  const a = new Uint32Array(m + 1);
  for (let j = 0; j < m; j++) a[j] = (bx[j]! * h + by[j]!) >>> 0;
  a[m] = (h * w) >>> 0;
  const n = m + 1;
  a.sort();
  let prev = 0;
  for (let j = 0; j < n; j++) {
    const t = a[j]!;
    a[j] = t - prev;
    prev = t;
  }
  const b = new Uint32Array(n);
  let j = 0;
  let mb = 0;
  b[mb++] = a[j++]!;
  while (j < n) {
    if (a[j]! > 0) b[mb++] = a[j++]!;
    else {
      // an empty run: the run after it continues the previous one
      j++;
      if (j < n) b[mb - 1] += a[j++]!;
    }
  }
  return { h, w, cnts: b.slice(0, mb) };
}

function checkPolygon(p: unknown, what: string): number[] {
  if (!Array.isArray(p) || !p.every((v) => typeof v === 'number' && Number.isFinite(v))) {
    throw new RleError(`${what}: a polygon must be a flat list of finite numbers [x0, y0, x1, y1, ...], got ${JSON.stringify(p)?.slice(0, 200)}`);
  }
  return p as number[];
}

/** Rasterises one polygon `[x0, y0, x1, y1, ...]` in an h×w image to a compressed RLE (pycocotools `frPoly`). */
export function frPoly(polygon: number[], h: number, w: number): RLE {
  return dataToRle(frPolyData(checkPolygon(polygon, 'frPoly'), h, w));
}

/**
 * Rasterises a box `[x, y, w, h]` as the polygon of its corners (`rleFrBbox`, i.e. `frPyObjects` of an Nx4 array).
 */
export function frBboxData(bb: ArrayLike<number>, h: number, w: number): RleData {
  const xs = bb[0]!;
  const xe = xs + bb[2]!;
  const ys = bb[1]!;
  const ye = ys + bb[3]!;
  return frPolyData([xs, ys, xs, ye, xe, ye, xe, ys], h, w);
}

/** Compressed RLE of a box `[x, y, w, h]` rasterised as its corner polygon (pycocotools `frBbox`). */
export function frBbox(bbox: number[], h: number, w: number): RLE {
  if (bbox.length !== 4) throw new RleError(`frBbox: expected [x, y, w, h], got ${JSON.stringify(bbox)}`);
  return dataToRle(frBboxData(checkPolygon(bbox, 'frBbox'), h, w));
}

/** The union of the rasterised parts of a multi-part polygon (`annToRLE`: `merge(frPyObjects(polygons, h, w))`). */
export function polygonsToRleData(polygons: readonly (readonly number[])[], h: number, w: number): RleData {
  if (polygons.length === 0) throw new RleError('polygonsToRle: empty polygon list (pycocotools cannot rasterise it either)');
  const parts = polygons.map((p, i) => frPolyData(checkPolygon(p, `polygon part ${i}`), h, w));
  return mergeData(parts, false);
}

/** Rasterises a multi-part polygon (list of flat `[x0, y0, ...]` parts) and merges the parts (union), as `annToRLE`. */
export function polygonsToRle(polygons: number[][], h: number, w: number): RLE {
  return dataToRle(polygonsToRleData(polygons, h, w));
}

// ---- merge ---------------------------------------------------------------------------------------------------

/** Union (or intersection) of run lengths (`rleMerge`); RLEs of different sizes give an empty [0, 0] result. */
export function mergeData(R: readonly RleData[], intersect = false): RleData {
  const n = R.length;
  if (n === 0) return { h: 0, w: 0, cnts: new Uint32Array(0) };
  let h = R[0]!.h;
  let w = R[0]!.w;
  if (n === 1) return { h, w, cnts: R[0]!.cnts.slice() };
  let cnts: number[] = Array.from(R[0]!.cnts);
  for (let i = 1; i < n; i++) {
    const B = R[i]!;
    if (B.h !== h || B.w !== w) {
      h = w = 0;
      cnts = [];
      break;
    }
    const A = cnts;
    const out: number[] = [];
    let ca = A.length ? A[0]! : 0;
    let cb = B.cnts.length ? B.cnts[0]! : 0;
    let v = 0;
    let va = 0;
    let vb = 0;
    let a = 1;
    let b = 1;
    let cc = 0;
    let ct = 1;
    while (ct > 0) {
      const c = Math.min(ca, cb);
      cc += c;
      ct = 0;
      ca -= c;
      if (!ca && a < A.length) {
        ca = A[a++]!;
        va = va ? 0 : 1;
      }
      ct += ca;
      cb -= c;
      if (!cb && b < B.cnts.length) {
        cb = B.cnts[b++]!;
        vb = vb ? 0 : 1;
      }
      ct += cb;
      const vp = v;
      v = intersect ? (va && vb ? 1 : 0) : va || vb ? 1 : 0;
      if (v !== vp || ct === 0) {
        out.push(cc);
        cc = 0;
      }
    }
    cnts = out;
  }
  return { h, w, cnts: Uint32Array.from(cnts) };
}

/** Union (or, with `intersect`, intersection) of RLEs (pycocotools `merge`); the result is compressed. */
export function mergeRles(rles: RLE[], intersect = false): RLE {
  return dataToRle(mergeData(rles.map((r, i) => rleToData(r, `mergeRles: rle ${i}`)), intersect));
}

// ---- IoU -----------------------------------------------------------------------------------------------------

/**
 * Box IoU as `bbIou` of maskApi.c, written into `o[d * n + g]` for boxes stored flat (`[x, y, w, h]` per box):
 * `w = min(dx+dw, gx+gw) - max(dx, gx)` (0 if <= 0), the same for h, `i = w*h`, `u = da + ga - i` (`da` for a crowd GT).
 */
export function bboxIouFlat(dt: ArrayLike<number>, m: number, gt: ArrayLike<number>, n: number, iscrowd: ArrayLike<number | boolean> | null, o: Float64Array): void {
  for (let g = 0; g < n; g++) {
    const gx = gt[g * 4]!;
    const gy = gt[g * 4 + 1]!;
    const gw = gt[g * 4 + 2]!;
    const gh = gt[g * 4 + 3]!;
    const ga = gw * gh;
    const crowd = iscrowd !== null && Boolean(iscrowd[g]);
    for (let d = 0; d < m; d++) {
      const dx = dt[d * 4]!;
      const dy = dt[d * 4 + 1]!;
      const dw = dt[d * 4 + 2]!;
      const dh = dt[d * 4 + 3]!;
      const da = dw * dh;
      o[d * n + g] = 0;
      const iw = Math.min(dw + dx, gw + gx) - Math.max(dx, gx);
      if (iw <= 0) continue;
      const ih = Math.min(dh + dy, gh + gy) - Math.max(dy, gy);
      if (ih <= 0) continue;
      const i = iw * ih;
      const u = crowd ? da : da + ga - i;
      o[d * n + g] = i / u;
    }
  }
}

function checkBoxes(boxes: unknown, what: string): number[][] {
  if (!Array.isArray(boxes)) throw new RleError(`${what}: expected a list of [x, y, w, h] boxes`);
  boxes.forEach((b, i) => {
    if (!Array.isArray(b) || b.length !== 4 || !b.every((v) => typeof v === 'number')) {
      throw new RleError(`${what}[${i}]: expected [x, y, w, h] (4 numbers), got ${JSON.stringify(b)}`);
    }
  });
  return boxes as number[][];
}

function checkCrowd(iscrowd: unknown, n: number): boolean[] {
  if (!Array.isArray(iscrowd) || iscrowd.length !== n) {
    throw new RleError(`iscrowd: expected one flag per ground-truth object (${n}), got ${JSON.stringify(iscrowd)}`);
  }
  return iscrowd.map((v) => Boolean(v));
}

/**
 * IoU of detection boxes with ground-truth boxes (`[x, y, w, h]`), `iou[d][g]`; for a crowd GT the union is the
 * detection's area. Returns `[]` when either list is empty (as pycocotools).
 */
export function bboxIou(dt: number[][], gt: number[][], iscrowd: boolean[]): number[][] {
  checkBoxes(dt, 'bboxIou dt');
  checkBoxes(gt, 'bboxIou gt');
  const m = dt.length;
  const n = gt.length;
  if (m === 0 || n === 0) return [];
  const crowd = checkCrowd(iscrowd, n);
  const o = new Float64Array(m * n);
  bboxIouFlat(dt.flat(), m, gt.flat(), n, crowd, o);
  return Array.from({ length: m }, (_, d) => Array.from(o.subarray(d * n, (d + 1) * n)));
}

/**
 * Mask IoU as `rleIou` of maskApi.c into `o[d * n + g]`: 0 unless the boxes of the two masks overlap; -1 when the two
 * sizes differ; else intersection / union in pixels (union = the detection's area for a crowd GT), 0 when the
 * intersection is empty. `dtBoxes` / `gtBoxes` (flat `[x, y, w, h]`, from {@link bboxOfData}) may be passed when known.
 */
export function rleIouData(dt: readonly RleData[], gt: readonly RleData[], iscrowd: ArrayLike<number | boolean> | null, o: Float64Array,
  dtBoxes?: Float64Array, gtBoxes?: Float64Array): void {
  const m = dt.length;
  const n = gt.length;
  let db = dtBoxes;
  if (!db) {
    db = new Float64Array(m * 4);
    for (let d = 0; d < m; d++) bboxOfData(dt[d]!, db, d * 4);
  }
  let gb = gtBoxes;
  if (!gb) {
    gb = new Float64Array(n * 4);
    for (let g = 0; g < n; g++) bboxOfData(gt[g]!, gb, g * 4);
  }
  bboxIouFlat(db, m, gb, n, iscrowd, o);
  for (let g = 0; g < n; g++) {
    const G = gt[g]!;
    const crowd = iscrowd !== null && Boolean(iscrowd[g]);
    for (let d = 0; d < m; d++) {
      if (!(o[d * n + g]! > 0)) continue;
      const D = dt[d]!;
      if (D.h !== G.h || D.w !== G.w) {
        o[d * n + g] = -1;
        continue;
      }
      const A = D.cnts;
      const B = G.cnts;
      const ka = A.length;
      const kb = B.length;
      let ca = ka ? A[0]! : 0;
      let cb = kb ? B[0]! : 0;
      let va = false;
      let vb = false;
      let a = 1;
      let b = 1;
      let i = 0;
      let u = 0;
      let ct = 1;
      while (ct > 0) {
        const c = ca < cb ? ca : cb;
        if (va || vb) {
          u += c;
          if (va && vb) i += c;
        }
        ct = 0;
        ca -= c;
        if (!ca && a < ka) {
          ca = A[a++]!;
          va = !va;
        }
        ct += ca;
        cb -= c;
        if (!cb && b < kb) {
          cb = B[b++]!;
          vb = !vb;
        }
        ct += cb;
      }
      if (i === 0) u = 1;
      else if (crowd) u = areaOfData(D);
      o[d * n + g] = i / u;
    }
  }
}

/**
 * IoU of detection masks with ground-truth masks (RLEs), `iou[d][g]`, as pycocotools `iou` on RLEs: the crowd
 * flags make the union the detection's area; -1 for masks of different sizes whose boxes overlap. Returns `[]` when
 * either list is empty.
 */
export function rleIou(dt: RLE[], gt: RLE[], iscrowd: boolean[]): number[][] {
  const m = dt.length;
  const n = gt.length;
  if (m === 0 || n === 0) return [];
  const crowd = checkCrowd(iscrowd, n);
  const D = dt.map((r, i) => rleToData(r, `rleIou dt[${i}]`));
  const G = gt.map((r, i) => rleToData(r, `rleIou gt[${i}]`));
  const o = new Float64Array(m * n);
  rleIouData(D, G, crowd, o);
  return Array.from({ length: m }, (_, d) => Array.from(o.subarray(d * n, (d + 1) * n)));
}
