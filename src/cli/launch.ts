/**
 * The process launcher of data-parallel training (`vit-adapter train --nproc N`), after `torchrun --nproc_per_node`:
 * it starts N worker processes of the same CLI on this machine, each with the environment of its place in the job
 *
 *   RANK (global: NODE_RANK × N + LOCAL_RANK), LOCAL_RANK, WORLD_SIZE (nnodes × N), LOCAL_WORLD_SIZE (N), NODE_RANK,
 *   MASTER_ADDR, MASTER_PORT, VIT_ADAPTER_LAUNCHER_PID
 *
 * and supervises them:
 * - rank 0's stdout and stderr pass through unchanged (the progress, the `--json` summary); the other workers' lines
 *   go to stderr prefixed with `[rank R]` (workers above rank 0 print only warnings and errors);
 * - SIGINT / SIGTERM / SIGHUP to the launcher are forwarded once to every worker (the workers run in their own process
 *   group, so a terminal's Ctrl-C reaches them only through the launcher and counts once: they finish the iteration,
 *   save a checkpoint and stop together);
 * - a worker that exits non-zero or is killed makes the launcher stop the others (SIGTERM, then SIGKILL after a grace
 *   period) and return non-zero with a message naming the lost rank; a worker that hangs is caught by the collective
 *   timeout in the other workers (they exit with an error), so the launcher itself never waits forever.
 *
 * Multi-machine: run the launcher on every machine with the same `--nnodes`, `--master-addr`, `--master-port` and its
 * own `--node-rank`; node 0's rank 0 hosts the rendezvous store.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import type { Writable } from 'node:stream';

/** What the launcher needs to know (the CLI's `--nproc`, `--nnodes`, `--node-rank`, `--master-addr`, `--master-port`). */
export interface LaunchOptions {
  /** Workers on this machine. */
  nproc: number;
  /** Machines in the job (default 1) and this machine's index (default 0). */
  nnodes?: number;
  nodeRank?: number;
  /** Address of node 0 (default 127.0.0.1) and the rendezvous port (default: a free port, single machine only). */
  masterAddr?: string;
  masterPort?: number | null;
  /** Arguments of each worker after the Node executable (the CLI script and its arguments). */
  args: string[];
  /** Executable (default: this Node). */
  execPath?: string;
  /** Base environment of the workers (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Milliseconds between SIGTERM and SIGKILL when stopping workers (default 5000). */
  graceMs?: number;
  /** Where rank 0's output and the others' prefixed lines go (default the process's streams). */
  stdout?: Writable;
  stderr?: Writable;
  /** Forward SIGINT/SIGTERM/SIGHUP to the workers (default true). */
  handleSignals?: boolean;
  /** Called once each worker has started. */
  onSpawn?: (rank: number, pid: number) => void;
}

/** How one worker ended. */
export interface WorkerExit {
  rank: number;
  localRank: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Stopped by the launcher (after another worker failed), not on its own. */
  stoppedByLauncher: boolean;
}

/** {@link launchWorkers}'s result. */
export interface LaunchResult {
  /** Exit code for the launcher: 0 when every worker succeeded, 130 when all stopped after an interrupt, else 1. */
  code: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  workers: WorkerExit[];
  /** The first worker that failed on its own, or null. */
  failed: WorkerExit | null;
  /** A one-line explanation when `code` is not 0. */
  message: string | null;
}

/** Bad launcher input (a usage error for the CLI). */
export class LaunchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LaunchError';
  }
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

/** A TCP port that is free on `host` right now (the OS picks it; torchrun does the same). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

/**
 * Throws a {@link LaunchError} when `port` cannot be bound on `host` (in use, or not an address of this machine).
 * Only meaningful on the machine that hosts the store (node 0).
 */
export function checkPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolveCheck, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'EADDRINUSE' ? 'is already in use (another job or program listens there)'
        : e.code === 'EADDRNOTAVAIL' ? `cannot be bound: ${host} is not an address of this machine (--master-addr must be node 0's address)`
          : `cannot be bound (${e.code ?? e.message})`;
      reject(new LaunchError(`--master-port ${port} on ${host} ${why}; choose another port, or omit --master-port on a single machine to pick a free one`));
    });
    srv.listen(port, host, () => srv.close(() => resolveCheck()));
  });
}

