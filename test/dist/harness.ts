/**
 * Runs a scenario of `worker.ts` in several child Node processes (one per rank) on a free loopback port and collects
 * each rank's JSON result. Children that outlive `limitMs` are killed (the test then fails instead of hanging).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const workerFile = join(dirname(fileURLToPath(import.meta.url)), 'worker.js');

/** What one rank's process produced. */
export interface RankResult {
  rank: number;
  code: number | null;
  signal: string | null;
  /** The JSON the worker printed last (null if none). */
  result: Record<string, unknown> | null;
  stderr: string;
  /** Wall time from spawn to exit in ms. */
  ms: number;
  /** Whether the harness had to kill it. */
  killed: boolean;
}

/** A free TCP port on 127.0.0.1 (asked from the OS; closed again before use). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Options of {@link runRanks}. */
export interface RunOptions {
  worldSize: number;
  /** Ranks to start (default all). */
  ranks?: number[];
  /** Per-rank world size passed to the worker (default `worldSize`). */
  worldSizeOf?: (rank: number) => number;
  /** Scenario arguments, passed as JSON. */
  args?: Record<string, unknown>;
  port?: number;
  /** Kill the children after this many ms (default 30 s). */
  limitMs?: number;
}

/** Starts one process per rank running `scenario` and waits for all of them. */
export async function runRanks(scenario: string, o: RunOptions): Promise<RankResult[]> {
  const port = o.port ?? await freePort();
  const ranks = o.ranks ?? Array.from({ length: o.worldSize }, (_, r) => r);
  const limit = o.limitMs ?? 30_000;
  const children: ChildProcess[] = [];
  const runs = ranks.map((rank) => new Promise<RankResult>((resolve) => {
    const t0 = Date.now();
    const ws = o.worldSizeOf ? o.worldSizeOf(rank) : o.worldSize;
    const child = spawn(process.execPath, [workerFile, scenario, String(rank), String(ws), String(port), JSON.stringify(o.args ?? {})], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OMP_NUM_THREADS: '1' },
    });
    children.push(child);
    let out = '';
    let err = '';
    let killed = false;
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => { killed = true; child.kill('SIGKILL'); }, limit);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lines = out.trim().split('\n').filter((l) => l.startsWith('{'));
      let result: Record<string, unknown> | null = null;
      try { result = lines.length ? JSON.parse(lines[lines.length - 1]!) as Record<string, unknown> : null; } catch { result = null; }
      resolve({ rank, code, signal, result, stderr: err, ms: Date.now() - t0, killed });
    });
  }));
  try {
    return await Promise.all(runs);
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

/** A readable account of the ranks' outcomes, for assertion messages. */
export function describe(rs: RankResult[]): string {
  return rs.map((r) => `rank ${r.rank}: code ${r.code}${r.signal ? ` signal ${r.signal}` : ''}${r.killed ? ' (killed)' : ''} ` +
    `${r.ms} ms result ${JSON.stringify(r.result)?.slice(0, 400)} stderr ${r.stderr.slice(-800)}`).join('\n');
}
