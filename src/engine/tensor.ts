/**
 * The tensor API: a thin, typed facade over a {@link Backend}. Every operation names an ATen operator; the backend
 * runs it (with autograd). Model code uses only this module and `functional.ts`.
 */
import type { Backend, CudaMemoryStats, Handle } from './backend.js';
import { libtorchBackend } from './native.js';
import { type DType, DTYPES, DTYPE_SIZE, SCALAR_TYPE, checkDType, dtypeFromScalarType, isFloating } from './dtype.js';

/** A device name: `cpu`, `cuda` or `cuda:N`. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
/** Nested arrays of numbers/booleans, as accepted by {@link tensor}. */
export type NestedArray = number | boolean | bigint | NestedArray[];
/** Typed arrays accepted as tensor data. */
export type TypedArray =
  | Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array | Uint16Array;

let currentBackend: Backend | null = null;

/** The backend all tensors use (the libtorch addon unless replaced with {@link setBackend}). */
export function backend(): Backend {
  return (currentBackend ??= libtorchBackend());
}

/** Replaces the backend (for example by a recording backend). Existing tensors stay with the old one. */
export function setBackend(b: Backend): void {
  currentBackend = b;
}

/** A lazily resolved operator reference. */
export class Op {
  private id: number | null | undefined;
  constructor(readonly name: string, readonly overload = '') {}
  /** Whether the backend has this operator. */
  available(): boolean {
    if (this.id === undefined) this.id = backend().findOp(this.name, this.overload, true);
    return this.id !== null;
  }
  /** Runs the operator and returns whatever the backend returns. */
  call(args: unknown[]): unknown {
    if (this.id === undefined || this.id === null) this.id = backend().findOp(this.name, this.overload);
    return backend().call(this.id as number, args);
  }
  /** Runs an operator that returns one tensor. */
  t(args: unknown[]): Tensor {
    return new Tensor(this.call(args) as Handle);
  }
  /** Runs an operator that returns several tensors. */
  ts(args: unknown[]): Tensor[] {
    return (this.call(args) as Handle[]).map((h) => new Tensor(h));
  }
}

const ops = new Map<string, Op>();
/** Returns the (cached) operator `name.overload`, e.g. `op('aten::add', 'Tensor')`. */
export function op(name: string, overload = ''): Op {
  const key = `${name}.${overload}`;
  let o = ops.get(key);
  if (!o) ops.set(key, (o = new Op(name, overload)));
  return o;
}
const aten = (name: string, overload = ''): Op => op(`aten::${name}`, overload);

// ---- memory scopes ------------------------------------------------------------------------------------------

const scopeStack: Set<Tensor>[] = [];

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>): void {
  if (value instanceof Tensor) {
    out.add(value);
    return;
  }
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (Array.isArray(value)) for (const v of value) collect(v, out, seen);
  else if (value instanceof Map) for (const v of value.values()) collect(v, out, seen);
  else if (Object.getPrototypeOf(value) === Object.prototype) for (const v of Object.values(value)) collect(v, out, seen);
}

/**
 * Runs `fn` and disposes every tensor created inside it, except the tensors it returns (in arrays, plain objects or
 * maps) and tensors marked with {@link Tensor.keep}. Returned tensors move to the enclosing scope. Like tf.tidy.
 * `fn` must be synchronous.
 */
export function scope<T>(fn: () => T): T {
  const mine = new Set<Tensor>();
  scopeStack.push(mine);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopeStack.pop();
    for (const t of mine) if (!t.kept) t.dispose();
    throw e;
  }
  scopeStack.pop();
  if (result instanceof Promise) {
    for (const t of mine) if (!t.kept) t.dispose();
    throw new Error('scope(): the function must be synchronous (it returned a Promise)');
  }
  const out = new Set<Tensor>();
  collect(result, out, new Set());
  const parent = scopeStack[scopeStack.length - 1];
  for (const t of mine) {
    if (out.has(t)) parent?.add(t);
    else if (!t.kept) t.dispose();
  }
  return result;
}

/** Marks tensors to survive every enclosing {@link scope}. Returns its argument. */
export function keep<T extends Tensor | Tensor[]>(t: T): T {
  for (const x of Array.isArray(t) ? t : [t]) x.kept = true;
  return t;
}

// ---- grad mode ----------------------------------------------------------------------------------------------

/** Runs `fn` with gradient recording off (like `torch.no_grad()`). Synchronous functions only. */
export function noGrad<T>(fn: () => T): T {
  const prev = backend().setGradEnabled(false);
  try {
    return fn();
  } finally {
    backend().setGradEnabled(prev);
  }
}

/** Runs `fn` with gradient recording on (inside a {@link noGrad}). */
export function enableGrad<T>(fn: () => T): T {
  const prev = backend().setGradEnabled(true);
  try {
    return fn();
  } finally {
    backend().setGradEnabled(prev);
  }
}

/** Whether operations record gradients now. */
export function isGradEnabled(): boolean {
  return backend().isGradEnabled();
}

/**
 * Gradient checkpointing (the authors' `with_cp`): runs `fn` without keeping its intermediates and re-runs it during
 * backward to get gradients, trading compute for memory. Gradients flow to `inputs` and to every parameter `fn`
 * uses, provided some input requires grad (as PyTorch's reentrant checkpoint). The CPU random state is replayed,
 * so dropout and drop path masks match. CPU tensors only: on CUDA the backward pass raises an error.
 * Without grad mode, or when no input requires grad, it simply calls `fn`.
 */
