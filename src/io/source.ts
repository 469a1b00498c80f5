/**
 * Random-access byte sources: a file read on demand through a file descriptor, or an in-memory
 * buffer. Every reader of this layer works on a {@link ByteSource} so that big files are read
 * piece by piece (`fs.readSync` at an offset) and never loaded whole.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { CheckpointError } from './errors.js';

/** Random access to a sequence of bytes. */
export interface ByteSource {
  /** File path, or a label for in-memory data; used in error messages. */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Returns a fresh copy (own `ArrayBuffer`, `byteOffset` 0) of `length` bytes at `offset`.
   * Throws a {@link CheckpointError} when the range does not lie inside the source.
   * @param what what is being read, for the error message (e.g. a tensor or entry name)
   */
  read(offset: number, length: number, what?: string): Uint8Array;
  /** Releases the file descriptor, if any. A later `read` reopens the file. */
  close(): void;
}

function checkRange(src: ByteSource, offset: number, length: number, what?: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new CheckpointError(`invalid byte range offset=${offset} length=${length}`, { file: src.name, entry: what });
  }
  if (offset + length > src.size) {
    throw new CheckpointError(
      `bytes ${offset}..${offset + length} lie beyond the end of the file (${src.size} bytes): the file is truncated or corrupt`,
      { file: src.name, entry: what },
    );
  }
}

/** Closes descriptors of sources that were dropped without `close()`. */
const fdFinalizer = new FinalizationRegistry<{ fd: number | null }>((holder) => {
  if (holder.fd !== null) {
    try { closeSync(holder.fd); } catch { /* already closed */ }
    holder.fd = null;
  }
});

/**
 * A file read lazily through a descriptor with `fs.readSync` at explicit positions.
 * The descriptor is opened by the constructor, closed by {@link FileSource.close} (or when the
 * object is garbage collected) and reopened transparently by a later read.
 */
export class FileSource implements ByteSource {
  /** The path given to the constructor. */
  readonly name: string;
  /** File size at open time. */
  readonly size: number;
  private readonly holder: { fd: number | null };

  /** Opens `path` for reading. Throws a {@link CheckpointError} if it cannot be opened. */
  constructor(path: string) {
    this.name = path;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new CheckpointError(`cannot open file: ${(e as Error).message}`, { file: path, cause: e });
    }
    const st = fstatSync(fd);
    if (!st.isFile()) {
      closeSync(fd);
      throw new CheckpointError('not a regular file', { file: path });
    }
    this.size = st.size;
    this.holder = { fd };
    fdFinalizer.register(this, this.holder, this);
  }

  private descriptor(): number {
    if (this.holder.fd !== null) return this.holder.fd;
    let fd: number;
    try {
      fd = openSync(this.name, 'r');
    } catch (e) {
      throw new CheckpointError(`cannot reopen file: ${(e as Error).message}`, { file: this.name, cause: e });
    }
    const size = fstatSync(fd).size;
    if (size !== this.size) {
      closeSync(fd);
      throw new CheckpointError(`file changed size since it was opened (${this.size} -> ${size} bytes)`, { file: this.name });
    }
    this.holder.fd = fd;
    return fd;
  }

  /** @inheritdoc */
  read(offset: number, length: number, what?: string): Uint8Array {
    checkRange(this, offset, length, what);
    const out = new Uint8Array(length);
    const fd = this.descriptor();
    let done = 0;
    while (done < length) {
      const chunk = Math.min(length - done, 0x40000000);
      const n = readSync(fd, out, done, chunk, offset + done);
      if (n <= 0) {
        throw new CheckpointError(
          `unexpected end of file reading bytes ${offset}..${offset + length} (file shrank while open?)`,
          { file: this.name, entry: what },
        );
      }
      done += n;
    }
    return out;
  }

  /** @inheritdoc */
  close(): void {
    if (this.holder.fd !== null) {
      const fd = this.holder.fd;
      this.holder.fd = null;
      closeSync(fd);
    }
  }
}

/** An in-memory byte source (a Buffer or Uint8Array); `read` returns copies. */
export class BufferSource implements ByteSource {
  /** Label used in error messages. */
  readonly name: string;
  /** Length of the buffer. */
  readonly size: number;
  private readonly bytes: Uint8Array;

  /**
   * @param bytes the data (not copied; do not modify it while in use)
   * @param name label for error messages, e.g. the file the bytes came from
   */
  constructor(bytes: Uint8Array, name = '<buffer>') {
    this.bytes = bytes;
    this.name = name;
    this.size = bytes.byteLength;
  }

  /** @inheritdoc */
  read(offset: number, length: number, what?: string): Uint8Array {
    checkRange(this, offset, length, what);
    // Not `.slice`: on a Node Buffer that returns a view, not a copy.
    const out = new Uint8Array(length);
    out.set(this.bytes.subarray(offset, offset + length));
    return out;
  }

  /** @inheritdoc */
  close(): void { /* nothing to release */ }
}
