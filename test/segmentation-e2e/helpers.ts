/** Shared helpers of the segmentation end-to-end tests: tiny configs and a CLI runner. */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { ConfigOverrides } from '../../src/tasks/segmentation/configs.js';
import { SYNTHETIC_CLASSES, SYNTHETIC_PALETTE } from '../../src/tasks/segmentation/synthetic.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src of this build. */
export const DIST_SRC = resolve(here, '../../src');

/** A ViT-Adapter small enough for tests: 64 wide, 4 blocks, 2 heads, conv_inplane 16; tiny heads. */
export function tinyModelOverrides(numClasses = 150): ConfigOverrides {
  return {
    model: {
      backbone: {
        embed_dim: 64, depth: 4, num_heads: 2, deform_num_heads: 2, conv_inplane: 16, drop_path_rate: 0,
        interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]],
      },
      decode_head: { in_channels: [64, 64, 64, 64], channels: 32, num_classes: numClasses },
      auxiliary_head: { in_channels: 64, channels: 16, num_classes: numClasses },
    },
  };
}

/** Writes `{"base": ..., tiny model, small test scale, ...extra}` as JSON and returns its path. */
export function writeTinyConfig(dir: string, name: string, o: { synthetic?: boolean; extra?: Record<string, unknown> } = {}): string {
  const n = o.synthetic ? SYNTHETIC_CLASSES.length : 150;
  const cfg: Record<string, unknown> = {
    base: 'upernet_deit_adapter_tiny_512_160k_ade20k',
    ...tinyModelOverrides(n),
    test_pipeline: { img_scale: [256, 64] },
    ...(o.synthetic ? {
      dataset: {
        type: 'CustomDataset', classes: [...SYNTHETIC_CLASSES], palette: SYNTHETIC_PALETTE.map((c) => [...c]),
        reduce_zero_label: false, img_dir: 'img_dir', ann_dir: 'ann_dir', img_suffix: '.png',
      },
    } : {}),
  };
  const merged = { ...cfg, ...(o.extra ?? {}) };
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(merged, null, 2));
  return path;
}

/** Result of {@link runCli}. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs one segmentation command in a fresh Node process, as the CLI would (`vit-adapter <command> ...`): the command
 * objects of `src/cli/segment.ts` with `parseArgs` and main.ts's error handling.
 */
export function runCli(args: string[], cwd?: string): CliRun {
  const seg = pathToFileURL(join(DIST_SRC, 'cli/segment.js')).href;
  const argsUrl = pathToFileURL(join(DIST_SRC, 'cli/args.js')).href;
  const code = `
    const { segmentationCommands } = await import(${JSON.stringify(seg)});
    const { parseArgs, UsageError } = await import(${JSON.stringify(argsUrl)});
    const [name, ...rest] = process.argv.slice(1);
    const cmd = segmentationCommands[name];
    if (!cmd) { process.stderr.write('unknown command ' + name + '\\n'); process.exit(2); }
    try {
      process.exitCode = await cmd.run(parseArgs(rest, cmd.options, name));
    } catch (e) {
      process.stderr.write('vit-adapter ' + name + ': ' + e.message + '\\n');
      process.exitCode = e instanceof UsageError ? 2 : 1;
    }
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code, '--', ...args], {
    encoding: 'utf8', cwd: cwd ?? process.cwd(), maxBuffer: 64 << 20,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
