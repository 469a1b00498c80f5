/**
 * Distributed collectives over libtorch's c10d: a {@link ProcessGroup} (Gloo on CPU, NCCL in CUDA builds) with a
 * `TCPStore` rendezvous hosted by rank 0. Every call goes through the backend's operator interface
 * (`vit_adapter::dist_*` operators registered by the addon, `native/src/dist.cc`), as the tensor operations do.
 *
 * Collectives are synchronous from JavaScript: a call returns when the collective is complete on this rank, or throws
 * a {@link DistError} after the group's timeout (a peer that died, hangs or never joined), never hangs forever.
 */
import { Tensor, op } from './tensor.js';

/** Communication backend of a process group. */
export type DistBackend = 'gloo' | 'nccl';

/** Options of {@link initProcessGroup}. */
export interface InitProcessGroupOptions {
  backend: DistBackend;
  /** This process's rank, 0 ≤ rank < worldSize. */
  rank: number;
  /** Number of processes in the group. */
  worldSize: number;
  /** Address of rank 0 (it hosts the TCPStore rendezvous). */
  masterAddr: string;
  /** Port of rank 0's TCPStore (1..65535). */
  masterPort: number;
  /** Timeout of the rendezvous and of every collective in milliseconds (default 30 minutes). */
  timeoutMs?: number;
}

/** Reduction of {@link ProcessGroup.allReduce}. */
export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';

/**
 * A failed distributed operation: a peer lost (closed connection, timeout), a rendezvous that failed (port in use,
 * a rank that never joined, mismatched world sizes) or a group used after {@link ProcessGroup.destroy}.
 */
export class DistError extends Error {
  /** The lost or failed peer's rank, when it is known. */
  readonly rank?: number;
  constructor(message: string, rank?: number) {
    super(message);
    this.name = 'DistError';
    if (rank !== undefined) this.rank = rank;
  }
}

const DEFAULT_TIMEOUT_MS = 30 * 60 * 1000;

function distOp(name: string) {
  return op(`vit_adapter::dist_${name}`);
}

/** Runs a native dist operator, turning its error into a {@link DistError}. */
function native<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof DistError) throw e;
    const raw = e instanceof Error ? e.message : String(e);
    // The addon prefixes the operator name and appends the call's arguments: keep the libtorch message only.
    let msg = raw.replace(/^vit_adapter::dist_[a-z_]+: /, '').replace(/\n\s+in vit_adapter::dist_[\s\S]*$/, '');
    msg = msg.replace(/\nException raised from [\s\S]*$/, '').trim();
    const m = /lost rank (\d+)/.exec(msg);
    throw new DistError(`${what}: ${msg}`, m ? Number(m[1]) : undefined);
  }
}

/** Which backends this build of the addon can create: Gloo (CPU) and NCCL (CUDA builds with NCCL). */
export function distAvailable(): { gloo: boolean; nccl: boolean } {
  const o = distOp('available');
  if (!o.available()) return { gloo: false, nccl: false };
  const [gloo, nccl] = o.call([]) as number[];
  return { gloo: gloo === 1, nccl: nccl === 1 };
}

