/** Shared helpers of the training tests: a tiny trainable config, a tiny generated dataset, a CLI runner. */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ConfigOverrides, type SegConfig, loadConfig } from '../../src/tasks/segmentation/configs.js';
import { writeSyntheticSplits } from '../../src/tasks/segmentation/synth-splits.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The CLI entry of this build. */
export const BIN = resolve(here, '../../src/cli/bin.js');

/** Overrides that shrink `upernet_vit_adapter_synth` to a seconds-per-run model (32 wide, 4 blocks, 64 px). */
export function tinyTrainOverrides(extraTrain: Record<string, unknown> = {}): ConfigOverrides {
  return {
    model: {
      backbone: {
        embed_dim: 32, depth: 4, num_heads: 2, deform_num_heads: 2, conv_inplane: 8, pretrain_size: 64, drop_path_rate: 0.1,
        interaction_indexes: [[0, 0], [1, 1], [2, 2], [3, 3]],
      },
      decode_head: { in_channels: [32, 32, 32, 32], channels: 16 },
      auxiliary_head: { in_channels: 32, channels: 8 },
    },
    test_pipeline: { img_scale: [256, 64] },
    train: {
      max_iters: 4, samples_per_gpu: 2, workers_per_gpu: 0, checkpoint_interval: 2, max_keep_ckpts: 5, eval_interval: 0,
      optimizer: { paramwise_cfg: { num_layers: 4, layer_decay_rate: 0.9 } },
      lr_config: { policy: 'poly', warmup: 'linear', warmup_iters: 2, warmup_ratio: 1e-6, power: 1.0, min_lr: 0.0, by_epoch: false },
      pipeline: { img_scale: [256, 64], crop_size: [64, 64] },
      ...extraTrain,
    } as ConfigOverrides['train'],
  };
}

/** The tiny config object. */
export function tinyTrainConfig(extraTrain: Record<string, unknown> = {}): SegConfig {
  return loadConfig('upernet_vit_adapter_synth', tinyTrainOverrides(extraTrain));
}

/** Writes the tiny config as a JSON file (for the CLI) and returns its path. */
export function writeTinyTrainConfig(dir: string, name = 'tiny_train', extraTrain: Record<string, unknown> = {}): string {
  const path = join(dir, `${name}.json`);
  writeFileSync(path, JSON.stringify({ base: 'upernet_vit_adapter_synth', ...tinyTrainOverrides(extraTrain) }, null, 2));
  return path;
}

/** Writes a tiny generated dataset (custom layout with train/val) and returns its root. */
export async function tinyDataset(dir: string, count = 8, size = 64, seed = 3): Promise<string> {
  const root = join(dir, 'data');
  await writeSyntheticSplits(root, { count, size, seed, val: 2 });
  return root;
}

/** Result of {@link runBin}. */
export interface BinRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `vit-adapter <args>` in a fresh process. */
export function runBin(args: string[], timeoutMs = 120_000): BinRun {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: timeoutMs });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}
