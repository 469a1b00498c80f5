/**
 * A restricted pickle reader (protocols 0–5) for data pickles such as PyTorch checkpoints.
 *
 * It never executes anything: `GLOBAL` / `STACK_GLOBAL` / `INST` resolve names only against a
 * fixed allow list (the data types `torch.load(weights_only=True)` accepts), and calls (`REDUCE`,
 * `NEWOBJ`, `OBJ`, `INST`) are only possible on those allow-listed globals, each implemented here
 * in TypeScript. Any other global is refused with a {@link CheckpointError} naming it, before
 * anything else happens.
 *
 * Python values map to JavaScript as follows:
 * - `None` → `null`; `bool` → `boolean`; `float` → `number`;
 * - `int` → `number` when it is a safe integer, `bigint` otherwise;
 * - `str` → `string`; `bytes` / `bytearray` → `Uint8Array`;
 * - `list` → array; `tuple` (and `torch.Size`) → frozen array (see {@link isTuple});
 * - `dict` / `OrderedDict` → with the default `dicts: 'object'`, a plain object when every key is a
 *   string (insertion order kept, except that JavaScript lists integer-like keys such as `"0"`
 *   first), else a `Map`; with `dicts: 'map'`, always a `Map` (exact order, any key type);
 * - `set` / `frozenset` → `Set`; `slice` → {@link PySlice}; numpy scalars → `number`/`bigint`/`boolean`;
 * - allow-listed classes and functions that are not called (e.g. `torch.FloatStorage`,
 *   `torch.float16`) → {@link PyGlobal};
 * - tensors (`torch._utils._rebuild_tensor_v2` and friends) → whatever the `rebuildTensor`
 *   option returns (by default a {@link PickledTensor}); persistent ids → whatever
 *   `persistentLoad` returns.
 * Shared references (memo) stay shared.
 */
import type { DType } from '../engine/dtype.js';
import { CheckpointError } from './errors.js';

/** An allow-listed Python global (class, function or constant) as a value. */
export class PyGlobal {
  /** @internal */
  constructor(
    /** Module, e.g. `torch`. */
    readonly module: string,
    /** Qualified name inside the module, e.g. `FloatStorage`. */
    readonly name: string,
    /** @internal implementation when the global may be called */
    readonly call?: (args: readonly unknown[], vm: PickleContext) => unknown,
  ) {}

  /** `module.name`. */
  get qualifiedName(): string {
    return `${this.module}.${this.name}`;
  }

  /** `module.name`. */
  toString(): string {
    return this.qualifiedName;
  }
}

/** A Python `slice(start, stop, step)`. */
export class PySlice {
  /** @internal */
  constructor(readonly start: unknown, readonly stop: unknown, readonly step: unknown) {}
}

/** A numpy dtype as rebuilt from a pickle (`numpy.dtype('f8', False, True)` + state). */
export class NumpyDType {
  /** Byte order character from the pickled state (`<`, `>`, `|` or `=`). */
  byteorder = '=';
  /** @internal */
  constructor(/** Type string, e.g. `f8`, `i4`, `b1`. */ readonly descr: string) {}
}

/** Arguments of a tensor rebuild call (`torch._utils._rebuild_tensor_v2` and variants). */
export interface TensorRebuildSpec {
  /** Whatever `persistentLoad` returned for the storage. */
  storage: unknown;
  /** Offset of the first element in the storage, in elements. */
  storageOffset: number;
  /** Shape. */
  size: number[];
  /** Strides in elements. */
  stride: number[];
  /** `requires_grad` flag. */
  requiresGrad: boolean;
}

/** Default result of a tensor rebuild when no `rebuildTensor` option is given. */
export class PickledTensor {
  /** @internal */
  constructor(/** The rebuild arguments. */ readonly spec: TensorRebuildSpec) {}
}

/** Options of {@link unpickle}. */
export interface UnpickleOptions {
  /** Resolves persistent ids (PERSID/BINPERSID). Without it, persistent ids are refused. */
  persistentLoad?: (pid: unknown) => unknown;
  /** Builds tensor values. Default: a {@link PickledTensor} holding the spec. */
  rebuildTensor?: (spec: TensorRebuildSpec) => unknown;
  /** How dicts are returned (see module doc). Default `'object'`. */
  dicts?: 'object' | 'map';
  /** File name for error messages. */
  file?: string;
  /** Entry name (e.g. zip entry `archive/data.pkl`) for error messages. */
  entry?: string;
}

/** What allow-listed implementations can use while being called. */
export interface PickleContext {
  /** Throws a {@link CheckpointError} located at the current opcode. */
  fail(problem: string): never;
  /** The options given to {@link unpickle}. */
  readonly options: UnpickleOptions;
}

