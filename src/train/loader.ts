/**
 * Training data loading off the main thread: a pool of `worker_threads` that turn a sample index into arrays
 * (decode + augment), and a prefetcher that keeps a bounded number of batches in flight, in sampler order.
 *
 * Determinism does not depend on timing: every sample's draws come from a generator seeded by `(seed, epoch, index)`, so
 * which worker runs it and when is irrelevant, and batches are assembled in the sampler's order whatever order the
 * workers finish in. The same code runs in-process (`workers: 0`).
 *
 * Failures never hang: a sample that throws rejects its batch with the worker's message (which names the file), or
 * — with `skipBad` — is replaced by the next sample of the dataset with a warning; a worker that dies rejects every
 * sample it held; `close()` terminates the pool.
 *
 * Generic (no task imports): the task supplies the worker script (which calls {@link serveSamples}) or an
 * in-process function with the same contract.
 */
import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import type { BatchSampler, SampledBatch } from './sampler.js';

/** What a worker is asked to produce. */
export interface SampleTask {
  /** Dataset index. */
  index: number;
  /** Epoch the sample is drawn in. */
  epoch: number;
  /** The run's seed: the sample function derives this sample's draws from `(seed, epoch, index)`. */
  seed: number;
}

/** Turns a task into a sample (may be async: file reads, decoding). */
export type SampleFn<T> = (task: SampleTask) => T | Promise<T>;

interface Request { id: number; task: SampleTask }
type Reply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

/** Every ArrayBuffer under a value (typed arrays in plain objects/arrays), for a zero-copy postMessage. */
function transferables(v: unknown, out: ArrayBuffer[] = [], seen = new Set<unknown>()): ArrayBuffer[] {
  if (v === null || typeof v !== 'object' || seen.has(v)) return out;
  seen.add(v);
  if (ArrayBuffer.isView(v)) {
    const b = v.buffer;
    if (b instanceof ArrayBuffer && !seen.has(b) && v.byteOffset === 0 && v.byteLength === b.byteLength) {
      seen.add(b);
      out.push(b);
    }
    return out;
  }
  for (const x of Array.isArray(v) ? v : Object.values(v)) transferables(x, out, seen);
  return out;
}

/**
 * Worker side: answers sample requests from the parent with `fn`. Call once at the top level of the worker script.
 * Errors are sent back as messages (the loader rethrows them on the main thread).
 */
export function serveSamples<T>(fn: SampleFn<T>): void {
  if (isMainThread || !parentPort) throw new Error('serveSamples: must run inside a worker thread');
  const port = parentPort;
  port.on('message', (req: Request) => {
    Promise.resolve()
      .then(() => fn(req.task))
      .then(
        (value) => {
          const reply: Reply = { id: req.id, ok: true, value };
          port.postMessage(reply, transferables(value));
        },
        (e: unknown) => {
          const reply: Reply = { id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) };
          port.postMessage(reply);
        },
      );
  });
}

/** Options of {@link SampleLoader}. */
export interface SampleLoaderOptions<T> {
  /** Worker threads (0: run `inProcess` on the main thread). */
  workers: number;
  /** The worker script (it must call {@link serveSamples}); required when `workers > 0`. */
  workerUrl?: URL;
  /** Passed to each worker as `workerData`. */
  workerData?: unknown;
  /** The same function in-process; required when `workers === 0`. */
  inProcess?: SampleFn<T>;
}

interface Pending<T> { resolve: (v: T) => void; reject: (e: Error) => void; worker: number }

/** A pool of workers producing samples (see the module notes). */
export class SampleLoader<T> {
  private readonly pool: Worker[] = [];
  private readonly load_: number[] = [];
  private readonly pending = new Map<number, Pending<T>>();
  private nextId = 1;
  private broken: Error | null = null;
  private closed = false;

  constructor(private readonly o: SampleLoaderOptions<T>) {
    if (!Number.isInteger(o.workers) || o.workers < 0) throw new RangeError(`workers must be a non-negative integer, got ${o.workers}`);
    if (o.workers === 0) {
      if (!o.inProcess) throw new Error('SampleLoader: workers 0 needs an in-process sample function');
      return;
    }
    if (!o.workerUrl) throw new Error('SampleLoader: workers > 0 needs a worker script');
    for (let i = 0; i < o.workers; i++) {
      const w = new Worker(o.workerUrl, { workerData: o.workerData });
      w.unref();
      w.on('message', (r: Reply) => this.onReply(r));
      w.on('error', (e) => this.fail(i, new Error(`data worker ${i} failed: ${e.message}`)));
      w.on('exit', (code) => {
        if (!this.closed) this.fail(i, new Error(`data worker ${i} exited unexpectedly (code ${code})`));
      });
      this.pool.push(w);
      this.load_.push(0);
    }
  }

