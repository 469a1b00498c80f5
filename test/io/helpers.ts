/**
 * Test helpers for the checkpoint I/O tests: fixture location, temporary directories, a tiny zip
 * writer, a pickle byte builder and an .npy writer.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as zlib from 'node:zlib';

/** The repository root: the first ancestor of this file holding a package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above the test file');
    dir = up;
  }
}

/** `../shared/fixtures/reference` relative to the repository root (or under `$VIT_ADAPTER_SHARED`), or null when absent. */
export function fixturesDir(): string | null {
  const shared = process.env.VIT_ADAPTER_SHARED || join(repoRoot(), '..', 'shared');
  const d = join(shared, 'fixtures', 'reference');
  return existsSync(d) ? d : null;
}

/** Test options that skip (visibly) when the fixtures are absent. */
export function fixtureOptions(...files: string[]): { skip?: string } {
  const d = fixturesDir();
  if (d === null) return { skip: 'fixtures ../shared/fixtures not found' };
  for (const f of files) if (!existsSync(join(d, f))) return { skip: `fixture ${f} not found in ../shared/fixtures/reference` };
  return {};
}

/** A fresh temporary directory and a function removing it. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'vit-adapter-io-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** An entry for {@link buildZip}. */
export interface ZipInput {
  name: string;
  data: Uint8Array;
  /** Default stored. */
  deflate?: boolean;
  /** Extra bytes of padding in the local header's extra field (as PyTorch does to align data). */
  localPad?: number;
}

class Bytes {
  private parts: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void { this.parts.push(b); this.length += b.length; }
  u16(v: number): void { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, v, true); this.push(b); }
  u32(v: number): void { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v >>> 0, true); this.push(b); }
  u64(v: number): void { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(v), true); this.push(b); }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const p of this.parts) { out.set(p, o); o += p.length; }
    return out;
  }
}

/**
 * Writes a zip archive in memory (stored or deflated entries). With `zip64`, the central directory
 * uses saturated sizes/offsets with zip64 extra fields, and a zip64 end record plus locator.
 */
export function buildZip(entries: ZipInput[], opts: { zip64?: boolean; comment?: string } = {}): Uint8Array {
  const out = new Bytes();
  const central: { e: ZipInput; crc: number; csize: number; offset: number; nameBytes: Uint8Array; method: number }[] = [];
  for (const e of entries) {
    const nameBytes = new TextEncoder().encode(e.name);
    const method = e.deflate ? 8 : 0;
    const payload = e.deflate ? new Uint8Array(zlib.deflateRawSync(e.data)) : e.data;
    const crc = zlib.crc32(e.data);
    const offset = out.length;
    const pad = e.localPad ?? 0;
    out.u32(0x04034b50); out.u16(20); out.u16(0x800); out.u16(method); out.u16(0); out.u16(0);
    out.u32(crc); out.u32(payload.length); out.u32(e.data.length);
    out.u16(nameBytes.length); out.u16(pad > 0 ? pad + 4 : 0);
    out.push(nameBytes);
    if (pad > 0) { out.u16(0x4246); out.u16(pad); out.push(new Uint8Array(pad).fill(0x5a)); }
    out.push(payload);
    central.push({ e, crc, csize: payload.length, offset, nameBytes, method });
  }
  const cdStart = out.length;
  for (const c of central) {
    out.u32(0x02014b50); out.u16(45); out.u16(45); out.u16(0x800); out.u16(c.method); out.u16(0); out.u16(0);
    out.u32(c.crc);
    if (opts.zip64) {
      out.u32(0xffffffff); out.u32(0xffffffff);
    } else {
      out.u32(c.csize); out.u32(c.e.data.length);
    }
    out.u16(c.nameBytes.length); out.u16(opts.zip64 ? 28 : 0); out.u16(0); out.u16(0); out.u16(0); out.u32(0);
    out.u32(opts.zip64 ? 0xffffffff : c.offset);
    out.push(c.nameBytes);
    if (opts.zip64) { out.u16(0x0001); out.u16(24); out.u64(c.e.data.length); out.u64(c.csize); out.u64(c.offset); }
  }
  const cdSize = out.length - cdStart;
  if (opts.zip64) {
    const eocd64 = out.length;
    out.u32(0x06064b50); out.u64(44); out.u16(45); out.u16(45); out.u32(0); out.u32(0);
    out.u64(central.length); out.u64(central.length); out.u64(cdSize); out.u64(cdStart);
    out.u32(0x07064b50); out.u32(0); out.u64(eocd64); out.u32(1);
  }
  const comment = new TextEncoder().encode(opts.comment ?? '');
  out.u32(0x06054b50); out.u16(0); out.u16(0);
  out.u16(opts.zip64 ? 0xffff : central.length); out.u16(opts.zip64 ? 0xffff : central.length);
  out.u32(opts.zip64 ? 0xffffffff : cdSize); out.u32(opts.zip64 ? 0xffffffff : cdStart);
  out.u16(comment.length); out.push(comment);
  return out.concat();
}

/** Builds pickle bytes opcode by opcode (methods are chainable). */
export class PickleWriter {
  private bytes: number[] = [];

