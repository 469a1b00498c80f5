import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { distAvailable } from '../../src/engine/index.js';
import { describe, freePort, runRanks } from './harness.js';

const skip = distAvailable().gloo ? false : 'the addon was built without Gloo (libgloo-dev)';

interface ErrInfo { name: string; message: string; rank: number | null; isDistError: boolean }
const errOf = (r: { result: Record<string, unknown> | null }): ErrInfo => r.result?.error as ErrInfo;

test('a rank that never joins: rank 0 and a lone rank 1 both fail with a clear error within the timeout', { skip }, async () => {
  const [alone0, alone1] = await Promise.all([
    runRanks('join', { worldSize: 2, ranks: [0], args: { timeoutMs: 3000 }, limitMs: 20_000 }),
    runRanks('join', { worldSize: 2, ranks: [1], args: { timeoutMs: 3000 }, limitMs: 20_000 }),
  ]);
  const e0 = errOf(alone0[0]!);
  assert.ok(e0?.isDistError, describe(alone0));
  assert.match(e0.message, /rank\(s\) 1 did not join within 3000 ms/);
  assert.equal(e0.rank, 1);
  assert.ok((alone0[0]!.result!.ms as number) < 8000, `failed after ${alone0[0]!.result!.ms} ms`);
  const e1 = errOf(alone1[0]!);
  assert.ok(e1?.isDistError, describe(alone1));
  assert.match(e1.message, /could not reach rank 0's rendezvous store at 127\.0\.0\.1:\d+ within 3000 ms/);
  assert.ok((alone1[0]!.result!.ms as number) < 8000, `failed after ${alone1[0]!.result!.ms} ms`);
});

test('a port already in use: rank 0 says so', { skip }, async () => {
  const port = await freePort();
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, '0.0.0.0', resolve));
  try {
    const rs = await runRanks('join', { worldSize: 1, port, args: { timeoutMs: 3000 }, limitMs: 20_000 });
    const e = errOf(rs[0]!);
    assert.ok(e?.isDistError, describe(rs));
    assert.match(e.message, new RegExp(`rank 0 could not host the rendezvous store on 127\\.0\\.0\\.1:${port} \\(the port is already in use`));
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test('mismatched world sizes: both ranks fail at once naming both sizes', { skip }, async () => {
  const rs = await runRanks('join', { worldSize: 2, worldSizeOf: (r) => (r === 0 ? 2 : 3), args: { timeoutMs: 10_000 }, limitMs: 20_000 });
  for (const r of rs) {
    const e = errOf(r);
    assert.ok(e?.isDistError, describe(rs));
    assert.match(e.message, /mismatched world size: rank \d was started with worldSize \d, rank \d with \d/);
    assert.ok((r.result!.ms as number) < 8000, 'long before the 10 s timeout');
  }
});

test('a peer that dies mid-run: the survivor gets a DistError naming rank 1 quickly, not a hang', { skip }, async () => {
  const rs = await runRanks('lose', { worldSize: 2, args: { how: 'exit', timeoutMs: 20_000 }, limitMs: 25_000 });
  assert.equal(rs[1]!.code, 5, describe(rs));
  const e = errOf(rs[0]!);
  assert.ok(e?.isDistError, describe(rs));
  assert.equal(e.rank, 1);
  assert.match(e.message, /lost rank 1/);
  assert.ok((rs[0]!.result!.ms as number) < 10_000, `noticed after ${rs[0]!.result!.ms} ms`);
});

test('a peer that hangs: the survivor gets a DistError naming rank 1 after the timeout', { skip }, async () => {
  const rs = await runRanks('lose', { worldSize: 2, args: { how: 'hang', hangMs: 7000, timeoutMs: 2000 }, limitMs: 20_000 });
  const e = errOf(rs[0]!);
  assert.ok(e?.isDistError, describe(rs));
  assert.equal(e.rank, 1);
  assert.match(e.message, /lost rank 1/);
  const ms = rs[0]!.result!.ms as number;
  assert.ok(ms >= 1500 && ms < 6000, `failed after ${ms} ms with a 2000 ms timeout (the peer hung for 7000 ms)`);
});

test('three ranks, one dies: both survivors name it (they find it missing from the store)', { skip }, async () => {
  const rs = await runRanks('lose3', { worldSize: 3, args: { how: 'exit', timeoutMs: 4000 }, limitMs: 30_000 });
  assert.equal(rs[2]!.code, 5, describe(rs));
  for (const r of rs.slice(0, 2)) {
    const e = errOf(r);
    assert.ok(e?.isDistError, describe(rs));
    assert.equal(e.rank, 2);
    assert.match(e.message, new RegExp(`failed on rank ${r.rank} of 3: lost rank 2 `));
  }
});