export function checkpoint(fn: (...inputs: Tensor[]) => Tensor[], inputs: Tensor[]): Tensor[] {
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) return fn(...inputs);
  const handles = backend().checkpoint((hs) => {
    // Results of fn are handed to libtorch; their JS wrappers are released right away.
    const outs = scope(() => fn(...hs.map((h) => new Tensor(h))));
    const out = outs.map((t) => t.handle);
    for (const t of outs) t.kept = false;
    return out;
  }, inputs.map((t) => t.handle));
  return handles.map((h) => new Tensor(h));
}

// ---- helpers ------------------------------------------------------------------------------------------------

/** Options for tensor creation. */
export interface CreateOptions {
  dtype?: DType;
  device?: Device | string;
  requiresGrad?: boolean;
}

const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;
/** Loss reduction. */
export type Reduction = keyof typeof REDUCTION;

function st(d: DType | undefined): number | null {
  return d === undefined ? null : SCALAR_TYPE[checkDType(d, 'dtype')];
}

function checkDevice(d: string | undefined): string | null {
  if (d === undefined) return null;
  if (!/^(cpu|cuda(:\d+)?)$/.test(d)) throw new Error(`unknown device ${JSON.stringify(d)}; expected cpu, cuda or cuda:N`);
  return d;
}

function finishCreate(t: Tensor, o: CreateOptions | undefined): Tensor {
  if (o?.requiresGrad) t.requiresGrad = true;
  return t;
}

function dims(d: number | readonly number[]): number[] {
  return typeof d === 'number' ? [d] : [...d];
}

function isTypedArray(x: unknown): x is TypedArray {
  return ArrayBuffer.isView(x) && !(x instanceof DataView);
}

const TYPED_DTYPE = new Map<Function, DType>([
  [Float32Array, 'float32'], [Float64Array, 'float64'], [Int32Array, 'int32'], [Int16Array, 'int16'],
  [Int8Array, 'int8'], [Uint8Array, 'uint8'], [BigInt64Array, 'int64'],
]);

function inferShape(data: NestedArray): number[] {
  const shape: number[] = [];
  let cur: NestedArray = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0] as NestedArray;
  }
  return shape;
}

function flatten(data: NestedArray, shape: number[], depth: number, out: unknown[]): void {
  if (depth === shape.length) {
    if (Array.isArray(data)) throw new Error('tensor(): ragged nested array (too deep at some entry)');
    out.push(data);
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) {
    throw new Error(`tensor(): ragged nested array: expected length ${shape[depth]} at depth ${depth}`);
  }
  // Indexed loop (not for-of): holes in sparse arrays come out as undefined and are refused below.
  for (let i = 0; i < data.length; i++) flatten(data[i] as NestedArray, shape, depth + 1, out);
}

/** Inclusive integer ranges of the integer dtypes (int64: the range a JS number holds exactly, bigint: full). */
const INT_RANGE: Partial<Record<DType, readonly [number, number]>> = {
  int8: [-128, 127], int16: [-32768, 32767], int32: [-2147483648, 2147483647], uint8: [0, 255],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
/** Smallest magnitude that rounds to infinity in each floating dtype (round to nearest even). */
const FLOAT_OVERFLOW: Partial<Record<DType, number>> = {
  float16: 65520, // max 65504; halfway to the next binade step rounds to Inf
  bfloat16: 2 ** 128 - 2 ** 119, // max (2 − 2^−7)·2^127; halfway above it rounds to Inf
};

function showValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'bigint') return `${v}n`;
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'object') return `an object (${(v as object).constructor?.name ?? 'Object'})`;
  return String(v);
}

function indexOf(flat: number, shape: readonly number[]): string {
  const idx: number[] = new Array<number>(shape.length);
  let r = flat;
  for (let d = shape.length - 1; d >= 0; d--) {
    const n = shape[d]!;
    idx[d] = n > 0 ? r % n : 0;
    r = n > 0 ? Math.floor(r / n) : 0;
  }
  return `[${idx.join(', ')}]`;
}

/**
 * Validates JS values for a dtype and encodes them (float16/bfloat16: as float32, converted after upload). Refuses
 * anything that is not a number/boolean (bigint for integer dtypes), and values the dtype cannot hold: non-integers
 * and out-of-range integers for integer dtypes, unsafe integers for int64 unless given as bigint, finite values that
 * would overflow to ±Infinity in a floating dtype. NaN and ±Infinity given explicitly are kept for floating dtypes.
 */