  /** Number of worker threads. */
  get workers(): number {
    return this.pool.length;
  }

  private onReply(r: Reply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    this.load_[p.worker]!--;
    if (r.ok) p.resolve(r.value as T);
    else p.reject(new Error(r.error));
  }

  private fail(worker: number, e: Error): void {
    this.broken ??= e;
    for (const [id, p] of [...this.pending]) {
      if (p.worker !== worker) continue;
      this.pending.delete(id);
      p.reject(e);
    }
  }

  /** Produces one sample. */
  load(task: SampleTask): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the data loader is closed'));
    if (this.broken) return Promise.reject(this.broken);
    if (this.pool.length === 0) return Promise.resolve().then(() => this.o.inProcess!(task));
    let w = 0;
    for (let i = 1; i < this.pool.length; i++) if (this.load_[i]! < this.load_[w]!) w = i;
    const id = this.nextId++;
    this.load_[w]!++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker: w });
      const req: Request = { id, task };
      this.pool[w]!.postMessage(req);
    });
  }

  /** Terminates the workers; pending samples are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('the data loader was closed');
    for (const [id, p] of [...this.pending]) {
      this.pending.delete(id);
      p.reject(err);
    }
    await Promise.all(this.pool.map((w) => w.terminate()));
  }
}

/** A batch as the prefetcher hands it out. */
export interface LoadedBatch<T> {
  /** The samples, in sampler order. */
  samples: T[];
  /** Which batch of the sampler this is (its `after` state goes into checkpoints). */
  sampled: SampledBatch;
  /** Samples that failed and were replaced (`skipBad`). */
  skipped: { index: number; error: string }[];
}

/** Options of {@link Prefetcher}. */
export interface PrefetcherOptions {
  /** Batches kept in flight ahead of the consumer (default 2). */
  prefetch?: number;
  /** Replace failing samples (with a warning) instead of failing the batch. */
  skipBad?: boolean;
  /** Called with a warning line when a sample is skipped. */
  onWarn?: (message: string) => void;
}

/** Keeps up to `prefetch` batches loading ahead of the consumer, in sampler order. */
export class Prefetcher<T> {
  private readonly queue: Promise<LoadedBatch<T>>[] = [];
  private readonly prefetch: number;

  constructor(private readonly sampler: BatchSampler, private readonly loader: SampleLoader<T>, private readonly o: PrefetcherOptions = {}) {
    this.prefetch = o.prefetch ?? 2;
    if (!Number.isInteger(this.prefetch) || this.prefetch < 1) throw new RangeError(`prefetch must be a positive integer, got ${this.prefetch}`);
  }

  private async loadOne(index: number, epoch: number, skipped: LoadedBatch<T>['skipped']): Promise<T> {
    const n = this.sampler.size;
    let lastErr: Error | null = null;
    for (let k = 0; k < n; k++) {
      const idx = (index + k) % n;
      try {
        return await this.loader.load({ index: idx, epoch, seed: this.sampler.seed });
      } catch (e) {
        lastErr = e as Error;
        if (!this.o.skipBad || /data (worker|loader)/.test(lastErr.message)) throw lastErr;
        skipped.push({ index: idx, error: lastErr.message });
        this.o.onWarn?.(`warning: skipping a bad sample: ${lastErr.message}`);
      }
    }
    throw new Error(`every sample of the dataset failed to load; last error: ${lastErr?.message ?? '?'}`);
  }

  private startOne(): void {
    const sampled = this.sampler.next();
    const skipped: LoadedBatch<T>['skipped'] = [];
    const p = Promise.all(sampled.indices.map((i) => this.loadOne(i, sampled.epoch, skipped)))
      .then((samples) => ({ samples, sampled, skipped }));
    p.catch(() => { /* surfaced by next() */ });
    this.queue.push(p);
  }

  /** The next batch (starts loading further batches to keep the queue full). */
  next(): Promise<LoadedBatch<T>> {
    while (this.queue.length < this.prefetch) this.startOne();
    const p = this.queue.shift()!;
    while (this.queue.length < this.prefetch) this.startOne();
    return p;
  }
}
