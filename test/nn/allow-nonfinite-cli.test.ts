/**
 * `segment --checkpoint` refuses a checkpoint with a NaN weight, naming the key; `--allow-nonfinite` loads it. The
 * command object runs in-process (as main.ts runs it, output captured) to keep the test fast.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Tensor, manualSeed, noGrad } from '../../src/engine/index.js';
import { writeRgbPng } from '../../src/io/image.js';
import { parseArgs } from '../../src/cli/args.js';
import { segmentationCommands } from '../../src/cli/segment.js';
import { NonFiniteWeightsError } from '../../src/nn/module.js';
import { saveSafetensors } from '../../src/nn/serialization.js';
import { loadConfig } from '../../src/tasks/segmentation/configs.js';
import { buildSegmentor } from '../../src/tasks/segmentation/inference.js';
import { writeTinyConfig } from '../segmentation-e2e/helpers.js';

/** Runs a command with stdout/stderr captured. */
async function run(name: 'segment' | 'eval', argv: string[]): Promise<{ code: number | undefined; out: string; error: unknown }> {
  const cmd = segmentationCommands[name];
  let out = '';
  const write = (s: string | Uint8Array): boolean => { out += String(s); return true; };
  const o = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = write as typeof process.stdout.write;
  process.stderr.write = write as typeof process.stderr.write;
  try {
    return { code: await cmd.run(parseArgs(argv, cmd.options, name)), out, error: null };
  } catch (err) {
    return { code: undefined, out, error: err };
  } finally {
    process.stdout.write = o;
    process.stderr.write = e;
  }
}

test('segment refuses a checkpoint holding NaN, naming the key; --allow-nonfinite loads it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vita-nonfinite-'));
  try {
    const cfgPath = writeTinyConfig(dir, 'tiny');
    const config = loadConfig(cfgPath);
    manualSeed(3);
    const model = buildSegmentor(config);
    const sd = new Map<string, Tensor>(model.stateDict());
    const key = 'decode_head.conv_seg.bias';
    const bad = noGrad(() => sd.get(key)!.clone());
    noGrad(() => bad.narrow(0, 3, 1).fill_(NaN));
    sd.set(key, bad);
    const ckpt = join(dir, 'nan.safetensors');
    saveSafetensors(sd, ckpt);
    // (each command builds the model again: ~1.5 s here, so the test runs only what shows the wiring)
    const img = join(dir, 'a.png');
    await writeRgbPng(img, new Uint8Array(32 * 32 * 3).fill(90), 32, 32);
    const out = join(dir, 'out');
    const refused = await run('segment', [img, '--config', cfgPath, '--checkpoint', ckpt, '--out', out, '--mode', 'whole']);
    assert.ok(refused.error instanceof NonFiniteWeightsError, String(refused.error));
    assert.match((refused.error as Error).message, /decode_head\.conv_seg\.bias' has 1 non-finite value\(s\).*--allow-nonfinite/);
    const ok = await run('segment', [img, '--config', cfgPath, '--checkpoint', ckpt, '--out', out, '--mode', 'whole', '--allow-nonfinite']);
    assert.equal(ok.error, null, String(ok.error));
    assert.equal(ok.code ?? 0, 0, ok.out);
    assert.ok(existsSync(join(out, 'a_labels.png')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
