/** Helpers of the CLI tests: run the built `vit-adapter` binary (dist/src/cli/bin.js) in a fresh process. */
import { spawn, spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeRgbPng } from '../../src/io/image.js';
import { generateScene } from '../../src/tasks/segmentation/synthetic.js';
import { tinyModelOverrides, writeTinyConfig } from '../segmentation-e2e/helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The built CLI entry point. */
export const BIN = resolve(here, '../../src/cli/bin.js');
/** The repository root (holds package.json). */
export const REPO_ROOT = resolve(here, '../../..');

/** Result of {@link runBin}. */
export interface BinRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node dist/src/cli/bin.js ...args` to completion (killed after `timeoutMs`, default 60 s).
 *
 * @param args command-line arguments
 * @param o stdin contents, working directory, timeout
 */
export function runBin(args: string[], o: { input?: Uint8Array | string; cwd?: string; timeoutMs?: number } = {}): BinRun {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8', cwd: o.cwd ?? process.cwd(), maxBuffer: 64 << 20, timeout: o.timeoutMs ?? 60_000,
    ...(o.input !== undefined ? { input: o.input } : { stdio: ['ignore', 'pipe', 'pipe'] }),
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs the CLI with its stdout pipe closed by the reader before the command writes (as `… | head -1` does once it
 * has its line): resolves with the exit code and stderr.
 */
export function runWithClosedStdout(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader goes away
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new Error('CLI did not exit within 60 s')); }, 60_000);
    child.on('error', rej);
    child.on('close', (code) => { clearTimeout(timer); res({ code, stderr }); });
  });
}

/** Writes a small synthetic RGB scene as a PNG (default 64×64). */
export async function writeScenePng(path: string, seed: number, width = 64, height = 64): Promise<void> {
  const s = generateScene({ width, height, seed });
  await writeRgbPng(path, s.image, height, width);
}

/**
 * Writes a JSON config in `dir`: the ADE20K ViT-Adapter-T preset with the tests' tiny model (64 wide, 4 blocks),
 * whole-image inference at a 256×64 test scale. Returns its path.
 */
export function writeTinyWholeConfig(dir: string, name = 'tiny'): string {
  return writeTinyConfig(dir, name, { extra: { model: { ...tinyModelOverrides().model, test_cfg: { mode: 'whole' } } } });
}

export { join };
