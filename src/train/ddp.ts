/**
 * DistributedDataParallel semantics over a {@link ProcessGroup}, as torch's DDP:
 * - the constructor broadcasts parameters and buffers from rank 0, after checking that every rank has the same
 *   parameter names and shapes;
 * - gradients are averaged over ranks in buckets (parameters in reverse registration order, about `bucketCapMb` each,
 *   the first at most 1 MiB; one flat buffer and one all-reduce per bucket). The addon hooks each parameter's
 *   gradient accumulator: a bucket's all-reduce starts, asynchronously on the process group's threads, as soon as all
 *   of its gradients were accumulated during backward (buckets start in the same order on every rank), overlapping
 *   communication with the rest of the backward pass. {@link DistributedDataParallel.finishBackward} starts what is
 *   left and waits;
 * - parameters that received no gradient (`findUnusedParameters`) are reduced as zeros, so every rank reduces the
 *   same buckets; a parameter unused on every rank keeps its gradient untouched (null stays null), as torch;
 * - gradient accumulation: `prepareBackward(false)` on non-final micro-steps runs no collective at all.
 *
 * Usage per step: `ddp.syncBuffers()` (when BN buffers exist), forward, `ddp.prepareBackward(sync)`, `loss.backward()`,
 * `ddp.finishBackward()`, then the optimiser step.
 */
import { type Tensor, noGrad, op } from '../engine/index.js';
import { DistError, type ProcessGroup } from '../engine/dist.js';
import type { Module } from '../nn/index.js';

/** Options of {@link DistributedDataParallel}. */
export interface DdpOptions {
  /** Bucket size in MiB (default 25, as torch; the first bucket holds at most 1 MiB, as torch's). */
  bucketCapMb?: number;
  /** Reduce zeros for parameters that got no gradient in a step instead of failing (default false). */
  findUnusedParameters?: boolean;
  /** {@link DistributedDataParallel.syncBuffers} broadcasts rank 0's buffers (default true). */
  broadcastBuffers?: boolean;
}

/** Figures of the last synchronising step ({@link DistributedDataParallel.stats}). */
export interface DdpStats {
  /** Milliseconds `finishBackward` spent launching the remaining buckets, waiting for all and writing gradients back. */
  collectiveMs: number;
  /** Number of buckets. */
  buckets: number;
  /**
   * Whether communication overlapped with backward: some bucket other than the last one (which starts with the last
   * gradients) started its all-reduce during backward.
   */
  overlapped: boolean;
  /** Bytes all-reduced per synchronising step (gradient buckets). */
  bytes: number;
  /** Buckets (other than the last) whose all-reduce started during backward in the last synchronising step. */
  overlappedBuckets: number;
  /** Milliseconds from the first bucket's start during backward to the call of `finishBackward` (0 if none). */
  overlapMs: number;
  /** Sum of `collectiveMs` over all synchronising steps. */
  totalCollectiveMs: number;
  /** Number of synchronising steps so far. */
  syncSteps: number;
}

function ddpOp(name: string) {
  return op(`vit_adapter::dist_ddp_${name}`);
}

function distCall<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof DistError) throw e;
    const raw = e instanceof Error ? e.message : String(e);
    const msg = raw.replace(/^vit_adapter::dist_[a-z_]+: /, '').replace(/\n\s+in vit_adapter::dist_[\s\S]*$/, '').trim();
    const m = /lost rank (\d+)/.exec(msg);
    throw new DistError(`DistributedDataParallel.${what}: ${msg}`, m ? Number(m[1]) : undefined);
  }
}

/** Data-parallel gradient averaging for `module` over `pg` (see the module comment for the protocol). */
export class DistributedDataParallel {
  readonly module: Module;
  readonly pg: ProcessGroup;
  readonly options: Required<DdpOptions>;
  /** Names of the parameters that take part (those requiring grad), in registration order. */
  readonly paramNames: string[];
  private readonly params: Tensor[];
  private id: number | null;
  private last: DdpStats;

