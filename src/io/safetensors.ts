/**
 * safetensors reader and writer.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * `{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}`
 * (possibly padded with trailing spaces), then the data section; offsets are relative to the start
 * of the data section.
 *
 * Reading is lazy: {@link openSafetensors} parses and validates the header only, and each tensor's
 * bytes are read on demand with `fs.readSync` at its offset, so a file never needs to be held in
 * memory (let alone twice). Writing is streaming too: {@link writeSafetensors} accepts lazy tensors
 * and reads/writes them one at a time.
 */
import { DTYPE_SIZE, type DType } from '../engine/dtype.js';
import { CheckpointError } from './errors.js';
import { type AtomicWriteOptions, FileAccessError, withAtomicFile } from './files.js';
import { byteSize, isValidShape, numel, type LazyTensor, type RawTensor } from './raw.js';
import { BufferSource, FileSource, type ByteSource } from './source.js';

/** safetensors dtype code → dtype. */
export const SAFETENSORS_DTYPES: Readonly<Record<string, DType>> = {
  F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16',
  I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};

/** dtype → safetensors dtype code. */
export const SAFETENSORS_CODE: Readonly<Record<DType, string>> = {
  float64: 'F64', float32: 'F32', float16: 'F16', bfloat16: 'BF16',
  int64: 'I64', int32: 'I32', int16: 'I16', int8: 'I8', uint8: 'U8', bool: 'BOOL',
};

/** Largest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor of a safetensors file, read on demand. */
export class SafetensorsTensor implements LazyTensor {
  /** Tensor name. */
  readonly name: string;
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions. */
  readonly shape: number[];
  /** Data size in bytes. */
  readonly nbytes: number;
  /** Absolute byte offset of the data in the file. */
  readonly offset: number;
  private readonly source: ByteSource;

  /** @internal Created by {@link openSafetensors}. */
  constructor(source: ByteSource, name: string, dtype: DType, shape: number[], offset: number, nbytes: number) {
    this.source = source;
    this.name = name;
    this.dtype = dtype;
    this.shape = shape;
    this.offset = offset;
    this.nbytes = nbytes;
  }

  /** Reads the tensor's bytes (a fresh buffer each call). */
  read(): Uint8Array {
    return this.source.read(this.offset, this.nbytes, this.name);
  }
}

/** An opened safetensors file: header parsed and validated, data read on demand. */
export interface SafetensorsFile {
  /** Path or label. */
  readonly path: string;
  /** Tensors in data-offset order. */
  readonly tensors: Map<string, SafetensorsTensor>;
  /** The `__metadata__` string map (empty object if absent). */
  readonly metadata: Record<string, string>;
  /** Size of the JSON header in bytes (without the 8-byte length). */
  readonly headerSize: number;
  /** Closes the file descriptor (reads after this reopen the file). */
  close(): void;
}

/** Sets a property even when the key is `__proto__`. */
function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Parses and validates a safetensors header from a byte source.
 * Checks: header length within the file, valid UTF-8 JSON object, known dtype codes, integer
 * shapes, `data_offsets` within the data section, byte size equal to shape × dtype size, no two
 * tensors overlapping, `__metadata__` a string → string map.
 */
