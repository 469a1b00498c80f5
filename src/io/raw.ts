/**
 * Raw tensors: the engine-independent form in which this layer hands out tensor data.
 *
 * A {@link RawTensor} holds contiguous, row-major (C order), little-endian bytes. A
 * {@link LazyTensor} knows its dtype and shape up front and reads its bytes only when asked, so a
 * large checkpoint can be converted tensor by tensor. Helpers here view bytes as typed arrays and
 * convert float16 / bfloat16 to float32 and back.
 */
import { DTYPE_SIZE, type DType } from '../engine/dtype.js';

/** A dense tensor as bytes: contiguous, row-major, little-endian. */
export interface RawTensor {
  /** Element type. */
  dtype: DType;
  /** Dimensions (empty for a scalar). */
  shape: number[];
  /** `numel(shape) * DTYPE_SIZE[dtype]` bytes. bool is one byte per element (0 or 1). */
  data: Uint8Array;
}

/** A tensor whose bytes are read on demand (e.g. from a file descriptor at its offset). */
export interface LazyTensor {
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions (empty for a scalar). */
  readonly shape: number[];
  /** Size of the data `read()` returns: `numel(shape) * DTYPE_SIZE[dtype]`. */
  readonly nbytes: number;
  /**
   * Reads the data: contiguous, row-major, little-endian bytes in a fresh buffer owned by the
   * caller. Each call reads again (nothing is cached).
   */
  read(): Uint8Array;
}

/** Number of elements of a shape (1 for a scalar). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes needed by a contiguous tensor of this dtype and shape. */
export function byteSize(dtype: DType, shape: readonly number[]): number {
  return numel(shape) * DTYPE_SIZE[dtype];
}

/** True if `shape` is an array of non-negative safe integers. */
export function isValidShape(shape: unknown): shape is number[] {
  return Array.isArray(shape) && shape.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/** Row-major (C order) strides, in elements, of a shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

/** True if `x` looks like a {@link LazyTensor} (has dtype, shape, nbytes and a read function). */
export function isLazyTensor(x: unknown): x is LazyTensor {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o['dtype'] === 'string' && Array.isArray(o['shape']) && typeof o['nbytes'] === 'number'
    && typeof o['read'] === 'function';
}

/** True if `x` looks like a {@link RawTensor}. */
export function isRawTensor(x: unknown): x is RawTensor {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o['dtype'] === 'string' && Array.isArray(o['shape']) && o['data'] instanceof Uint8Array;
}

/** Reads a lazy tensor into a {@link RawTensor}. */
export function materialize(t: LazyTensor): RawTensor {
  const data = t.read();
  if (data.byteLength !== t.nbytes) {
    throw new Error(`lazy tensor returned ${data.byteLength} bytes, expected ${t.nbytes}`);
  }
  return { dtype: t.dtype, shape: [...t.shape], data };
}

/** Wraps a {@link RawTensor} as a {@link LazyTensor} (each `read()` returns a copy). */
export function lazyFromRaw(t: RawTensor): LazyTensor {
  const nbytes = byteSize(t.dtype, t.shape);
  if (t.data.byteLength !== nbytes) {
    throw new Error(`raw tensor has ${t.data.byteLength} bytes, expected ${nbytes} for ${t.dtype}[${t.shape.join(', ')}]`);
  }
  return {
    dtype: t.dtype,
    shape: [...t.shape],
    nbytes,
    read: () => new Uint8Array(t.data),
  };
}

/** Typed array type used for each dtype by {@link typedView}; float16/bfloat16 give their raw bits. */
export type TypedArrayOf<D extends DType> = D extends 'float32' ? Float32Array
  : D extends 'float64' ? Float64Array
    : D extends 'float16' | 'bfloat16' ? Uint16Array
      : D extends 'int64' ? BigInt64Array
        : D extends 'int32' ? Int32Array
          : D extends 'int16' ? Int16Array
            : D extends 'int8' ? Int8Array
              : Uint8Array;

/** Any typed array {@link typedView} can return. */
export type AnyTypedArray = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Int16Array
  | Int8Array | Uint8Array;

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Views the bytes of a raw tensor as the matching typed array (float16 and bfloat16: `Uint16Array`
 * of raw bits; bool: `Uint8Array` of 0/1). Shares memory with `t.data` when its byte offset is
 * aligned, otherwise works on an aligned copy. Assumes a little-endian host (all Node platforms).
 */
export function typedView<D extends DType>(t: { dtype: D; data: Uint8Array }): TypedArrayOf<D> {
  if (!HOST_LITTLE_ENDIAN) throw new Error('typedView: big-endian hosts are not supported');
  const size = DTYPE_SIZE[t.dtype];
  let data = t.data;
  if (data.byteLength % size !== 0) {
    throw new Error(`typedView: ${data.byteLength} bytes is not a multiple of the ${t.dtype} element size ${size}`);
  }
  if (data.byteOffset % size !== 0) data = new Uint8Array(data);
  const n = data.byteLength / size;
  const { buffer, byteOffset } = data;
  let out: AnyTypedArray;
  switch (t.dtype) {
    case 'float32': out = new Float32Array(buffer, byteOffset, n); break;
    case 'float64': out = new Float64Array(buffer, byteOffset, n); break;
    case 'float16': case 'bfloat16': out = new Uint16Array(buffer, byteOffset, n); break;
    case 'int64': out = new BigInt64Array(buffer, byteOffset, n); break;
    case 'int32': out = new Int32Array(buffer, byteOffset, n); break;
    case 'int16': out = new Int16Array(buffer, byteOffset, n); break;
    case 'int8': out = new Int8Array(buffer, byteOffset, n); break;
    default: out = new Uint8Array(buffer, byteOffset, n); break;
  }
  return out as TypedArrayOf<D>;
}

let f16Table: Float32Array | null = null;

/** Converts one IEEE binary16 bit pattern to a number. */
export function float16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Converts float16 bits to float32 values (exact). */
export function float16ToFloat32(bits: Uint16Array): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = float16BitsToNumber(i);
  }
  const table = f16Table;
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
  return out;
}

