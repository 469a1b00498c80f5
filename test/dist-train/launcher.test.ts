import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { LaunchError, checkLaunchOptions, launchWorkers, workerEnv } from '../../src/cli/launch.js';

const here = dirname(fileURLToPath(import.meta.url));
const launchJs = pathToFileURL(resolve(here, '../../src/cli/launch.js')).href;

/**
 * A fake worker: prints its environment as JSON on stdout and a line on stderr, then behaves as FAKE_MODE says for
 * its rank: ok (exit 0), fail (exit 3 after 150 ms), hang (never ends), stubborn (ignores SIGTERM, never ends),
 * int (exits 130 on SIGINT).
 */
const FAKE = `
import { exitWithLauncher, workerEnv } from '${launchJs}';
const env = workerEnv();
exitWithLauncher(env.launcherPid);
process.stdout.write(JSON.stringify({ ...env, local_world: process.env.LOCAL_WORLD_SIZE, node: process.env.NODE_RANK }) + '\\n');
process.stderr.write('hello from rank ' + env.rank + '\\n');
const modes = (process.env.FAKE_MODE || '').split(',');
const mode = modes[env.rank] || 'ok';
if (mode === 'fail') setTimeout(() => { process.stderr.write('rank ' + env.rank + ' fails\\n'); process.exit(3); }, 150);
if (mode === 'hang' || mode === 'int' || mode === 'stubborn') setInterval(() => {}, 1000);
if (mode === 'stubborn') process.on('SIGTERM', () => {});
if (mode === 'int') process.on('SIGINT', () => { process.stdout.write('interrupted ' + env.rank + '\\n'); process.exit(130); });
`;