/** Checks the launcher options; throws a {@link LaunchError} naming the bad one. */
export function checkLaunchOptions(o: LaunchOptions): { nnodes: number; nodeRank: number; masterAddr: string } {
  const int = (v: unknown, min: number): boolean => typeof v === 'number' && Number.isInteger(v) && v >= min;
  if (!int(o.nproc, 1)) throw new LaunchError(`--nproc must be an integer ≥ 1, got ${String(o.nproc)}`);
  const nnodes = o.nnodes ?? 1;
  const nodeRank = o.nodeRank ?? 0;
  if (!int(nnodes, 1)) throw new LaunchError(`--nnodes must be an integer ≥ 1, got ${String(nnodes)}`);
  if (!int(nodeRank, 0) || nodeRank >= nnodes) throw new LaunchError(`--node-rank must be an integer in 0..${nnodes - 1} (--nnodes ${nnodes}), got ${String(nodeRank)}`);
  const masterAddr = o.masterAddr ?? '127.0.0.1';
  if (!masterAddr.trim()) throw new LaunchError('--master-addr must not be empty');
  if (o.masterPort !== undefined && o.masterPort !== null && !(int(o.masterPort, 1) && o.masterPort <= 65535)) {
    throw new LaunchError(`--master-port must be an integer in 1..65535, got ${String(o.masterPort)}`);
  }
  if (nnodes > 1 && (o.masterPort === undefined || o.masterPort === null)) {
    throw new LaunchError('--nnodes > 1 needs --master-port (and --master-addr): every machine must use the same port');
  }
  if (nnodes > 1 && LOOPBACK.has(masterAddr)) {
    throw new LaunchError(`--nnodes ${nnodes} needs --master-addr set to node 0's address reachable from every machine, not ${masterAddr}`);
  }
  return { nnodes, nodeRank, masterAddr };
}

/** Splits a stream into lines, calling `fn` per line (the last partial line too). */
function eachLine(stream: NodeJS.ReadableStream, fn: (line: string) => void): Promise<void> {
  return new Promise((done) => {
    const rl = createInterface({ input: stream, crlfDelay: Infinity });
    rl.on('line', fn);
    rl.on('close', () => done());
  });
}

