/**
 * Guarded file-system primitives shared by every reader and writer of user files:
 *
 * - {@link readRegularFile} reads only regular files (a device such as `/dev/zero`, a FIFO or a socket is refused
 *   before anything is read, and opening never blocks) and refuses files above a size limit;
 * - {@link readStdinBytes} reads standard input up to a size limit (for `-` as an input name);
 * - {@link ensureDir} creates an output folder one component at a time and fails with a clear message where
 *   `fs.mkdirSync(…, {recursive: true})` can spin forever (e.g. under `/proc`);
 * - {@link writeFileAtomic} / {@link withAtomicFile} write under a temporary name in the same folder and rename into
 *   place, so that a killed run never leaves a truncated file under the final name.
 */
import {
  type Stats, closeSync, constants, fstatSync, fsyncSync, lstatSync, mkdirSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** Error for a file that cannot be read or written as asked; names the file and the problem. */
export class FileAccessError extends Error {
  /** The file or folder concerned. */
  readonly file: string;
  /** What went wrong, without the file name. */
  readonly problem: string;

  /**
   * @param file path concerned
   * @param problem what went wrong
   * @param cause underlying error, if any
   */
  constructor(file: string, problem: string, cause?: unknown) {
    super(`${file}: ${problem}`, cause === undefined ? undefined : { cause });
    this.name = 'FileAccessError';
    this.file = file;
    this.problem = problem;
  }
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Human-readable byte count (binary units). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** What kind of file-system object a stat result is, in words (for error messages): 'a folder', 'a character device'… */
export function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFile()) return 'a file';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** Options of {@link readRegularFile}. */
export interface ReadFileLimits {
  /** Refuse files larger than this many bytes (default: no limit). */
  maxBytes?: number;
  /** What the file is, for messages (default 'file'). */
  what?: string;
}

/**
 * Reads a whole regular file. Refuses, with a {@link FileAccessError} naming the file, anything that is not a
 * regular file (folders, devices, FIFOs, sockets; symlinks are followed) and files above `maxBytes`. The file is
 * opened non-blocking, so a FIFO can never hang the caller, and at most the size found at open time is read.
 *
 * @param path file to read
 * @param limits size limit and a word for messages
 */
export function readRegularFile(path: string, limits: ReadFileLimits = {}): Uint8Array {
  const what = limits.what ?? 'file';
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      // A symlink whose target is missing opens as ENOENT too: say which.
      let dangling = false;
      try {
        dangling = lstatSync(path).isSymbolicLink();
      } catch { /* no link either */ }
      throw new FileAccessError(path, dangling ? `${what} is a dangling symbolic link (its target does not exist)` : 'file not found', e);
    }
    if (code === 'EISDIR') throw new FileAccessError(path, `is a folder, expected a ${what}`, e);
    throw new FileAccessError(path, `cannot open ${what} (${errMsg(e)})`, e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new FileAccessError(path, `is ${kindOf(st)}, expected a regular ${what}`);
    const size = st.size;
    if (limits.maxBytes !== undefined && size > limits.maxBytes) {
      throw new FileAccessError(path, `${what} is ${formatBytes(size)}, above the limit of ${formatBytes(limits.maxBytes)}`);
    }
    const out = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = readSync(fd, out, done, size - done, done);
      if (n === 0) break; // shrank while reading
      done += n;
    }
    return done === size ? out : out.subarray(0, done);
  } catch (e) {
    if (e instanceof FileAccessError) throw e;
    throw new FileAccessError(path, `cannot read ${what} (${errMsg(e)})`, e);
  } finally {
    closeSync(fd);
  }
}


/**
 * Reads standard input to its end, refusing more than `maxBytes` (the read stops at the first byte over).
 *
 * @param maxBytes size limit
 * @param what what the input is, for messages
 * @param stream the stream to read (default `process.stdin`)
 */
export async function readStdinBytes(maxBytes: number, what = 'input', stream: NodeJS.ReadableStream = process.stdin): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += b.length;
    if (total > maxBytes) {
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      throw new FileAccessError('<stdin>', `${what} is above the limit of ${formatBytes(maxBytes)}`);
    }
    chunks.push(b);
  }
  const all = Buffer.concat(chunks, total);
  return new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
}

