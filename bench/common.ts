/**
 * Pieces shared by the TypeScript-vs-PyTorch benchmarks (bench/backbone.ts, bench/segmentor.ts): argument parsing,
 * timing statistics, process CPU time, section timers for the profiles, the run header, table printing, and running
 * the PyTorch script.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';

export type MsdaMode = 'auto' | 'native' | 'composition';

// ---- options -------------------------------------------------------------------------------------------------

/** An integer option value `>= min`, or an error naming the flag. */
export function intArg(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}: expected an integer >= ${min}, got ${JSON.stringify(v)}`);
  return n;
}

/**
 * Walks `argv` (`--flag value` or `--flag=value`): `onFlag(flag, val)` handles a flag and returns true, or returns
 * false for an unknown one (an error with `usage`); `val()` takes the flag's value. `-h` / `--help` print `usage`
 * and exit.
 */
export function parseFlags(argv: string[], usage: string, onFlag: (flag: string, val: () => string) => boolean): void {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag}: missing value`);
      return v;
    };
    if (onFlag(flag!, val)) continue;
    if (flag === '-h' || flag === '--help') {
      console.log(usage);
      process.exit(0);
    }
    throw new Error(`unknown argument ${a}\n${usage}`);
  }
}

/** The options both benchmarks take. */
export interface CommonOptions {
  size: number;
  repeats: number;
  warmup: number;
  threads: number;
  rounds: number;
  profile: boolean;
  profileRepeats: number;
  pythonExe: string;
  json: boolean;
}

/** Sets `o` from one of the flags of `CommonOptions`; false for any other flag. */
export function commonFlag(o: CommonOptions, flag: string, val: () => string): boolean {
  switch (flag) {
    case '--size': o.size = intArg(flag, val(), 32); break;
    case '--repeats': o.repeats = intArg(flag, val(), 1); break;
    case '--warmup': o.warmup = intArg(flag, val(), 0); break;
    case '--threads': o.threads = intArg(flag, val(), 1); break;
    case '--rounds': o.rounds = intArg(flag, val(), 1); break;
    case '--profile-repeats': o.profileRepeats = intArg(flag, val(), 1); break;
    case '--no-profile': o.profile = false; break;
    case '--no-python': o.pythonExe = ''; break;
    case '--python': o.pythonExe = val(); break;
    case '--json': o.json = true; break;
    default: return false;
  }
  return true;
}

/** Throws unless the input size is a multiple of 32. */
export function checkSize(size: number): void {
  if (size % 32) throw new Error(`--size must be a multiple of 32, got ${size}`);
}

// ---- statistics --------------------------------------------------------------------------------------------

/** Wall-clock statistics of the timed passes, and the median process CPU time (all threads) per pass. */
export interface Stats {
  median_s: number;
  min_s: number;
  max_s: number;
  times_s: number[];
  cpu_median_s: number;
  cpu_times_s: number[];
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export function stats(times: number[], cpu: number[]): Stats {
  const s = [...times].sort((a, b) => a - b);
  return {
    median_s: median(times), min_s: s[0]!, max_s: s[s.length - 1]!, times_s: times,
    cpu_median_s: cpu.length ? median(cpu) : NaN, cpu_times_s: cpu,
  };
}

/** The statistics of all the runs' timings together. */
export const poolStats = (runs: Stats[]): Stats =>
  stats(runs.flatMap((r) => r.times_s), runs.flatMap((r) => r.cpu_times_s));

/** TS / PyTorch: median wall time, minimum wall time, median CPU time. */
export interface Ratio { median: number; min: number; cpu: number }

export const ratio = (a: Stats, b: Stats | null): Ratio | null =>
  (b ? { median: a.median_s / b.median_s, min: a.min_s / b.min_s, cpu: a.cpu_median_s / b.cpu_median_s } : null);

/** Process CPU seconds (user + system, all threads) since `c0`. */
export function cpuSeconds(c0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1e6;
}

/** Times `fn` `repeats` times after `warmup` untimed calls: wall and process CPU seconds per call. */
export function timeCalls(fn: () => void, repeats: number, warmup: number): Stats {
  for (let i = 0; i < warmup; i++) fn();
  const times: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    fn();
    cpu.push(cpuSeconds(c0));
    times.push((performance.now() - t0) / 1000);
  }
  return stats(times, cpu);
}

/** Seconds as milliseconds with one decimal; '-' when missing or not finite. */
export const ms = (s: number | undefined): string => (s === undefined || !Number.isFinite(s) ? '-' : (s * 1e3).toFixed(1));

// ---- profile -------------------------------------------------------------------------------------------------

/** Accumulated wall and process CPU seconds per section key (nested sections each count their own time). */
export class Timers {
  /** Wall-clock seconds per section. */
  readonly acc = new Map<string, number>();
  /** Process CPU seconds (all threads) per section. */
  readonly cpu = new Map<string, number>();
  /** The names of the sections being timed, outermost first. */
  protected readonly stack: string[] = [];
  /** The key that section `name` accumulates under (the name itself; subclasses may look at the enclosing ones). */
  protected key(name: string): string {
    return name;
  }
  time<T>(name: string, fn: () => T): T {
    const key = this.key(name);
    this.stack.push(name);
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    try {
      return fn();
    } finally {
      this.acc.set(key, (this.acc.get(key) ?? 0) + (performance.now() - t0) / 1000);
      this.cpu.set(key, (this.cpu.get(key) ?? 0) + cpuSeconds(c0));
      this.stack.pop();
    }
  }
  clear(): void {
    this.acc.clear();
    this.cpu.clear();
  }
}

