/**
 * NumPy `.npy` / `.npz` reader (the format of AugReg / big_vision / JAX ViT weights).
 *
 * `.npy`: magic `\x93NUMPY`, version byte pair (1.0, 2.0 or 3.0), header length (2 bytes in v1,
 * 4 bytes in v2/v3, little-endian), then a Python dict literal
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` and the raw data.
 * `.npz`: a zip of `.npy` files (stored or deflated); tensors are named after their entry without
 * the `.npy` suffix. Supported dtypes: float16/32/64, int8/16/32/64, uint8, bool, in either byte
 * order (big-endian data is swapped). Fortran-ordered arrays are transposed to C order on read.
 */
import { DTYPE_SIZE, type DType } from '../engine/dtype.js';
import { CheckpointError } from './errors.js';
import { byteSwapInPlace, contiguousStrides, numel, stridedToContiguous, type LazyTensor, type RawTensor } from './raw.js';
import { BufferSource, FileSource, type ByteSource } from './source.js';
import { ZipReader, type ZipEntry } from './zip.js';

/** numpy type string (without byte order) → dtype. */
export const NPY_DTYPES: Readonly<Record<string, DType>> = {
  f2: 'float16', f4: 'float32', f8: 'float64', i1: 'int8', i2: 'int16', i4: 'int32', i8: 'int64',
  u1: 'uint8', b1: 'bool',
};