  constructor(module: Module, pg: ProcessGroup, opts: DdpOptions = {}) {
    const bucketCapMb = opts.bucketCapMb ?? 25;
    if (!(bucketCapMb > 0) || !Number.isFinite(bucketCapMb)) {
      throw new DistError(`DistributedDataParallel: bucketCapMb must be a positive number, got ${bucketCapMb}`);
    }
    this.module = module;
    this.pg = pg;
    this.options = {
      bucketCapMb,
      findUnusedParameters: opts.findUnusedParameters ?? false,
      broadcastBuffers: opts.broadcastBuffers ?? true,
    };
    const named = module.namedParameters().filter(([, p]) => p.requiresGrad);
    this.paramNames = named.map(([n]) => n);
    this.params = named.map(([, p]) => p);
    // Every rank must hold the same model: compare names, shapes and dtypes before any collective on them.
    const signature = named.map(([n, p]) => `${n}:${p.dtype}[${p.shape.join(',')}]`);
    const buffers = module.namedBuffers();
    signature.push(...buffers.map(([n, b]) => `buffer ${n}:${b.dtype}[${b.shape.join(',')}]`));
    const all = pg.allGatherObject(signature);
    for (let r = 0; r < all.length; r++) {
      const other = all[r]!;
      const n = Math.max(other.length, signature.length);
      const i = Array.from({ length: n }, (_, k) => k).find((k) => other[k] !== signature[k]);
      if (i !== undefined) {
        throw new DistError(`DistributedDataParallel: the model differs between ranks: rank ${pg.rank} has ` +
          `${signature.length} parameters and buffers, rank ${r} has ${other.length}; first difference at entry ${i}: ` +
          `rank ${pg.rank} has ${signature[i] ?? 'nothing'}, rank ${r} has ${other[i] ?? 'nothing'}`, r);
      }
    }
    noGrad(() => {
      pg.broadcast(this.params, 0);
      if (buffers.length) pg.broadcast(buffers.map(([, b]) => b), 0);
    });
    const capBytes = Math.max(1, Math.round(bucketCapMb * 1024 * 1024));
    this.id = distCall('constructor', () =>
      ddpOp('new').call([pg.nativeId, this.params.map((p) => p.handle), capBytes, this.options.findUnusedParameters]) as number);
    this.last = { collectiveMs: 0, buckets: this.bucketSizes().length, overlapped: false, bytes: 0, overlappedBuckets: 0, overlapMs: 0, totalCollectiveMs: 0, syncSteps: 0 };
  }

  private get nativeId(): number {
    if (this.id === null) throw new DistError('DistributedDataParallel: used after dispose()');
    return this.id;
  }

  /** Number of parameters in each bucket, in the order the buckets are reduced (last parameters first). */
  bucketSizes(): number[] {
    const id = this.nativeId;
    return ddpOp('buckets').call([id]) as number[];
  }

  /**
   * Call before each micro-step's backward. `sync` true: this backward's gradients are averaged (the buckets start
   * during backward); false: gradients only accumulate locally (no collective), for non-final accumulation steps.
   */
  prepareBackward(sync: boolean): void {
    const id = this.nativeId;
    distCall('prepareBackward', () => ddpOp('prepare').call([id, sync]));
  }

  /**
   * Call after backward: starts the buckets not started yet, waits for all and writes the averaged gradients into
   * the parameters' `.grad`. No-op after `prepareBackward(false)`. Throws a {@link DistError} naming the parameters
   * that received no gradient when `findUnusedParameters` is off (after the collectives completed, so that no rank
   * is left waiting).
   */
  finishBackward(): void {
    const id = this.nativeId;
    let r: number[];
    try {
      r = distCall('finishBackward', () => ddpOp('finish').call([id]) as number[]);
    } catch (e) {
      if (e instanceof DistError) {
        const m = /parameter indices \[([0-9, ]+)\]/.exec(e.message);
        if (m) {
          const names = m[1]!.split(',').map((s) => this.paramNames[Number(s.trim())] ?? s.trim());
          throw new DistError(`DistributedDataParallel.finishBackward: parameters received no gradient in this step: ` +
            `${names.join(', ')}. Pass findUnusedParameters: true when some parameters are not used in every step.`);
        }
      }
      throw e;
    }
    if (r.length === 0) return;  // not a synchronising step
    const [ms, buckets, overlappedBuckets, bytes, overlapMs] = r as [number, number, number, number, number];
    this.last = {
      collectiveMs: ms, buckets, overlapped: overlappedBuckets > 0, bytes, overlappedBuckets, overlapMs,
      totalCollectiveMs: this.last.totalCollectiveMs + ms, syncSteps: this.last.syncSteps + 1,
    };
  }

  /** Broadcasts the module's buffers (BatchNorm running statistics) from rank 0, when `broadcastBuffers` is on. */
  syncBuffers(): void {
    if (!this.options.broadcastBuffers) return;
    const buffers = this.module.namedBuffers().map(([, b]) => b);
    if (buffers.length) noGrad(() => this.pg.broadcast(buffers, 0));
  }

  /** Figures of the last synchronising step (see {@link DdpStats}). */
  stats(): DdpStats {
    return { ...this.last };
  }

  /** Removes the gradient hooks' state (the hooks become no-ops). Idempotent. */
  dispose(): void {
    if (this.id === null) return;
    const id = this.id;
    this.id = null;
    ddpOp('free').call([id]);
  }
}