/** True for Python tuples as returned by {@link unpickle} (frozen arrays). */
export function isTuple(x: unknown): x is readonly unknown[] {
  return Array.isArray(x) && Object.isFrozen(x);
}

/** torch dtype global names → dtype. */
export const TORCH_DTYPE_NAMES: Readonly<Record<string, DType>> = {
  float32: 'float32', float: 'float32', float64: 'float64', double: 'float64',
  float16: 'float16', half: 'float16', bfloat16: 'bfloat16',
  int64: 'int64', long: 'int64', int32: 'int32', int: 'int32', int16: 'int16', short: 'int16',
  int8: 'int8', uint8: 'uint8', bool: 'bool',
};

/** torch storage class names → element dtype (`UntypedStorage` holds bytes). */
export const TORCH_STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'float32', DoubleStorage: 'float64', HalfStorage: 'float16', BFloat16Storage: 'bfloat16',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8',
  ByteStorage: 'uint8', BoolStorage: 'bool', UntypedStorage: 'uint8',
};

// ---------------------------------------------------------------------------------------------
// Allow list

type Impl = ((args: readonly unknown[], vm: PickleContext) => unknown) | null;

function isInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x);
}

function intTuple(x: unknown, what: string, vm: PickleContext): number[] {
  if (!Array.isArray(x) || !x.every(isInt)) vm.fail(`${what} must be a tuple of integers, got ${describe(x)}`);
  return [...(x as number[])];
}

function rebuildTensor(args: readonly unknown[], vm: PickleContext, fn: string, withGrad: boolean): unknown {
  const need = withGrad ? 6 : 4;
  if (args.length < need) vm.fail(`${fn} expects at least ${need} arguments, got ${args.length}`);
  const [storage, offset, size, stride, requiresGrad] = args;
  if (!isInt(offset) || offset < 0) vm.fail(`${fn}: storage offset must be a non-negative integer, got ${describe(offset)}`);
  const spec: TensorRebuildSpec = {
    storage,
    storageOffset: offset,
    size: intTuple(size, `${fn}: size`, vm),
    stride: intTuple(stride, `${fn}: stride`, vm),
    requiresGrad: withGrad ? requiresGrad === true : false,
  };
  if (spec.size.length !== spec.stride.length) {
    vm.fail(`${fn}: size has ${spec.size.length} dimensions but stride has ${spec.stride.length}`);
  }
  const cb = vm.options.rebuildTensor;
  return cb ? cb(spec) : new PickledTensor(spec);
}

function toIterable(x: unknown, what: string, vm: PickleContext): Iterable<unknown> {
  if (Array.isArray(x) || x instanceof Set) return x;
  if (x instanceof Map) return x.keys();
  vm.fail(`${what}: cannot iterate over ${describe(x)}`);
}

function encodeLatin1(s: string, vm: PickleContext): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 255) vm.fail(`_codecs.encode: character U+${c.toString(16)} cannot be encoded as latin-1`);
    out[i] = c;
  }
  return out;
}

function numpyScalar(args: readonly unknown[], vm: PickleContext): unknown {
  const [dt, bytes] = args;
  if (!(dt instanceof NumpyDType)) vm.fail(`numpy scalar: first argument must be a numpy dtype, got ${describe(dt)}`);
  if (!(bytes instanceof Uint8Array)) vm.fail('numpy scalar: second argument must be bytes');
  const m = /^([fiub])(\d+)$/.exec(dt.descr.replace(/^[<>|=]/, ''));
  if (m === null) vm.fail(`numpy scalar of dtype '${dt.descr}' is not supported (only numeric and bool scalars)`);
  const kind = m[1]!;
  const size = Number(m[2]);
  if (bytes.length !== size) vm.fail(`numpy scalar: ${bytes.length} bytes for dtype '${dt.descr}'`);
  const little = dt.byteorder !== '>' && !dt.descr.startsWith('>');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (kind === 'b' && size === 1) return bytes[0] !== 0;
  if (kind === 'f') {
    if (size === 8) return dv.getFloat64(0, little);
    if (size === 4) return dv.getFloat32(0, little);
    if (size === 2) {
      const h = dv.getUint16(0, little);
      const sign = h & 0x8000 ? -1 : 1;
      const e = (h >> 10) & 0x1f;
      const f = h & 0x3ff;
      if (e === 0) return sign * f * 2 ** -24;
      if (e === 31) return f ? NaN : sign * Infinity;
      return sign * (1 + f / 1024) * 2 ** (e - 15);
    }
  }
  if (kind === 'i' || kind === 'u') {
    const signed = kind === 'i';
    if (size === 1) return signed ? dv.getInt8(0) : dv.getUint8(0);
    if (size === 2) return signed ? dv.getInt16(0, little) : dv.getUint16(0, little);
    if (size === 4) return signed ? dv.getInt32(0, little) : dv.getUint32(0, little);
    if (size === 8) return normInt(signed ? dv.getBigInt64(0, little) : dv.getBigUint64(0, little));
  }
  return vm.fail(`numpy scalar of dtype '${dt.descr}' is not supported`);
}

