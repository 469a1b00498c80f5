/**
 * Data-parallel scaling benchmark (`npm run bench:ddp`): training throughput of the synthetic config
 * (`upernet_vit_adapter_synth`, 128×128 crops) on N processes × 1 thread against 1 process × 1 thread, with the same
 * per-process batch (weak scaling: N processes do N times the images per step), both runs in this one script:
 *
 *   node dist/bench/ddp.js [--nproc 2] [--batch 2] [--iters 8] [--warmup 2] [--count 16] [--threads 1]
 *     [--device cpu|cuda] [--backend gloo|nccl] [--json]
 *
 * Each run is the real CLI (`vit-adapter train`, data loaded in-process with `--workers 0`, no evaluation) on a
 * generated dataset; the N-process run goes through the launcher (`--nproc N`, Gloo on CPU, NCCL with
 * `--device cuda`, one GPU per process). From rank 0's log: images/s = global batch × timed iterations / their summed
 * wall time (the first `--warmup` iterations left out); scaling efficiency = thr_N / (N · thr_1). From the trainer's
 * `dist` summary (DistributedDataParallel.stats()): milliseconds per iteration spent waiting in the gradient
 * all-reduces (`finishBackward`; buckets launched during backward overlap with it and are not counted) and their
 * share of the step. SyncBatchNorm's all-reduces run inside forward/backward and are part of the step time.
 *
 * A third run separates the machine from the communication: N independent single-process runs at the same time
 * (no process group). Their combined images/s is what N processes can do on this machine without talking to each
 * other; `ddp_vs_independent` = thr_N(DDP) / thr_N(independent) is the share kept with gradient all-reduces, SyncBN
 * statistics and the per-step lockstep (each collective waits for the slowest rank), and
 * `independent_vs_one` = thr_N(independent) / (N · thr_1) what the cores (and the other load) allow. Skip it with
 * `--no-independent`.
 *
 * On a CPU machine N processes × 1 thread need N free cores (this project's CI machine has 2: 2 × 1 uses both).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSyntheticSplits } from '../src/tasks/segmentation/synth-splits.js';
import { intArg, loadEndLine, machineLine, parseFlags, reporters } from './common.js';

const USAGE = 'node dist/bench/ddp.js [--nproc 2] [--batch 2] [--iters 8] [--warmup 2] [--count 16] [--threads 1] ' +
  '[--device cpu|cuda] [--backend gloo|nccl] [--no-independent] [--json]';
const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

interface Options {
  nproc: number;
  batch: number;
  iters: number;
  warmup: number;
  count: number;
  threads: number;
  device: 'cpu' | 'cuda';
  backend: 'gloo' | 'nccl' | null;
  independent: boolean;
  json: boolean;
}

function parse(argv: string[]): Options {
  const o: Options = { nproc: 2, batch: 2, iters: 8, warmup: 2, count: 16, threads: 1, device: 'cpu', backend: null, independent: true, json: false };
  parseFlags(argv, USAGE, (flag, val) => {
    switch (flag) {
      case '--nproc': o.nproc = intArg(flag, val(), 2); return true;
      case '--batch': o.batch = intArg(flag, val(), 1); return true;
      case '--iters': o.iters = intArg(flag, val(), 2); return true;
      case '--warmup': o.warmup = intArg(flag, val(), 0); return true;
      case '--count': o.count = intArg(flag, val(), 4); return true;
      case '--threads': o.threads = intArg(flag, val(), 1); return true;
      case '--device': {
        const d = val();
        if (d !== 'cpu' && d !== 'cuda') throw new Error(`--device: cpu or cuda, got ${d}`);
        o.device = d;
        return true;
      }
      case '--backend': {
        const b = val();
        if (b !== 'gloo' && b !== 'nccl') throw new Error(`--backend: gloo or nccl, got ${b}`);
        o.backend = b;
        return true;
      }
      case '--json': o.json = true; return true;
      case '--no-independent': o.independent = false; return true;
      default: return false;
    }
  });
  if (o.warmup >= o.iters) throw new Error(`--warmup ${o.warmup} must be below --iters ${o.iters}`);
  return o;
}

/** One run's figures. */
interface RunFigures {
  processes: number;
  global_batch: number;
  /** Mean wall time of the timed iterations (rank 0's log), seconds. */
  step_s: number;
  images_per_s: number;
  /** Gradient all-reduce wait per iteration (ms) and its share of the step (null with one process). */
  collective_ms_per_iter: number | null;
  collective_share: number | null;
  buckets: number | null;
  overlapped: boolean | null;
  gradient_bytes: number | null;
  wall_s: number;
}

function trainArgs(o: Options, data: string, workDir: string): string[] {
  return [BIN, 'train', '--config', 'upernet_vit_adapter_synth', '--data', data, '--work-dir', workDir, '--iters', String(o.iters),
    '--batch', String(o.batch), '--threads', String(o.threads), '--workers', '0', '--eval-interval', '0',
    '--checkpoint-interval', String(o.iters), '--device', o.device, '--json'];
}

/** Mean wall time of the timed iterations in a work dir's log (seconds). */
function stepTime(o: Options, workDir: string): number {
  const iters = readFileSync(join(workDir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; iter?: number; time?: number })
    .filter((l) => l.event === 'iter');
  const timed = iters.filter((l) => l.iter! > o.warmup).map((l) => l.time!);
  return timed.reduce((a, b) => a + b, 0) / timed.length;
}