/** Converts bfloat16 bits to float32 values (exact: the bits become the high half). */
export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i]! << 16;
  return new Float32Array(out.buffer);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Rounds a number to the nearest float16 (ties to even) and returns its bit pattern. */
export function numberToFloat16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return h;
}

/** Rounds a number to the nearest bfloat16 (ties to even) and returns its bit pattern. */
export function numberToBFloat16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Converts float32 values to float16 bits (round to nearest even). */
export function float32ToFloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = numberToFloat16Bits(values[i]!);
  return out;
}

/** Converts float32 values to bfloat16 bits (round to nearest even). */
export function float32ToBFloat16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = numberToBFloat16Bits(values[i]!);
  return out;
}

/**
 * Converts any raw tensor to float32 values (a new array unless the tensor is float32 and aligned,
 * in which case the view shares memory). int64 values beyond 2^24 lose precision as usual.
 */
export function toFloat32Array(t: { dtype: DType; data: Uint8Array }): Float32Array {
  switch (t.dtype) {
    case 'float32': return typedView(t as { dtype: 'float32'; data: Uint8Array });
    case 'float16': return float16ToFloat32(typedView(t as { dtype: 'float16'; data: Uint8Array }));
    case 'bfloat16': return bfloat16ToFloat32(typedView(t as { dtype: 'bfloat16'; data: Uint8Array }));
    case 'int64': {
      const v = typedView(t as { dtype: 'int64'; data: Uint8Array });
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = Number(v[i]!);
      return out;
    }
    default: return Float32Array.from(typedView(t) as ArrayLike<number>);
  }
}

/** Converts any raw tensor to float64 values (new array, except for aligned float64 data). */
export function toFloat64Array(t: { dtype: DType; data: Uint8Array }): Float64Array {
  switch (t.dtype) {
    case 'float64': return typedView(t as { dtype: 'float64'; data: Uint8Array });
    case 'float32': return Float64Array.from(typedView(t as { dtype: 'float32'; data: Uint8Array }));
    case 'float16': case 'bfloat16': return Float64Array.from(toFloat32Array(t));
    case 'int64': {
      const v = typedView(t as { dtype: 'int64'; data: Uint8Array });
      const out = new Float64Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = Number(v[i]!);
      return out;
    }
    default: return Float64Array.from(typedView(t) as ArrayLike<number>);
  }
}

