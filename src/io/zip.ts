/**
 * A read-only zip reader over a {@link ByteSource}: locates the end-of-central-directory record
 * (and its zip64 form), reads the central directory, and reads entries lazily — stored entries
 * directly at their offset (optionally just a byte range), deflated entries through
 * `zlib.inflateRawSync`. CRC-32 is verified whenever a whole entry is read.
 *
 * The data offset of an entry is computed from its local header (whose extra field may differ from
 * the central directory's, e.g. the alignment padding PyTorch writes).
 */
import { constants as bufferConstants } from 'node:buffer';
import * as zlib from 'node:zlib';
import { CheckpointError } from './errors.js';
import { BufferSource, FileSource, type ByteSource } from './source.js';

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50;
const SIG_EOCD64_LOCATOR = 0x07064b50;

/** Compression methods this reader understands. */
export const ZIP_STORED = 0;
/** Deflate compression method code. */
export const ZIP_DEFLATED = 8;

/** One central-directory entry. */
export interface ZipEntry {
  /** Name (path with `/` separators). */
  readonly name: string;
  /** Compression method (0 stored, 8 deflated; others are refused on read). */
  readonly method: number;
  /** General purpose bit flags. */
  readonly flags: number;
  /** CRC-32 of the uncompressed data. */
  readonly crc32: number;
  /** Compressed size in bytes. */
  readonly compressedSize: number;
  /** Uncompressed size in bytes. */
  readonly size: number;
  /** Offset of the local file header. */
  readonly localHeaderOffset: number;
}

function u16(b: Uint8Array, o: number): number { return b[o]! | (b[o + 1]! << 8); }
function u32(b: Uint8Array, o: number): number { return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0; }
function u64(b: Uint8Array, o: number, file: string, what: string): number {
  const lo = u32(b, o);
  const hi = u32(b, o + 4);
  const v = hi * 0x100000000 + lo;
  if (!Number.isSafeInteger(v)) throw new CheckpointError(`${what} ${v} is too large`, { file });
  return v;
}

const MAX_BUFFER = bufferConstants.MAX_LENGTH;
const hasCrc32 = typeof (zlib as { crc32?: unknown }).crc32 === 'function';

/**
 * Counters of the work done by every {@link ZipReader} of the process (for tests and diagnostics): `inflations` is
 * the number of deflated entries inflated in full, `inflatedBytes` the bytes they produced.
 */
export const zipStats = { inflations: 0, inflatedBytes: 0 };

/** Reads zip archives lazily from a file or a buffer. */
export class ZipReader {
  /** Entries in central-directory order. */
  readonly entries: ZipEntry[];
  /** The underlying source. */
  readonly source: ByteSource;
  private readonly byName = new Map<string, ZipEntry>();
  private readonly dataOffsets = new Map<ZipEntry, number>();

  /** Opens a zip file through a file descriptor (only the directory is read now). */
  static open(path: string): ZipReader {
    const src = new FileSource(path);
    try {
      return new ZipReader(src);
    } catch (e) {
      src.close();
      throw e;
    }
  }

  /** Reads a zip archive held in memory. */
  static fromBuffer(bytes: Uint8Array, name = '<buffer>'): ZipReader {
    return new ZipReader(new BufferSource(bytes, name));
  }

  /** Parses the central directory of `source`; throws a {@link CheckpointError} if it is not a valid zip. */
  constructor(source: ByteSource) {
    this.source = source;
    this.entries = this.readDirectory();
    const index = new Map<string, number>();
    this.entries.forEach((e, i) => {
      const j = index.get(e.name);
      if (j !== undefined) {
        // Readers disagree on which copy counts (Python's zipfile takes the last): refuse the ambiguity.
        this.fail(`the archive has two entries with the same name (central directory entries ${j} and ${i}); `
          + 'refusing an ambiguous archive', e.name);
      }
      index.set(e.name, i);
      this.byName.set(e.name, e);
    });
  }

  private fail(problem: string, entry?: string): never {
    throw new CheckpointError(problem, { file: this.source.name, entry });
  }

