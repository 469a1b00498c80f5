/**
 * `Module`: parameters, buffers and submodules under PyTorch's dotted names, so state dicts saved by PyTorch
 * (mmseg/mmdet/timm checkpoints) load as they are.
 */
import { type DType, Tensor, countNonFinite, isFloating, noGrad } from '../engine/index.js';

/** What {@link Module.loadStateDict} matched. */
export interface LoadResult {
  /** Keys the module has that the state dict lacks. */
  missing: string[];
  /** Keys of the state dict the module does not have. */
  unexpected: string[];
  /** Keys present in both with different shapes. */
  mismatched: { key: string; expected: number[]; got: number[] }[];
}

/** Error thrown by a strict {@link Module.loadStateDict}; lists every problem. */
export class StateDictError extends Error {
  constructor(readonly result: LoadResult, moduleName: string) {
    const lines: string[] = [`Error(s) loading state dict into ${moduleName}:`];
    if (result.missing.length) lines.push(`  missing keys (${result.missing.length}): ${result.missing.join(', ')}`);
    if (result.unexpected.length) lines.push(`  unexpected keys (${result.unexpected.length}): ${result.unexpected.join(', ')}`);
    for (const m of result.mismatched) {
      lines.push(`  size mismatch for ${m.key}: checkpoint has [${m.got.join(', ')}], the model has [${m.expected.join(', ')}]`);
    }
    super(lines.join('\n'));
    this.name = 'StateDictError';
  }
}

/** A state dict: ordered name → tensor. Plain objects are accepted where a state dict is read. */
export type StateDict = Map<string, Tensor>;

/** A tensor not yet read (e.g. from a checkpoint file): its shape, and a function producing it. */
export interface TensorSource {
  readonly shape: readonly number[];
  /** Element type, when known before reading (checkpoint tensors): checked against the model before any copy. */
  readonly dtype?: DType;
  materialize(): Tensor;
}

/** Options of {@link Module.loadStateDict}. */
export interface LoadStateDictOptions {
  /** Throw on missing / unexpected / mis-shaped keys (default true). */
  strict?: boolean;
  /**
   * Accept floating tensors holding NaN or ±Infinity (default false: such a tensor is refused with a
   * {@link NonFiniteWeightsError} naming the key, since it silently corrupts every output).
   */
  allowNonfinite?: boolean;
}

/** A state dict value that is not usable: NaN/Inf in a floating tensor, or an integer tensor for a floating one. */
export class NonFiniteWeightsError extends Error {
  constructor(
    /** The state-dict key. */ readonly key: string,
    /** Number of NaN / ±Infinity values. */ readonly count: number,
    /** Elements of the tensor. */ readonly numel: number,
  ) {
    super(`state dict tensor '${key}' has ${count} non-finite value(s) (NaN or ±Infinity) of ${numel}: `
      + 'refusing to load it (a corrupt or diverged checkpoint gives meaningless outputs); '
      + 'pass allowNonfinite: true (CLI: --allow-nonfinite) to load it anyway');
    this.name = 'NonFiniteWeightsError';
  }
}

function kindOf(d: DType): string {
  return isFloating(d) ? 'floating' : d === 'bool' ? 'bool' : 'integer';
}

/** What {@link Module.loadStateDict} reads: tensors, or sources read one at a time while loading. */
export type StateDictInput = ReadonlyMap<string, Tensor | TensorSource> | Record<string, Tensor>;

function toMap(sd: StateDictInput): ReadonlyMap<string, Tensor | TensorSource> {
  return sd instanceof Map ? sd : new Map(Object.entries(sd));
}

function globToRegExp(pattern: string | RegExp): RegExp {
  if (pattern instanceof RegExp) return pattern;
  const esc = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*/g, '\u0000').replace(/\*/g, '[^]*').replace(/\u0000/g, '.*');
  return new RegExp(`^${esc}$`);
}

/** Base class of all layers and models. */
export abstract class Module {
  /** Training mode (dropout, drop path, batch statistics). */
  training = true;
  private readonly params = new Map<string, Tensor | null>();
  private readonly buffers = new Map<string, Tensor | null>();
  private readonly nonPersistent = new Set<string>();
  private readonly children = new Map<string, Module>();
  /** Local keys a state dict may omit without being reported missing (e.g. BatchNorm's num_batches_tracked). */
  protected readonly optionalKeys = new Set<string>();