const PARAMETER_TYPES = new Set(['torch.nn.parameter.Parameter', 'torch.Tensor']);

function buildAllowList(): Map<string, Impl> {
  const m = new Map<string, Impl>();
  m.set('collections.OrderedDict', (args: readonly unknown[], vm: PickleContext) => {
    const d = new Map<unknown, unknown>();
    if (args.length === 0) return d;
    const src = args[0];
    if (src instanceof Map) {
      for (const [k, v] of src) d.set(k, v);
    } else {
      for (const pair of toIterable(src, 'OrderedDict', vm)) {
        if (!Array.isArray(pair) || pair.length !== 2) vm.fail('OrderedDict: items must be (key, value) pairs');
        d.set(pair[0], pair[1]);
      }
    }
    return d;
  });
  m.set('torch._utils._rebuild_tensor_v2', (a: readonly unknown[], vm: PickleContext) => rebuildTensor(a, vm, '_rebuild_tensor_v2', true));
  m.set('torch._utils._rebuild_tensor', (a: readonly unknown[], vm: PickleContext) => rebuildTensor(a, vm, '_rebuild_tensor', false));
  m.set('torch._utils._rebuild_parameter', (a: readonly unknown[], vm: PickleContext) => {
    if (a.length < 1) vm.fail('_rebuild_parameter expects arguments (data, requires_grad, backward_hooks)');
    return a[0];
  });
  m.set('torch._utils._rebuild_parameter_with_state', (a: readonly unknown[], vm: PickleContext) => {
    if (a.length < 1) vm.fail('_rebuild_parameter_with_state expects arguments (data, requires_grad, backward_hooks, state)');
    return a[0];
  });
  m.set('torch._tensor._rebuild_from_type_v2', (a: readonly unknown[], vm: PickleContext) => {
    const [func, newType, fargs] = a;
    if (!(newType instanceof PyGlobal) || !PARAMETER_TYPES.has(newType.qualifiedName)) {
      vm.fail(`_rebuild_from_type_v2: type ${describe(newType)} is not allowed (only torch.nn.parameter.Parameter and torch.Tensor)`);
    }
    if (!(func instanceof PyGlobal) || func.call === undefined) {
      vm.fail(`_rebuild_from_type_v2: ${describe(func)} is not an allowed callable`);
    }
    if (!Array.isArray(fargs)) vm.fail('_rebuild_from_type_v2: arguments must be a tuple');
    return func.call(fargs, vm);
  });
  m.set('torch.nn.parameter.Parameter', (a: readonly unknown[], vm: PickleContext) => {
    if (a.length < 1) vm.fail('Parameter expects (data, requires_grad)');
    return a[0];
  });
  m.set('torch.Tensor', null);
  for (const s of Object.keys(TORCH_STORAGE_DTYPES)) m.set(`torch.${s}`, null);
  for (const d of Object.keys(TORCH_DTYPE_NAMES)) m.set(`torch.${d}`, null);
  m.set('torch.Size', (a: readonly unknown[], vm: PickleContext) => {
    if (a.length === 0) return Object.freeze([]);
    return Object.freeze([...toIterable(a[0], 'torch.Size', vm)]);
  });
  m.set('torch.device', (a: readonly unknown[], vm: PickleContext) => {
    // Only strings and integers: String() of a (possibly shared, DAG-shaped) list would expand it.
    if (!a.every((x) => typeof x === 'string' || isInt(x))) vm.fail(`torch.device: arguments must be a string and an index, got ${a.map(describe).join(', ')}`);
    return a.map(String).join(':');
  });
  m.set('builtins.set', (a: readonly unknown[], vm: PickleContext) => new Set(a.length ? toIterable(a[0], 'set', vm) : []));
  m.set('builtins.frozenset', (a: readonly unknown[], vm: PickleContext) => new Set(a.length ? toIterable(a[0], 'frozenset', vm) : []));
  m.set('builtins.slice', (a) => (a.length === 1 ? new PySlice(null, a[0], null) : new PySlice(a[0], a[1], a[2] ?? null)));
  const bytesCtor: Impl = (a: readonly unknown[], vm: PickleContext) => {
    if (a.length === 0) return new Uint8Array(0);
    const src = a[0];
    if (src instanceof Uint8Array) return new Uint8Array(src);
    if (Array.isArray(src) && src.every((x) => isInt(x) && x >= 0 && x < 256)) return Uint8Array.from(src as number[]);
    return vm.fail(`bytes/bytearray from ${describe(src)} is not supported`);
  };
  m.set('builtins.bytes', bytesCtor);
  m.set('builtins.bytearray', bytesCtor);
  m.set('_codecs.encode', (a: readonly unknown[], vm: PickleContext) => {
    const [s, enc] = a;
    if (typeof s !== 'string') vm.fail('_codecs.encode: first argument must be a string');
    const e = typeof enc === 'string' ? enc.toLowerCase().replace(/_/g, '-') : 'utf-8';
    if (e === 'latin1' || e === 'latin-1' || e === 'iso-8859-1') return encodeLatin1(s, vm);
    if (e === 'utf-8' || e === 'utf8') return new TextEncoder().encode(s);
    return vm.fail(`_codecs.encode: encoding ${JSON.stringify(enc)} is not supported`);
  });
  m.set('numpy.core.multiarray.scalar', numpyScalar);
  m.set('numpy._core.multiarray.scalar', numpyScalar);
  m.set('numpy.dtype', (a: readonly unknown[], vm: PickleContext) => {
    if (typeof a[0] !== 'string') vm.fail('numpy.dtype: first argument must be a type string');
    return new NumpyDType(a[0]);
  });
  return m;
}