function encodeChecked(values: readonly unknown[], dtype: DType, shape: readonly number[]): ArrayBufferView {
  const n = values.length;
  const fail = (i: number, v: unknown, why: string): never => {
    throw new Error(`tensor(): element ${indexOf(i, shape)} is ${showValue(v)}: ${why} (dtype ${dtype})`);
  };
  const floating = isFloating(dtype);
  if (floating) {
    const out = dtype === 'float64' ? new Float64Array(n) : new Float32Array(n);
    const limit = FLOAT_OVERFLOW[dtype];
    for (let i = 0; i < n; i++) {
      const v = values[i];
      let x: number;
      if (typeof v === 'number') x = v;
      else if (typeof v === 'boolean') x = v ? 1 : 0;
      else return fail(i, v, typeof v === 'bigint' ? 'a bigint is only accepted for integer dtypes' : 'not a number');
      out[i] = x;
      if (Number.isFinite(x)) {
        if (dtype === 'float32' && !Number.isFinite(out[i]!)) fail(i, v, 'out of range (it would become Infinity)');
        if (limit !== undefined && Math.abs(x) >= limit) fail(i, v, 'out of range (it would become Infinity)');
      }
    }
    return out;
  }
  if (dtype === 'bool') {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const v = values[i];
      if (typeof v === 'boolean') out[i] = v ? 1 : 0;
      else if (typeof v === 'number' && !Number.isNaN(v)) out[i] = v !== 0 ? 1 : 0;
      else fail(i, v, 'not a boolean or number');
    }
    return out;
  }
  const [lo, hi] = INT_RANGE[dtype]!;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (typeof v === 'bigint') {
      if (dtype === 'int64' ? v < INT64_MIN || v > INT64_MAX : v < BigInt(lo) || v > BigInt(hi)) {
        fail(i, v, `out of range for ${dtype}`);
      }
      continue;
    }
    const x = typeof v === 'boolean' ? (v ? 1 : 0) : v;
    if (typeof x !== 'number') return fail(i, v, 'not a number');
    if (!Number.isInteger(x)) fail(i, v, 'not an integer');
    if (x < lo || x > hi) {
      fail(i, v, dtype === 'int64'
        ? 'beyond ±(2^53 − 1), where JavaScript numbers are not exact integers; pass a bigint'
        : `out of range for ${dtype} [${lo}, ${hi}]`);
    }
  }
  switch (dtype) {
    case 'int32': return Int32Array.from(values, (v) => Number(v));
    case 'int16': return Int16Array.from(values, (v) => Number(v));
    case 'int8': return Int8Array.from(values, (v) => Number(v));
    case 'uint8': return Uint8Array.from(values, (v) => Number(v));
    default: return BigInt64Array.from(values, (v) => (typeof v === 'bigint' ? v : BigInt(Number(v))));
  }
}

function decode(bytes: Uint8Array, dtype: DType): ArrayLike<number> & Iterable<number> {
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  switch (dtype) {
    case 'float32': return new Float32Array(buf);
    case 'float64': return new Float64Array(buf);
    case 'int32': return new Int32Array(buf);
    case 'int16': return new Int16Array(buf);
    case 'int8': return new Int8Array(buf);
    case 'uint8': case 'bool': return new Uint8Array(buf);
    case 'int64': return Float64Array.from(new BigInt64Array(buf), (v) => Number(v));
    case 'float16': case 'bfloat16': throw new Error('decode: convert half types to float32 first');
  }
}

// ---- the Tensor class ---------------------------------------------------------------------------------------

/** Operand of an element-wise operation: a tensor or a number. */
export type TensorOrScalar = Tensor | number;

/** A tensor: an n-dimensional array on a device, with optional gradient tracking. */
export class Tensor {
  /** @internal */ private h: Handle | null;
  /** @internal */ kept = false;
  private metaCache: [number[], number, string] | null = null;

  /** Wraps a backend handle; use the creation functions ({@link tensor}, {@link zeros}, ...) instead. */
  constructor(handle: Handle) {
    this.h = handle;
    const top = scopeStack[scopeStack.length - 1];
    if (top) top.add(this);
  }

  /** The backend handle; throws if the tensor was disposed. */
  get handle(): Handle {
    if (this.h === null) throw new Error('tensor was disposed');
    return this.h;
  }

  private meta(): [number[], number, string] {
    return (this.metaCache ??= backend().meta(this.handle));
  }
  /** Sizes of every dimension (a copy). */
  get shape(): number[] { return [...this.meta()[0]]; }
  /** Number of dimensions. */
  get ndim(): number { return this.meta()[0].length; }
  /** Element type. */
  get dtype(): DType { return dtypeFromScalarType(this.meta()[1]); }
  /** Device (`cpu`, `cuda:0`, ...). */
  get device(): string { return this.meta()[2]; }
  /** Number of elements. */
  numel(): number { return this.meta()[0].reduce((a, b) => a * b, 1); }
  /** Size of one dimension (negative counts from the end). */
  size(dim: number): number {
    const s = this.meta()[0];
    const d = dim < 0 ? dim + s.length : dim;
    if (d < 0 || d >= s.length) throw new RangeError(`size(): dim ${dim} out of range for a ${s.length}-d tensor`);
    return s[d]!;
  }
  /** Strides in elements. */
  strides(): number[] { return backend().strides(this.handle); }

  /** Whether gradients are recorded for this tensor. */
  get requiresGrad(): boolean { return backend().requiresGrad(this.handle); }
  set requiresGrad(on: boolean) { backend().setRequiresGrad(this.handle, on); }
  /** Sets {@link requiresGrad} and returns this tensor. */
  requiresGrad_(on = true): this { this.requiresGrad = on; return this; }
  /** Accumulated gradient, or null. */
  get grad(): Tensor | null {
    const g = backend().grad(this.handle);
    return g === null ? null : new Tensor(g);
  }
  set grad(g: Tensor | null) { backend().setGrad(this.handle, g === null ? null : g.handle); }
  /** Clears the accumulated gradient. */
  zeroGrad(): void { backend().setGrad(this.handle, null); }
  /** True for tensors created by the user (not by a recorded operation). */
  get isLeaf(): boolean { return backend().isLeaf(this.handle); }
  /** Name of the autograd node that produced this tensor, or null. */
  get gradFn(): string | null { return backend().gradFn(this.handle); }
  /** Back-propagates from this tensor (a scalar unless `gradient` is given). */
  backward(gradient?: Tensor, opts: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    backend().backward([this.handle], [gradient ? gradient.handle : null], opts.retainGraph ?? false, opts.createGraph ?? false);
  }