/**
 * Builds a {@link RawTensor} from values. Floats are rounded to the dtype (float16/bfloat16: to
 * nearest even), integers are wrapped like a C cast, bools become 0/1.
 */
export function rawFromValues(dtype: DType, shape: number[], values: ArrayLike<number | bigint | boolean>): RawTensor {
  const n = numel(shape);
  if (values.length !== n) throw new Error(`rawFromValues: ${values.length} values for shape [${shape.join(', ')}] (${n} elements)`);
  const data = new Uint8Array(n * DTYPE_SIZE[dtype]);
  const dv = new DataView(data.buffer);
  const num = (i: number): number => Number(values[i]!);
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case 'float32': dv.setFloat32(i * 4, num(i), true); break;
      case 'float64': dv.setFloat64(i * 8, num(i), true); break;
      case 'float16': dv.setUint16(i * 2, numberToFloat16Bits(num(i)), true); break;
      case 'bfloat16': dv.setUint16(i * 2, numberToBFloat16Bits(num(i)), true); break;
      case 'int64': {
        const v = values[i]!;
        dv.setBigInt64(i * 8, typeof v === 'bigint' ? BigInt.asIntN(64, v) : BigInt(Math.trunc(Number(v))), true);
        break;
      }
      case 'int32': dv.setInt32(i * 4, num(i), true); break;
      case 'int16': dv.setInt16(i * 2, num(i), true); break;
      case 'int8': dv.setInt8(i, num(i)); break;
      case 'uint8': dv.setUint8(i, num(i)); break;
      case 'bool': dv.setUint8(i, values[i] ? 1 : 0); break;
    }
  }
  return { dtype, shape: [...shape], data };
}

/** Reverses the byte order of every `elemSize`-byte element of `data`, in place. */
export function byteSwapInPlace(data: Uint8Array, elemSize: number): void {
  if (elemSize <= 1) return;
  for (let i = 0; i + elemSize <= data.length; i += elemSize) {
    for (let a = i, b = i + elemSize - 1; a < b; a++, b--) {
      const t = data[a]!;
      data[a] = data[b]!;
      data[b] = t;
    }
  }
}

/**
 * Copies a strided view into a new contiguous row-major buffer.
 *
 * Element `(i0, ..., ik)` of the view is read at element index
 * `offset + sum(i_j * strides[j])` of `src` (strides and offset in elements of `elemSize` bytes).
 * The caller must have checked that every index lies inside `src`.
 */
export function stridedToContiguous(
  src: Uint8Array, elemSize: number, shape: readonly number[], strides: readonly number[], offset: number,
): Uint8Array {
  const n = numel(shape);
  const out = new Uint8Array(n * elemSize);
  if (n === 0) return out;
  const nd = shape.length;
  if (nd === 0) {
    out.set(src.subarray(offset * elemSize, (offset + 1) * elemSize));
    return out;
  }
  const inner = shape[nd - 1]!;
  const innerStride = strides[nd - 1]!;
  const idx = new Array<number>(nd - 1).fill(0);
  let base = offset;
  let o = 0;
  const rows = n / inner;
  for (let r = 0; r < rows; r++) {
    if (innerStride === 1) {
      const s = base * elemSize;
      out.set(src.subarray(s, s + inner * elemSize), o);
      o += inner * elemSize;
    } else {
      let s = base * elemSize;
      const step = innerStride * elemSize;
      for (let i = 0; i < inner; i++, s += step) {
        for (let b = 0; b < elemSize; b++) out[o++] = src[s + b]!;
      }
    }
    // advance the outer multi-index (odometer)
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]!++;
      base += strides[d]!;
      if (idx[d]! < shape[d]!) break;
      base -= strides[d]! * shape[d]!;
      idx[d] = 0;
    }
  }
  return out;
}