  /** Registers a parameter (it is kept alive past scopes and requires grad) and returns it. */
  protected registerParameter(name: string, t: Tensor | null): Tensor {
    this.checkName(name);
    if (t) {
      t.keep();
      if (!t.requiresGrad) t.requiresGrad = true;
    }
    this.params.set(name, t);
    return t as Tensor;
  }

  /** Registers a buffer (saved in the state dict unless `persistent` is false) and returns it. */
  protected registerBuffer(name: string, t: Tensor | null, persistent = true): Tensor {
    this.checkName(name);
    t?.keep();
    this.buffers.set(name, t);
    if (!persistent) this.nonPersistent.add(name);
    return t as Tensor;
  }

  /** Registers a submodule under `name` and returns it. */
  protected registerModule<M extends Module>(name: string, m: M): M {
    this.checkName(name);
    this.children.set(name, m);
    return m;
  }

  private checkName(name: string): void {
    if (name === '' || name.includes('.')) throw new Error(`invalid module member name ${JSON.stringify(name)}`);
    if (this.params.has(name) || this.buffers.has(name) || this.children.has(name)) {
      throw new Error(`${this.constructor.name}: ${JSON.stringify(name)} is already registered`);
    }
  }

  /** Replaces a registered parameter or buffer value (keeps the field of the same name in sync). */
  protected replaceTensor(name: string, t: Tensor | null): void {
    const self = this as unknown as Record<string, unknown>;
    if (this.params.has(name)) {
      const old = this.params.get(name);
      this.params.set(name, t);
      if (self[name] === old) self[name] = t;
    } else if (this.buffers.has(name)) {
      const old = this.buffers.get(name);
      this.buffers.set(name, t);
      if (self[name] === old) self[name] = t;
    } else {
      throw new Error(`${this.constructor.name}: no parameter or buffer ${JSON.stringify(name)}`);
    }
    t?.keep();
  }