  /** Frees the native memory now (the tensor becomes unusable). Safe to call twice. */
  dispose(): void {
    if (this.h !== null) {
      backend().dispose(this.h);
      this.h = null;
    }
  }
  /** Whether {@link dispose} was called. */
  get disposed(): boolean { return this.h === null; }
  /** Keeps this tensor alive past enclosing scopes. */
  keep(): this { this.kept = true; return this; }

  // -- data out --
  /** The elements as a typed array (float16/bfloat16 → Float32Array, int64 → Float64Array, bool → Uint8Array). */
  toTypedArray(): Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array {
    let t: Tensor = this;
    let dt = this.dtype;
    if (dt === 'float16' || dt === 'bfloat16') { t = this.to('float32'); dt = 'float32'; }
    const out = decode(backend().toBytes(t.handle), dt);
    if (t !== this) t.dispose();
    return out as Float32Array;
  }
  /** Raw contiguous little-endian bytes. */
  toBytes(): Uint8Array { return backend().toBytes(this.handle); }
  /** The value of a one-element tensor. */
  item(): number {
    if (this.numel() !== 1) throw new Error(`item(): tensor has ${this.numel()} elements, expected exactly 1 (shape [${this.shape}])`);
    const v = aten('item').call([this.handle]);
    return typeof v === 'boolean' ? (v ? 1 : 0) : (v as number);
  }
  /** The elements as nested arrays. */
  toArray(): NestedArray {
    const flat = Array.from(this.toTypedArray() as ArrayLike<number>);
    const shape = this.shape;
    if (shape.length === 0) return flat[0]!;
    const build = (d: number, off: number): NestedArray[] => {
      const n = shape[d]!;
      const stride = shape.slice(d + 1).reduce((a, b) => a * b, 1);
      const out: NestedArray[] = [];
      for (let i = 0; i < n; i++) out.push(d === shape.length - 1 ? flat[off + i]! : build(d + 1, off + i * stride));
      return out;
    };
    return build(0, 0);
  }
  /** A short description, e.g. `Tensor(float32[2, 3], cpu)`. */
  toString(): string {
    if (this.h === null) return 'Tensor(disposed)';
    return `Tensor(${this.dtype}[${this.shape.join(', ')}], ${this.device}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }

  // -- conversion --
  /** Converts to a dtype and/or device (a new tensor object sharing the data when nothing changes). */
  to(target: DType | Device | string | { dtype?: DType; device?: string }, opts: { copy?: boolean } = {}): Tensor {
    let dtype: DType | undefined;
    let device: string | undefined;
    if (typeof target === 'string') {
      if (/^(cpu|cuda(:\d+)?)$/.test(target)) device = target;
      else if ((DTYPES as readonly string[]).includes(target)) dtype = target as DType;
      else throw new Error(`to(): unknown device or dtype ${JSON.stringify(target)}; devices: cpu, cuda, cuda:N; dtypes: ${DTYPES.join(', ')}`);
    } else {
      dtype = target.dtype;
      device = target.device;
    }
    return aten('to', 'dtype_layout').t([this.handle, st(dtype), null, checkDevice(device), null, false, opts.copy ?? false]);
  }
  /** Same as `to('float32')`. */
  float(): Tensor { return this.to('float32'); }
  /** Same as `to('float64')`. */
  double(): Tensor { return this.to('float64'); }
  /** Same as `to('int64')`. */
  long(): Tensor { return this.to('int64'); }
  /** A contiguous tensor with the same values. */
  contiguous(): Tensor { return aten('contiguous').t([this.handle]); }
  /** A copy (gradients flow back to this tensor). */
  clone(): Tensor { return aten('clone').t([this.handle]); }
  /** The same data, cut from the autograd graph. */
  detach(): Tensor { return aten('detach').t([this.handle]); }

  // -- element-wise arithmetic (broadcasting) --
  add(other: TensorOrScalar, alpha = 1): Tensor {
    return other instanceof Tensor ? aten('add', 'Tensor').t([this.handle, other.handle, alpha])
      : aten('add', 'Scalar').t([this.handle, other, alpha]);
  }
  sub(other: TensorOrScalar, alpha = 1): Tensor {
    return other instanceof Tensor ? aten('sub', 'Tensor').t([this.handle, other.handle, alpha])
      : aten('sub', 'Scalar').t([this.handle, other, alpha]);
  }
  /** `other - this`. */
  rsub(other: number): Tensor { return aten('rsub', 'Scalar').t([this.handle, other, 1]); }
  mul(other: TensorOrScalar): Tensor {
    return other instanceof Tensor ? aten('mul', 'Tensor').t([this.handle, other.handle]) : aten('mul', 'Scalar').t([this.handle, other]);
  }
  div(other: TensorOrScalar): Tensor {
    return other instanceof Tensor ? aten('div', 'Tensor').t([this.handle, other.handle]) : aten('div', 'Scalar').t([this.handle, other]);
  }
  /** Division with rounding: `floor` or `trunc`. */
  divRound(other: Tensor, mode: 'floor' | 'trunc'): Tensor { return aten('div', 'Tensor_mode').t([this.handle, other.handle, mode]); }
  pow(exponent: TensorOrScalar): Tensor {
    return exponent instanceof Tensor ? aten('pow', 'Tensor_Tensor').t([this.handle, exponent.handle])
      : aten('pow', 'Tensor_Scalar').t([this.handle, exponent]);
  }
  remainder(other: TensorOrScalar): Tensor {
    return other instanceof Tensor ? aten('remainder', 'Tensor').t([this.handle, other.handle]) : aten('remainder', 'Scalar').t([this.handle, other]);
  }
  maximum(other: Tensor): Tensor { return aten('maximum').t([this.handle, other.handle]); }
  minimum(other: Tensor): Tensor { return aten('minimum').t([this.handle, other.handle]); }
  neg(): Tensor { return aten('neg').t([this.handle]); }
  abs(): Tensor { return aten('abs').t([this.handle]); }
  exp(): Tensor { return aten('exp').t([this.handle]); }
  log(): Tensor { return aten('log').t([this.handle]); }
  sqrt(): Tensor { return aten('sqrt').t([this.handle]); }
  rsqrt(): Tensor { return aten('rsqrt').t([this.handle]); }
  erf(): Tensor { return aten('erf').t([this.handle]); }
  erfinv(): Tensor { return aten('erfinv').t([this.handle]); }
  tanh(): Tensor { return aten('tanh').t([this.handle]); }
  sigmoid(): Tensor { return aten('sigmoid').t([this.handle]); }
  sin(): Tensor { return aten('sin').t([this.handle]); }
  cos(): Tensor { return aten('cos').t([this.handle]); }
  floor(): Tensor { return aten('floor').t([this.handle]); }
  ceil(): Tensor { return aten('ceil').t([this.handle]); }
  round(): Tensor { return aten('round').t([this.handle]); }
  sign(): Tensor { return aten('sign').t([this.handle]); }
  reciprocal(): Tensor { return aten('reciprocal').t([this.handle]); }
  /** Clamps into [min, max] (either may be null). */
  clamp(min: number | null, max: number | null = null): Tensor {
    if (min === null && max === null) throw new Error('clamp(): at least one of min and max is required');
    return aten('clamp').t([this.handle, min, max]);
  }

  // -- comparison (bool results) --
  eq(o: TensorOrScalar): Tensor { return cmp('eq', this, o); }
  ne(o: TensorOrScalar): Tensor { return cmp('ne', this, o); }
  lt(o: TensorOrScalar): Tensor { return cmp('lt', this, o); }
  le(o: TensorOrScalar): Tensor { return cmp('le', this, o); }
  gt(o: TensorOrScalar): Tensor { return cmp('gt', this, o); }
  ge(o: TensorOrScalar): Tensor { return cmp('ge', this, o); }
  logicalNot(): Tensor { return aten('logical_not').t([this.handle]); }
  logicalAnd(o: Tensor): Tensor { return aten('logical_and').t([this.handle, o.handle]); }
  logicalOr(o: Tensor): Tensor { return aten('logical_or').t([this.handle, o.handle]); }
  /** True when every element is non-zero. */
  all(): boolean { return aten('all').t([this.handle]).consume((t) => t.item() !== 0); }
  /** True when some element is non-zero. */
  any(): boolean { return aten('any').t([this.handle]).consume((t) => t.item() !== 0); }

  /** Runs `fn(this)` then disposes this tensor. */
  consume<T>(fn: (t: Tensor) => T): T {
    try { return fn(this); } finally { this.dispose(); }
  }

  // -- reductions --
  /** Sum over `dim` (all dims when omitted). */
  sum(dim?: number | readonly number[], keepdim = false, dtype?: DType): Tensor {
    return dim === undefined ? aten('sum').t([this.handle, st(dtype)])
      : aten('sum', 'dim_IntList').t([this.handle, dims(dim), keepdim, st(dtype)]);
  }
  /** Mean over `dim` (all dims when omitted). */
  mean(dim?: number | readonly number[], keepdim = false): Tensor {
    return dim === undefined ? aten('mean').t([this.handle]) : aten('mean', 'dim').t([this.handle, dims(dim), keepdim]);
  }
  /** Largest element overall. */
  max(): Tensor;
  /** Largest elements along `dim` with their indices. */
  max(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  max(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return aten('max').t([this.handle]);
    const [values, indices] = aten('max', 'dim').ts([this.handle, dim, keepdim]);
    return { values: values!, indices: indices! };
  }
  /** Smallest element overall. */
  min(): Tensor;
  /** Smallest elements along `dim` with their indices. */
  min(dim: number, keepdim?: boolean): { values: Tensor; indices: Tensor };
  min(dim?: number, keepdim = false): Tensor | { values: Tensor; indices: Tensor } {
    if (dim === undefined) return aten('min').t([this.handle]);
    const [values, indices] = aten('min', 'dim').ts([this.handle, dim, keepdim]);
    return { values: values!, indices: indices! };
  }
  amax(dim: number | readonly number[], keepdim = false): Tensor { return aten('amax').t([this.handle, dims(dim), keepdim]); }
  amin(dim: number | readonly number[], keepdim = false): Tensor { return aten('amin').t([this.handle, dims(dim), keepdim]); }
  argmax(dim?: number, keepdim = false): Tensor { return aten('argmax').t([this.handle, dim ?? null, keepdim]); }
  argmin(dim?: number, keepdim = false): Tensor { return aten('argmin').t([this.handle, dim ?? null, keepdim]); }
  /** Variance (Bessel-corrected unless `unbiased` is false). */
  var(dim?: number | readonly number[], opts: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return aten('var', 'dim').t([this.handle, dim === undefined ? null : dims(dim), opts.unbiased ?? true, opts.keepdim ?? false]);
  }
  /** Standard deviation (Bessel-corrected unless `unbiased` is false). */
  std(dim?: number | readonly number[], opts: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return aten('std', 'dim').t([this.handle, dim === undefined ? null : dims(dim), opts.unbiased ?? true, opts.keepdim ?? false]);
  }
  norm(p = 2, dim?: number | readonly number[], keepdim = false): Tensor {
    return dim === undefined ? aten('norm', 'Scalar').t([this.handle, p]) : aten('norm', 'ScalarOpt_dim').t([this.handle, p, dims(dim), keepdim]);
  }
  cumsum(dim: number): Tensor { return aten('cumsum').t([this.handle, dim]); }

  // -- shape --
  view(...shape: number[]): Tensor { return aten('view').t([this.handle, shape]); }
  reshape(...shape: number[]): Tensor { return aten('reshape').t([this.handle, shape]); }
  permute(...order: number[]): Tensor { return aten('permute').t([this.handle, order]); }
  transpose(dim0: number, dim1: number): Tensor { return aten('transpose', 'int').t([this.handle, dim0, dim1]); }
  flatten(startDim = 0, endDim = -1): Tensor { return aten('flatten', 'using_ints').t([this.handle, startDim, endDim]); }
  unflatten(dim: number, sizes: readonly number[]): Tensor {
    const s = this.shape;
    const d = dim < 0 ? dim + s.length : dim;
    return this.reshape(...s.slice(0, d), ...sizes, ...s.slice(d + 1));
  }
  unsqueeze(dim: number): Tensor { return aten('unsqueeze').t([this.handle, dim]); }
  squeeze(dim?: number): Tensor { return dim === undefined ? aten('squeeze').t([this.handle]) : aten('squeeze', 'dim').t([this.handle, dim]); }
  expand(...shape: number[]): Tensor { return aten('expand').t([this.handle, shape, false]); }
  expandAs(other: Tensor): Tensor { return this.expand(...other.shape); }
  repeat(...repeats: number[]): Tensor { return aten('repeat').t([this.handle, repeats]); }
  narrow(dim: number, start: number, length: number): Tensor { return aten('narrow').t([this.handle, dim, start, length]); }
  /** Python-style slice `[start:end:step]` along `dim` (end may be null for "to the end"). */
  slice(dim: number, start: number | null = 0, end: number | null = null, step = 1): Tensor {
    return aten('slice', 'Tensor').t([this.handle, dim, start, end, step]);
  }
  /** Selects one index along `dim`, removing that dimension. */
  select(dim: number, index: number): Tensor { return aten('select', 'int').t([this.handle, dim, index]); }
  indexSelect(dim: number, index: Tensor): Tensor { return aten('index_select').t([this.handle, dim, index.handle]); }
  gather(dim: number, index: Tensor): Tensor { return aten('gather').t([this.handle, dim, index.handle, false]); }
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor { return aten('scatter_add').t([this.handle, dim, index.handle, src.handle]); }
  /** Elements where `mask` is true replaced by `value`. */
  maskedFill(mask: Tensor, value: TensorOrScalar): Tensor {
    return value instanceof Tensor ? aten('masked_fill', 'Tensor').t([this.handle, mask.handle, value.handle])
      : aten('masked_fill', 'Scalar').t([this.handle, mask.handle, value]);
  }
  /** Splits into pieces of `size` (a number) or of the given sizes along `dim`. */
  split(size: number | readonly number[], dim = 0): Tensor[] {
    return typeof size === 'number' ? aten('split', 'Tensor').ts([this.handle, size, dim])
      : aten('split_with_sizes').ts([this.handle, [...size], dim]);
  }
  chunk(chunks: number, dim = 0): Tensor[] { return aten('chunk').ts([this.handle, chunks, dim]); }
  unbind(dim = 0): Tensor[] { return aten('unbind', 'int').ts([this.handle, dim]); }
  flip(...dimsToFlip: number[]): Tensor { return aten('flip').t([this.handle, dimsToFlip]); }

  // -- linear algebra --
  matmul(other: Tensor): Tensor { return aten('matmul').t([this.handle, other.handle]); }
  bmm(other: Tensor): Tensor { return aten('bmm').t([this.handle, other.handle]); }

  // -- in-place (for optimisers and initialisers; not differentiable on leaves that require grad) --
  add_(other: TensorOrScalar, alpha = 1): this {
    if (other instanceof Tensor) inplace(aten('add_', 'Tensor'), [this.handle, other.handle, alpha]);
    else inplace(aten('add_', 'Scalar'), [this.handle, other, alpha]);
    return this;
  }
  mul_(other: TensorOrScalar): this {
    if (other instanceof Tensor) inplace(aten('mul_', 'Tensor'), [this.handle, other.handle]);
    else inplace(aten('mul_', 'Scalar'), [this.handle, other]);
    return this;
  }
  /** `this += value * t1 * t2`. */
  addcmul_(t1: Tensor, t2: Tensor, value = 1): this { inplace(aten('addcmul_'), [this.handle, t1.handle, t2.handle, value]); return this; }
  /** `this += value * t1 / t2`. */
  addcdiv_(t1: Tensor, t2: Tensor, value = 1): this { inplace(aten('addcdiv_'), [this.handle, t1.handle, t2.handle, value]); return this; }
  copy_(src: Tensor): this { inplace(aten('copy_'), [this.handle, src.handle, false]); return this; }
  fill_(value: number): this { inplace(aten('fill_', 'Scalar'), [this.handle, value]); return this; }
  zero_(): this { inplace(aten('zero_'), [this.handle]); return this; }
  uniform_(from = 0, to = 1): this { inplace(aten('uniform_'), [this.handle, from, to, null]); return this; }
  normal_(mean = 0, std = 1): this { inplace(aten('normal_'), [this.handle, mean, std, null]); return this; }
  clamp_(min: number | null, max: number | null = null): this { inplace(aten('clamp_'), [this.handle, min, max]); return this; }
  erfinv_(): this { inplace(aten('erfinv_'), [this.handle]); return this; }
  sqrt_(): this { inplace(aten('sqrt_'), [this.handle]); return this; }
  lerp_(end: Tensor, weight: number): this { inplace(aten('lerp_', 'Scalar'), [this.handle, end.handle, weight]); return this; }
}

/** Runs an in-place operator; the alias of `self` it returns is released at once. */
function inplace(o: Op, args: unknown[]): void {
  const h = o.call(args);
  if (h !== null && typeof h === 'object') backend().dispose(h as Handle);
}

function cmp(name: string, a: Tensor, b: TensorOrScalar): Tensor {
  return b instanceof Tensor ? aten(name, 'Tensor').t([a.handle, b.handle]) : aten(name, 'Scalar').t([a.handle, b]);
}

// ---- creation -----------------------------------------------------------------------------------------------

/**
 * Creates a tensor from nested arrays, a number, or a typed array (with `shape`, default 1-d). The dtype defaults to
 * the typed array's type, else float32. Nested arrays / numbers are checked: every element must be a number or a
 * boolean (a bigint for integer dtypes), and representable in the dtype — integers in range for int8/16/32/uint8,
 * integers within ±(2^53 − 1) for int64 unless given as bigint, finite values that do not overflow a floating dtype
 * (NaN and ±Infinity given explicitly are kept). Anything else throws, naming the element's index, value and dtype.
 * Typed arrays are taken as they are (a dtype conversion follows libtorch's rules).
 */
export function tensor(data: NestedArray | TypedArray, opts: CreateOptions & { shape?: readonly number[] } = {}): Tensor {
  let shape: number[];
  let bytes: ArrayBufferView;
  let dtype: DType;
  if (isTypedArray(data)) {
    const native = TYPED_DTYPE.get(data.constructor);
    if (!native) throw new Error(`tensor(): unsupported typed array ${data.constructor.name}`);
    dtype = opts.dtype ?? native;
    shape = opts.shape ? [...opts.shape] : [data.length];
    const n = shape.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`tensor(): shape [${shape}] needs ${n} elements, the data has ${data.length}`);
    if (dtype === native) {
      bytes = data;
    } else {
      const base = fromBytes(data, native, shape);
      const out = base.to(dtype);
      base.dispose();
      if (opts.device && opts.device !== 'cpu') { const moved = out.to(opts.device); out.dispose(); return finishCreate(moved, opts); }
      return finishCreate(out, opts);
    }
  } else {
    shape = opts.shape ? [...opts.shape] : inferShape(data);
    const flat: unknown[] = [];
    flatten(data, inferShape(data), 0, flat);
    if (flat.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`tensor(): shape [${shape}] does not match ${flat.length} values`);
    dtype = opts.dtype ?? 'float32';
    checkDType(dtype, 'tensor');
    const encoded = encodeChecked(flat, dtype, shape);
    if (dtype === 'float16' || dtype === 'bfloat16') {
      const base = fromBytes(encoded, 'float32', shape);
      const out = base.to(opts.device && opts.device !== 'cpu' ? { dtype, device: opts.device } : { dtype });
      base.dispose();
      return finishCreate(out, opts);
    }
    bytes = encoded;
  }
  return finishCreate(fromBytes(bytes, dtype, shape, opts.device), opts);
}

/**
 * Number of NaN / ±Infinity elements of a tensor (0 for integer and bool tensors). One vectorised pass (`isfinite`
 * then `all`); the count is computed only when something is not finite.
 */
export function countNonFinite(t: Tensor): number {
  if (!isFloating(t.dtype) || t.numel() === 0) return 0;
  return noGrad(() => {
    const fin = aten('isfinite').t([t.handle]);
    try {
      if (fin.all()) return 0;
      return fin.logicalNot().consume((bad) => bad.sum().consume((s) => s.item()));
    } finally {
      fin.dispose();
    }
  });
}

/** Creates a tensor from raw little-endian bytes (copied) of the given dtype and shape. */
export function fromBytes(data: ArrayBufferView, dtype: DType, shape: readonly number[], device?: string): Tensor {
  checkDType(dtype, 'fromBytes');
  const need = shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[dtype];
  if (data.byteLength !== need) {
    throw new Error(`fromBytes: ${data.byteLength} bytes given, ${dtype}[${shape.join(', ')}] needs ${need}`);
  }
  const view = data instanceof Uint8Array ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Tensor(backend().fromBytes(view, SCALAR_TYPE[dtype], shape, checkDevice(device) ?? undefined));
}

function factory(name: string, overload: string, pre: unknown[], shape: readonly number[] | null, o: CreateOptions = {}): Tensor {
  const args = shape === null ? [...pre] : [[...shape], ...pre];
  args.push(st(o.dtype ?? 'float32'), null, checkDevice(o.device), null);
  return finishCreate(aten(name, overload).t(args), o);
}

/** A tensor of zeros. */
export function zeros(shape: readonly number[], o?: CreateOptions): Tensor { return factory('zeros', '', [], shape, o); }
/** A tensor of ones. */
export function ones(shape: readonly number[], o?: CreateOptions): Tensor { return factory('ones', '', [], shape, o); }
/** A tensor filled with `value`. */
export function full(shape: readonly number[], value: number, o?: CreateOptions): Tensor {
  return factory('full', '', [value], shape, o);
}
/** Uninitialised memory. */
export function empty(shape: readonly number[], o?: CreateOptions): Tensor {
  return finishCreate(aten('empty', 'memory_format').t([[...shape], st(o?.dtype ?? 'float32'), null, checkDevice(o?.device), null, null]), o);
}
/** `[start, end)` with `step` (one argument: `[0, start)`). Integer arguments give int64 unless a dtype is set. */
export function arange(start: number, end?: number, step = 1, o: CreateOptions = {}): Tensor {
  if (end === undefined) { end = start; start = 0; }
  if (step === 0) throw new Error('arange(): step must be non-zero');
  const integral = Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step);
  const dtype = o.dtype ?? (integral ? 'int64' : 'float32');
  return finishCreate(aten('arange', 'start_step').t([start, end, step, st(dtype), null, checkDevice(o.device), null]), o);
}
/** `steps` evenly spaced values from `start` to `end` inclusive. */
export function linspace(start: number, end: number, steps: number, o: CreateOptions = {}): Tensor {
  return finishCreate(aten('linspace').t([start, end, steps, st(o.dtype ?? 'float32'), null, checkDevice(o.device), null]), o);
}
/** Identity matrix n×m (m defaults to n). */
export function eye(n: number, m?: number, o: CreateOptions = {}): Tensor {
  return finishCreate(aten('eye', 'm').t([n, m ?? n, st(o.dtype ?? 'float32'), null, checkDevice(o.device), null]), o);
}
/** Uniform [0, 1) samples (seed with {@link manualSeed}). */
export function rand(shape: readonly number[], o?: CreateOptions): Tensor { return factory('rand', '', [], shape, o); }
/** Standard normal samples (seed with {@link manualSeed}). */
export function randn(shape: readonly number[], o?: CreateOptions): Tensor { return factory('randn', '', [], shape, o); }
/** Integers uniform in [low, high) (int64 unless a dtype is set). */
export function randint(low: number, high: number, shape: readonly number[], o: CreateOptions = {}): Tensor {
  return finishCreate(aten('randint', 'low').t([low, high, [...shape], st(o.dtype ?? 'int64'), null, checkDevice(o.device), null]), o);
}
/** A 0-d tensor. */
export function scalarTensor(value: number, o: CreateOptions = {}): Tensor {
  return finishCreate(aten('scalar_tensor').t([value, st(o.dtype ?? 'float32'), null, checkDevice(o.device), null]), o);
}
/** Zeros with the shape, dtype and device of `t`. */
export function zerosLike(t: Tensor, o: CreateOptions = {}): Tensor { return zeros(t.shape, { dtype: t.dtype, device: t.device, ...o }); }
/** Ones with the shape, dtype and device of `t`. */
export function onesLike(t: Tensor, o: CreateOptions = {}): Tensor { return ones(t.shape, { dtype: t.dtype, device: t.device, ...o }); }
/** A tensor filled with `value` like `t`. */
export function fullLike(t: Tensor, value: number, o: CreateOptions = {}): Tensor {
  return full(t.shape, value, { dtype: t.dtype, device: t.device, ...o });
}

/** Seeds the random generators (CPU and CUDA). */
export function manualSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`manualSeed(): expected a non-negative integer, got ${seed}`);
  backend().manualSeed(seed);
}

/**
 * The default CPU random generator's state (as `torch.get_rng_state()`): opaque bytes for {@link setRngState}.
 * Dropout and drop-path masks on CPU come from this generator.
 */
export function getRngState(): Uint8Array {
  return backend().getRngState();
}

/** Restores a state returned by {@link getRngState} (throws a libtorch error for bytes of another size/format). */
export function setRngState(state: Uint8Array): void {
  if (!(state instanceof Uint8Array)) throw new TypeError('setRngState(): expected a Uint8Array from getRngState()');
  backend().setRngState(state);
}

/** Sets the number of CPU threads libtorch uses for intra-op parallelism. */
export function setNumThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`setNumThreads(): expected a positive integer, got ${n}`);
  backend().setNumThreads(n);
}
/** The number of CPU threads libtorch uses. */
export function getNumThreads(): number { return backend().getNumThreads(); }

/** CUDA queries. */
export const cuda = {
  /** Whether a CUDA device can be used (a CUDA libtorch and a GPU). */
  isAvailable: (): boolean => backend().cudaIsAvailable(),
  /** Number of visible CUDA devices. */
  deviceCount: (): number => backend().cudaDeviceCount(),
  /** Waits for all queued work on one device (default: every device). */
  synchronize: (device?: number): void => backend().cudaSynchronize(device),
  /**
   * The caching allocator's current and peak bytes on a device (default 0), as `torch.cuda.memory_stats`; with
   * `reset`, the peaks start over afterwards (`torch.cuda.reset_peak_memory_stats`). Throws when the addon has no
   * CUDA (or predates this query).
   */
  memoryStats: (device = 0, reset = false): CudaMemoryStats => {
    const b = backend();
    if (!b.cudaMemoryStats) throw new Error('cuda.memoryStats: this addon build has no CUDA memory statistics (rebuild: npm run build:native)');
    return b.cudaMemoryStats(device, reset);
  },
};

/** Reduction code for ATen loss operators. */
export function reductionCode(r: Reduction): number {
  const c = REDUCTION[r];
  if (c === undefined) throw new Error(`unknown reduction ${JSON.stringify(r)}; expected none, mean or sum`);
  return c;
}

export { isFloating };
