/**
 * The CUDA deformable-attention kernels cannot run without a GPU, so CI checks what it can: that
 * native/src/msda_cuda.cu compiles with nvcc (when nvcc is installed), and that the kernels, run on the CPU under the
 * emulation in native/test/cuda_emu (each warp as 32 threads, shuffles checked), match the CPU operator.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../helpers/fixtures.js';

function findNvcc(): string | null {
  for (const c of [process.env.NVCC, '/usr/local/cuda/bin/nvcc', '/usr/local/bin/nvcc']) if (c && existsSync(c)) return c;
  const r = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

const nvcc = findNvcc();

test('msda_cuda.cu compiles with nvcc (sm_80)', { skip: nvcc ? false : 'nvcc not installed', timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vita-nvcc-'));
  try {
    const r = spawnSync(nvcc!, ['-std=c++17', '-O2', '-c', join(repoRoot(), 'native/src/msda_cuda.cu'), '-o', join(dir, 'msda_cuda.o'),
      '-gencode', 'arch=compute_80,code=sm_80'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `nvcc failed:\n${r.stderr}`);
    assert.ok(existsSync(join(dir, 'msda_cuda.o')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('CUDA kernels under CPU emulation match the CPU operator (float64, float32, half, bfloat16)', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'vita-emu-'));
  try {
    const r = spawnSync('bash', [join(repoRoot(), 'native/test/build-selftest.sh'), '--cuda-emu'], {
      encoding: 'utf8', env: { ...process.env, OUT_DIR: dir },
    });
    assert.equal(r.status, 0, `emulation test failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
    assert.match(r.stdout, /CUDA emulation: all passed/);
    const rows = r.stdout.split('\n').filter((l) => /rel err out/.test(l));
    assert.ok(rows.length >= 10 && rows.every((l) => l.trimEnd().endsWith('ok')), rows.join('\n'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
