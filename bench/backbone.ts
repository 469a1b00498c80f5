/**
 * Backbone benchmark: the TypeScript ViT-Adapter (libtorch through the addon) against the PyTorch re-implementation
 * in bench/torch_vit_adapter.py, same preset, input size and thread count, in one run; plus a per-module profile of
 * both sides. The BEiT-Adapter presets (`beit-base`, `beit-large`, relative position grid = the input size) run
 * against bench/torch_beit.py. `--memory` also measures each side's peak resident memory in a fresh process.
 *
 *   node dist/bench/backbone.js [--presets tiny,small,beit-base] [--size 512] [--repeats 5] [--threads N] [--rounds 1]
 *     [--msda auto|native|composition|both] [--profile-repeats 5] [--no-profile] [--no-python] [--memory]
 *     [--python /usr/bin/python3] [--openblas-env keep|unset] [--json]
 *
 * `--msda both` (the default) times the native deformable-attention kernel when the addon has it, and the grid_sample
 * composition for comparison. `--rounds K` alternates TS and PyTorch K times and pools the timings (fairer on a
 * busy machine). `--openblas-env unset` re-runs this script without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (both sides
 * always share one environment).
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import {
  type Tensor, backend, getNumThreads, manualSeed, noGrad, randn, scope, setNumThreads,
} from '../src/engine/index.js';
import {
  BEiTAdapter, type MSDeformAttn, ViTAdapter, hasNativeMsDeformAttn, setMsDeformAttnImpl,
} from '../src/models/adapter/index.js';
import { BENCH_PRESETS, type BenchBackboneResult, benchBackbone, buildBenchBackbone } from '../src/tools/bench-backbone.js';
import {
  type CommonOptions, type MsdaMode, type Ratio, type Stats, OPENBLAS_VARS, Timers as SectionTimers, checkSize,
  commonFlag, cpuSeconds, envLine, loadEndLine, machineLine, ms, openblasEnv, parseFlags, poolStats, printRows,
  pythonBaseline, pythonScript, ratio, reporters, runPython as runPythonScript, stats, wrapMethod,
} from './common.js';

// ---- options -------------------------------------------------------------------------------------------------

interface Options extends CommonOptions {
  presets: string[];
  msda: MsdaMode | 'both';
  python: string | null;
  openblasEnv: 'keep' | 'unset';
  memory: boolean;
  /** Internal: run one preset's forwards in this (fresh) process and print its peak RSS. */
  memoryChild: string | null;
}

const USAGE = `usage: node dist/bench/backbone.js [--presets tiny,small,beit-base] [--size 512] [--repeats 5] [--warmup 1]
  [--threads N] [--rounds K] [--msda auto|native|composition|both] [--profile-repeats 5] [--no-profile]
  [--no-python] [--memory] [--python /usr/bin/python3] [--openblas-env keep|unset] [--json]`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    presets: ['tiny', 'small'], size: 512, repeats: 5, warmup: 1, threads: 0, rounds: 1, msda: 'both', profile: true,
    profileRepeats: 5, python: null, pythonExe: '/usr/bin/python3', openblasEnv: 'keep', json: false, memory: false,
    memoryChild: null,
  };
  parseFlags(argv, USAGE, (flag, val) => {
    switch (flag) {
      case '--presets': case '--preset': o.presets = val().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--msda': {
        const v = val();
        if (!['auto', 'native', 'composition', 'both'].includes(v)) throw new Error(`--msda: expected auto|native|composition|both, got ${v}`);
        o.msda = v as Options['msda'];
        break;
      }
      case '--memory': o.memory = true; break;
      case '--memory-child': o.memoryChild = val(); break;
      case '--openblas-env': {
        const v = val();
        if (v !== 'keep' && v !== 'unset') throw new Error(`--openblas-env: expected keep|unset, got ${v}`);
        o.openblasEnv = v;
        break;
      }
      default: return commonFlag(o, flag, val);
    }
    return true;
  });
  checkSize(o.size);
  return o;
}

/** OpenBLAS reads its environment when the library loads: unsetting needs a fresh process. */
function reexecWithoutOpenblasEnv(): never {
  const env: NodeJS.ProcessEnv = { ...process.env, VITA_BENCH_REEXEC: '1' };
  for (const k of OPENBLAS_VARS) delete env[k];
  const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit', env,
  });
  process.exit(r.status ?? 1);
}

