/**
 * PyTorch checkpoints in the zip format written by `torch.save` since torch 1.6.
 *
 * The archive holds `<folder>/data.pkl` (the pickled object tree), `<folder>/data/<key>` (one
 * entry per storage, raw little-endian bytes) and small files (`version`, `byteorder`). The folder
 * name is whatever the writer chose, so it is found, not assumed. The pickle is read with the
 * restricted reader of `pickle.ts` (nothing is executed); persistent ids
 * `('storage', storage_type, key, location, numel)` become {@link PthStorage}s and
 * `_rebuild_tensor_v2(storage, offset, size, stride, ...)` becomes a lazy {@link PthTensor} whose
 * `read()` reads just the bytes its view covers and materialises them contiguously.
 *
 * Legacy (pre-1.6) files are recognised and refused with instructions on converting them.
 */
import { DTYPE_SIZE, type DType } from '../engine/dtype.js';
import { CheckpointError } from './errors.js';
import { byteSwapInPlace, contiguousStrides, numel, stridedToContiguous, type LazyTensor } from './raw.js';
import { PyGlobal, TORCH_STORAGE_DTYPES, describePy, unpickle, type TensorRebuildSpec } from './pickle.js';
import { BufferSource, FileSource, type ByteSource } from './source.js';
import { ZIP_STORED, ZipReader, isZipMagic, type ZipEntry } from './zip.js';

/** What to tell users of legacy checkpoints. */
export const LEGACY_PTH_HINT =
  'this is a legacy (pre-1.6) PyTorch checkpoint, which is not supported; convert it in Python with a recent torch: '
  + "`torch.save(torch.load('in.pth', map_location='cpu', weights_only=True), 'out.pth')` "
  + '(torch >= 1.6 writes the zip format by default; pass _use_new_zipfile_serialization=True if it was turned off)';

/**
 * Largest `data.pkl` accepted (256 MiB). The pickle holds only the object tree (names, shapes, storage ids), a few
 * MB even for huge models, so a bigger one is refused before it is inflated.
 */
export const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

/** One storage of a checkpoint: a zip entry of `numel` elements of `dtype`. */
export class PthStorage {
  /** @internal */
  constructor(
    private readonly zip: ZipReader,
    /** The zip entry holding the bytes. */
    readonly entry: ZipEntry,
    /** Storage key (the file name under `data/`). */
    readonly key: string,
    /** Element type (from the storage class). */
    readonly dtype: DType,
    /** Number of elements. */
    readonly numel: number,
    /** Device the storage was saved from (`cpu`, `cuda:0`, ...). */
    readonly location: string,
    /** True when the archive says its data is big-endian. */
    readonly bigEndian: boolean,
  ) {}

  /** Tensors viewing this storage (registered by their constructors). */
  private readonly viewers = new Set<object>();
  /** Viewers that have read since the storage was inflated. */
  private readonly served = new Set<object>();
  /** The inflated bytes of a deflated storage, kept while viewers are still to read. */
  private inflated: Uint8Array | null = null;

  /** @internal Registers a tensor viewing this storage. */
  addViewer(t: object): void {
    this.viewers.add(t);
  }

  /**
   * Reads elements `[start, start + count)` as raw (file byte order) bytes. A stored (uncompressed) storage is read
   * by range. A deflated one is inflated once and kept until every tensor viewing it has read (or the file is
   * closed), so that many tensors viewing one compressed storage do not inflate it again each.
   * @param viewer the tensor reading (for the release of a deflated storage's bytes)
   */
  readElements(start: number, count: number, viewer?: object): Uint8Array {
    const size = DTYPE_SIZE[this.dtype];
    if (this.entry.method === ZIP_STORED || viewer === undefined || this.viewers.size <= 1) {
      return this.zip.readRange(this.entry, start * size, count * size);
    }
    if (this.inflated === null) {
      this.inflated = this.zip.read(this.entry);
      this.served.clear();
    }
    const out = this.inflated.slice(start * size, (start + count) * size);
    this.served.add(viewer);
    if (this.served.size >= this.viewers.size) this.release();
    return out;
  }

  /** Drops the cached bytes of a deflated storage. */
  release(): void {
    this.inflated = null;
    this.served.clear();
  }
}

/** A tensor of a PyTorch checkpoint: a (possibly strided) view of a storage, read on demand. */
export class PthTensor implements LazyTensor {
  /** Element type. */
  readonly dtype: DType;
  /** Shape. */
  readonly shape: number[];
  /** Strides in elements. */
  readonly stride: number[];
  /** Offset of the first element in the storage. */
  readonly storageOffset: number;
  /** The storage viewed (possibly shared with other tensors). */
  readonly storage: PthStorage;
  /** `requires_grad` as saved. */
  readonly requiresGrad: boolean;
  /** Bytes returned by `read()`. */
  readonly nbytes: number;

