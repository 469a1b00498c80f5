/**
 * A minimal safetensors reader for the engine tests (the library's reader lives elsewhere): an 8-byte little-endian
 * header length, a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?}`, then the data.
 */
import { readFileSync } from 'node:fs';

/** One stored tensor: its safetensors dtype (F32, F64, I64, ...), shape and raw little-endian bytes (a view). */
export interface RawTensor {
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

const SIZES: Record<string, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Parses safetensors bytes into a map name → tensor. Validates offsets against shapes and the buffer. */
export function parseSafetensors(bytes: Uint8Array): Map<string, RawTensor> {
  if (bytes.byteLength < 8) throw new Error('safetensors: file shorter than 8 bytes');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  if (8 + n > bytes.byteLength) throw new Error(`safetensors: header length ${n} exceeds the file`);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  const base = 8 + n;
  const out = new Map<string, RawTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const e = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const size = SIZES[e.dtype];
    if (size === undefined) throw new Error(`safetensors: ${name}: unsupported dtype ${e.dtype}`);
    const [b, end] = e.data_offsets;
    const numel = e.shape.reduce((a, c) => a * c, 1);
    if (end - b !== numel * size) throw new Error(`safetensors: ${name}: ${end - b} bytes for ${e.dtype}[${e.shape}]`);
    if (base + end > bytes.byteLength) throw new Error(`safetensors: ${name}: data past the end of the file`);
    out.set(name, { dtype: e.dtype, shape: [...e.shape], data: bytes.subarray(base + b, base + end) });
  }
  return out;
}

/** Reads and parses a safetensors file. */
export function readSafetensors(path: string): Map<string, RawTensor> {
  return parseSafetensors(new Uint8Array(readFileSync(path)));
}

/** The engine dtype name of a safetensors dtype. */
export function engineDType(st: string): 'float64' | 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool' {
  const m = {
    F64: 'float64', F32: 'float32', F16: 'float16', BF16: 'bfloat16', I64: 'int64', I32: 'int32', I16: 'int16',
    I8: 'int8', U8: 'uint8', BOOL: 'bool',
  } as const;
  const d = (m as Record<string, (typeof m)[keyof typeof m]>)[st];
  if (!d) throw new Error(`safetensors: unsupported dtype ${st}`);
  return d;
}