function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new DistError(`initProcessGroup: ${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Joins (and, on rank 0, hosts) the rendezvous at `masterAddr:masterPort` and creates the process group. Blocks until
 * all `worldSize` ranks have joined or `timeoutMs` passed. Throws a {@link DistError} for a port in use, a rank that
 * never joins, mismatched world sizes or a rank joining twice.
 */
export function initProcessGroup(opts: InitProcessGroupOptions): ProcessGroup {
  if (opts.backend !== 'gloo' && opts.backend !== 'nccl') {
    throw new DistError(`initProcessGroup: backend must be "gloo" or "nccl", got ${JSON.stringify(opts.backend)}`);
  }
  const worldSize = checkInt('worldSize', opts.worldSize, 1, 1 << 20);
  const rank = checkInt('rank', opts.rank, 0, worldSize - 1);
  const port = checkInt('masterPort', opts.masterPort, 1, 65535);
  const timeoutMs = checkInt('timeoutMs', opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, 1, 2 ** 31 - 1);
  if (typeof opts.masterAddr !== 'string' || opts.masterAddr === '') {
    throw new DistError(`initProcessGroup: masterAddr must be a host name or address, got ${JSON.stringify(opts.masterAddr)}`);
  }
  const avail = distAvailable();
  if (!avail[opts.backend]) {
    throw new DistError(`initProcessGroup: backend "${opts.backend}" is not available in this build ` +
      `(gloo: ${avail.gloo}, nccl: ${avail.nccl}${opts.backend === 'nccl' ? '; NCCL needs a CUDA libtorch with NCCL' : ''})`);
  }
  const id = native('initProcessGroup', () =>
    distOp('init').call([opts.backend, rank, worldSize, opts.masterAddr, port, timeoutMs]) as number);
  return new ProcessGroup(id, rank, worldSize, opts.backend);
}

/** A group of processes running collectives together (create it with {@link initProcessGroup}). */
export class ProcessGroup {
  private id: number | null;

  /** @internal use {@link initProcessGroup}. */
  constructor(id: number, readonly rank: number, readonly worldSize: number, readonly backend: DistBackend) {
    this.id = id;
  }

  /** The native group id (for the addon's other dist operators, e.g. DDP). Throws after {@link destroy}. */
  get nativeId(): number {
    if (this.id === null) throw new DistError('process group was destroyed');
    return this.id;
  }

  /** Whether {@link destroy} was called. */
  get destroyed(): boolean {
    return this.id === null;
  }

  /**
   * All-reduces tensors in place across ranks (`avg` for floating tensors only). Several tensors are coalesced into
   * one buffer per dtype/device, so a list costs one collective per dtype.
   */
  allReduce(tensors: Tensor[], op: ReduceOp = 'sum'): void {
    if (!['sum', 'avg', 'max', 'min'].includes(op)) throw new DistError(`allReduce: op must be sum, avg, max or min, got ${JSON.stringify(op)}`);
    const id = this.nativeId;
    if (tensors.length === 0) return;
    native('allReduce', () => distOp('all_reduce').call([id, tensors.map((t) => t.handle), op]));
  }

  /** Broadcasts tensors in place from `root` to every rank (coalesced like {@link allReduce}). */
  broadcast(tensors: Tensor[], root = 0): void {
    const id = this.nativeId;
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      throw new DistError(`broadcast: root must be a rank in [0, ${this.worldSize - 1}], got ${root}`);
    }
    if (tensors.length === 0) return;
    native('broadcast', () => distOp('broadcast').call([id, tensors.map((t) => t.handle), root]));
  }

  /** Gathers `t` from every rank (same shape and dtype everywhere); entry r is rank r's tensor. */
  allGather(t: Tensor): Tensor[] {
    const id = this.nativeId;
    return native('allGather', () => distOp('all_gather').ts([id, t.handle]));
  }

  /** Gathers a JSON-serialisable value from every rank (through the rendezvous store); entry r is rank r's value. */
  allGatherObject<T>(value: T): T[] {
    const id = this.nativeId;
    const text = JSON.stringify(value);
    if (text === undefined) throw new DistError('allGatherObject: the value is not JSON-serialisable');
    const all = native('allGatherObject', () => distOp('all_gather_object').call([id, text]) as string[]);
    return all.map((s) => JSON.parse(s) as T);
  }

  /** Blocks until every rank has reached the barrier. */
  barrier(): void {
    const id = this.nativeId;
    native('barrier', () => distOp('barrier').call([id]));
  }

  /**
   * Differentiable all-reduce (sum): the forward returns the sum of `t` over ranks (a new tensor); the backward
   * all-reduces (sums) the output gradients of the ranks. Every rank must run the backward as well.
   */
  allReduceAutograd(t: Tensor): Tensor {
    const id = this.nativeId;
    return native('allReduceAutograd', () => distOp('all_reduce_autograd').t([id, t.handle]));
  }

  /** Releases the group (and rank 0's store). Idempotent; afterwards every call throws a {@link DistError}. */
  destroy(): void {
    if (this.id === null) return;
    const id = this.id;
    this.id = null;
    native('destroy', () => distOp('destroy').call([id]));
  }
}