  /** @internal Validates the view against the storage. */
  constructor(storage: PthStorage, spec: TensorRebuildSpec, file: string) {
    this.storage = storage;
    this.dtype = storage.dtype;
    this.shape = spec.size;
    this.stride = spec.stride;
    this.storageOffset = spec.storageOffset;
    this.requiresGrad = spec.requiresGrad;
    this.nbytes = numel(this.shape) * DTYPE_SIZE[this.dtype];
    storage.addViewer(this);
    const where = { file, entry: storage.entry.name };
    if (this.shape.some((d) => d < 0)) throw new CheckpointError(`tensor has a negative size [${this.shape.join(', ')}]`, where);
    if (this.stride.some((s) => s < 0)) throw new CheckpointError(`tensor has a negative stride [${this.stride.join(', ')}]`, where);
    if (numel(this.shape) > 0) {
      const last = this.lastElement();
      if (last >= storage.numel) {
        throw new CheckpointError(
          `tensor view (offset ${this.storageOffset}, size [${this.shape.join(', ')}], stride [${this.stride.join(', ')}]) `
          + `reaches element ${last} but the storage has ${storage.numel} elements`,
          where,
        );
      }
    }
  }

  private lastElement(): number {
    let last = this.storageOffset;
    for (let i = 0; i < this.shape.length; i++) last += (this.shape[i]! - 1) * this.stride[i]!;
    return last;
  }

  /** True if the view is row-major contiguous (dimensions of size 1 are ignored). */
  isContiguous(): boolean {
    const expected = contiguousStrides(this.shape);
    return this.shape.every((d, i) => d === 1 || this.stride[i] === expected[i]);
  }

  /** Reads the covered bytes of the storage and returns them contiguous, little-endian. */
  read(): Uint8Array {
    const n = numel(this.shape);
    if (n === 0) return new Uint8Array(0);
    const size = DTYPE_SIZE[this.dtype];
    let out: Uint8Array;
    if (this.isContiguous()) {
      out = this.storage.readElements(this.storageOffset, n, this);
    } else {
      const first = this.storageOffset;
      const span = this.lastElement() - first + 1;
      const src = this.storage.readElements(first, span, this);
      out = stridedToContiguous(src, size, this.shape, this.stride, 0);
    }
    if (this.storage.bigEndian) byteSwapInPlace(out, size);
    return out;
  }
}

/** An opened PyTorch zip checkpoint. */
export interface PthFile {
  /** Path or label. */
  readonly path: string;
  /** Name of the folder inside the archive (e.g. `archive`). */
  readonly folder: string;
  /**
   * The unpickled object (see `pickle.ts` for the value mapping; dicts with string keys are plain
   * objects), with tensors as {@link PthTensor}s.
   */
  readonly root: unknown;
  /** Storages by key. */
  readonly storages: Map<string, PthStorage>;
  /** Closes the file descriptor. */
  close(): void;
}

/** True if the bytes start like a legacy (pre-1.6) torch.save file: a raw pickle or a tar archive. */
export function isLegacyTorchMagic(head: Uint8Array): boolean {
  // pickle protocol 2 of the magic number 0x1950a86a20f9469cfc6c (LONG1 of 10 bytes)
  if (head.length >= 3 && head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a) return true;
  // tar (very old torch): "ustar" at offset 257
  if (head.length >= 262 && String.fromCharCode(...head.subarray(257, 262)) === 'ustar') return true;
  return false;
}

function findPickle(zip: ZipReader, file: string): { folder: string; pkl: ZipEntry } {
  const names = zip.entries.map((e) => e.name);
  const candidates = zip.entries.filter((e) => /^(?:[^/]+\/)?data\.pkl$/.test(e.name));
  if (candidates.length === 0) {
    throw new CheckpointError(
      'zip archive has no <folder>/data.pkl: not a PyTorch checkpoint '
      + `(first entries: ${names.slice(0, 5).join(', ')})`,
      { file },
    );
  }
  // Prefer a folder that also has data/ entries (a real checkpoint), then the shallowest name.
  const scored = candidates.map((e) => {
    const folder = e.name.slice(0, e.name.length - 'data.pkl'.length);
    const hasData = names.some((n) => n.startsWith(`${folder}data/`));
    return { e, folder, hasData };
  });
  scored.sort((a, b) => Number(b.hasData) - Number(a.hasData));
  const best = scored[0]!;
  const folder = best.folder;
  if (zip.has(`${folder}constants.pkl`) || names.some((n) => n.startsWith(`${folder}code/`))) {
    throw new CheckpointError(
      'this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; in Python, load it with '
      + 'torch.jit.load and save `model.state_dict()` with torch.save or safetensors',
      { file },
    );
  }
  return { folder: folder.replace(/\/$/, ''), pkl: best.e };
}

