import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { backend } from '../../src/engine/index.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { loadedBlas } from '../../src/cli/runtime.js';
import { runBin, runWithClosedStdout } from './helpers.js';

test('closed pipe: configs, info, help and inspect exit 0 quietly when the reader has gone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cli-pipe-'));
  try {
    const ckpt = join(dir, 'many.safetensors');
    const tensors = new Map(Array.from({ length: 300 }, (_, i) => [`layer.${i}.weight`, { dtype: 'float32' as const, shape: [2], data: new Uint8Array(8) }]));
    writeSafetensors(ckpt, tensors as never);
    for (const args of [['configs'], ['info'], ['help'], ['inspect', ckpt]]) {
      const r = await runWithClosedStdout(args);
      assert.doesNotMatch(r.stderr, /EPIPE|Unhandled|at .*\.js:\d+/, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.code, 0, `${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('info: blas names the library mapped into the process; libtorch\'s BLAS_INFO is a separate field', () => {
  const r = runBin(['info', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { blas: string; blas_libraries: string[]; torch_blas_info: string };
  const buildInfo = /BLAS_INFO=([^,]+)/.exec(backend().info().config)?.[1] ?? 'unknown';
  assert.equal(j.torch_blas_info, buildInfo);
  assert.ok(Array.isArray(j.blas_libraries));
  // This process loaded the same addon: what it has mapped is what the CLI must report.
  const here = loadedBlas();
  assert.deepEqual(j.blas_libraries, here.libraries);
  assert.equal(j.blas, here.name);
  if (here.libraries.some((l) => /openblas/i.test(l))) assert.match(j.blas, /^OpenBLAS/);
});

test('loadedBlas: names OpenBLAS (with version and variant), MKL, reference BLAS, or none from a maps listing', () => {
  const line = (p: string): string => `7f00-7f01 r-xp 00000000 08:01 123 ${p}`;
  const ob = loadedBlas([line('/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3'),
    line('/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.26.so'), line('/usr/lib/libc.so.6')].join('\n'));
  assert.equal(ob.name, 'OpenBLAS 0.3.26 (openblas-pthread)');
  assert.equal(ob.libraries.length, 2);
  assert.equal(loadedBlas(line('/opt/intel/lib/libmkl_rt.so.2')).name, 'MKL');
  assert.equal(loadedBlas(line('/usr/lib/x86_64-linux-gnu/blas/libblas.so.3')).name, 'reference BLAS (libblas)');
  assert.equal(loadedBlas(line('/usr/lib/libc.so.6')).name, 'none mapped');
});

test('--threads above the core count warns on stderr (and still runs)', () => {
  const n = availableParallelism() + 1;
  const r = runBin(['segment', join(tmpdir(), 'no-such-image-for-threads-test.png'), '--threads', String(n), '--out', join(tmpdir(), 'cli-threads-out')]);
  assert.match(r.stderr, new RegExp(`--threads ${n} is more than the ${availableParallelism()} CPU core`));
  assert.equal(r.code, 1); // the missing input is reported as a failure
  assert.match(r.stderr, /no-such-image-for-threads-test\.png: no such file/);
  const ok = runBin(['segment', join(tmpdir(), 'no-such-image-for-threads-test.png'), '--threads', '1', '--out', join(tmpdir(), 'cli-threads-out')]);
  assert.doesNotMatch(ok.stderr, /more than the/);
  rmSync(join(tmpdir(), 'cli-threads-out'), { recursive: true, force: true });
});

test('--device cuda without CUDA says so and how to get it (no raw libtorch message)', (t) => {
  const info = backend().info();
  if (info.cuda) {
    t.skip('CUDA is available here');
    return;
  }
  const r = runBin(['segment', join(tmpdir(), 'x.png'), '--device', 'cuda', '--out', join(tmpdir(), 'cli-cuda-out')]);
  assert.equal(r.code, 1);
  if (!info.builtWithCuda) {
    assert.match(r.stderr, /CUDA is not available in this libtorch build/);
    assert.match(r.stderr, /build:native/);
  } else {
    assert.match(r.stderr, /no CUDA device is visible/);
  }
  const b = runBin(['bench', 'backbone', '--device', 'cuda', '--size', '32', '--repeats', '1', '--warmup', '0']);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /--device cuda: (CUDA is not available in this libtorch build|this libtorch build supports CUDA)/);
  rmSync(join(tmpdir(), 'cli-cuda-out'), { recursive: true, force: true });
});