  /** Direct submodules, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.children.entries()];
  }

  /** All modules (this one first, as ''), with dotted names. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this.children) out.push(...m.namedModules(prefix ? `${prefix}.${n}` : n));
    return out;
  }

  /** All parameters with dotted names (module order, then registration order). */
  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, p] of m.params) if (p) out.push([prefix ? `${prefix}.${n}` : n, p]);
    }
    return out;
  }

  /** All parameters. */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** All buffers with dotted names (persistent and not). */
  namedBuffers(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, b] of m.buffers) if (b) out.push([prefix ? `${prefix}.${n}` : n, b]);
    }
    return out;
  }

  /** Number of parameter elements (optionally only trainable ones). */
  numParameters(trainableOnly = false): number {
    let n = 0;
    for (const p of this.parameters()) if (!trainableOnly || p.requiresGrad) n += p.numel();
    return n;
  }

  /** The state dict in PyTorch's order: each module's parameters, then its persistent buffers, then children. */
  stateDict(): StateDict {
    const out: StateDict = new Map();
    const visit = (m: Module, prefix: string): void => {
      for (const [n, p] of m.params) if (p) out.set(prefix + n, p);
      for (const [n, b] of m.buffers) if (b && !m.nonPersistent.has(n)) out.set(prefix + n, b);
      for (const [n, c] of m.children) visit(c, `${prefix}${n}.`);
    };
    visit(this, '');
    return out;
  }

  /** Shapes of every state-dict entry. */
  stateDictShapes(): Map<string, number[]> {
    return new Map([...this.stateDict()].map(([k, t]) => [k, t.shape]));
  }

  /**
   * Copies values from a state dict into this module's tensors (converting dtype and device). Strict mode
   * (default) throws a {@link StateDictError} listing missing, unexpected and mismatched keys; non-strict loads
   * what matches and returns the lists.
   *
   * Values are checked before they are used: a floating parameter/buffer given an integer or bool tensor (or the
   * reverse) is an error naming the key and both dtypes (raised before anything is copied when the sources declare
   * their dtype, as checkpoint sources do); every floating value is checked for NaN/±Infinity right after it is read
   * (one vectorised pass) and refused with a {@link NonFiniteWeightsError} unless `allowNonfinite` is set. A refusal
   * in the middle of loading leaves the module partly loaded: discard it.
   */
  loadStateDict(sd: StateDictInput, opts: LoadStateDictOptions = {}): LoadResult {
    const src = toMap(sd);
    const own = this.stateDict();
    const optional = new Set<string>();
    for (const [prefix, m] of this.namedModules()) for (const k of m.optionalKeys) optional.add(prefix ? `${prefix}.${k}` : k);
    const result: LoadResult = { missing: [], unexpected: [], mismatched: [] };
    for (const [k, t] of own) {
      const s = src.get(k);
      if (!s) {
        if (!optional.has(k)) result.missing.push(k);
        continue;
      }
      const a = t.shape;
      const b = [...s.shape];
      if (a.length !== b.length || a.some((v, i) => v !== b[i])) result.mismatched.push({ key: k, expected: a, got: b });
    }
    for (const k of src.keys()) if (!own.has(k)) result.unexpected.push(k);
    const strict = opts.strict ?? true;
    if (strict && (result.missing.length || result.unexpected.length || result.mismatched.length)) {
      throw new StateDictError(result, this.constructor.name);
    }
    const bad = new Set(result.mismatched.map((m) => m.key));
    const checkKind = (k: string, want: DType, got: DType): void => {
      if (kindOf(want) !== kindOf(got)) {
        throw new TypeError(`state dict tensor '${k}' is ${got} (${kindOf(got)}) but the model's tensor is ${want} `
          + `(${kindOf(want)}): refusing to convert it (a wrong or corrupt checkpoint?)`);
      }
    };
    for (const [k, t] of own) {
      const s = src.get(k);
      if (!s || bad.has(k)) continue;
      const d = s.dtype;
      if (d !== undefined) checkKind(k, t.dtype, d);
    }
    const allowNonfinite = opts.allowNonfinite ?? false;
    noGrad(() => {
      for (const [k, t] of own) {
        const s = src.get(k);
        if (!s || bad.has(k)) continue;
        const value = s instanceof Tensor ? s : s.materialize();
        try {
          checkKind(k, t.dtype, value.dtype);
          if (!allowNonfinite && isFloating(t.dtype)) {
            // Checked in the model's dtype, so that float64 values overflowing float32 are caught too.
            const conv = value.dtype === t.dtype ? value : value.to(t.dtype);
            try {
              const n = countNonFinite(conv);
              if (n > 0) throw new NonFiniteWeightsError(k, n, conv.numel());
              t.copy_(conv);
            } finally {
              if (conv !== value) conv.dispose();
            }
          } else {
            t.copy_(value);
          }
        } finally {
          if (value !== s) value.dispose();
        }
      }
    });
    return result;
  }

  /** Sets training mode on this module and every submodule. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  /** Same as `train(false)`. */
  eval(): this {
    return this.train(false);
  }

  /** Moves/converts every parameter and buffer (floating-point ones only for a dtype). */
  to(target: DType | string): this {
    noGrad(() => {
      for (const [, m] of this.namedModules()) {
        for (const [n, t] of [...m.params, ...m.buffers]) {
          if (!t) continue;
          const isDtype = !/^(cpu|cuda(:\d+)?)$/.test(target);
          if (isDtype && !['float32', 'float64', 'float16', 'bfloat16'].includes(t.dtype)) continue;
          const moved = t.to(target);
          if (moved === t) continue;
          if (m.params.has(n)) moved.requiresGrad = t.requiresGrad;
          m.replaceTensor(n, moved);
          t.dispose();
        }
      }
    });
    return this;
  }

  /** Turns off gradients of parameters whose dotted name matches (glob with `*`, or a RegExp; default all). */
  freeze(pattern: string | RegExp = '**'): this {
    const re = globToRegExp(pattern);
    for (const [n, p] of this.namedParameters()) if (re.test(n)) p.requiresGrad = false;
    return this;
  }

  /** Turns gradients back on for matching parameters. */
  unfreeze(pattern: string | RegExp = '**'): this {
    const re = globToRegExp(pattern);
    for (const [n, p] of this.namedParameters()) if (re.test(n)) p.requiresGrad = true;
    return this;
  }

  /** Calls `fn` on every submodule and then on this module (as PyTorch's `apply`). */
  apply(fn: (m: Module, name: string) => void, prefix = ''): this {
    for (const [n, c] of this.children) c.apply(fn, prefix ? `${prefix}.${n}` : n);
    fn(this, prefix);
    return this;
  }

  /** Clears the gradients of all parameters. */
  zeroGrad(): void {
    for (const p of this.parameters()) p.zeroGrad();
  }

  /** Frees every parameter and buffer now. */
  dispose(): void {
    for (const [, m] of this.namedModules()) {
      for (const t of [...m.params.values(), ...m.buffers.values()]) t?.dispose();
    }
  }
}

/** A module mapping one tensor to one tensor. */
export interface UnaryModule extends Module {
  forward(x: Tensor): Tensor;
}