function setup(): { dir: string; script: string } {
  const dir = mkdtempSync(join(tmpdir(), 'launch-'));
  const script = join(dir, 'fake-worker.mjs');
  writeFileSync(script, FAKE);
  return { dir, script };
}

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let s = '';
  stream.on('data', (d: Buffer) => { s += d.toString(); });
  return { stream, text: () => s };
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test('launcher: N workers with torchrun\'s environment, rank 0 output passed through, the others prefixed', async () => {
  const { dir, script } = setup();
  try {
    const out = capture();
    const err = capture();
    const r = await launchWorkers({ nproc: 3, args: [script], stdout: out.stream, stderr: err.stream, handleSignals: false, env: { ...process.env, FAKE_MODE: '' } });
    assert.equal(r.code, 0, err.text());
    assert.equal(r.worldSize, 3);
    assert.ok(r.masterPort > 0 && r.masterPort < 65536);
    const lines = out.text().trim().split('\n');
    assert.equal(lines.length, 1, 'only rank 0 writes to stdout');
    const env0 = JSON.parse(lines[0]!);
    assert.equal(env0.rank, 0);
    assert.equal(env0.worldSize, 3);
    assert.equal(env0.localWorldSize, 3);
    assert.equal(env0.masterAddr, '127.0.0.1');
    assert.equal(env0.masterPort, r.masterPort);
    assert.equal(env0.launcherPid, process.pid);
    assert.match(err.text(), /^hello from rank 0$/m);
    for (const k of [1, 2]) {
      const m = new RegExp(`^\\[rank ${k}\\] (\\{.*\\})$`, 'm').exec(err.text());
      assert.ok(m, `rank ${k}'s stdout prefixed on stderr: ${err.text()}`);
      assert.equal(JSON.parse(m[1]!).rank, k);
      assert.equal(JSON.parse(m[1]!).localRank, k);
      assert.match(err.text(), new RegExp(`^\\[rank ${k}\\] hello from rank ${k}$`, 'm'));
    }
    // node 1 of 2 machines: global ranks 2 and 3 (NODE_RANK × N + LOCAL_RANK)
    const port = await new Promise<number>((res) => { const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => res(p)); }); });
    const out2 = capture();
    const err2 = capture();
    const r2 = await launchWorkers({
      nproc: 2, nnodes: 2, nodeRank: 1, masterAddr: '10.0.0.1', masterPort: port, args: [script], stdout: out2.stream,
      stderr: err2.stream, handleSignals: false,
    });
    assert.equal(r2.code, 0, err2.text());
    assert.deepEqual(r2.workers.map((w) => [w.rank, w.localRank]), [[2, 0], [3, 1]]);
    assert.equal(out2.text(), '', 'no rank 0 on node 1');
    const m = /^\[rank 3\] (\{.*\})$/m.exec(err2.text());
    assert.deepEqual([JSON.parse(m![1]!).worldSize, JSON.parse(m![1]!).masterAddr, JSON.parse(m![1]!).node], [4, '10.0.0.1', '1']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launcher: a worker that dies stops the others (SIGTERM, SIGKILL after the grace) and the launcher names it', async () => {
  const { dir, script } = setup();
  try {
    const err = capture();
    const t0 = performance.now();
    const r = await launchWorkers({
      nproc: 3, args: [script], stdout: capture().stream, stderr: err.stream, handleSignals: false, graceMs: 600,
      env: { ...process.env, FAKE_MODE: 'hang,fail,stubborn' },
    });
    const ms = performance.now() - t0;
    assert.equal(r.code, 1);
    assert.equal(r.failed?.rank, 1);
    assert.equal(r.failed?.code, 3);
    assert.match(r.message!, /worker rank 1 \(local rank 1, pid \d+\) exited with code 3; stopped the other worker\(s\) \(rank 0, 2\)/);
    assert.equal(r.workers[0]!.signal, 'SIGTERM');
    assert.equal(r.workers[2]!.signal, 'SIGKILL', 'the worker ignoring SIGTERM was killed after the grace period');
    assert.ok(ms < 8000, `took ${ms} ms`);
    assert.match(err.text(), /^\[rank 1\] rank 1 fails$/m);
    for (const w of r.workers) assert.equal(alive(w.pid), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launcher: SIGINT is forwarded once to every worker; all stopping with 130 gives 130', async () => {
  const { dir, script } = setup();
  try {
    const out = capture();
    const p = launchWorkers({ nproc: 2, args: [script], stdout: out.stream, stderr: capture().stream, env: { ...process.env, FAKE_MODE: 'int,int' } });
    // wait until both workers are up (rank 0 printed its environment), then deliver SIGINT to the launcher's handler
    while (!out.text().includes('"rank":0')) await new Promise((d) => setTimeout(d, 50));
    await new Promise((d) => setTimeout(d, 300));
    process.emit('SIGINT', 'SIGINT');
    const r = await p;
    assert.equal(r.code, 130, JSON.stringify(r));
    assert.deepEqual(r.workers.map((w) => w.code), [130, 130]);
    assert.match(out.text(), /interrupted 0/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launcher: bad input gives clear errors (port in use, ranks, missing variables)', async () => {
  const { dir, script } = setup();
  const srv = createServer();
  await new Promise<void>((d) => srv.listen(0, '127.0.0.1', () => d()));
  try {
    const port = (srv.address() as { port: number }).port;
    await assert.rejects(launchWorkers({ nproc: 2, masterPort: port, args: [script], handleSignals: false }),
      (e: unknown) => e instanceof LaunchError && e.message.includes(`--master-port ${port} on 127.0.0.1 is already in use`));
    assert.throws(() => checkLaunchOptions({ nproc: 0, args: [] }), /--nproc must be an integer ≥ 1, got 0/);
    assert.throws(() => checkLaunchOptions({ nproc: 2, nnodes: 2, nodeRank: 2, masterPort: 1234, masterAddr: '10.0.0.1', args: [] }), /--node-rank must be an integer in 0\.\.1/);
    assert.throws(() => checkLaunchOptions({ nproc: 2, nnodes: 2, masterAddr: '10.0.0.1', args: [] }), /--nnodes > 1 needs --master-port/);
    assert.throws(() => checkLaunchOptions({ nproc: 2, nnodes: 2, masterPort: 1234, args: [] }), /node 0's address .* not 127\.0\.0\.1/);
    assert.throws(() => checkLaunchOptions({ nproc: 2, masterPort: 70000, args: [] }), /--master-port must be an integer in 1\.\.65535/);
    assert.equal(workerEnv({}), null);
    assert.throws(() => workerEnv({ WORLD_SIZE: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' }), /RANK is not set/);
    assert.throws(() => workerEnv({ WORLD_SIZE: '2', RANK: '2', MASTER_ADDR: 'h', MASTER_PORT: '1' }), /RANK="2" must be an integer in 0\.\.1/);
    assert.throws(() => workerEnv({ WORLD_SIZE: '2', RANK: '1', MASTER_PORT: '1' }), /MASTER_ADDR is not set/);
    assert.deepEqual(workerEnv({ WORLD_SIZE: '4', RANK: '3', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'h', MASTER_PORT: '29500' }),
      { rank: 3, localRank: 1, worldSize: 4, localWorldSize: 2, masterAddr: 'h', masterPort: 29500, launcherPid: null });
  } finally {
    srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launcher: a worker whose launcher was killed (SIGKILL) stops by itself', async () => {
  const { dir, script } = setup();
  try {
    const launcher = join(dir, 'launcher.mjs');
    writeFileSync(launcher, `import { launchWorkers } from '${launchJs}';
await launchWorkers({ nproc: 1, args: [${JSON.stringify(script)}], onSpawn: (r, pid) => process.stdout.write('pid ' + pid + '\\n') });`);
    const child = spawn(process.execPath, [launcher], { env: { ...process.env, FAKE_MODE: 'hang' }, stdio: ['ignore', 'pipe', 'ignore'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => { text += d.toString(); });
    while (!/pid \d+/.test(text) || !text.includes('"rank":0')) await new Promise((d) => setTimeout(d, 50));
    const pid = Number(/pid (\d+)/.exec(text)![1]);
    assert.equal(alive(pid), true);
    child.kill('SIGKILL');
    const t0 = Date.now();
    while (alive(pid) && Date.now() - t0 < 5000) await new Promise((d) => setTimeout(d, 100));
    assert.equal(alive(pid), false, 'the orphaned worker is gone within 5 s');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('workerArgs: the workers get the command line without the launcher options (values kept exactly, resume file last)', async () => {
  const { parseArgs } = await import('../../src/cli/args.js');
  const { trainCommand, workerArgs } = await import('../../src/cli/train.js');
  const p = parseArgs(['--config', 'x.json', '--nproc', '2', '--master-port=29501', '--lr', '1e-7', '--data', '--weird dir', '--resume',
    'ck/iter_2.safetensors', '--json', '--nnodes', '1', '--dist-timeout', '30'].map((a) => (a === '--weird dir' ? 'a b' : a)), trainCommand.options, 'train');
  const args = workerArgs(p);
  assert.deepEqual(args, ['train', '--config=x.json', '--lr=1e-7', '--data=a b', '--resume', '--json', '--dist-timeout=30', '--', 'ck/iter_2.safetensors']);
  const back = parseArgs(args.slice(1), trainCommand.options, 'train');
  assert.equal(back.options.lr, 1e-7);
  assert.equal(back.options.data, 'a b');
  assert.deepEqual(back.positionals, ['ck/iter_2.safetensors']);
  for (const k of ['nproc', 'nnodes', 'master-port', 'master-addr', 'node-rank']) assert.equal(back.options[k], undefined);
});