const ALLOW = buildAllowList();

/** Qualified names (`module.name`) of every global the reader accepts. */
export const ALLOWED_GLOBALS: readonly string[] = Object.freeze([...ALLOW.keys()]);

/** Python 2 module names that protocol 0–2 pickles written by Python 3 use. */
const MODULE_ALIASES: Readonly<Record<string, string>> = { __builtin__: 'builtins' };

/** True if `module.name` is on the allow list. */
export function isAllowedGlobal(module: string, name: string): boolean {
  return ALLOW.has(`${MODULE_ALIASES[module] ?? module}.${name}`);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Longest LONG4 integer payload accepted, in bytes (about 9 800 decimal digits). */
const MAX_LONG_BYTES = 4096;

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A bigint as a number when it is a safe integer. */
function normInt(b: bigint): number | bigint {
  return b >= MIN_SAFE && b <= MAX_SAFE ? Number(b) : b;
}

/** Decodes a little-endian two's complement integer (LONG1 / LONG4 payload). */
function decodeLong(b: Uint8Array): number | bigint {
  const n = b.length;
  if (n === 0) return 0;
  if (n <= 6) {
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + b[i]!;
    if (b[n - 1]! & 0x80) v -= 2 ** (8 * n);
    return v;
  }
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  if (b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
  return normInt(v);
}

/**
 * A short description of an unpickled value for error messages (`a tuple of 5`, `the string "x"`, ...): constant
 * size whatever the value, never expanding shared references.
 */
export function describePy(x: unknown): string {
  return describe(x);
}

function describe(x: unknown): string {
  if (x === null) return 'None';
  if (x instanceof PyGlobal) return `'${x.qualifiedName}'`;
  if (Array.isArray(x)) return Object.isFrozen(x) ? `a tuple of ${x.length}` : `a list of ${x.length}`;
  if (x instanceof Map) return 'a dict';
  if (x instanceof Uint8Array) return `bytes of length ${x.length}`;
  if (typeof x === 'string') return `the string ${JSON.stringify(x.length > 40 ? `${x.slice(0, 40)}...` : x)}`;
  if (typeof x === 'object') return `an object of type ${x.constructor?.name ?? 'unknown'}`;
  return `${typeof x} ${String(x)}`;
}

const utf8 = new TextDecoder('utf-8');

function latin1(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 4096) s += String.fromCharCode(...b.subarray(i, i + 4096));
  return s;
}

/** Decodes the body of a Python bytes repr (protocol 0 STRING) into bytes. */
function unescapeBytesRepr(s: string, vm: PickleContext): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c !== 0x5c) { out.push(c & 0xff); continue; }
    const e = s[++i];
    switch (e) {
      case 'n': out.push(10); break;
      case 'r': out.push(13); break;
      case 't': out.push(9); break;
      case 'a': out.push(7); break;
      case 'b': out.push(8); break;
      case 'f': out.push(12); break;
      case 'v': out.push(11); break;
      case '\\': out.push(0x5c); break;
      case "'": out.push(0x27); break;
      case '"': out.push(0x22); break;
      case '\n': break;
      case 'x': {
        const h = s.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(h)) vm.fail('invalid \\x escape in STRING');
        out.push(parseInt(h, 16));
        i += 2;
        break;
      }
      default: {
        const oct = /^[0-7]{1,3}/.exec(s.slice(i, i + 3));
        if (oct) {
          out.push(parseInt(oct[0], 8) & 0xff);
          i += oct[0].length - 1;
        } else {
          out.push(0x5c);
          if (e !== undefined) out.push(e.charCodeAt(0) & 0xff);
        }
      }
    }
  }
  return Uint8Array.from(out);
}