/**
 * Creates a folder and its missing parents, one component at a time, and checks that the result is a folder.
 * Errors name the component that could not be created and why (e.g. `/proc` refuses new folders); unlike
 * `mkdirSync(dir, {recursive: true})` this never loops.
 *
 * @param dir the folder
 * @param what what the folder is, for messages (default 'output folder')
 */
export function ensureDir(dir: string, what = 'output folder'): void {
  const abs = resolve(dir);
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    let st: Stats | undefined;
    try {
      st = statSync(cur);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ENOTDIR: a parent is a file; walking up finds it and says so.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new FileAccessError(dir, `cannot use ${what}: ${cur}: ${errMsg(e)}`, e);
    }
    if (st) {
      if (!st.isDirectory()) throw new FileAccessError(dir, `cannot create ${what}: ${cur} exists and is ${kindOf(st)}, not a folder`);
      break;
    }
    missing.push(cur);
    const parent = dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && statSync(d).isDirectory()) continue; // created concurrently
      throw new FileAccessError(dir, `cannot create ${what}: ${d}: ${errMsg(e)}`, e);
    }
  }
}

let tmpCounter = 0;

/** A temporary name next to `path` (same folder, so the final rename stays on one file system). */
function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Date.now()}-${tmpCounter++}`);
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) {
    done += writeSync(fd, data, done, Math.min(data.byteLength - done, 0x40000000));
  }
}

/** Options of {@link withAtomicFile}. */
export interface AtomicWriteOptions {
  /**
   * Flush the file to disk (`fsync`) before the rename and the folder entry after it, so that even a power loss leaves
   * the old or the new file (default false: atomic against a killed process, not against a crash of the machine).
   */
  durable?: boolean;
}

/** Flushes a folder's entries to disk; file systems that cannot sync a folder are skipped. */
function fsyncDir(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    /* best effort: some file systems refuse fsync on folders */
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}

/**
 * Writes a file atomically: `write(fd)` writes to a temporary file in the same folder (`.NAME.tmp-PID-...`), which is
 * then renamed onto `path`. On any error the temporary file is removed and `path` is left as it was; a process killed
 * mid-write leaves the temporary file (see {@link isAtomicTempOf}) and `path` as it was. The parent folder must exist
 * (see {@link ensureDir}).
 *
 * @param path final file name
 * @param write writes the contents; gets the open file descriptor and a helper that writes a whole buffer
 * @param o `durable`: fsync the file and the folder (for checkpoints)
 * @returns what `write` returns
 */
export function withAtomicFile<T>(path: string, write: (fd: number, writeBytes: (b: Uint8Array) => void) => T,
  o: AtomicWriteOptions = {}): T {
  const tmp = tempNameFor(path);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx');
  } catch (e) {
    throw new FileAccessError(path, `cannot create file (${errMsg(e)})`, e);
  }
  let r: T;
  try {
    r = write(fd, (b) => writeAll(fd, b));
    if (o.durable) fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) {
      try { closeSync(fd); } catch { /* already closed */ }
    }
    try { unlinkSync(tmp); } catch { /* not created */ }
    throw e;
  }
  if (o.durable) fsyncDir(dirname(path));
  return r;
}

/** Whether `name` (a folder entry) is a temporary file that {@link withAtomicFile} left for the final name `finalName`. */
export function isAtomicTempOf(name: string, finalName: string): boolean {
  return name.startsWith(`.${finalName}.tmp-`);
}

/**
 * Writes bytes (or UTF-8 text) to `path` atomically (temporary file in the same folder + rename).
 *
 * @param path final file name; its folder must exist
 * @param data contents
 */
export function writeFileAtomic(path: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  try {
    withAtomicFile(path, (_fd, write) => write(bytes));
  } catch (e) {
    if (e instanceof FileAccessError) throw e;
    throw new FileAccessError(path, `cannot write file (${errMsg(e)})`, e);
  }
}