// ---- statistics --------------------------------------------------------------------------------------------

/**
 * Runs `benchBackbone` and also records the process CPU time of each forward it makes, by wrapping
 * `ViTAdapter.prototype.forward` for the duration (restored afterwards). The first `warmup` calls are dropped.
 */
async function benchBackboneWithCpu(opts: Parameters<typeof benchBackbone>[0]): Promise<BenchBackboneResult & Stats> {
  const cpu: number[] = [];
  type Fwd = (this: unknown, ...args: unknown[]) => unknown;
  const restore: (() => void)[] = [];
  for (const proto of [ViTAdapter.prototype, BEiTAdapter.prototype] as unknown as { forward: Fwd }[]) {
    const orig = proto.forward;
    proto.forward = function timedForward(this: unknown, ...args: unknown[]) {
      const c0 = process.cpuUsage();
      try {
        return orig.apply(this, args);
      } finally {
        cpu.push(cpuSeconds(c0));
      }
    };
    restore.push(() => { proto.forward = orig; });
  }
  try {
    const r = await benchBackbone(opts);
    const timed = cpu.slice(cpu.length - r.times_s.length);
    return { ...r, ...stats(r.times_s, timed) };
  } finally {
    restore.forEach((f) => f());
  }
}

// ---- peak memory (fresh processes) ---------------------------------------------------------------------------

/** Peak and base resident set sizes of one side's process. */
interface MemoryResult { peak_rss_bytes: number; base_rss_bytes: number }

/** Resident set size now (Linux /proc/self/statm), bytes. */
function rssNow(): number {
  return process.memoryUsage.rss();
}

/** `--memory-child PRESET`: builds the preset in this fresh process, runs warm-up + repeats forwards, prints the RSS. */
function memoryChild(o: Options, preset: string): void {
  const base = rssNow();
  manualSeed(0);
  const model = buildBenchBackbone(preset, o.size).eval();
  const input = randn([1, 3, o.size, o.size]).keep();
  for (let i = 0; i < o.warmup + o.repeats; i++) scope(() => { noGrad(() => model.forward(input)); });
  const peak = process.resourceUsage().maxRSS * 1024;
  console.log(JSON.stringify({ peak_rss_bytes: peak, base_rss_bytes: base }));
}

