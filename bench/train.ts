/**
 * Training-step benchmark: one iteration (forward + losses, backward, AdamW step + zero_grad) of ViT-Adapter + UperNet
 * + auxiliary FCN head (`upernet_deit_adapter_<preset>_512_160k_ade20k`) in training mode (drop path, head dropout,
 * BatchNorm batch statistics), with the authors' layer-decay parameter groups, in TypeScript against the PyTorch
 * script bench/torch_train.py (same architecture, `torch.optim.AdamW` over the same groups), in one run.
 *
 *   node dist/bench/train.js [--preset tiny|small] [--size 512] [--batch 2] [--repeats 3] [--warmup 1] [--threads N]
 *     [--device cpu|cuda] [--amp bf16|fp16] [--workers N] [--no-loader] [--no-python] [--python /usr/bin/python3]
 *     [--json]
 *
 * Each side runs in its own process (this script re-runs itself with `--side ts` / `--side loader`; PyTorch runs
 * bench/torch_train.py), so that each peak RSS (`getrusage` maxrss) is that side's alone. Parts:
 *  1. TS step on a fixed random batch (normal image, uniform labels in [0, 150)): median / min / max wall time,
 *     process CPU time, the forward / backward / optimizer split (median over the timed steps), peak RSS, and on CUDA
 *     the caching allocator's peak (`cuda.memoryStats`). It writes the parameter groups for the PyTorch side.
 *  2. PyTorch step on the same shapes and groups, same thread count, same measurements
 *     (`torch.cuda.max_memory_allocated` on CUDA).
 *  3. Loader: the real training loop (`trainSegmentor`: worker-thread decode + the ADE20K train pipeline + the same
 *     step) on a generated dataset of S×S scenes; reports the trainer's data-wait share (time in `prefetcher.next()`
 *     / iteration time) over the iterations after the warm-up, and the step time with the workers running.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type DType, type Device, autocast, backend, cuda, getNumThreads, manualSeed, noGrad, randint, randn, scope, setNumThreads,
} from '../src/engine/index.js';
import { hasNativeMsDeformAttn, setMsDeformAttnImpl } from '../src/models/adapter/index.js';
import { AdamW, GradScaler, describeParamGroups } from '../src/train/index.js';
import { type SegConfig, buildSegmentor, loadConfig } from '../src/tasks/segmentation/index.js';
import { effectiveRecipe, paramGroupsFor, trainSegmentor } from '../src/tasks/segmentation/train.js';
import { writeSyntheticSplits } from '../src/tasks/segmentation/synth-splits.js';
import {
  type MsdaMode, type Stats, envLine, intArg, loadEndLine, machineLine, median, ms, openblasEnv, parseFlags, printRows, pythonBaseline,
  reporters, runPython, stats,
} from './common.js';

const SCRIPT = 'torch_train.py';
const NUM_CLASSES = 150;

// ---- options -------------------------------------------------------------------------------------------------

type Preset = 'tiny' | 'small';
type Amp = 'bf16' | 'fp16';

interface Options {
  preset: Preset;
  size: number;
  batch: number;
  repeats: number;
  warmup: number;
  threads: number;
  device: Device;
  amp: Amp | null;
  workers: number | null;
  loader: boolean;
  pythonExe: string;
  json: boolean;
  side: 'main' | 'ts' | 'loader';
  groupsOut: string | null;
  msda: MsdaMode;
}

const USAGE = `usage: node dist/bench/train.js [--preset tiny|small] [--size 512] [--batch 2] [--repeats 3] [--warmup 1]
  [--threads N] [--device cpu|cuda] [--amp bf16|fp16] [--workers N] [--msda auto|native|composition] [--no-loader]
  [--no-python] [--python /usr/bin/python3] [--json]`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    preset: 'tiny', size: 512, batch: 2, repeats: 3, warmup: 1, threads: 0, device: 'cpu', amp: null, workers: null,
    loader: true, pythonExe: '/usr/bin/python3', json: false, side: 'main', groupsOut: null, msda: 'auto',
  };
  parseFlags(argv, USAGE, (flag, val) => {
    switch (flag) {
      case '--preset': {
        const v = val();
        if (v !== 'tiny' && v !== 'small') throw new Error(`--preset: expected tiny or small, got ${JSON.stringify(v)}`);
        o.preset = v;
        break;
      }
      case '--size': o.size = intArg(flag, val(), 32); break;
      case '--batch': o.batch = intArg(flag, val(), 1); break;
      case '--repeats': o.repeats = intArg(flag, val(), 1); break;
      case '--warmup': o.warmup = intArg(flag, val(), 0); break;
      case '--threads': o.threads = intArg(flag, val(), 1); break;
      case '--workers': o.workers = intArg(flag, val(), 0); break;
      case '--device': {
        const v = val();
        if (!/^(cpu|cuda(:\d+)?)$/.test(v)) throw new Error(`--device: expected cpu, cuda or cuda:N, got ${JSON.stringify(v)}`);
        o.device = v as Device;
        break;
      }
      case '--amp': {
        const v = val();
        if (v !== 'bf16' && v !== 'fp16') throw new Error(`--amp: expected bf16 or fp16, got ${JSON.stringify(v)}`);
        o.amp = v;
        break;
      }
      case '--no-loader': o.loader = false; break;
      case '--no-python': o.pythonExe = ''; break;
      case '--python': o.pythonExe = val(); break;
      case '--json': o.json = true; break;
      case '--side': {
        const v = val();
        if (v !== 'ts' && v !== 'loader') throw new Error(`--side: expected ts or loader, got ${JSON.stringify(v)}`);
        o.side = v;
        break;
      }
      case '--groups-out': o.groupsOut = val(); break;
      case '--msda': {
        const v = val();
        if (v !== 'auto' && v !== 'native' && v !== 'composition') throw new Error(`--msda: expected auto|native|composition, got ${JSON.stringify(v)}`);
        o.msda = v;
        break;
      }
      default: return false;
    }
    return true;
  });
  if (o.size % 32) throw new Error(`--size must be a multiple of 32, got ${o.size}`);
  if (o.amp === 'fp16' && o.device === 'cpu') throw new Error('--amp fp16 needs --device cuda (a dynamic loss scaler on CUDA)');
  return o;
}

/** The flags a child process gets (everything that defines the measurement). */
function childArgs(o: Options): string[] {
  return [
    '--preset', o.preset, '--size', String(o.size), '--batch', String(o.batch), '--repeats', String(o.repeats),
    '--warmup', String(o.warmup), '--threads', String(o.threads), '--device', o.device, ...(o.amp ? ['--amp', o.amp] : []),
    ...(o.workers !== null ? ['--workers', String(o.workers)] : []), '--msda', o.msda,
  ];
}