/** Starts the workers and waits for them (see the module notes). */
export async function launchWorkers(o: LaunchOptions): Promise<LaunchResult> {
  const { nnodes, nodeRank, masterAddr } = checkLaunchOptions(o);
  const N = o.nproc;
  const worldSize = nnodes * N;
  let masterPort = o.masterPort ?? null;
  if (masterPort === null) masterPort = await freePort(LOOPBACK.has(masterAddr) ? '127.0.0.1' : masterAddr);
  else if (nodeRank === 0) await checkPortFree(LOOPBACK.has(masterAddr) && masterAddr !== '::1' ? '127.0.0.1' : masterAddr, masterPort);
  const out = o.stdout ?? process.stdout;
  const err = o.stderr ?? process.stderr;
  const graceMs = o.graceMs ?? 5000;
  const base = o.env ?? process.env;

  const children: { proc: ChildProcess; rank: number; localRank: number; exit: WorkerExit | null }[] = [];
  const ioDone: Promise<void>[] = [];
  let failed: WorkerExit | null = null;
  let stopping = false;
  let interrupted = false;
  let killTimer: NodeJS.Timeout | null = null;

  const stopOthers = (): void => {
    if (stopping) return;
    stopping = true;
    for (const c of children) if (!c.exit) c.proc.kill('SIGTERM');
    killTimer = setTimeout(() => {
      for (const c of children) if (!c.exit) c.proc.kill('SIGKILL');
    }, graceMs);
    killTimer.unref();
  };

  const exits: Promise<void>[] = [];
  for (let local = 0; local < N; local++) {
    const rank = nodeRank * N + local;
    const env: NodeJS.ProcessEnv = {
      ...base, RANK: String(rank), LOCAL_RANK: String(local), WORLD_SIZE: String(worldSize), LOCAL_WORLD_SIZE: String(N),
      NODE_RANK: String(nodeRank), GROUP_RANK: String(nodeRank), MASTER_ADDR: masterAddr, MASTER_PORT: String(masterPort),
      VIT_ADAPTER_LAUNCHER_PID: String(process.pid),
    };
    const proc = spawn(o.execPath ?? process.execPath, o.args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const entry = { proc, rank, localRank: local, exit: null as WorkerExit | null };
    children.push(entry);
    if (rank === 0) {
      ioDone.push(new Promise((d) => proc.stdout!.on('end', d)));
      proc.stdout!.pipe(out, { end: false });
      ioDone.push(new Promise((d) => proc.stderr!.on('end', d)));
      proc.stderr!.pipe(err, { end: false });
    } else {
      ioDone.push(eachLine(proc.stdout!, (l) => err.write(`[rank ${rank}] ${l}\n`)));
      ioDone.push(eachLine(proc.stderr!, (l) => err.write(`[rank ${rank}] ${l}\n`)));
    }
    exits.push(new Promise((done) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (entry.exit) return;
        entry.exit = { rank, localRank: local, pid: proc.pid ?? -1, code, signal, stoppedByLauncher: stopping };
        if (code !== 0 && !stopping && !(interrupted && code === 130)) {
          failed = entry.exit;
          stopOthers();
        }
        done();
      };
      proc.once('error', (e) => {
        err.write(`vit-adapter train: could not start worker rank ${rank}: ${e.message}\n`);
        finish(null, null);
      });
      proc.once('exit', finish);
    }));
    if (proc.pid !== undefined) o.onSpawn?.(rank, proc.pid);
  }

  const forward = (sig: NodeJS.Signals): void => {
    if (sig === 'SIGINT') interrupted = true;
    for (const c of children) if (!c.exit) c.proc.kill(sig);
  };
  const handlers: [NodeJS.Signals, () => void][] = (['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]).map((s) => [s, () => forward(s)]);
  const handle = o.handleSignals ?? true;
  if (handle) for (const [s, h] of handlers) process.on(s, h);
  try {
    await Promise.all(exits);
    // the pipes close when the processes (and anything they inherited the pipes to) are gone; do not wait forever
    await Promise.race([Promise.all(ioDone), new Promise((d) => setTimeout(d, 2000).unref())]);
  } finally {
    if (handle) for (const [s, h] of handlers) process.off(s, h);
    if (killTimer) clearTimeout(killTimer);
  }
  const workers = children.map((c) => c.exit!);
  const f = failed as WorkerExit | null;
  if (f) {
    const how = f.signal ? `was killed by ${f.signal}` : f.code === null ? 'could not be started' : `exited with code ${f.code}`;
    const others = workers.filter((w) => w !== f && w.stoppedByLauncher).map((w) => w.rank);
    return {
      code: 1, worldSize, masterAddr, masterPort, workers, failed: f,
      message: `worker rank ${f.rank} (local rank ${f.localRank}, pid ${f.pid}) ${how}; ` +
        (others.length ? `stopped the other worker(s) (rank ${others.join(', ')})` : 'the other workers had already ended'),
    };
  }
  const codes = workers.map((w) => w.code);
  if (codes.every((c) => c === 0)) return { code: 0, worldSize, masterAddr, masterPort, workers, failed: null, message: null };
  if (interrupted && codes.every((c) => c === 130 || c === 0)) {
    return { code: 130, worldSize, masterAddr, masterPort, workers, failed: null, message: 'interrupted: the workers saved a checkpoint and stopped' };
  }
  const bad = workers.find((w) => w.code !== 0)!;
  return {
    code: 1, worldSize, masterAddr, masterPort, workers, failed: bad,
    message: `worker rank ${bad.rank} ended with ${bad.signal ?? `code ${bad.code}`}`,
  };
}

/**
 * The place of this process in a job launched by {@link launchWorkers} or by hand (torchrun's variables), or null
 * when `WORLD_SIZE` is not set. Throws a {@link LaunchError} naming a missing or bad variable.
 */
export interface WorkerEnv {
  rank: number;
  localRank: number;
  worldSize: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Pid of the launcher that started this worker (null when started by hand). */
  launcherPid: number | null;
}

/** Reads {@link WorkerEnv} from environment variables (see there). */
export function workerEnv(env: NodeJS.ProcessEnv = process.env): WorkerEnv | null {
  if (env.WORLD_SIZE === undefined) return null;
  const int = (name: string, min: number, max = Number.MAX_SAFE_INTEGER, dflt?: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') {
      if (dflt !== undefined) return dflt;
      throw new LaunchError(`worker environment: ${name} is not set (WORLD_SIZE=${env.WORLD_SIZE} is: a worker needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)`);
    }
    const v = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || !Number.isInteger(v) || v < min || v > max) {
      throw new LaunchError(`worker environment: ${name}=${JSON.stringify(raw)} must be an integer in ${min}..${max === Number.MAX_SAFE_INTEGER ? '' : max}`);
    }
    return v;
  };
  const worldSize = int('WORLD_SIZE', 1);
  const rank = int('RANK', 0, worldSize - 1);
  const localWorldSize = int('LOCAL_WORLD_SIZE', 1, worldSize, 1);
  const localRank = int('LOCAL_RANK', 0, Math.max(0, localWorldSize - 1), env.LOCAL_WORLD_SIZE === undefined ? 0 : undefined);
  const masterAddr = env.MASTER_ADDR?.trim();
  if (!masterAddr) throw new LaunchError('worker environment: MASTER_ADDR is not set (the address of rank 0\'s machine)');
  const masterPort = int('MASTER_PORT', 1, 65535);
  const lp = env.VIT_ADAPTER_LAUNCHER_PID;
  return { rank, localRank, worldSize, localWorldSize, masterAddr, masterPort, launcherPid: lp && /^\d+$/.test(lp) ? Number(lp) : null };
}

/**
 * In a launched worker: exits (code 1, with a message) when the launcher that started it is gone, so that a
 * launcher killed with SIGKILL leaves no orphan training behind. Polls the parent pid once a second (unref'd timer).
 */
export function exitWithLauncher(launcherPid: number | null, onGone?: () => void): void {
  if (launcherPid === null) return;
  const t = setInterval(() => {
    if (process.ppid !== launcherPid) {
      onGone?.();
      process.stderr.write(`worker pid ${process.pid}: the launcher (pid ${launcherPid}) is gone; stopping\n`);
      process.exit(1);
    }
  }, 1000);
  t.unref();
}