/** A parsed `.npy` header. */
export interface NpyHeader {
  /** Element type. */
  dtype: DType;
  /** The `descr` string as written, e.g. `<f4`. */
  descr: string;
  /** True when the data is big-endian (it is swapped on read). */
  bigEndian: boolean;
  /** True when the data is in Fortran (column-major) order. */
  fortranOrder: boolean;
  /** Shape. */
  shape: number[];
  /** Offset of the data from the start of the `.npy` data. */
  dataOffset: number;
  /** `numel(shape) * size`. */
  nbytes: number;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** True if the bytes start with the `.npy` magic. */
export function isNpyMagic(head: Uint8Array): boolean {
  return head.length >= 6 && MAGIC.every((b, i) => head[i] === b);
}

/** Returns the total header size (magic + lengths + header text) from the first 12 bytes. */
export function npyHeaderSize(head: Uint8Array, file: string, entry?: string): number {
  if (!isNpyMagic(head)) throw new CheckpointError('not a .npy array (bad magic)', { file, entry });
  if (head.length < 10) throw new CheckpointError('.npy header truncated', { file, entry });
  const major = head[6]!;
  if (major === 1) return 10 + (head[8]! | (head[9]! << 8));
  if (major === 2 || major === 3) {
    if (head.length < 12) throw new CheckpointError('.npy header truncated', { file, entry });
    return 12 + ((head[8]! | (head[9]! << 8) | (head[10]! << 16)) + head[11]! * 0x1000000);
  }
  throw new CheckpointError(`unsupported .npy format version ${major}.${head[7]}`, { file, entry });
}

/** Deepest nesting of brackets accepted in a .npy header (a real one is a dict holding a shape tuple: 2). */
export const MAX_NPY_HEADER_DEPTH = 32;

/** A tiny parser for the Python literal of a .npy header (dicts, tuples, lists, strings, ints, bools, None). */
function parsePyLiteral(text: string, fail: (m: string) => never): unknown {
  let i = 0;
  let depth = 0;
  const ws = (): void => { while (i < text.length && /\s/.test(text[i]!)) i++; };
  const value = (): unknown => {
    ws();
    const c = text[i];
    if (c === '{' || c === '(' || c === '[') {
      if (depth >= MAX_NPY_HEADER_DEPTH) fail(`brackets nested more than ${MAX_NPY_HEADER_DEPTH} levels deep at ${i}`);
      depth++;
      try {
        return container(c);
      } finally {
        depth--;
      }
    }
    return scalar(c);
  };
  const container = (c: string): unknown => {
    if (c === '{') {
      i++;
      const obj: Record<string, unknown> = {};
      for (;;) {
        ws();
        if (text[i] === '}') { i++; return obj; }
        const k = value();
        ws();
        if (text[i] !== ':') fail(`expected ':' at ${i}`);
        i++;
        const v = value();
        if (typeof k !== 'string') fail('non-string key');
        Object.defineProperty(obj, k, { value: v, enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === ',') i++;
        else if (text[i] !== '}') fail(`expected ',' or '}' at ${i}`);
      }
    }
    if (c === '(' || c === '[') {
      const close = c === '(' ? ')' : ']';
      i++;
      const arr: unknown[] = [];
      for (;;) {
        ws();
        if (text[i] === close) { i++; return arr; }
        arr.push(value());
        ws();
        if (text[i] === ',') i++;
        else if (text[i] !== close) fail(`expected ',' or '${close}' at ${i}`);
      }
    }
    return fail('unreachable');
  };
  const scalar = (c: string | undefined): unknown => {
    if (c === "'" || c === '"') {
      const end = text.indexOf(c, i + 1);
      if (end < 0) fail('unterminated string');
      const s = text.slice(i + 1, end);
      i = end + 1;
      return s;
    }
    const m = /^(True|False|None|-?\d+L?)/.exec(text.slice(i));
    if (m === null) fail(`unexpected character ${JSON.stringify(c ?? 'end of header')} at ${i}`);
    i += m[0].length;
    if (m[0] === 'True') return true;
    if (m[0] === 'False') return false;
    if (m[0] === 'None') return null;
    return Number(m[0].replace('L', ''));
  };
  const v = value();
  ws();
  if (i !== text.length) fail(`unexpected text after the header dict at ${i}`);
  return v;
}

/** Parses a `.npy` header from bytes that contain at least the whole header. */
export function parseNpyHeader(bytes: Uint8Array, file: string, entry?: string): NpyHeader {
  const where = { file, entry };
  const total = npyHeaderSize(bytes, file, entry);
  if (bytes.length < total) throw new CheckpointError(`.npy header truncated (${bytes.length} of ${total} bytes)`, where);
  const start = bytes[6] === 1 ? 10 : 12;
  const text = new TextDecoder(bytes[6] === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, total)).trim();
  const shown = text.length > 200 ? `${text.slice(0, 200)}... [${text.length} chars]` : text;
  const fail = (m: string): never => { throw new CheckpointError(`bad .npy header ${JSON.stringify(shown)}: ${m}`, where); };
  const h = parsePyLiteral(text, fail);
  if (typeof h !== 'object' || h === null || Array.isArray(h)) fail('not a dict');
  const d = h as Record<string, unknown>;
  const descr = d['descr'];
  if (typeof descr !== 'string') {
    throw new CheckpointError(`unsupported .npy dtype ${JSON.stringify(descr)} (structured arrays are not supported)`, where);
  }
  const m = /^([<>|=]?)([a-zA-Z]\d+)$/.exec(descr);
  const base = m?.[2];
  if (m === null || base === undefined || !Object.hasOwn(NPY_DTYPES, base)) {
    throw new CheckpointError(
      `unsupported .npy dtype '${descr}' (supported: ${Object.keys(NPY_DTYPES).map((k) => `<${k}`).join(' ')})`, where,
    );
  }
  const dtype = NPY_DTYPES[base]!;
  const bigEndian = m[1] === '>' && DTYPE_SIZE[dtype] > 1;
  const fortranOrder = d['fortran_order'];
  if (typeof fortranOrder !== 'boolean') fail('fortran_order is not a bool');
  const shape = d['shape'];
  if (!Array.isArray(shape) || !shape.every((x) => Number.isSafeInteger(x) && x >= 0)) fail('shape is not a tuple of integers');
  const s = [...(shape as number[])];
  return { dtype, descr, bigEndian, fortranOrder: fortranOrder as boolean, shape: s, dataOffset: total, nbytes: numel(s) * DTYPE_SIZE[dtype] };
}

/** Converts raw `.npy` data (file order) to contiguous little-endian C-order bytes, in place when possible. */
function normalizeNpyData(h: NpyHeader, data: Uint8Array): Uint8Array {
  const size = DTYPE_SIZE[h.dtype];
  let out = data;
  if (h.bigEndian) byteSwapInPlace(out, size);
  if (h.fortranOrder && h.shape.length > 1) {
    const fstrides = contiguousStrides([...h.shape].reverse()).reverse();
    out = stridedToContiguous(out, size, h.shape, fstrides, 0);
  }
  return out;
}

/** Parses a whole `.npy` file held in memory into a {@link RawTensor} (C order, little-endian). */
export function parseNpy(bytes: Uint8Array, name = '<buffer>'): RawTensor {
  const h = parseNpyHeader(bytes, name);
  if (bytes.length < h.dataOffset + h.nbytes) {
    throw new CheckpointError(`.npy data truncated: ${bytes.length - h.dataOffset} of ${h.nbytes} bytes`, { file: name });
  }
  const data = new Uint8Array(h.nbytes);
  data.set(bytes.subarray(h.dataOffset, h.dataOffset + h.nbytes));
  return { dtype: h.dtype, shape: h.shape, data: normalizeNpyData(h, data) };
}

/** One array of an `.npz` archive, read on demand. */
export class NpzTensor implements LazyTensor {
  /** Element type. */
  readonly dtype: DType;
  /** Shape. */
  readonly shape: number[];
  /** Bytes returned by `read()`. */
  readonly nbytes: number;
  /** The parsed `.npy` header. */
  readonly header: NpyHeader;