const configName = (preset: Preset): string => `upernet_deit_adapter_${preset}_512_160k_ade20k`;

/** The preset's config with the train pipeline's scale and crop set for an S×S crop (S = 512 is the config's). */
function benchConfig(o: Options): SegConfig {
  const cfg = loadConfig(configName(o.preset));
  const r = cfg.train!;
  if (o.size !== 512) {
    r.pipeline.img_scale = [4 * o.size, o.size];
    r.pipeline.crop_size = [o.size, o.size];
  }
  return cfg;
}

const deviceIndex = (d: Device): number => (d === 'cpu' ? -1 : d === 'cuda' ? 0 : Number(d.slice(5)));

function sync(d: Device): void {
  if (d !== 'cpu') cuda.synchronize(deviceIndex(d));
}

/** Peak RSS of this process in bytes (`getrusage` maxrss). */
const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

// ---- results -------------------------------------------------------------------------------------------------

/** The forward / backward / optimizer split of one step (seconds, median over the timed steps). */
interface Split {
  forward: number;
  backward: number;
  optimizer: number;
}

/** One side's step measurement (both sides print this shape as JSON). */
interface SideResult extends Stats {
  profile_s: Split;
  img_per_s: number;
  peak_rss_bytes: number;
  rss_before_model_bytes: number;
  threads: number;
  num_parameters: number;
  groups: number;
  losses: Record<string, number>;
  cuda_max_allocated_bytes?: number;
  cuda_max_reserved_bytes?: number;
  torch?: string;
  optimizer?: string;
}

interface LoaderResult {
  workers: number;
  iterations: number;
  /** Trainer's data-wait share over the iterations after the warm-up (wait / iteration time). */
  data_wait_share: number;
  /** Same, including the warm-up iterations (the first batch is always waited for). */
  data_wait_share_all: number;
  /** Per-iteration wall seconds and data-wait seconds (all iterations). */
  iter_s: number[];
  data_s: number[];
  /** Median iteration time after the warm-up. */
  median_iter_s: number;
  scenes: number;
  scene_size: number;
  synth_s: number;
  peak_rss_bytes: number;
}

