/**
 * Builds small PyTorch zip checkpoints by hand (the same layout torch.save writes), for tests.
 */
import { PickleWriter, buildZip } from './helpers.js';

/** A tensor view to put into a checkpoint. */
export interface TensorDesc {
  kind: 'tensor';
  storage: string;
  offset?: number;
  size: number[];
  stride?: number[];
  /** Wrap in torch._utils._rebuild_parameter. */
  parameter?: boolean;
}

/** A storage: torch class name (FloatStorage, ...), element count, raw bytes. */
export interface StorageDesc {
  type: string;
  numel: number;
  data: Uint8Array;
}

/** Values accepted by {@link torchPickle}. */
export type Value = TensorDesc | string | number | boolean | null | Value[] | { [k: string]: Value };

function contiguous(size: number[]): number[] {
  const s: number[] = [];
  let acc = 1;
  for (let i = size.length - 1; i >= 0; i--) { s[i] = acc; acc *= size[i]!; }
  return s;
}

/** Pickles `root` the way torch.save does (protocol 2, memo, persistent storage ids). */
export function torchPickle(root: Value, storages: Record<string, StorageDesc>): Uint8Array {
  const w = new PickleWriter().proto(2);
  let memo = 0;
  const memoGlobals = new Map<string, number>();
  const memoStorages = new Map<string, number>();
  const global = (mod: string, name: string): void => {
    const key = `${mod}.${name}`;
    const m = memoGlobals.get(key);
    if (m !== undefined) { w.get(m); return; }
    w.global(mod, name).put(memo);
    memoGlobals.set(key, memo++);
  };
  const tuple = (xs: number[]): void => {
    w.mark();
    for (const x of xs) w.int(x);
    w.tuple();
  };
  const tensor = (t: TensorDesc): void => {
    if (t.parameter) global('torch._utils', '_rebuild_parameter');
    global('torch._utils', '_rebuild_tensor_v2');
    w.mark();
    const sm = memoStorages.get(t.storage);
    if (sm !== undefined) {
      w.get(sm);
    } else {
      const s = storages[t.storage]!;
      w.mark().str('storage');
      global('torch', s.type);
      w.str(t.storage).str('cpu').int(s.numel).tuple().put(memo);
      memoStorages.set(t.storage, memo++);
    }
    w.binpersid();
    w.int(t.offset ?? 0);
    tuple(t.size);
    tuple(t.stride ?? contiguous(t.size));
    w.bool(false);
    global('collections', 'OrderedDict');
    w.emptyTuple().reduce();
    w.tuple().reduce();
    if (t.parameter) {
      w.bool(true);
      global('collections', 'OrderedDict');
      w.emptyTuple().reduce();
      w.tuple3().reduce();
    }
  };
  const value = (v: Value): void => {
    if (v === null) w.none();
    else if (typeof v === 'boolean') w.bool(v);
    else if (typeof v === 'number') { if (Number.isInteger(v)) w.int(v); else w.binfloat(v); }
    else if (typeof v === 'string') w.str(v);
    else if (Array.isArray(v)) { w.emptyList(); w.mark(); for (const x of v) value(x); w.appends(); }
    else if ((v as TensorDesc).kind === 'tensor') tensor(v as TensorDesc);
    else {
      w.emptyDict().put(memo++);
      const entries = Object.entries(v);
      if (entries.length) {
        w.mark();
        for (const [k, x] of entries) { w.str(k); value(x); }
        w.setitems();
      }
    }
  };
  value(root);
  return w.stop().done();
}

/** Builds the zip archive of a checkpoint under `folder/`. */
export function torchZip(
  folder: string, root: Value, storages: Record<string, StorageDesc>, opts: { byteorder?: 'little' | 'big'; pkl?: Uint8Array } = {},
): Uint8Array {
  const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
  const entries = [{ name: `${folder}/data.pkl`, data: opts.pkl ?? torchPickle(root, storages) }];
  if (opts.byteorder) entries.push({ name: `${folder}/byteorder`, data: enc(opts.byteorder) });
  for (const [k, s] of Object.entries(storages)) entries.push({ name: `${folder}/data/${k}`, data: s.data });
  entries.push({ name: `${folder}/version`, data: enc('3\n') });
  // torch pads local headers so that data is 64-byte aligned; emulate with an odd-sized pad
  return buildZip(entries.map((e, i) => ({ ...e, localPad: 20 + i })));
}

/** Shorthand for a tensor description. */
export function T(storage: string, size: number[], extra: Partial<TensorDesc> = {}): TensorDesc {
  return { kind: 'tensor', storage, size, ...extra };
}