/** N single-process runs at once (no process group): their combined images/s. */
async function independent(o: Options, data: string, dir: string, n: number): Promise<{ images_per_s: number; step_s: number[] }> {
  const dirs = Array.from({ length: n }, (_, i) => join(dir, `ind${i}`));
  await Promise.all(dirs.map((d, i) => new Promise<void>((res, rej) => {
    const p = spawn(process.execPath, trainArgs(o, data, d), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env } });
    let err = '';
    p.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    p.on('exit', (code) => (code === 0 ? res() : rej(new Error(`independent run ${i} failed (exit ${code}):\n${err}`))));
  })));
  const steps = dirs.map((d) => stepTime(o, d));
  return { images_per_s: steps.reduce((a, s) => a + o.batch / s, 0), step_s: steps };
}

function run(o: Options, data: string, workDir: string, nproc: number): RunFigures {
  const args = trainArgs(o, data, workDir);
  if (nproc > 1) args.push('--nproc', String(nproc), ...(o.backend ? ['--dist-backend', o.backend] : []));
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${nproc}-process run failed (exit ${r.status}):\n${r.stderr}`);
  const summary = JSON.parse(r.stdout) as { world_size: number; dist: { collective_ms: number; buckets: number; overlapped: boolean; bytes: number; global_batch: number } | null };
  if (summary.world_size !== nproc) throw new Error(`expected world_size ${nproc}, the run reports ${summary.world_size}`);
  const step = stepTime(o, workDir);
  const G = o.batch * nproc;
  const d = summary.dist;
  const collPerIter = d ? d.collective_ms / o.iters : null;
  return {
    processes: nproc, global_batch: G, step_s: step, images_per_s: G / step,
    collective_ms_per_iter: collPerIter, collective_share: collPerIter !== null ? collPerIter / 1000 / step : null,
    buckets: d?.buckets ?? null, overlapped: d?.overlapped ?? null, gradient_bytes: d?.bytes ?? null, wall_s: wall,
  };
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const { log } = reporters(o.json);
  const load0 = loadavg();
  const dir = mkdtempSync(join(tmpdir(), 'bench-ddp-'));
  try {
    const data = join(dir, 'data');
    await writeSyntheticSplits(data, { count: o.count, size: 128, seed: 0, val: 2 });
    log(`DDP scaling: upernet_vit_adapter_synth (128×128), batch ${o.batch} per process, ${o.iters} iterations (${o.warmup} warm-up), ` +
      `${o.threads} thread(s) per process, ${o.device}${o.nproc > 1 ? `, backend ${o.backend ?? (o.device === 'cuda' ? 'nccl' : 'gloo')}` : ''}`);
    log(machineLine(load0, ' (busy: figures are not reliable)'));
    const one = run(o, data, join(dir, 'w1'), 1);
    log(`  1 process:  ${one.images_per_s.toFixed(2)} images/s (step ${(one.step_s * 1000).toFixed(0)} ms, batch ${one.global_batch})`);
    const many = run(o, data, join(dir, 'wn'), o.nproc);
    const efficiency = many.images_per_s / (o.nproc * one.images_per_s);
    log(`  ${o.nproc} processes: ${many.images_per_s.toFixed(2)} images/s (step ${(many.step_s * 1000).toFixed(0)} ms, global batch ${many.global_batch})`);
    log(`  scaling efficiency thr${o.nproc} / (${o.nproc}·thr1) = ${efficiency.toFixed(3)}`);
    let ind: { images_per_s: number; step_s: number[] } | null = null;
    if (o.independent && o.device === 'cpu') {
      ind = await independent(o, data, dir, o.nproc);
      log(`  ${o.nproc} independent single-process runs at once: ${ind.images_per_s.toFixed(2)} images/s together ` +
        `(steps ${ind.step_s.map((s) => (s * 1000).toFixed(0)).join(', ')} ms): DDP keeps ${(many.images_per_s / ind.images_per_s).toFixed(3)} of it; ` +
        `the machine allows ${(ind.images_per_s / (o.nproc * one.images_per_s)).toFixed(3)} of ${o.nproc}·thr1`);
    }
    log(`  gradient all-reduce wait ${many.collective_ms_per_iter!.toFixed(1)} ms/iteration = ${(many.collective_share! * 100).toFixed(1)}% of the step ` +
      `(${many.buckets} bucket(s), ${(many.gradient_bytes! / 1e6).toFixed(2)} MB, ${many.overlapped ? 'launched during backward (overlapped)' : 'after backward'})`);
    const load1 = loadavg();
    log(loadEndLine(load1));
    if (o.json) {
      console.log(JSON.stringify({
        bench: 'ddp', config: 'upernet_vit_adapter_synth', options: o, cpus: availableParallelism(), load_start: load0, load_end: load1,
        one, many, scaling_efficiency: efficiency, independent: ind,
        ddp_vs_independent: ind ? many.images_per_s / ind.images_per_s : null,
        independent_vs_one: ind ? ind.images_per_s / (o.nproc * one.images_per_s) : null,
      }));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(`bench ddp: ${(e as Error).message}`);
  process.exitCode = 1;
});
