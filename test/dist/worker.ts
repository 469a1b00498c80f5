/**
 * One rank of a distributed test scenario: `node worker.js <scenario> <rank> <worldSize> <port> <json args>`.
 * Prints one JSON line with its results (or `{error: {...}}`) and exits.
 */
import {
  DistError, type ProcessGroup, type Tensor, initProcessGroup, noGrad, setNumThreads, tensor, zeros,
} from '../../src/engine/index.js';
import { BatchNorm2d, Sequential, SyncBatchNorm2d, convertSyncBatchNorm } from '../../src/nn/index.js';
import { DistributedDataParallel } from '../../src/train/index.js';
import { loadBn, loss, makeNet, syncBnCase } from './common.js';

setNumThreads(1);
const [scenario, rankS, wsS, portS, argsS] = process.argv.slice(2);
const rank = Number(rankS);
const worldSize = Number(wsS);
const port = Number(portS);
const args = JSON.parse(argsS ?? '{}') as Record<string, unknown>;

function init(timeoutMs = 20_000): ProcessGroup {
  return initProcessGroup({ backend: 'gloo', rank, worldSize, masterAddr: '127.0.0.1', masterPort: port, timeoutMs });
}

function vals(t: Tensor): number[] {
  return Array.from(t.contiguous().toTypedArray() as ArrayLike<number>);
}