// ---- the TypeScript step (child: --side ts) -----------------------------------------------------------------

function tsSide(o: Options): SideResult {
  if (o.threads) setNumThreads(o.threads);
  if (o.msda === 'native' && !hasNativeMsDeformAttn()) throw new Error('--msda native: the native ms_deform_attn kernel is not built into this addon');
  setMsDeformAttnImpl(o.msda === 'auto' ? null : o.msda === 'native');
  if (o.device !== 'cpu' && !cuda.isAvailable()) throw new Error(`--device ${o.device}: CUDA is not available in this libtorch build / machine`);
  const rss0 = peakRss();
  const config = benchConfig(o);
  manualSeed(0);
  const model = buildSegmentor(config);
  if (o.device !== 'cpu') model.to(o.device);
  model.train();
  const recipe = effectiveRecipe(config);
  const groups = paramGroupsFor(model, recipe);
  if (o.groupsOut) writeFileSync(o.groupsOut, JSON.stringify(describeParamGroups(groups)));
  const optimizer = new AdamW(groups, { betas: recipe.optimizer.betas, ...(recipe.optimizer.eps !== undefined ? { eps: recipe.optimizer.eps } : {}) });
  manualSeed(1);
  const x = randn([o.batch, 3, o.size, o.size], { device: o.device }).keep();
  const y = randint(0, NUM_CLASSES, [o.batch, 1, o.size, o.size], { device: o.device }).keep();
  const cudaDev = deviceIndex(o.device);
  if (o.device !== 'cpu') {
    sync(o.device);
    cuda.memoryStats(cudaDev, true);
  }
  const ampDtype: DType | null = o.amp === 'bf16' ? 'bfloat16' : o.amp === 'fp16' ? 'float16' : null;
  // torch.cuda.amp.GradScaler's defaults on both sides (init scale 2^16)
  const scaler = o.amp === 'fp16' ? new GradScaler() : null;
  const losses: Record<string, number> = {};
  const step = (): Split => {
    const t0 = performance.now();
    let t1 = t0;
    scope(() => {
      const out = ampDtype ? autocast(ampDtype, o.device, () => model.forwardTrain(x, y)) : model.forwardTrain(x, y);
      // the trainer reads every logged term once per iteration (a device sync on CUDA)
      noGrad(() => {
        for (const [k, t] of Object.entries(out.log)) losses[k] = t.item();
        losses.loss = out.loss.item();
      });
      t1 = performance.now();
      (scaler ? scaler.scale(out.loss) : out.loss).backward();
      sync(o.device);
    });
    const t2 = performance.now();
    if (scaler) {
      scaler.step(optimizer);
      scaler.update();
    } else {
      optimizer.step();
    }
    optimizer.zeroGrad();
    sync(o.device);
    const t3 = performance.now();
    return { forward: (t1 - t0) / 1000, backward: (t2 - t1) / 1000, optimizer: (t3 - t2) / 1000 };
  };
  const times: number[] = [];
  const cpu: number[] = [];
  const parts: Split[] = [];
  for (let i = 0; i < o.warmup + o.repeats; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const p = step();
    const c = process.cpuUsage(c0);
    const dt = (performance.now() - t0) / 1000;
    if (i >= o.warmup) {
      times.push(dt);
      cpu.push((c.user + c.system) / 1e6);
      parts.push(p);
    }
    process.stderr.write(`  TS step ${i + 1}/${o.warmup + o.repeats}${i < o.warmup ? ' (warm-up)' : ''}: ${(dt * 1e3).toFixed(0)} ms, loss ${losses.loss?.toFixed(4)}\n`);
  }
  const s = stats(times, cpu);
  const res: SideResult = {
    ...s,
    profile_s: {
      forward: median(parts.map((p) => p.forward)), backward: median(parts.map((p) => p.backward)),
      optimizer: median(parts.map((p) => p.optimizer)),
    },
    img_per_s: o.batch / s.median_s, peak_rss_bytes: peakRss(), rss_before_model_bytes: rss0, threads: getNumThreads(),
    num_parameters: model.numParameters(), groups: groups.length, losses,
    optimizer: `AdamW (src/train/optim.ts, foreach ${optimizer.foreach})`,
  };
  if (o.device !== 'cpu') {
    const m = cuda.memoryStats(cudaDev);
    res.cuda_max_allocated_bytes = m.peakAllocated;
    res.cuda_max_reserved_bytes = m.peakReserved;
  }
  return res;
}

// ---- the real loop with the worker data loader (child: --side loader) --------------------------------------