  private readDirectory(): ZipEntry[] {
    const src = this.source;
    const file = src.name;
    if (src.size < 22) this.fail(`file is ${src.size} bytes, too short for a zip archive (truncated?)`);
    const tailLen = Math.min(src.size, 22 + 0xffff);
    const tailStart = src.size - tailLen;
    const tail = src.read(tailStart, tailLen, 'end of central directory');
    let eocd = -1;
    for (let i = tailLen - 22; i >= 0; i--) {
      if (u32(tail, i) === SIG_EOCD && i + 22 + u16(tail, i + 20) === tailLen) { eocd = i; break; }
    }
    if (eocd < 0) {
      for (let i = tailLen - 22; i >= 0; i--) if (u32(tail, i) === SIG_EOCD) { eocd = i; break; }
    }
    if (eocd < 0) {
      this.fail('end of central directory record not found: not a zip archive, or the archive is truncated');
    }
    let diskNo = u16(tail, eocd + 4);
    let cdDisk = u16(tail, eocd + 6);
    let count = u16(tail, eocd + 10);
    let cdSize = u32(tail, eocd + 12);
    let cdOffset = u32(tail, eocd + 16);
    const eocdPos = tailStart + eocd;
    // zip64: a locator sits immediately before the classic record.
    if (eocdPos >= 20) {
      const loc = src.read(eocdPos - 20, 20, 'zip64 end of central directory locator');
      if (u32(loc, 0) === SIG_EOCD64_LOCATOR) {
        const pos = u64(loc, 8, file, 'zip64 end of central directory offset');
        if (pos + 56 > src.size) this.fail('zip64 end of central directory record lies beyond the end of the file (truncated?)');
        const rec = src.read(pos, 56, 'zip64 end of central directory');
        if (u32(rec, 0) !== SIG_EOCD64) this.fail('zip64 end of central directory record has a bad signature');
        diskNo = u32(rec, 16);
        cdDisk = u32(rec, 20);
        count = u64(rec, 32, file, 'entry count');
        cdSize = u64(rec, 40, file, 'central directory size');
        cdOffset = u64(rec, 48, file, 'central directory offset');
      }
    }
    if (diskNo !== 0 || cdDisk !== 0) this.fail('multi-disk (spanned) zip archives are not supported');
    if (cdOffset + cdSize > src.size) {
      this.fail(`central directory (${cdOffset}..${cdOffset + cdSize}) lies beyond the end of the file (${src.size} bytes): truncated or corrupt`);
    }
    const cd = src.read(cdOffset, cdSize, 'central directory');
    const entries: ZipEntry[] = [];
    const decoder = new TextDecoder('utf-8');
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || u32(cd, p) !== SIG_CENTRAL) {
        this.fail(`central directory entry ${i} of ${count} is corrupt (bad signature at directory offset ${p})`);
      }
      const flags = u16(cd, p + 8);
      const method = u16(cd, p + 10);
      const crc32 = u32(cd, p + 16);
      let compressedSize = u32(cd, p + 20);
      let size = u32(cd, p + 24);
      const nameLen = u16(cd, p + 28);
      const extraLen = u16(cd, p + 30);
      const commentLen = u16(cd, p + 32);
      let localHeaderOffset = u32(cd, p + 42);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cd.length) this.fail(`central directory entry ${i} runs past the end of the directory`);
      const nameBytes = cd.subarray(p + 46, p + 46 + nameLen);
      const name = flags & 0x800 ? decoder.decode(nameBytes) : latin1(nameBytes);
      // zip64 extended information: only the fields saturated in the fixed header are present, in order.
      let x = p + 46 + nameLen;
      const xEnd = x + extraLen;
      while (x + 4 <= xEnd) {
        const id = u16(cd, x);
        const len = u16(cd, x + 2);
        if (id === 0x0001) {
          let q = x + 4;
          const qEnd = q + len;
          const take = (what: string): number => {
            if (q + 8 > qEnd) this.fail(`zip64 extra field too short for the ${what}`, name);
            const v = u64(cd, q, file, what);
            q += 8;
            return v;
          };
          if (size === 0xffffffff) size = take('uncompressed size');
          if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
          if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('local header offset');
        }
        x += 4 + len;
      }
      entries.push({ name, method, flags, crc32, compressedSize, size, localHeaderOffset });
      p = end;
    }
    return entries;
  }

  /** The entry with this exact name, if any. */
  get(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** True if an entry with this exact name exists. */
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** Absolute offset of the entry's (possibly compressed) data, from its local header. */
  dataOffset(entry: ZipEntry): number {
    const cached = this.dataOffsets.get(entry);
    if (cached !== undefined) return cached;
    if (entry.localHeaderOffset + 30 > this.source.size) {
      this.fail(`local header at ${entry.localHeaderOffset} lies beyond the end of the file (truncated?)`, entry.name);
    }
    const h = this.source.read(entry.localHeaderOffset, 30, entry.name);
    if (u32(h, 0) !== SIG_LOCAL) this.fail(`bad local header signature at offset ${entry.localHeaderOffset}`, entry.name);
    const off = entry.localHeaderOffset + 30 + u16(h, 26) + u16(h, 28);
    if (off + entry.compressedSize > this.source.size) {
      this.fail(
        `data (${off}..${off + entry.compressedSize}) lies beyond the end of the file (${this.source.size} bytes): the archive is truncated`,
        entry.name,
      );
    }
    this.dataOffsets.set(entry, off);
    return off;
  }

  private resolve(entry: ZipEntry | string): ZipEntry {
    if (typeof entry !== 'string') return entry;
    const e = this.byName.get(entry);
    if (e === undefined) this.fail('no such entry in the archive', entry);
    return e;
  }

  private checkReadable(e: ZipEntry): void {
    if (e.flags & 0x1) this.fail('entry is encrypted', e.name);
    if (e.method !== ZIP_STORED && e.method !== ZIP_DEFLATED) {
      this.fail(`unsupported compression method ${e.method} (only stored and deflated)`, e.name);
    }
    if (e.method === ZIP_STORED && e.compressedSize !== e.size) {
      this.fail(`stored entry has compressed size ${e.compressedSize} != size ${e.size}`, e.name);
    }
  }

  /**
   * Inflates with the central directory's size as a hard limit: zlib stops at the first output byte beyond it (so a
   * decompression bomb never materialises more than the declared size), and that is an error.
   */
  private inflate(e: ZipEntry, compressed: Uint8Array, finishFlush?: number): Uint8Array {
    if (e.size > MAX_BUFFER) this.fail(`entry of ${e.size} bytes is too large to inflate in memory`, e.name);
    let out: Uint8Array;
    try {
      out = zlib.inflateRawSync(compressed, {
        maxOutputLength: Math.max(1, e.size),
        ...(finishFlush !== undefined ? { finishFlush } : {}),
      });
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
        this.fail(`deflate data inflates to more than the ${e.size} bytes the central directory declares `
          + '(corrupt archive or decompression bomb); stopped at the limit', e.name);
      }
      this.fail(`corrupt deflate data: ${(err as Error).message}`, e.name);
    }
    if (finishFlush === undefined) {
      if (out.byteLength !== e.size) this.fail(`inflated to ${out.byteLength} bytes, expected ${e.size}`, e.name);
      zipStats.inflations++;
      zipStats.inflatedBytes += out.byteLength;
    } else if (out.byteLength > e.size) {
      this.fail(`inflated to more than the ${e.size} bytes the central directory declares`, e.name);
    }
    return ownBytes(out);
  }

  /** Reads and decompresses a whole entry, verifying its size and CRC-32. */
  read(entry: ZipEntry | string): Uint8Array {
    const e = this.resolve(entry);
    this.checkReadable(e);
    const raw = this.source.read(this.dataOffset(e), e.compressedSize, e.name);
    const out = e.method === ZIP_STORED ? raw : this.inflate(e, raw);
    if (hasCrc32 && zlib.crc32(out) !== e.crc32) this.fail('CRC-32 mismatch: the entry data is corrupt', e.name);
    return out;
  }

  /**
   * Reads `length` bytes at `start` of the entry's uncompressed data. Stored entries read only
   * that range (the CRC is checked only when the range is the whole entry); deflated entries are
   * inflated whole, checked and sliced.
   */
  readRange(entry: ZipEntry | string, start: number, length: number): Uint8Array {
    const e = this.resolve(entry);
    this.checkReadable(e);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length < 0 || start + length > e.size) {
      this.fail(`byte range ${start}..${start + length} is outside the entry (${e.size} bytes)`, e.name);
    }
    if (e.method === ZIP_STORED) {
      if (start === 0 && length === e.size) return this.read(e); // whole entry: verify the CRC too
      return this.source.read(this.dataOffset(e) + start, length, e.name);
    }
    const all = this.read(e);
    if (start === 0 && length === all.byteLength) return all;
    const out = new Uint8Array(length);
    out.set(all.subarray(start, start + length));
    return out;
  }

  /**
   * Reads at least the first `min(n, size)` uncompressed bytes of an entry (deflated entries are
   * inflated only as far as needed, so a header can be parsed without inflating a huge entry).
   */
  readPrefix(entry: ZipEntry | string, n: number): Uint8Array {
    const e = this.resolve(entry);
    this.checkReadable(e);
    const want = Math.min(n, e.size);
    if (e.method === ZIP_STORED) return this.source.read(this.dataOffset(e), want, e.name);
    const off = this.dataOffset(e);
    let take = Math.min(e.compressedSize, Math.max(1024, want));
    for (;;) {
      const part = this.source.read(off, take, e.name);
      const out = this.inflate(e, part, zlib.constants.Z_SYNC_FLUSH);
      if (out.byteLength >= want) return ownBytes(out.subarray(0, want));
      if (take >= e.compressedSize) this.fail(`inflated to ${out.byteLength} bytes, expected at least ${want}`, e.name);
      take = Math.min(e.compressedSize, take * 4);
    }
  }

  /** Closes the underlying file descriptor. */
  close(): void {
    this.source.close();
  }
}

/** A plain Uint8Array that owns its whole ArrayBuffer (zlib may return pooled Buffer slices). */
function ownBytes(b: Uint8Array): Uint8Array {
  if (b.byteOffset === 0 && b.buffer.byteLength === b.byteLength) return new Uint8Array(b.buffer, 0, b.byteLength);
  const out = new Uint8Array(b.byteLength);
  out.set(b);
  return out;
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
  return s;
}

/** True if the first bytes look like a zip archive (local header or empty-archive signature). */
export function isZipMagic(head: Uint8Array): boolean {
  if (head.length < 4) return false;
  const sig = u32(head, 0);
  return sig === SIG_LOCAL || sig === SIG_EOCD;
}