export function openSafetensorsSource(source: ByteSource): SafetensorsFile {
  const file = source.name;
  if (source.size < 8) {
    throw new CheckpointError(`file is ${source.size} bytes, too short for the 8-byte safetensors header length (truncated?)`, { file });
  }
  const lenBytes = source.read(0, 8, 'header length');
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 > BigInt(source.size - 8)) {
    throw new CheckpointError(
      `header length ${n64} exceeds the ${source.size - 8} bytes that follow it: file truncated in the header, or not a safetensors file`,
      { file },
    );
  }
  const headerSize = Number(n64);
  if (headerSize > MAX_HEADER_BYTES) {
    throw new CheckpointError(`header length ${headerSize} exceeds the ${MAX_HEADER_BYTES}-byte limit`, { file });
  }
  if (headerSize < 2) throw new CheckpointError(`header length ${headerSize} is too small for a JSON object`, { file });
  const headerBytes = source.read(8, headerSize, 'header');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch (e) {
    throw new CheckpointError('header is not valid UTF-8', { file, cause: e });
  }
  if (text[0] !== '{') throw new CheckpointError(`header does not start with '{' (not a safetensors file?)`, { file });
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`header is not valid JSON: ${(e as Error).message}`, { file, cause: e });
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new CheckpointError('header is not a JSON object', { file });
  }
  const dataStart = 8 + headerSize;
  const dataSize = source.size - dataStart;
  const metadata: Record<string, string> = {};
  const entries: SafetensorsTensor[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (info === null) continue;
      if (typeof info !== 'object' || Array.isArray(info)) {
        throw new CheckpointError('__metadata__ is not an object of strings', { file, entry: '__metadata__' });
      }
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw new CheckpointError(`__metadata__ value for '${k}' is not a string`, { file, entry: '__metadata__' });
        }
        setOwn(metadata, k, v);
      }
      continue;
    }
    const where = { file, entry: name };
    if (typeof info !== 'object' || info === null || Array.isArray(info)) {
      throw new CheckpointError('tensor description is not an object', where);
    }
    const o = info as Record<string, unknown>;
    const code = o['dtype'];
    if (typeof code !== 'string' || !Object.hasOwn(SAFETENSORS_DTYPES, code)) {
      throw new CheckpointError(
        `unsupported dtype ${JSON.stringify(code)} (supported: ${Object.keys(SAFETENSORS_DTYPES).join(' ')})`, where,
      );
    }
    const dtype = SAFETENSORS_DTYPES[code]!;
    const shape = o['shape'];
    if (!isValidShape(shape)) throw new CheckpointError(`invalid shape ${JSON.stringify(shape)}`, where);
    const offs = o['data_offsets'];
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      throw new CheckpointError(`invalid data_offsets ${JSON.stringify(offs)}`, where);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) throw new CheckpointError(`data_offsets [${begin}, ${end}] end before begin`, where);
    if (end > dataSize) {
      throw new CheckpointError(
        `data_offsets [${begin}, ${end}] out of bounds: the data section has ${dataSize} bytes (file truncated in the data?)`,
        where,
      );
    }
    const expected = numel(shape) * DTYPE_SIZE[dtype];
    if (end - begin !== expected) {
      throw new CheckpointError(
        `data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${code}[${shape.join(', ')}] needs ${expected}`,
        where,
      );
    }
    entries.push(new SafetensorsTensor(source, name, dtype, shape, dataStart + begin, expected));
  }
  entries.sort((a, b) => a.offset - b.offset);
  let prev: SafetensorsTensor | null = null;
  for (const t of entries) {
    if (t.nbytes === 0) continue;
    if (prev !== null && t.offset < prev.offset + prev.nbytes) {
      throw new CheckpointError(`data overlaps that of tensor '${prev.name}'`, { file, entry: t.name });
    }
    prev = t;
  }
  const tensors = new Map<string, SafetensorsTensor>();
  for (const t of entries) tensors.set(t.name, t);
  return { path: file, tensors, metadata, headerSize, close: () => source.close() };
}

/**
 * Opens a safetensors file lazily: validates the header and returns tensors whose `read()` reads
 * their bytes at their offset through the file descriptor. Call `close()` when done.
 */
export function openSafetensors(path: string): SafetensorsFile {
  const source = new FileSource(path);
  try {
    return openSafetensorsSource(source);
  } catch (e) {
    source.close();
    throw e;
  }
}

/**
 * Parses safetensors data held in memory. Tensors are lazy views whose `read()` copies their bytes
 * out of `bytes`.
 * @param name label for error messages
 */
export function parseSafetensors(bytes: Uint8Array, name = '<buffer>'): SafetensorsFile {
  return openSafetensorsSource(new BufferSource(bytes, name));
}

/** Reads a whole safetensors file into memory as {@link RawTensor}s (convenient for small files). */
export function readSafetensors(path: string): { tensors: Map<string, RawTensor>; metadata: Record<string, string> } {
  const f = openSafetensors(path);
  try {
    const tensors = new Map<string, RawTensor>();
    for (const [k, t] of f.tensors) tensors.set(k, { dtype: t.dtype, shape: [...t.shape], data: t.read() });
    return { tensors, metadata: f.metadata };
  } finally {
    f.close();
  }
}

/** A tensor to write: in memory ({@link RawTensor}) or read on demand ({@link LazyTensor}). */
export type WritableTensor = RawTensor | LazyTensor;

/** Entries accepted by the writers: a Map or any iterable of `[name, tensor]` pairs. */
export type TensorEntries = Map<string, WritableTensor> | Iterable<readonly [string, WritableTensor]>;