async function loaderSide(o: Options): Promise<LoaderResult> {
  if (o.threads) setNumThreads(o.threads);
  setMsDeformAttnImpl(o.msda === 'auto' ? null : o.msda === 'native');
  const config = benchConfig(o);
  // the generated scenes use label ids 0..8 with 0 a real class: keep them as they are (ids < 150 fit the model)
  config.dataset.reduce_zero_label = false;
  config.dataset.img_suffix = '.png';
  config.dataset.seg_map_suffix = '.png';
  const dir = mkdtempSync(join(tmpdir(), 'vit-bench-train-'));
  try {
    const iters = o.warmup + o.repeats;
    // one batch's worth of scenes (the sampler reshuffles them every epoch): generating them is not what is measured
    const scenes = Math.max(2, o.batch);
    const t0 = performance.now();
    await writeSyntheticSplits(join(dir, 'data'), { count: scenes + 1, size: o.size, seed: 0, val: 1 });
    const synthS = (performance.now() - t0) / 1000;
    const recs: { time: number; data: number }[] = [];
    const workers = o.workers ?? config.train!.workers_per_gpu;
    const r = await trainSegmentor({
      config, dataRoot: join(dir, 'data'), workDir: join(dir, 'work'), iters, batch: o.batch, device: o.device,
      evalInterval: 0, checkpointInterval: iters, keep: 1, workers, seed: 0, handleSignals: false, amp: o.amp,
      trainImgDir: 'img_dir/train', trainAnnDir: 'ann_dir/train', valImgDir: 'img_dir/val', valAnnDir: 'ann_dir/val',
      onIteration: (rec, it) => {
        recs.push({ time: rec.time, data: rec.data_time });
        process.stderr.write(`  loader iteration ${it.done}/${it.total}: ${(rec.time * 1e3).toFixed(0)} ms, data wait ${(rec.data_time * 1e3).toFixed(0)} ms\n`);
      },
    });
    const after = recs.slice(o.warmup);
    const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
    return {
      workers, iterations: r.ran,
      data_wait_share: after.length ? sum(after.map((x) => x.data)) / sum(after.map((x) => x.time)) : NaN,
      data_wait_share_all: sum(recs.map((x) => x.data)) / sum(recs.map((x) => x.time)),
      iter_s: recs.map((x) => x.time), data_s: recs.map((x) => x.data),
      median_iter_s: after.length ? median(after.map((x) => x.time)) : NaN,
      scenes, scene_size: o.size, synth_s: synthS, peak_rss_bytes: peakRss(),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the orchestrating process -------------------------------------------------------------------------------

/** Runs this script as a child with `--side`; returns its last stdout line parsed, or throws with its stderr. */
function runChild<T>(side: 'ts' | 'loader', args: string[], echo: boolean): T {
  const script = fileURLToPath(import.meta.url);
  const r = spawnSync(process.execPath, [script, '--side', side, ...args], {
    encoding: 'utf8', env: process.env, maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', echo ? 'inherit' : 'pipe'],
  });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    const tail = echo ? '(its messages are above)' : (r.stderr ?? '').trim().split('\n').slice(-6).join('\n');
    throw new Error(`--side ${side} failed (status ${r.status ?? r.signal}): ${tail}`);
  }
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? 'null') as T;
}

const mib = (b: number | undefined): string => (b === undefined || !Number.isFinite(b) ? '-' : (b / 2 ** 20).toFixed(0));
const pct = (x: number | undefined): string => (x === undefined || !Number.isFinite(x) ? '-' : `${(100 * x).toFixed(1)}%`);
const errLine = (e: unknown): string => (e instanceof Error ? e.message : String(e));

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.side === 'ts') {
    console.log(JSON.stringify(tsSide(o)));
    return;
  }
  if (o.side === 'loader') {
    console.log(JSON.stringify(await loaderSide(o)));
    return;
  }
  if (!o.threads) o.threads = availableParallelism();
  const { log, progress } = reporters(o.json);
  const { script: python, problem } = pythonBaseline(o.pythonExe, SCRIPT);
  const env = openblasEnv();
  const load0 = loadavg();
  const info = backend().info();
  const native = hasNativeMsDeformAttn();

  log(`Training-step benchmark: ViT-Adapter-${o.preset === 'tiny' ? 'T' : 'S'} + UperNet + FCN aux (${configName(o.preset)}), ` +
    `batch ${o.batch}, ${o.size}x${o.size}, ${o.device}${o.amp ? ` amp ${o.amp}` : ' float32'}, train mode, AdamW with the ` +
    `authors' layer-decay groups; ${o.repeats} timed steps after ${o.warmup} warm-up, ${o.threads} threads; libtorch ${info.torchVersion}`);
  const tsMsda = o.msda === 'auto' ? (native ? 'native kernel' : 'grid_sample composition') : o.msda === 'native' ? 'native kernel' : 'grid_sample composition';
  log(`  deformable attention: TS ${tsMsda}, PyTorch grid_sample composition ` +
    `(the authors' CPU path; on CUDA they use their own kernel)`);
  log(envLine(env));
  log(machineLine(load0, '  [busy: timings are noisy; compare the mins]'));
  log(`  PyTorch: ${problem ? `skipped: ${problem}` : `${o.pythonExe} ${python}`}`);

  const dir = mkdtempSync(join(tmpdir(), 'vit-bench-train-groups-'));
  const groupsFile = join(dir, 'groups.json');
  const args = childArgs(o);
  let ts: SideResult | null = null;
  let torch: SideResult | null = null;
  let loader: LoaderResult | null = null;
  const errors: Record<string, string> = {};
  try {
    progress('  TS step (own process)...\n');
    try {
      ts = runChild<SideResult>('ts', [...args, '--groups-out', groupsFile], !o.json);
      log(`  TS: median ${ms(ts.median_s)} ms, min ${ms(ts.min_s)}, peak RSS ${mib(ts.peak_rss_bytes)} MiB`);
    } catch (e) {
      errors.ts = errLine(e);
      log(`  TS failed: ${errors.ts}`);
    }
    if (python) {
      progress('  PyTorch step (own process)...\n');
      try {
        if (!ts) {
          // the groups come from the TS model; build them here if the TS step failed
          const config = benchConfig(o);
          manualSeed(0);
          const model = buildSegmentor(config);
          writeFileSync(groupsFile, JSON.stringify(describeParamGroups(paramGroupsFor(model, effectiveRecipe(config)))));
          model.dispose();
        }
        const pyArgs = ['--groups', groupsFile, '--preset', o.preset, '--size', String(o.size), '--batch', String(o.batch),
          '--repeats', String(o.repeats), '--warmup', String(o.warmup), '--threads', String(o.threads), '--device', o.device,
          '--num-classes', String(NUM_CLASSES), ...(o.amp ? ['--amp', o.amp] : []), '--json'];
        torch = JSON.parse(runPython(o.pythonExe, python, pyArgs)) as SideResult;
        log(`  PyTorch: median ${ms(torch.median_s)} ms, min ${ms(torch.min_s)}, peak RSS ${mib(torch.peak_rss_bytes)} MiB` +
          (torch.threads !== o.threads ? `  [warning: PyTorch ran ${torch.threads} threads, TS ${o.threads}]` : ''));
      } catch (e) {
        errors.torch = errLine(e);
        log(`  PyTorch failed: ${errors.torch}`);
      }
    }
    if (o.loader) {
      progress('  TS training loop with the worker data loader (own process)...\n');
      try {
        loader = runChild<LoaderResult>('loader', args, !o.json);
        log(`  loader: data-wait share ${pct(loader.data_wait_share)} after the warm-up, ${loader.workers} workers`);
      } catch (e) {
        errors.loader = errLine(e);
        log(`  loader failed: ${errors.loader}`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const ratios = ts && torch ? {
    median: ts.median_s / torch.median_s, min: ts.min_s / torch.min_s, cpu: ts.cpu_median_s / torch.cpu_median_s,
    peak_rss: ts.peak_rss_bytes / torch.peak_rss_bytes,
    ...(ts.cuda_max_allocated_bytes !== undefined && torch.cuda_max_allocated_bytes !== undefined
      ? { cuda_max_allocated: ts.cuda_max_allocated_bytes / torch.cuda_max_allocated_bytes } : {}),
  } : null;
  const targets = { step_time_ratio_max: 0.8, peak_memory_ratio_max: 1.2, data_wait_share: 0 };
  const load1 = loadavg();
  if (o.json) {
    console.log(JSON.stringify({
      config: configName(o.preset), preset: o.preset, size: o.size, batch: o.batch, repeats: o.repeats, warmup: o.warmup,
      threads: o.threads, device: o.device, amp: o.amp, libtorch: info.torchVersion, native_msda: native, env,
      cpus: availableParallelism(), loadavg_start: load0, loadavg_end: load1, python: python ? o.pythonExe : null,
      python_problem: problem, errors, ts, torch, ratios, targets, loader,
      loader_step_slowdown: loader && ts ? loader.median_iter_s / ts.median_s : null,
    }));
    return;
  }

  console.log(`\nms per training step (batch ${o.batch}, ${o.size}x${o.size}); TS/PyTorch = TS median / PyTorch median, ` +
    `mins ratio = TS min / PyTorch min; CPU = median process CPU time per step; split = median forward (+ losses and ` +
    `reading them) / backward / optimizer (step + zero_grad) over the timed steps; peak RSS of each side's process`);
  const gpu = o.device !== 'cpu';
  const rows: string[][] = [['side', 'median ms', 'min ms', 'max ms', 'CPU ms', 'img/s', 'forward', 'backward', 'optimizer',
    'peak RSS MiB', ...(gpu ? ['GPU peak MiB'] : [])]];
  const row = (name: string, s: SideResult | null, why: string | undefined): void => {
    if (!s) { rows.push([name, why ? 'failed' : 'skipped', ...Array(gpu ? 9 : 8).fill('-')]); return; }
    rows.push([name, ms(s.median_s), ms(s.min_s), ms(s.max_s), ms(s.cpu_median_s), s.img_per_s.toFixed(2),
      ms(s.profile_s.forward), ms(s.profile_s.backward), ms(s.profile_s.optimizer), mib(s.peak_rss_bytes),
      ...(gpu ? [mib(s.cuda_max_allocated_bytes)] : [])]);
  };
  row('TS', ts, errors.ts);
  row('PyTorch', torch, errors.torch ?? problem ?? undefined);
  printRows(rows, '  ', 1);
  if (ratios && ts && torch) {
    const verdict = (v: number, max: number): string => (v <= max ? `meets <= ${max}` : `misses <= ${max}`);
    console.log(`\n  TS/PyTorch step time: median ${ratios.median.toFixed(3)} (${verdict(ratios.median, targets.step_time_ratio_max)}), ` +
      `mins ${ratios.min.toFixed(3)}, CPU ${ratios.cpu.toFixed(3)}`);
    console.log(`  TS/PyTorch peak RSS: ${ratios.peak_rss.toFixed(3)} (${verdict(ratios.peak_rss, targets.peak_memory_ratio_max)}); ` +
      `RSS before the model: TS ${mib(ts.rss_before_model_bytes)} MiB, PyTorch ${mib(torch.rss_before_model_bytes)} MiB`);
    if (ratios.cuda_max_allocated !== undefined) console.log(`  TS/PyTorch CUDA peak allocated: ${ratios.cuda_max_allocated.toFixed(3)}`);
    const sp = (k: keyof Split): string => `${k} ${(ts.profile_s[k] / torch.profile_s[k]).toFixed(2)}`;
    console.log(`  split TS/PyTorch: ${sp('forward')}, ${sp('backward')}, ${sp('optimizer')}`);
    console.log(`  parameters: TS ${ts.num_parameters}, PyTorch ${torch.num_parameters}; groups ${ts.groups} / ${torch.groups}; ` +
      `optimizers: TS ${ts.optimizer}, PyTorch ${torch.optimizer}`);
  }
  if (errors.ts) console.log(`  TS failed: ${errors.ts}`);
  if (errors.torch) console.log(`  PyTorch failed: ${errors.torch}`);
  if (loader) {
    console.log(`\n  data loader (trainSegmentor on ${loader.scenes} generated ${loader.scene_size}x${loader.scene_size} scenes ` +
      `(generated in ${loader.synth_s.toFixed(1)} s, not counted), ` +
      `ADE20K train pipeline, ${loader.workers} worker threads): data-wait share ${pct(loader.data_wait_share)} of the ` +
      `iteration time after ${o.warmup} warm-up iteration(s) (${pct(loader.data_wait_share_all)} including them); ` +
      `median iteration ${ms(loader.median_iter_s)} ms` +
      (ts ? ` = ${(loader.median_iter_s / ts.median_s).toFixed(2)}x the fixed-batch step (workers share the CPU)` : ''));
    console.log(`  per iteration ms (wait): ${loader.iter_s.map((t, i) => `${ms(t)} (${ms(loader!.data_s[i])})`).join(', ')}`);
  } else if (errors.loader) {
    console.log(`  loader failed: ${errors.loader}`);
  }
  console.log(loadEndLine(load1));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