/** Runs {@link memoryChild} in a fresh Node process with the same thread count. */
function measureTsMemory(o: Options, preset: string, msda: MsdaMode): MemoryResult {
  const args = [...process.execArgv, fileURLToPath(import.meta.url), '--memory-child', preset, '--size', String(o.size),
    '--repeats', String(o.repeats), '--warmup', String(o.warmup), '--threads', String(o.threads), '--msda', msda];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', env: process.env });
  if (r.status !== 0) throw new Error(`memory child failed (status ${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as MemoryResult;
}

// ---- PyTorch side ------------------------------------------------------------------------------------------

const SCRIPT = 'torch_vit_adapter.py';
const BEIT_SCRIPT = 'torch_beit.py';

/** The PyTorch script of a preset: torch_beit.py for the BEiT-Adapter presets. */
const scriptOf = (preset: string): string => (preset.startsWith('beit') ? BEIT_SCRIPT : SCRIPT);

interface TorchResult extends Stats {
  preset: string;
  size: number;
  batch: number;
  torch_version: string;
  threads: number;
  num_parameters: number;
  env: Record<string, string | null>;
  profile_s?: Record<string, number>;
  profile_cpu_s?: Record<string, number>;
  /** torch_beit.py --bench only: peak and post-import resident set sizes of the script's process. */
  peak_rss_bytes?: number;
  base_rss_bytes?: number;
}

/** Runs the PyTorch script once: `bench` times `repeats` forwards, `profile` runs `repeats` profiled forwards. */
function runPython(o: Options, script: string, preset: string, mode: 'bench' | 'profile', repeats: number): TorchResult {
  const args = [`--${mode}`, '--preset', preset, '--size', String(o.size), '--repeats', String(repeats),
    '--warmup', String(o.warmup), '--threads', String(o.threads), '--json'];
  return JSON.parse(runPythonScript(o.pythonExe, script, args)) as TorchResult;
}

// ---- TS per-module profile ---------------------------------------------------------------------------------

const PROFILE_ORDER = ['embed', 'spm', 'vit_blocks', 'injector.msda_core', 'injector.rest', 'extractor.msda_core',
  'extractor.rest', 'up_norms', 'other'] as const;

const PROFILE_LABELS: Record<string, string> = {
  embed: 'patch embed + pos embed', spm: 'spatial prior module', vit_blocks: 'ViT blocks',
  'injector.msda_core': 'injectors: MSDA core', 'injector.rest': 'injectors: rest',
  'extractor.msda_core': 'extractors: MSDA core', 'extractor.rest': 'extractors: rest (incl. ConvFFN)',
  up_norms: 'up + norm1..4', other: 'other (glue, resizes)', total: 'total',
};

/** Accumulates wall time per section; nested `msda_core` is attributed to the enclosing section. */
class Timers extends SectionTimers {
  protected override key(name: string): string {
    return name === 'msda_core' ? `${this.stack[this.stack.length - 1] ?? 'unknown'}.msda_core` : name;
  }
}

/** Sections of one profiled pass from its per-name seconds and its total seconds. */
function sections(acc: Map<string, number>, total: number): Record<string, number> {
  const a = (k: string): number => acc.get(k) ?? 0;
  const p: Record<string, number> = {
    embed: a('embed'), spm: a('spm'), vit_blocks: a('vit_blocks'),
    'injector.msda_core': a('injector.msda_core'), 'injector.rest': a('injector') - a('injector.msda_core'),
    'extractor.msda_core': a('extractor.msda_core'), 'extractor.rest': a('extractor') - a('extractor.msda_core'),
    up_norms: a('up_norms'),
  };
  p.other = total - Object.values(p).reduce((x, y) => x + y, 0);
  p.total = total;
  return p;
}

/**
 * Times the deformable-attention core inside an `MSDeformAttn` instance by wrapping its `core` method. The profiler
 * checks that the patched model's outputs equal the unpatched ones.
 */
function patchMsda(m: MSDeformAttn, timers: Timers): () => void {
  return wrapMethod(m, 'core', timers, 'msda_core');
}

interface TsProfile {
  msda: string;
  /** Wall-clock seconds per forward, by section. */
  profile_s: Record<string, number>;
  /** Process CPU seconds per forward, by section. */
  profile_cpu_s: Record<string, number>;
  /** max |patched − unpatched| over the four outputs (0 when the MSDA replica matches the library forward). */
  replica_max_abs_diff: number;
}

function profileTs(preset: string, o: Options, msda: MsdaMode): TsProfile {
  setMsDeformAttnImpl(msda === 'auto' ? null : msda === 'native');
  manualSeed(0);
  const model = buildBenchBackbone(preset, o.size).eval();
  const input = randn([1, 3, o.size, o.size]).keep();
  const forward = (): Tensor[] => noGrad(() => model.forward(input));
  try {
    const reference = scope(() => forward()).map((t) => t.keep());
    const timers = new Timers();
    const undo: (() => void)[] = [];
    undo.push(wrapMethod(model, model instanceof BEiTAdapter ? 'embedPatches' : 'embed', timers, 'embed'));
    undo.push(wrapMethod(model.spm, 'forward', timers, 'spm'));
    undo.push(wrapMethod(model, 'runBlocks', timers, 'vit_blocks'));
    for (const layer of model.interactions) {
      undo.push(wrapMethod(layer.injector, 'forward', timers, 'injector'));
      undo.push(patchMsda(layer.injector.attn, timers));
      for (const e of [layer.extractor, ...(layer.extra_extractors ?? [])]) {
        undo.push(wrapMethod(e, 'forward', timers, 'extractor'));
        undo.push(patchMsda(e.attn, timers));
      }
    }
    for (const m of [model.up, model.norm1, model.norm2, model.norm3, model.norm4]) {
      undo.push(wrapMethod(m, 'forward', timers, 'up_norms'));
    }
    let diff = 0;
    try {
      // warm-up with the patches on, and the replica check
      scope(() => {
        const outs = forward();
        outs.forEach((t, i) => { diff = Math.max(diff, t.sub(reference[i]!).abs().max().item()); });
      });
      // keep the least disturbed pass (smallest wall total): its sections add up to its total
      let best: { wall: Record<string, number>; cpu: Record<string, number> } | null = null;
      for (let i = 0; i < o.profileRepeats; i++) {
        timers.clear();
        const t0 = performance.now();
        const c0 = process.cpuUsage();
        scope(() => { forward(); });
        const wall = (performance.now() - t0) / 1000;
        const cpu = cpuSeconds(c0);
        if (!best || wall < best.wall.total!) best = { wall: sections(timers.acc, wall), cpu: sections(timers.cpu, cpu) };
      }
      return {
        msda: msda === 'auto' ? (hasNativeMsDeformAttn() ? 'native' : 'composition') : msda,
        profile_s: best!.wall, profile_cpu_s: best!.cpu, replica_max_abs_diff: diff,
      };
    } finally {
      for (const u of undo.reverse()) u();
      for (const t of reference) t.dispose();
    }
  } finally {
    setMsDeformAttnImpl(null);
    model.dispose();
    input.dispose();
  }
}

// ---- main --------------------------------------------------------------------------------------------------

interface PresetReport {
  preset: string;
  ts: (BenchBackboneResult & Stats)[];
  torch: TorchResult | null;
  torch_error?: string;
  /** TS / PyTorch by msda mode: median wall time, minimum wall time, median CPU time. */
  ratios: Record<string, Ratio>;
  ts_profile?: TsProfile;
  /** With --memory: peak RSS of each side's fresh process (TS: the first msda mode). */
  memory?: { ts: MemoryResult; torch: MemoryResult | null; ratio: number | null; ts_msda: string };
}

function printTable(reports: PresetReport[]): void {
  const rows: string[][] = [['preset', 'side', 'msda', 'median ms', 'min ms', 'max ms', 'CPU ms', 'TS/PyTorch',
    'mins ratio', 'CPU ratio', 'target (median)']];
  for (const r of reports) {
    for (const t of r.ts) {
      const q = r.ratios[t.msda];
      const goal = r.preset === 'tiny' ? 0.5 : r.preset.startsWith('beit') ? 0.7 : null;
      const target = goal !== null && q ? `<= ${goal} ${q.median <= goal ? 'met' : 'NOT met'}` : '';
      rows.push([r.preset, 'TS', t.msda, ms(t.median_s), ms(t.min_s), ms(t.max_s), ms(t.cpu_median_s),
        q ? q.median.toFixed(3) : '-', q ? q.min.toFixed(3) : '-', q ? q.cpu.toFixed(3) : '-', target]);
    }
    if (r.torch) {
      const p = r.torch;
      rows.push([r.preset, 'PyTorch', 'composition', ms(p.median_s), ms(p.min_s), ms(p.max_s), ms(p.cpu_median_s),
        '1', '1', '1', '']);
    } else {
      rows.push([r.preset, 'PyTorch', '-', '-', '-', '-', '-', '-', '-', '-', r.torch_error ?? '']);
    }
  }
  printRows(rows, '  ', 3);
}

const mib = (b: number): string => (b / 2 ** 20).toFixed(0);

/** Peak resident memory of each side (fresh processes; "base" = after start-up, before the model is built). */
function printMemory(reports: PresetReport[]): void {
  const withMem = reports.filter((r) => r.memory);
  if (!withMem.length) return;
  console.log('\n  peak resident memory per process (MiB; base = after start-up and imports, before building the model)');
  const rows: string[][] = [['preset', 'TS peak', 'TS base', 'PyTorch peak', 'PyTorch base', 'TS/PyTorch peak', 'target <= 1.2']];
  for (const r of withMem) {
    const m = r.memory!;
    rows.push([r.preset, mib(m.ts.peak_rss_bytes), mib(m.ts.base_rss_bytes), m.torch ? mib(m.torch.peak_rss_bytes) : '-',
      m.torch ? mib(m.torch.base_rss_bytes) : '-', m.ratio !== null ? m.ratio.toFixed(3) : '- (no PyTorch peak)',
      m.ratio !== null ? (m.ratio <= 1.2 ? 'met' : 'NOT met') : '']);
  }
  printRows(rows, '    ', 1);
}

function printProfile(r: PresetReport, passes: number): void {
  if (!r.ts_profile) return;
  const ts = r.ts_profile.profile_s;
  const tc = r.ts_profile.profile_cpu_s;
  const py = r.torch?.profile_s;
  const pc = r.torch?.profile_cpu_s;
  const label = r.preset.startsWith('beit') ? `BEiT-Adapter (${r.preset})` : `ViT-Adapter-${r.preset}`;
  console.log(`\n  per-module time of one forward, ${label} (TS msda: ${r.ts_profile.msda}; each side's fastest ` +
    `of ${passes} profiled passes; wall ms, % of the wall total, process CPU ms of all threads)`);
  const head = ['module', 'TS ms', 'TS %', 'TS CPU ms', ...(py && pc ? ['PyTorch ms', 'PyTorch %', 'PyTorch CPU ms', 'TS/PyTorch'] : [])];
  const rows: string[][] = [head];
  for (const k of [...PROFILE_ORDER, 'total']) {
    const row = [PROFILE_LABELS[k] ?? k, ms(ts[k]!), (100 * ts[k]! / ts.total!).toFixed(1), ms(tc[k]!)];
    if (py && pc) row.push(ms(py[k]!), (100 * py[k]! / py.total!).toFixed(1), ms(pc[k]!), (ts[k]! / py[k]!).toFixed(2));
    rows.push(row);
  }
  printRows(rows, '    ', 1);
  if (r.ts_profile.replica_max_abs_diff !== 0) {
    console.log(`    warning: the profiler's MSDeformAttn replica differs from the library forward by ` +
      `${r.ts_profile.replica_max_abs_diff.toExponential(2)} (src changed? update patchMsda in bench/backbone.ts)`);
  }
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.memoryChild) {
    if (o.threads) setNumThreads(o.threads);
    setMsDeformAttnImpl(o.msda === 'native' ? true : o.msda === 'composition' ? false : null);
    memoryChild(o, o.memoryChild);
    return;
  }
  if (o.openblasEnv === 'unset' && !process.env.VITA_BENCH_REEXEC && OPENBLAS_VARS.some((k) => process.env[k] !== undefined)) {
    reexecWithoutOpenblasEnv();
  }
  if (o.threads) setNumThreads(o.threads);
  o.threads = getNumThreads();
  const native = hasNativeMsDeformAttn();
  let modes: MsdaMode[];
  if (o.msda === 'both') modes = native ? ['native', 'composition'] : ['composition'];
  else if (o.msda === 'native' && !native) throw new Error('--msda native: the native ms_deform_attn kernel is not built into this addon');
  else modes = [o.msda === 'auto' ? (native ? 'native' : 'composition') : o.msda];
  const { script, problem } = pythonBaseline(o.pythonExe, SCRIPT);
  o.python = script;
  const env = openblasEnv();
  const load0 = loadavg();
  const info = backend().info();
  const { log, progress } = reporters(o.json);

  log(`Backbone benchmark (ViT-Adapter / BEiT-Adapter): ${o.size}x${o.size}, batch 1, ${o.threads} threads, ${o.repeats} timed ` +
    `forwards after ${o.warmup} warm-up, ${o.rounds} round(s); libtorch ${info.torchVersion}`);
  log(envLine(env) +
    (OPENBLAS_VARS.some((k) => env[k] !== null) ? '  [set: they slow OpenBLAS here; --openblas-env unset to compare]' : '  [not set]'));
  log(machineLine(load0, '  [busy: timings are noisy; see the mins ratio, use --rounds]'));
  log(`  native ms_deform_attn kernel: ${native ? 'built in' : 'NOT built into this addon (TS times the grid_sample composition only)'}`);
  log(`  PyTorch: ${problem ? `skipped: ${problem}` : `${o.pythonExe} ${[...new Set(o.presets.map(scriptOf))].map((n) => pythonScript(n) ?? `bench/${n} (not found)`).join(', ')}`}`);

  const reports: PresetReport[] = [];
  for (const preset of o.presets) {
    if (!BENCH_PRESETS.includes(preset)) throw new Error(`unknown preset ${JSON.stringify(preset)}; expected one of ${BENCH_PRESETS.join(', ')}`);
    const pyScript = o.python ? pythonScript(scriptOf(preset)) : null;
    const tsRuns = new Map<MsdaMode, (BenchBackboneResult & Stats)[]>(modes.map((m) => [m, []]));
    const pyRuns: TorchResult[] = [];
    let torchError: string | undefined;
    for (let round = 0; round < o.rounds; round++) {
      for (const m of modes) {
        progress(`  ${preset}: TS (${m}) round ${round + 1}/${o.rounds}...`);
        const r = await benchBackboneWithCpu({ preset, size: o.size, repeats: o.repeats, warmup: o.warmup, msda: m });
        tsRuns.get(m)!.push(r);
        log(` median ${ms(r.median_s)} ms (CPU ${ms(r.cpu_median_s)} ms)`);
      }
      if (pyScript && !torchError) {
        progress(`  ${preset}: PyTorch round ${round + 1}/${o.rounds}...`);
        try {
          const r = runPython(o, pyScript, preset, 'bench', o.repeats);
          pyRuns.push(r);
          log(` median ${ms(r.median_s)} ms (CPU ${ms(r.cpu_median_s)} ms)` +
            (r.threads !== o.threads ? `  [warning: PyTorch ran ${r.threads} threads, TS ${o.threads}]` : ''));
        } catch (e) {
          torchError = (e as Error).message;
          log(` failed: ${torchError}`);
        }
      }
    }
    const pool = <T extends Stats>(runs: T[]): T => ({ ...runs[0]!, ...poolStats(runs) });
    const ts = modes.map((m) => pool(tsRuns.get(m)!));
    const torch: TorchResult | null = pyRuns.length ? pool(pyRuns) : null;
    const report: PresetReport = { preset, ts, torch, ratios: {} };
    if (torchError) report.torch_error = torchError;
    if (torch) {
      for (const t of ts) {
        report.ratios[t.msda] = ratio(t, torch)!;
      }
    }
    if (o.profile) {
      progress(`  ${preset}: profiling TS (${modes[0]})...`);
      report.ts_profile = profileTs(preset, o, modes[0]!);
      log(' done');
      if (pyScript && torch) {
        progress(`  ${preset}: profiling PyTorch...`);
        try {
          const p = runPython(o, pyScript, preset, 'profile', o.profileRepeats);
          torch.profile_s = p.profile_s!;
          torch.profile_cpu_s = p.profile_cpu_s!;
          log(' done');
        } catch (e) {
          log(` failed: ${(e as Error).message}`);
        }
      }
    }
    if (o.memory) {
      progress(`  ${preset}: peak memory (fresh processes)...`);
      const tsMem = measureTsMemory(o, preset, modes[0]!);
      const pyMem = torch?.peak_rss_bytes ? { peak_rss_bytes: torch.peak_rss_bytes, base_rss_bytes: torch.base_rss_bytes ?? 0 } : null;
      report.memory = { ts: tsMem, torch: pyMem, ratio: pyMem ? tsMem.peak_rss_bytes / pyMem.peak_rss_bytes : null, ts_msda: modes[0]! };
      log(` TS ${mib(tsMem.peak_rss_bytes)} MiB` + (pyMem ? `, PyTorch ${mib(pyMem.peak_rss_bytes)} MiB` : ''));
    }
    reports.push(report);
  }

  const load1 = loadavg();
  if (o.json) {
    console.log(JSON.stringify({
      size: o.size, threads: o.threads, repeats: o.repeats, rounds: o.rounds, libtorch: info.torchVersion,
      native_msda: native, env, cpus: availableParallelism(), loadavg_start: load0, loadavg_end: load1,
      python: o.python ? o.pythonExe : null, python_problem: problem, reports,
    }));
    return;
  }
  console.log(`\nResults per 1x3x${o.size}x${o.size} forward. TS/PyTorch = TS median / PyTorch median (wall); ` +
    `mins ratio = TS min / PyTorch min (the least sensitive to other load on the machine); CPU = median process CPU ` +
    `time per forward, all threads (it inflates too under load: OpenMP threads spin while a peer is descheduled). ` +
    `Targets: tiny TS/PyTorch <= 0.5; BEiT-Adapter <= 0.7 (time) and <= 1.2 (peak memory, --memory).`);
  printTable(reports);
  printMemory(reports);
  for (const r of reports) printProfile(r, o.profileRepeats);
  console.log(loadEndLine(load1));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