type AnyFn = (...args: never[]) => unknown;

/** Replaces `obj[key]` (a method) on the instance with a timed wrapper; returns the undo function. */
export function wrapMethod(obj: object, key: string, timers: Timers, name: string): () => void {
  const rec = obj as unknown as Record<string, AnyFn>;
  const hadOwn = Object.prototype.hasOwnProperty.call(obj, key);
  const orig = rec[key];
  if (typeof orig !== 'function') throw new Error(`profile: ${obj.constructor.name}.${key} is not a method (src changed? update the bench script)`);
  rec[key] = ((...args: never[]) => timers.time(name, () => orig.apply(obj, args))) as AnyFn;
  return () => {
    if (hadOwn) rec[key] = orig;
    else delete rec[key];
  };
}

// ---- environment and output --------------------------------------------------------------------------------

export const OPENBLAS_VARS = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'] as const;

/** The OpenBLAS variables of this process (null when unset). */
export const openblasEnv = (): Record<string, string | null> =>
  Object.fromEntries(OPENBLAS_VARS.map((k) => [k, process.env[k] ?? null]));

/** `  environment (shared by both sides): OPENBLAS_CORETYPE=... OPENBLAS_L2_SIZE=...` */
export const envLine = (env: Record<string, string | null>): string =>
  `  environment (shared by both sides): ${OPENBLAS_VARS.map((k) => `${k}=${env[k] ?? '(unset)'}`).join(' ')}`;

/** `  machine: N CPUs, load average ...`, plus `busyNote` when the 1-minute load exceeds half the CPUs. */
export const machineLine = (load: number[], busyNote: string): string =>
  `  machine: ${availableParallelism()} CPUs, load average ${load.map((x) => x.toFixed(2)).join(' ')}` +
  (load[0]! > availableParallelism() * 0.5 ? busyNote : '');

/** `\n  load average at the end: ...` */
export const loadEndLine = (load: number[]): string => `\n  load average at the end: ${load.map((x) => x.toFixed(2)).join(' ')}`;

/** Progress output, silenced with --json: `log` prints a line, `progress` a line's beginning. */
export function reporters(json: boolean): { log: (s: string) => void; progress: (s: string) => void } {
  return {
    log: (s) => { if (!json) console.log(s); },
    progress: (s) => { if (!json) process.stdout.write(s); },
  };
}

/** Prints an aligned table: the first row is the header (underlined), columns from `rightFrom` on right-aligned. */
export function printRows(rows: string[][], indent: string, rightFrom: number): void {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  for (const [i, row] of rows.entries()) {
    console.log(indent + row.map((cell, c) => (c >= rightFrom ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd());
    if (i === 0) console.log(indent + widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

// ---- PyTorch side ------------------------------------------------------------------------------------------

/** bench/<name> next to the sources (from dist/bench/ or bench/), or under the working directory; null if none. */
export function pythonScript(name: string): string | null {
  const candidates = [
    fileURLToPath(new URL(`../../bench/${name}`, import.meta.url)),
    fileURLToPath(new URL(`./${name}`, import.meta.url)),
    `${process.cwd()}/bench/${name}`,
  ];
  return candidates.find((p) => existsSync(p)) ?? null;
}

/** Why PyTorch cannot run, or null when `python -c "import torch"` works. */
export function pythonProblem(exe: string, script: string | null, name: string): string | null {
  if (!exe) return 'disabled (--no-python)';
  if (!script) return `bench/${name} not found`;
  const r = spawnSync(exe, ['-c', 'import torch'], { encoding: 'utf8' });
  if (r.error) return `${exe}: ${r.error.message}`;
  if (r.status !== 0) return `${exe} -c "import torch" failed: ${(r.stderr || '').trim().split('\n').pop()}`;
  return null;
}

/**
 * The PyTorch baseline script `bench/<name>` run by `exe`: its path when it can run, else null with the reason
 * ({@link pythonScript} then {@link pythonProblem}).
 */
export function pythonBaseline(exe: string, name: string): { script: string | null; problem: string | null } {
  const found = pythonScript(name);
  const problem = pythonProblem(exe, found, name);
  return { script: problem ? null : found, problem };
}

/** Runs `exe script ...args`; returns the last line of its stdout, or throws with its stderr. */
export function runPython(exe: string, script: string, args: string[]): string {
  const all = [script, ...args];
  const r = spawnSync(exe, all, { encoding: 'utf8', env: process.env, maxBuffer: 64 << 20 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${exe} ${all.join(' ')} failed (status ${r.status}):\n${r.stderr}`);
  return r.stdout.trim().split('\n').pop() ?? '';
}