/** Opens a PyTorch zip checkpoint from a byte source. */
export function openPthSource(source: ByteSource): PthFile {
  const file = source.name;
  const head = source.read(0, Math.min(source.size, 512), 'file header');
  if (!isZipMagic(head)) {
    if (isLegacyTorchMagic(head)) throw new CheckpointError(LEGACY_PTH_HINT, { file });
    throw new CheckpointError('not a PyTorch zip checkpoint (no zip signature at the start of the file)', { file });
  }
  const zip = new ZipReader(source);
  const { folder, pkl } = findPickle(zip, file);
  const prefix = folder === '' ? '' : `${folder}/`;
  let bigEndian = false;
  const bo = zip.get(`${prefix}byteorder`);
  if (bo !== undefined) {
    const text = new TextDecoder().decode(zip.read(bo)).trim();
    if (text === 'big') bigEndian = true;
    else if (text !== 'little') throw new CheckpointError(`unknown byte order ${JSON.stringify(text)}`, { file, entry: bo.name });
  }
  const storages = new Map<string, PthStorage>();
  const persistentLoad = (pid: unknown): unknown => {
    const entryName = pkl.name;
    if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== 'storage') {
      throw new CheckpointError(`unsupported persistent id (${describePy(pid)}; expected ('storage', type, key, location, numel))`, { file, entry: entryName });
    }
    const [, type, key, location, count] = pid as unknown[];
    if (!(type instanceof PyGlobal) || type.module !== 'torch' || !Object.hasOwn(TORCH_STORAGE_DTYPES, type.name)) {
      throw new CheckpointError(`persistent id has an unknown storage type ${describePy(type)}`, { file, entry: entryName });
    }
    if (typeof key !== 'string') throw new CheckpointError('persistent id has a non-string storage key', { file, entry: entryName });
    if (typeof count !== 'number' || !Number.isSafeInteger(count) || count < 0) {
      throw new CheckpointError(`storage '${key}' has an invalid element count (${describePy(count)})`, { file, entry: entryName });
    }
    const dtype = TORCH_STORAGE_DTYPES[type.name]!;
    const existing = storages.get(key);
    if (existing !== undefined) {
      if (existing.dtype !== dtype) {
        throw new CheckpointError(`storage '${key}' is used both as ${existing.dtype} and ${dtype}`, { file, entry: entryName });
      }
      return existing;
    }
    const dataName = `${prefix}data/${key}`;
    const entry = zip.get(dataName);
    if (entry === undefined) throw new CheckpointError(`storage entry is missing from the archive`, { file, entry: dataName });
    const expected = count * DTYPE_SIZE[dtype];
    if (entry.size !== expected) {
      throw new CheckpointError(
        `storage has ${entry.size} bytes but ${count} elements of ${dtype} need ${expected}`, { file, entry: dataName },
      );
    }
    const s = new PthStorage(zip, entry, key, dtype, count, typeof location === 'string' ? location : describePy(location), bigEndian);
    storages.set(key, s);
    return s;
  };
  const rebuildTensor = (spec: TensorRebuildSpec): unknown => {
    if (!(spec.storage instanceof PthStorage)) {
      throw new CheckpointError('tensor rebuilt from something that is not a storage', { file, entry: pkl.name });
    }
    return new PthTensor(spec.storage, spec, file);
  };
  if (pkl.size > MAX_PICKLE_BYTES) {
    throw new CheckpointError(
      `the pickle is ${pkl.size} bytes, more than the ${MAX_PICKLE_BYTES} this reader accepts (a state dict's pickle `
      + 'is a few MB; tensor data lives in separate entries): refusing it', { file, entry: pkl.name },
    );
  }
  const root = unpickle(zip.read(pkl), { persistentLoad, rebuildTensor, file, entry: pkl.name });
  const close = (): void => {
    for (const st of storages.values()) st.release();
    zip.close();
  };
  return { path: file, folder, root, storages, close };
}

/**
 * Opens a PyTorch zip checkpoint (torch.save ≥ 1.6) lazily: the pickle is read now, storage bytes
 * only when a tensor's `read()` is called. Call `close()` when done.
 */
export function openPth(path: string): PthFile {
  const source = new FileSource(path);
  try {
    return openPthSource(source);
  } catch (e) {
    source.close();
    throw e;
  }
}

/** Parses a PyTorch zip checkpoint held in memory. */
export function parsePth(bytes: Uint8Array, name = '<buffer>'): PthFile {
  return openPthSource(new BufferSource(bytes, name));
}