interface PlannedTensor { name: string; tensor: WritableTensor; dtype: DType; shape: number[]; nbytes: number }

function planTensors(tensors: TensorEntries, file: string): PlannedTensor[] {
  const out: PlannedTensor[] = [];
  const seen = new Set<string>();
  for (const [name, tensor] of tensors) {
    const where = { file, entry: name };
    if (name === '__metadata__') throw new CheckpointError("'__metadata__' cannot be used as a tensor name", where);
    if (seen.has(name)) throw new CheckpointError('duplicate tensor name', where);
    seen.add(name);
    if (!Object.hasOwn(SAFETENSORS_CODE, tensor.dtype)) throw new CheckpointError(`unsupported dtype '${tensor.dtype}'`, where);
    if (!isValidShape(tensor.shape)) throw new CheckpointError(`invalid shape ${JSON.stringify(tensor.shape)}`, where);
    const nbytes = byteSize(tensor.dtype, tensor.shape);
    const have = 'data' in tensor ? tensor.data.byteLength : tensor.nbytes;
    if (have !== nbytes) {
      throw new CheckpointError(`has ${have} bytes but ${tensor.dtype}[${tensor.shape.join(', ')}] needs ${nbytes}`, where);
    }
    out.push({ name, tensor, dtype: tensor.dtype, shape: [...tensor.shape], nbytes });
  }
  return out;
}

function buildHeader(planned: PlannedTensor[], metadata: Record<string, string> | undefined, file: string): Uint8Array {
  const parts: string[] = [];
  if (metadata !== undefined && Object.keys(metadata).length > 0) {
    const m: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new CheckpointError(`metadata value for '${k}' is not a string`, { file, entry: '__metadata__' });
      m.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${m.join(',')}}`);
  }
  let offset = 0;
  for (const p of planned) {
    const desc = `{"dtype":"${SAFETENSORS_CODE[p.dtype]}","shape":[${p.shape.join(',')}],"data_offsets":[${offset},${offset + p.nbytes}]}`;
    parts.push(`${JSON.stringify(p.name)}:${desc}`);
    offset += p.nbytes;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

function tensorBytes(p: PlannedTensor, file: string): Uint8Array {
  const data = 'data' in p.tensor ? p.tensor.data : p.tensor.read();
  if (data.byteLength !== p.nbytes) {
    throw new CheckpointError(`read returned ${data.byteLength} bytes, expected ${p.nbytes}`, { file, entry: p.name });
  }
  return data;
}

/**
 * Serialises tensors to safetensors bytes in memory (header padded with spaces to a multiple of
 * 8 bytes; tensors stored in the given order).
 * @param metadata optional `__metadata__` string map
 */
export function serializeSafetensors(tensors: TensorEntries, metadata?: Record<string, string>): Uint8Array {
  const planned = planTensors(tensors, '<buffer>');
  const header = buildHeader(planned, metadata, '<buffer>');
  const total = header.length + planned.reduce((s, p) => s + p.nbytes, 0);
  const out = new Uint8Array(total);
  out.set(header, 0);
  let o = header.length;
  for (const p of planned) {
    out.set(tensorBytes(p, '<buffer>'), o);
    o += p.nbytes;
  }
  return out;
}

/**
 * Writes a safetensors file, streaming: the header is computed from dtypes and shapes, then each
 * tensor is read (lazy tensors: `read()` once) and written in turn, so only one tensor's data is
 * in memory at a time. The file is written under a temporary name and renamed into place, so an
 * input file can safely be rewritten onto itself. `durable: true` also flushes the file and its folder to disk
 * (training checkpoints).
 * @returns the number of bytes written
 */
export function writeSafetensors(path: string, tensors: TensorEntries, metadata?: Record<string, string>,
  o: AtomicWriteOptions = {}): number {
  const planned = planTensors(tensors, path);
  const header = buildHeader(planned, metadata, path);
  let total = 0;
  try {
    withAtomicFile(path, (_fd, write) => {
      write(header);
      total += header.length;
      for (const p of planned) {
        write(tensorBytes(p, path));
        total += p.nbytes;
      }
    }, o);
  } catch (e) {
    if (e instanceof FileAccessError) throw new CheckpointError(e.problem, { file: path, cause: e });
    throw e;
  }
  return total;
}