  /** Appends raw bytes. */
  raw(...b: number[]): this { this.bytes.push(...b); return this; }
  private u32(v: number): this { return this.raw(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff); }
  private u64(v: number): this { this.u32(v % 0x100000000); return this.u32(Math.floor(v / 0x100000000)); }
  private text(s: string): this { for (const b of new TextEncoder().encode(s)) this.bytes.push(b); return this; }

  proto(v: number): this { return this.raw(0x80, v); }
  frame(n: number): this { this.raw(0x95); return this.u64(n); }
  stop(): this { return this.raw(0x2e); }
  mark(): this { return this.raw(0x28); }
  none(): this { return this.raw(0x4e); }
  bool(v: boolean): this { return this.raw(v ? 0x88 : 0x89); }
  int(v: number): this {
    if (v >= 0 && v < 256) return this.raw(0x4b, v);
    if (v >= 0 && v < 65536) return this.raw(0x4d, v & 0xff, v >> 8);
    this.raw(0x4a);
    return this.u32(v);
  }
  long1(v: bigint): this {
    const out: number[] = [];
    let x = v;
    for (;;) {
      const b = Number(BigInt.asUintN(8, x));
      out.push(b);
      x >>= 8n;
      if ((x === 0n && !(b & 0x80)) || (x === -1n && b & 0x80)) break;
    }
    return this.raw(0x8a, out.length, ...out);
  }
  binfloat(v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, false);
    return this.raw(0x47, ...b);
  }
  /** BINUNICODE (4-byte length). */
  str(s: string): this { const b = new TextEncoder().encode(s); this.raw(0x58); this.u32(b.length); return this.text(s); }
  /** SHORT_BINUNICODE (protocol 4). */
  shortStr(s: string): this { const b = new TextEncoder().encode(s); this.raw(0x8c, b.length); return this.text(s); }
  /** BINUNICODE8 (protocol 4). */
  str8(s: string): this { const b = new TextEncoder().encode(s); this.raw(0x8d); this.u64(b.length); return this.text(s); }
  shortBinbytes(b: number[]): this { return this.raw(0x43, b.length, ...b); }
  binbytes(b: number[]): this { this.raw(0x42); this.u32(b.length); return this.raw(...b); }
  binbytes8(b: number[]): this { this.raw(0x8e); this.u64(b.length); return this.raw(...b); }
  bytearray8(b: number[]): this { this.raw(0x96); this.u64(b.length); return this.raw(...b); }
  global(module: string, name: string): this { this.raw(0x63); return this.text(`${module}\n${name}\n`); }
  stackGlobal(module: string, name: string): this { return this.shortStr(module).shortStr(name).raw(0x93); }
  put(i: number): this { if (i < 256) return this.raw(0x71, i); this.raw(0x72); return this.u32(i); }
  get(i: number): this { if (i < 256) return this.raw(0x68, i); this.raw(0x6a); return this.u32(i); }
  memoize(): this { return this.raw(0x94); }
  emptyTuple(): this { return this.raw(0x29); }
  tuple(): this { return this.raw(0x74); }
  tuple1(): this { return this.raw(0x85); }
  tuple2(): this { return this.raw(0x86); }
  tuple3(): this { return this.raw(0x87); }
  emptyList(): this { return this.raw(0x5d); }
  append(): this { return this.raw(0x61); }
  appends(): this { return this.raw(0x65); }
  list(): this { return this.raw(0x6c); }
  emptyDict(): this { return this.raw(0x7d); }
  dict(): this { return this.raw(0x64); }
  setitem(): this { return this.raw(0x73); }
  setitems(): this { return this.raw(0x75); }
  emptySet(): this { return this.raw(0x8f); }
  additems(): this { return this.raw(0x90); }
  frozenset(): this { return this.raw(0x91); }
  reduce(): this { return this.raw(0x52); }
  build(): this { return this.raw(0x62); }
  newobj(): this { return this.raw(0x81); }
  binpersid(): this { return this.raw(0x51); }
  pop(): this { return this.raw(0x30); }
  popMark(): this { return this.raw(0x31); }
  dup(): this { return this.raw(0x32); }

  /** The bytes written so far. */
  done(): Uint8Array { return Uint8Array.from(this.bytes); }
}

/** Writes a .npy array (header version 1 or 2, padded to 64 bytes). */
export function buildNpy(descr: string, shape: number[], data: Uint8Array, opts: { fortran?: boolean; version?: 1 | 2 } = {}): Uint8Array {
  const version = opts.version ?? 1;
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': ${opts.fortran ? 'True' : 'False'}, 'shape': ${shapeText}, }`;
  const pre = version === 1 ? 10 : 12;
  const total = Math.ceil((pre + header.length + 1) / 64) * 64;
  header = header.padEnd(total - pre - 1, ' ') + '\n';
  const out = new Uint8Array(total + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const dv = new DataView(out.buffer);
  if (version === 1) dv.setUint16(8, header.length, true);
  else dv.setUint32(8, header.length, true);
  out.set(new TextEncoder().encode(header), pre);
  out.set(data, total);
  return out;
}

/** Little-endian bytes of typed array values. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer.slice(a.byteOffset, a.byteOffset + a.byteLength));
}

/** Runs `fn` and returns the error it throws (fails if it does not throw). */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    if (e instanceof Error) return e;
    throw new Error(`threw a non-Error: ${String(e)}`);
  }
  throw new Error('expected an error, none was thrown');
}