/** Decodes Python's raw-unicode-escape (protocol 0 UNICODE). */
function rawUnicodeEscape(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_m, u4?: string, u8?: string) =>
    String.fromCodePoint(parseInt((u4 ?? u8)!, 16)));
}

const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2',
  0x87: 'TUPLE3', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL',
  0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

// ---------------------------------------------------------------------------------------------
// The machine

class Machine implements PickleContext {
  readonly options: UnpickleOptions;
  private readonly data: Uint8Array;
  private readonly view: DataView;
  private pos = 0;
  private opPos = 0;
  private op = 0;
  private stack: unknown[] = [];
  private marks: number[] = [];
  private readonly memo = new Map<number, unknown>();

  constructor(data: Uint8Array, options: UnpickleOptions) {
    this.data = data;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.options = options;
  }

  fail(problem: string): never {
    const name = OPCODE_NAMES[this.op] ?? `0x${this.op.toString(16).padStart(2, '0')}`;
    throw new CheckpointError(`pickle: ${problem} (at byte offset ${this.opPos}, opcode ${name})`, {
      file: this.options.file, entry: this.options.entry,
    });
  }

  private need(n: number): number {
    if (n < 0 || !Number.isSafeInteger(n)) this.fail(`invalid length ${n}`);
    if (this.pos + n > this.data.length) {
      this.fail(`pickle data truncated: need ${n} bytes at offset ${this.pos}, only ${this.data.length - this.pos} left`);
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }

  private bytes(n: number): Uint8Array {
    const p = this.need(n);
    return this.data.subarray(p, p + n);
  }

  private u8(): number { return this.data[this.need(1)]!; }
  private u16(): number { return this.view.getUint16(this.need(2), true); }
  private u32(): number { return this.view.getUint32(this.need(4), true); }
  private i32(): number { return this.view.getInt32(this.need(4), true); }
  private u64(): number {
    const v = this.view.getBigUint64(this.need(8), true);
    if (v > MAX_SAFE) this.fail(`length ${v} is too large`);
    return Number(v);
  }

  /** Reads up to (not including) the next newline. */
  private line(): string {
    const nl = this.data.indexOf(0x0a, this.pos);
    if (nl < 0) this.fail('pickle data truncated: missing end of line');
    const s = latin1(this.data.subarray(this.pos, nl));
    this.pos = nl + 1;
    return s;
  }

  private bottom(): number {
    return this.marks.length ? this.marks[this.marks.length - 1]! : 0;
  }

  private pop(): unknown {
    if (this.stack.length <= this.bottom()) this.fail('stack underflow');
    return this.stack.pop();
  }

  private top(): unknown {
    if (this.stack.length <= this.bottom()) this.fail('stack underflow');
    return this.stack[this.stack.length - 1];
  }

  private popMark(): unknown[] {
    const m = this.marks.pop();
    if (m === undefined) this.fail('no MARK on the stack');
    return this.stack.splice(m);
  }

  private memoGet(i: number): unknown {
    if (!this.memo.has(i)) this.fail(`memo key ${i} not found`);
    return this.memo.get(i);
  }

  private memoPut(i: number): void {
    if (i < 0) this.fail(`negative memo key ${i}`);
    this.memo.set(i, this.top());
  }

  private parseIntText(s: string): number | bigint {
    const t = s.trim();
    if (t.length > 2.5 * MAX_LONG_BYTES) this.fail(`integer literal of ${t.length} digits is too large`);
    if (!/^[+-]?\d+$/.test(t)) this.fail(`invalid integer literal ${JSON.stringify(s)}`);
    return normInt(BigInt(t));
  }

  private parseFloatText(s: string): number {
    const t = s.trim();
    if (t === 'inf' || t === '+inf') return Infinity;
    if (t === '-inf') return -Infinity;
    if (t === 'nan' || t === '-nan') return NaN;
    const v = Number(t);
    if (t === '' || Number.isNaN(v)) this.fail(`invalid float literal ${JSON.stringify(s)}`);
    return v;
  }

  private resolveGlobal(module: string, name: string): PyGlobal {
    const mod = MODULE_ALIASES[module] ?? module;
    const key = `${mod}.${name}`;
    if (!ALLOW.has(key)) {
      this.fail(
        `global '${module}.${name}' is not on the allow list of safe types (as with torch.load(weights_only=True)); `
        + 'refusing to load it, nothing was executed',
      );
    }
    const impl = ALLOW.get(key)!;
    return new PyGlobal(mod, name, impl ?? undefined);
  }

  private callGlobal(f: unknown, args: unknown, how: string): unknown {
    if (!(f instanceof PyGlobal)) this.fail(`${how} on ${describe(f)}, which is not an allow-listed callable`);
    if (f.call === undefined) this.fail(`${how}: '${f.qualifiedName}' cannot be called`);
    if (!Array.isArray(args)) this.fail(`${how}: arguments of '${f.qualifiedName}' are not a tuple`);
    return f.call(args, this);
  }

  private build(state: unknown, target: unknown): void {
    // Nothing is ever "set" by calling code: state is inspected where meaningful and otherwise ignored.
    if (target instanceof NumpyDType && Array.isArray(state) && typeof state[1] === 'string') {
      target.byteorder = state[1];
    }
  }

  private decodeStr(b: Uint8Array): string {
    return utf8.decode(b);
  }

  run(): unknown {
    const d = this.data;
    for (;;) {
      if (this.pos >= d.length) {
        this.opPos = this.pos;
        this.fail('pickle data truncated: reached the end without a STOP opcode');
      }
      this.opPos = this.pos;
      const op = d[this.pos++]!;
      this.op = op;
      const st = this.stack;
      switch (op) {
        case 0x80: { // PROTO
          const v = this.u8();
          if (v > 5) this.fail(`unsupported pickle protocol ${v}`);
          break;
        }
        case 0x95: { // FRAME
          const n = this.u64();
          if (this.pos + n > d.length) this.fail(`frame of ${n} bytes runs past the end of the data (truncated?)`);
          break;
        }
        case 0x2e: // STOP
          return this.pop();
        case 0x28: this.marks.push(st.length); break; // MARK
        case 0x30: // POP
          if (this.marks.length && st.length === this.bottom()) this.marks.pop();
          else this.pop();
          break;
        case 0x31: this.popMark(); break; // POP_MARK
        case 0x32: st.push(this.top()); break; // DUP
        case 0x4e: st.push(null); break; // NONE
        case 0x88: st.push(true); break; // NEWTRUE
        case 0x89: st.push(false); break; // NEWFALSE
        case 0x49: { // INT
          const s = this.line();
          if (s === '01') st.push(true);
          else if (s === '00') st.push(false);
          else st.push(this.parseIntText(s));
          break;
        }
        case 0x4c: { // LONG
          const s = this.line();
          st.push(this.parseIntText(s.endsWith('L') ? s.slice(0, -1) : s));
          break;
        }
        case 0x4a: st.push(this.i32()); break; // BININT
        case 0x4b: st.push(this.u8()); break; // BININT1
        case 0x4d: st.push(this.u16()); break; // BININT2
        case 0x8a: st.push(decodeLong(this.bytes(this.u8()))); break; // LONG1
        case 0x8b: { // LONG4
          const n = this.i32();
          if (n < 0) this.fail('negative LONG4 length');
          // Decoding is quadratic in the length; no checkpoint holds integers of thousands of digits.
          if (n > MAX_LONG_BYTES) this.fail(`integer of ${n} bytes is too large (at most ${MAX_LONG_BYTES} accepted)`);
          st.push(decodeLong(this.bytes(n)));
          break;
        }
        case 0x46: st.push(this.parseFloatText(this.line())); break; // FLOAT
        case 0x47: st.push(this.view.getFloat64(this.need(8), false)); break; // BINFLOAT (big-endian)
        case 0x53: { // STRING
          const s = this.line();
          const q = s[0];
          if (s.length < 2 || (q !== "'" && q !== '"') || s[s.length - 1] !== q) this.fail('STRING argument is not quoted');
          st.push(this.decodeStr(unescapeBytesRepr(s.slice(1, -1), this)));
          break;
        }
        case 0x54: { // BINSTRING
          const n = this.i32();
          if (n < 0) this.fail('negative BINSTRING length');
          st.push(this.decodeStr(this.bytes(n)));
          break;
        }
        case 0x55: st.push(this.decodeStr(this.bytes(this.u8()))); break; // SHORT_BINSTRING
        case 0x56: st.push(rawUnicodeEscape(this.line())); break; // UNICODE
        case 0x58: st.push(utf8.decode(this.bytes(this.u32()))); break; // BINUNICODE
        case 0x8c: st.push(utf8.decode(this.bytes(this.u8()))); break; // SHORT_BINUNICODE
        case 0x8d: st.push(utf8.decode(this.bytes(this.u64()))); break; // BINUNICODE8
        case 0x42: st.push(new Uint8Array(this.bytes(this.u32()))); break; // BINBYTES
        case 0x43: st.push(new Uint8Array(this.bytes(this.u8()))); break; // SHORT_BINBYTES
        case 0x8e: st.push(new Uint8Array(this.bytes(this.u64()))); break; // BINBYTES8
        case 0x96: st.push(new Uint8Array(this.bytes(this.u64()))); break; // BYTEARRAY8
        case 0x97: this.fail('out-of-band buffers (NEXT_BUFFER) are not supported');
        // falls through (unreachable)
        case 0x98: this.top(); break; // READONLY_BUFFER: no-op on the value
        case 0x29: st.push(Object.freeze([])); break; // EMPTY_TUPLE
        case 0x74: st.push(Object.freeze(this.popMark())); break; // TUPLE
        case 0x85: st.push(Object.freeze([this.pop()])); break; // TUPLE1
        case 0x86: { const b = this.pop(); const a = this.pop(); st.push(Object.freeze([a, b])); break; } // TUPLE2
        case 0x87: { // TUPLE3
          const c = this.pop(); const b = this.pop(); const a = this.pop();
          st.push(Object.freeze([a, b, c]));
          break;
        }
        case 0x5d: st.push([]); break; // EMPTY_LIST
        case 0x6c: st.push(this.popMark()); break; // LIST
        case 0x61: { // APPEND
          const v = this.pop();
          const list = this.top();
          if (!Array.isArray(list) || Object.isFrozen(list)) this.fail(`APPEND to ${describe(list)}`);
          list.push(v);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.popMark();
          const list = this.top();
          if (!Array.isArray(list) || Object.isFrozen(list)) this.fail(`APPENDS to ${describe(list)}`);
          for (const v of items) list.push(v);
          break;
        }
        case 0x7d: st.push(new Map()); break; // EMPTY_DICT
        case 0x64: { // DICT
          const items = this.popMark();
          if (items.length % 2) this.fail('odd number of items for DICT');
          const m = new Map<unknown, unknown>();
          for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
          st.push(m);
          break;
        }
        case 0x73: { // SETITEM
          const v = this.pop();
          const k = this.pop();
          const m = this.top();
          if (!(m instanceof Map)) this.fail(`SETITEM on ${describe(m)}`);
          m.set(k, v);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.popMark();
          if (items.length % 2) this.fail('odd number of items for SETITEMS');
          const m = this.top();
          if (!(m instanceof Map)) this.fail(`SETITEMS on ${describe(m)}`);
          for (let i = 0; i < items.length; i += 2) m.set(items[i], items[i + 1]);
          break;
        }
        case 0x8f: st.push(new Set()); break; // EMPTY_SET
        case 0x90: { // ADDITEMS
          const items = this.popMark();
          const s = this.top();
          if (!(s instanceof Set)) this.fail(`ADDITEMS on ${describe(s)}`);
          for (const v of items) s.add(v);
          break;
        }
        case 0x91: st.push(new Set(this.popMark())); break; // FROZENSET
        case 0x67: st.push(this.memoGet(Number(this.parseIntText(this.line())))); break; // GET
        case 0x68: st.push(this.memoGet(this.u8())); break; // BINGET
        case 0x6a: st.push(this.memoGet(this.u32())); break; // LONG_BINGET
        case 0x70: this.memoPut(Number(this.parseIntText(this.line()))); break; // PUT
        case 0x71: this.memoPut(this.u8()); break; // BINPUT
        case 0x72: this.memoPut(this.u32()); break; // LONG_BINPUT
        case 0x94: this.memoPut(this.memo.size); break; // MEMOIZE
        case 0x63: { // GLOBAL
          const module = this.line();
          const name = this.line();
          st.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.pop();
          const module = this.pop();
          if (typeof module !== 'string' || typeof name !== 'string') this.fail('STACK_GLOBAL needs two strings');
          st.push(this.resolveGlobal(module, name));
          break;
        }
        case 0x69: { // INST
          const module = this.line();
          const name = this.line();
          const cls = this.resolveGlobal(module, name);
          const args = this.popMark();
          st.push(this.callGlobal(cls, args, 'INST'));
          break;
        }
        case 0x6f: { // OBJ
          const items = this.popMark();
          if (items.length === 0) this.fail('OBJ without a class');
          st.push(this.callGlobal(items[0], items.slice(1), 'OBJ'));
          break;
        }
        case 0x52: { // REDUCE
          const args = this.pop();
          const f = this.pop();
          st.push(this.callGlobal(f, args, 'REDUCE'));
          break;
        }
        case 0x81: { // NEWOBJ
          const args = this.pop();
          const cls = this.pop();
          st.push(this.callGlobal(cls, args, 'NEWOBJ'));
          break;
        }
        case 0x92: { // NEWOBJ_EX
          const kwargs = this.pop();
          const args = this.pop();
          const cls = this.pop();
          if (!(kwargs instanceof Map) || kwargs.size !== 0) this.fail('NEWOBJ_EX with keyword arguments is not supported');
          st.push(this.callGlobal(cls, args, 'NEWOBJ_EX'));
          break;
        }
        case 0x62: { // BUILD
          const state = this.pop();
          this.build(state, this.top());
          break;
        }
        case 0x50: { // PERSID
          const pid = this.line();
          st.push(this.persistent(pid));
          break;
        }
        case 0x51: st.push(this.persistent(this.pop())); break; // BINPERSID
        case 0x82: case 0x83: case 0x84: // EXT1/2/4
          this.fail('extension registry codes (EXT1/EXT2/EXT4) are not supported');
        // falls through (unreachable)
        default:
          this.fail(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
      }
    }
  }

  private persistent(pid: unknown): unknown {
    const cb = this.options.persistentLoad;
    if (cb === undefined) this.fail('persistent id found but no persistent_load handler was given');
    return cb(pid);
  }
}

/**
 * Deepest nesting of containers (lists, tuples, dicts, sets) {@link unpickle} accepts. Real checkpoints nest a few
 * levels; the bound keeps every recursive walk over the result (here and in its users) far from the JS stack limit.
 */
export const MAX_PICKLE_DEPTH = 1000;

function tooDeep(options: UnpickleOptions): CheckpointError {
  return new CheckpointError(
    `pickle: data is nested more than ${MAX_PICKLE_DEPTH} levels deep (lists/tuples/dicts inside each other); `
    + 'refusing it (a real checkpoint nests a few levels)',
    { file: options.file, entry: options.entry },
  );
}

/**
 * Turns internal dict Maps into plain objects where all keys are strings (sharing preserved; with `convert` false,
 * only walks), and bounds the nesting depth to {@link MAX_PICKLE_DEPTH}. Every shared node is visited once.
 */
function finishDicts(root: unknown, options: UnpickleOptions, convert: boolean): unknown {
  const seen = new Map<object, unknown>();
  const visit = (v: unknown, depth: number): unknown => {
    if (typeof v !== 'object' || v === null) return v;
    if (seen.has(v)) return seen.get(v);
    if (depth > MAX_PICKLE_DEPTH) throw tooDeep(options);
    if (!convert) {
      seen.set(v, v);
      if (v instanceof Map) {
        for (const [k, x] of v) { visit(k, depth + 1); visit(x, depth + 1); }
      } else if (Array.isArray(v) || v instanceof Set) {
        for (const x of v) visit(x, depth + 1);
      }
      return v;
    }
    if (v instanceof Map) {
      let allStrings = true;
      for (const k of v.keys()) if (typeof k !== 'string') { allStrings = false; break; }
      if (allStrings) {
        const o: Record<string, unknown> = {};
        seen.set(v, o);
        for (const [k, x] of v) {
          Object.defineProperty(o, k as string, { value: visit(x, depth + 1), enumerable: true, writable: true, configurable: true });
        }
        return o;
      }
      const m = new Map<unknown, unknown>();
      seen.set(v, m);
      for (const [k, x] of v) m.set(visit(k, depth + 1), visit(x, depth + 1));
      return m;
    }
    if (Array.isArray(v)) {
      const a: unknown[] = [];
      seen.set(v, a);
      for (const x of v) a.push(visit(x, depth + 1));
      if (Object.isFrozen(v)) Object.freeze(a);
      return a;
    }
    if (v instanceof Set) {
      const s = new Set<unknown>();
      seen.set(v, s);
      for (const x of v) s.add(visit(x, depth + 1));
      return s;
    }
    return v;
  };
  return visit(root, 0);
}

/**
 * Unpickles `data` without executing anything (see the module documentation for the allow list
 * and the value mapping). Throws a {@link CheckpointError} naming the byte offset and opcode on
 * malformed data, naming the global for anything not on the allow list, and for containers nested
 * more than {@link MAX_PICKLE_DEPTH} levels deep. Shared references stay shared (a value reached
 * through many memo references is one object), so the result is never larger than the pickle;
 * code that walks it must not expand shared subtrees (see `toJsonSafe` in checkpoint.ts).
 */
export function unpickle(data: Uint8Array, options: UnpickleOptions = {}): unknown {
  const vm = new Machine(data, options);
  const result = vm.run();
  return finishDicts(result, options, (options.dicts ?? 'object') !== 'map');
}