  /** @internal */
  constructor(private readonly zip: ZipReader, readonly entry: ZipEntry, header: NpyHeader) {
    this.header = header;
    this.dtype = header.dtype;
    this.shape = header.shape;
    this.nbytes = header.nbytes;
  }

  /** Reads (and inflates, if needed) the array, returned contiguous, C order, little-endian. */
  read(): Uint8Array {
    const h = this.header;
    const data = this.zip.readRange(this.entry, h.dataOffset, h.nbytes);
    return normalizeNpyData(h, data);
  }
}

/** An opened `.npz` archive. */
export interface NpzFile {
  /** Path or label. */
  readonly path: string;
  /** Arrays by name (entry name without `.npy`), in archive order. */
  readonly tensors: Map<string, NpzTensor>;
  /** Closes the file descriptor. */
  close(): void;
}

/** Opens an `.npz` archive from a byte source, parsing every array header (data stays unread). */
export function openNpzSource(source: ByteSource): NpzFile {
  const zip = new ZipReader(source);
  const file = source.name;
  const tensors = new Map<string, NpzTensor>();
  for (const e of zip.entries) {
    if (e.name.endsWith('/')) continue;
    if (!e.name.endsWith('.npy')) {
      throw new CheckpointError('entry of an .npz archive is not a .npy array', { file, entry: e.name });
    }
    let head = zip.readPrefix(e, 12);
    const total = npyHeaderSize(head, file, e.name);
    if (total > e.size) throw new CheckpointError(`.npy header (${total} bytes) is longer than the entry (${e.size} bytes)`, { file, entry: e.name });
    head = zip.readPrefix(e, total);
    const h = parseNpyHeader(head, file, e.name);
    if (h.dataOffset + h.nbytes > e.size) {
      throw new CheckpointError(
        `array data truncated: ${h.descr}[${h.shape.join(', ')}] needs ${h.nbytes} bytes, the entry has ${e.size - h.dataOffset}`,
        { file, entry: e.name },
      );
    }
    const name = e.name.slice(0, -4);
    if (tensors.has(name)) throw new CheckpointError('duplicate array name', { file, entry: e.name });
    tensors.set(name, new NpzTensor(zip, e, h));
  }
  return { path: file, tensors, close: () => zip.close() };
}

/** Opens an `.npz` file lazily. Call `close()` when done. */
export function openNpz(path: string): NpzFile {
  const source = new FileSource(path);
  try {
    return openNpzSource(source);
  } catch (e) {
    source.close();
    throw e;
  }
}

/** Parses an `.npz` archive held in memory. */
export function parseNpz(bytes: Uint8Array, name = '<buffer>'): NpzFile {
  return openNpzSource(new BufferSource(bytes, name));
}