function errorInfo(e: unknown): Record<string, unknown> {
  return { name: e instanceof Error ? e.name : 'unknown', message: e instanceof Error ? e.message : String(e),
    rank: e instanceof DistError ? e.rank ?? null : null, isDistError: e instanceof DistError };
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const scenarios: Record<string, () => Record<string, unknown>> = {
  collectives() {
    const pg = init();
    const out: Record<string, unknown> = { rank: pg.rank, worldSize: pg.worldSize, backend: pg.backend };
    // A list with two dtypes: coalesced per dtype.
    const a = tensor([[rank + 1, 2 * rank], [0.5, -rank]], { dtype: 'float64' });
    const b = tensor([rank + 10], { dtype: 'float32' });
    const c = tensor([rank * 3 + 1, 7], { dtype: 'int64' });
    pg.allReduce([a, b, c]);
    out.sum = [vals(a), vals(b), vals(c)];
    const d = tensor([rank + 1, 3], { dtype: 'float64' });
    const e = tensor([[2 * rank]], { dtype: 'float32' });
    pg.allReduce([d, e], 'avg');
    out.avg = [vals(d), vals(e)];
    const m = tensor([rank, 5 - rank, -rank], { dtype: 'float64' });
    const mi = tensor([rank, 5 - rank], { dtype: 'int32' });
    pg.allReduce([m], 'max');
    pg.allReduce([mi], 'min');
    out.max = vals(m);
    out.min = vals(mi);
    try { pg.allReduce([tensor([1, 2], { dtype: 'int64' })], 'avg'); } catch (err) { out.avgInt = errorInfo(err); }
    // Broadcast from rank 1 of two tensors, one non-contiguous.
    const p = tensor([rank, rank, rank], { dtype: 'float64' });
    const q = tensor([[rank, rank + 1], [rank + 2, rank + 3]], { dtype: 'float32' }).transpose(0, 1);
    pg.broadcast([p, q], 1);
    out.broadcast = [vals(p), vals(q)];
    const g = pg.allGather(tensor([[rank, rank * 10]], { dtype: 'float64' }));
    out.allGather = g.map((t) => ({ shape: t.shape, v: vals(t) }));
    try { pg.allGather(zeros([rank + 1])); } catch (err) { out.allGatherMismatch = errorInfo(err); }
    out.objects = pg.allGatherObject({ rank, text: 'é'.repeat(rank * 2), list: [rank, null] });
    const t0 = Date.now();
    if (rank === 1) sleepMs(400);
    pg.barrier();
    out.barrierMs = Date.now() - t0;
    // Differentiable all-reduce: forward sum, backward sum of the output gradients.
    const x = tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    const y = pg.allReduceAutograd(x.mul(rank + 1));
    y.mul(tensor([rank + 1, 1], { dtype: 'float64' })).sum().backward();
    out.autograd = { y: vals(y), grad: vals(x.grad!) };
    if (!args.noDestroy || rank === 0) {
      pg.destroy();
      pg.destroy();
      try { pg.barrier(); } catch (err) { out.afterDestroy = errorInfo(err); }
    }
    return out;
  },

  join() {
    const t0 = Date.now();
    try {
      const pg = init(Number(args.timeoutMs ?? 3000));
      pg.barrier();
      pg.destroy();
      return { ok: true, ms: Date.now() - t0 };
    } catch (e) {
      return { error: errorInfo(e), ms: Date.now() - t0 };
    }
  },

  lose() {
    const pg = init(Number(args.timeoutMs ?? 20_000));
    pg.barrier();
    if (rank === 1) {
      if (args.how === 'exit') process.exit(5);
      sleepMs(Number(args.hangMs ?? 60_000));  // hangs: no collective, no exit
      return { hung: true };
    }
    const t0 = Date.now();
    try {
      for (let i = 0; i < 3; i++) pg.allReduce([zeros([1000])]);
      return { ok: true };
    } catch (e) {
      return { error: errorInfo(e), ms: Date.now() - t0 };
    }
  },

  /** Three ranks: rank 2 dies (exit) or hangs; ranks 0 and 1 must both name it. */
  lose3() {
    const pg = init(Number(args.timeoutMs ?? 20_000));
    pg.barrier();
    if (rank === 2) {
      if (args.how === 'exit') process.exit(5);
      sleepMs(Number(args.hangMs ?? 12_000));
      return { hung: true };
    }
    const t0 = Date.now();
    try {
      for (let i = 0; i < 3; i++) pg.allReduce([zeros([1000])]);
      return { ok: true };
    } catch (e) {
      return { error: errorInfo(e), ms: Date.now() - t0 };
    }
  },

  syncbn() {
    const pg = init();
    const k = syncBnCase();
    const seq = new Sequential(new BatchNorm2d(3)).to('float64');
    const converted = convertSyncBatchNorm(seq, pg);
    const bn = seq.layers[0] as SyncBatchNorm2d;
    loadBn(bn, k);
    const xr = k.x.narrow(0, 2 * rank, 2).clone().requiresGrad_();
    const y = bn.forward(xr);
    y.mul(k.c.narrow(0, 2 * rank, 2)).sum().backward();
    // A second training step (the running statistics move again), then eval mode uses them.
    const y2 = noGrad(() => bn.forward(xr.detach().mul(0.5)));
    bn.eval();
    const yEval = noGrad(() => bn.forward(xr.detach()));
    return {
      converted, isSync: bn instanceof SyncBatchNorm2d, sameWeight: bn.weight === (seq.layers[0] as BatchNorm2d).weight,
      y: vals(y), xGrad: vals(xr.grad!), wGrad: vals(bn.weight!.grad!), bGrad: vals(bn.bias!.grad!), y2: vals(y2),
      runningMean: vals(bn.running_mean!), runningVar: vals(bn.running_var!), tracked: vals(bn.num_batches_tracked!),
      yEval: vals(yEval),
    };
  },

  /** DDP construction: rank 0's buffers win (and again after syncBuffers); a model that differs between ranks is refused. */
  ddpInit() {
    const pg = init();
    const out: Record<string, unknown> = {};
    const seq = new Sequential(new BatchNorm2d(2)).to('float64');
    const bn = seq.layers[0] as BatchNorm2d;
    noGrad(() => { bn.running_mean!.fill_(rank + 1); bn.num_batches_tracked!.fill_(10 * rank + 3); });
    const ddp = new DistributedDataParallel(seq, pg);
    out.afterInit = { mean: vals(bn.running_mean!), tracked: vals(bn.num_batches_tracked!) };
    noGrad(() => bn.running_var!.fill_(rank + 5));
    ddp.syncBuffers();
    out.afterSync = vals(bn.running_var!);
    try {
      new DistributedDataParallel(makeNet(11, rank === 1), pg);
      out.mismatch = 'accepted';
    } catch (e) {
      out.mismatch = errorInfo(e);
    }
    pg.barrier();
    pg.destroy();
    return out;
  },

  ddp() {
    const pg = init(Number(args.timeoutMs ?? 20_000));
    const mode = String(args.mode);
    const withUnused = mode === 'unused' || mode === 'unused-error';
    const net = makeNet(11 + 100 * rank, withUnused);  // rank 1 starts different: the constructor broadcasts rank 0's
    const ddp = new DistributedDataParallel(net, pg, {
      bucketCapMb: Number(args.bucketCapMb ?? 25), findUnusedParameters: mode === 'unused',
    });
    const params0 = Object.fromEntries(net.namedParameters().map(([n, p]) => [n, vals(p)]));
    const out: Record<string, unknown> = { params0, buckets: ddp.bucketSizes() };
    if (mode === 'accum' && rank === 0) {
      ddp.prepareBackward(false);
      loss(net, 2).backward();
      ddp.finishBackward();
      out.noSyncStats = ddp.stats();
    }
    ddp.prepareBackward(true);
    loss(net, rank, mode === 'unused' && rank === 0).backward();
    try {
      ddp.finishBackward();
    } catch (e) {
      out.error = errorInfo(e);
    }
    out.stats = ddp.stats();
    out.grads = Object.fromEntries(net.namedParameters().map(([n, p]) => [n, p.grad ? vals(p.grad) : null]));
    ddp.dispose();
    pg.destroy();
    return out;
  },
};

const fn = scenarios[scenario ?? ''];
if (!fn) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
let result: Record<string, unknown>;
try {
  result = fn();
} catch (e) {
  result = { error: errorInfo(e) };
}
console.log(JSON.stringify(result));
