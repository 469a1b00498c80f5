/**
 * Training commands of the `vit-adapter` CLI: `train` (fine-tune / train a segmentor with the authors' recipe,
 * `--describe-params` for the optimizer's parameter groups) and `synth` (write a generated dataset). Progress goes to
 * stderr; with `--json` stdout holds one summary object.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { autocastSupported, cuda, setNumThreads } from '../engine/index.js';
import { ProgressBar } from '../tools/progress.js';
import { loadConfig } from '../tasks/segmentation/configs.js';
import { buildSegmentor } from '../tasks/segmentation/inference.js';
import { effectiveRecipe, paramGroupsFor, trainSegmentor } from '../tasks/segmentation/train.js';
import { writeSyntheticSplits } from '../tasks/segmentation/synth-splits.js';
import { describeParamGroups } from '../train/param-groups.js';
import { formatPretrainedReport } from '../train/pretrained.js';
import { exportWeights } from '../train/checkpoint.js';
import { type OptionSpec, type Parsed, UsageError, intOption, stringOption } from './args.js';
import { LaunchError, checkLaunchOptions, exitWithLauncher, launchWorkers, workerEnv, type WorkerEnv } from './launch.js';

/** A CLI command (the shape of `main.ts`'s `commands` entries). */
export interface TrainCommand {
  summary: string;
  usage: string;
  options: OptionSpec;
  run(p: Parsed): Promise<number> | number;
}

const print = (s: string): void => { process.stdout.write(`${s}\n`); };
const warn = (s: string): void => { process.stderr.write(`${s}\n`); };


function num(p: Parsed, key: string): number | undefined {
  const v = p.options[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number') throw new UsageError(`--${key} expects a number`);
  return v;
}

const fmt = (x: number): string => (Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(4) : x.toExponential(2));

/** Options of the launcher: they stay with the launcher and are not passed to the workers. */
const LAUNCHER_KEYS = new Set(['nproc', 'nnodes', 'node-rank', 'master-addr', 'master-port']);

/** The command line of a worker: the parsed options without the launcher's, in `--key=value` form. */
export function workerArgs(p: Parsed): string[] {
  const out: string[] = ['train'];
  for (const [k, v] of Object.entries(p.options)) {
    if (v === undefined || LAUNCHER_KEYS.has(k)) continue;
    if (v === true) out.push(`--${k}`);
    else if (Array.isArray(v)) for (const x of v) out.push(`--${k}=${x}`);
    else if (v !== false) out.push(`--${k}=${String(v)}`);
  }
  if (p.positionals.length) out.push('--', ...p.positionals);
  return out;
}

/** `--nproc N` (with the multi-machine options): start the workers and wait for them. */
async function runLauncher(p: Parsed): Promise<number> {
  const num0 = (k: string): number | undefined => (p.options[k] === undefined ? undefined : intOption(p, k, 0, 0));
  const masterAddr = stringOption(p, 'master-addr');
  const o = {
    nproc: intOption(p, 'nproc', 1), nnodes: intOption(p, 'nnodes', 1), nodeRank: num0('node-rank') ?? 0,
    ...(masterAddr !== undefined ? { masterAddr } : {}), masterPort: num0('master-port') ?? null,
    args: [fileURLToPath(new URL('./bin.js', import.meta.url)), ...workerArgs(p)],
  };
  try {
    checkLaunchOptions(o);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const device = stringOption(p, 'device') ?? 'cpu';
  if (device.startsWith('cuda')) {
    if (device !== 'cuda') throw new UsageError(`--nproc with --device ${device}: use --device cuda (worker LOCAL_RANK k uses cuda:k)`);
    if (cuda.isAvailable() && cuda.deviceCount() < o.nproc) {
      throw new UsageError(`--nproc ${o.nproc} with --device cuda: this machine has ${cuda.deviceCount()} CUDA device(s); one process per GPU`);
    }
  }
  const world = o.nproc * o.nnodes;
  let result;
  try {
    result = await launchWorkers({
      ...o,
      onSpawn: (rank, pid) => { if (rank === o.nodeRank * o.nproc) warn(`launching ${o.nproc} worker(s) on node ${o.nodeRank} (world size ${world}); rank ${rank} pid ${pid}`); },
    });
  } catch (e) {
    if (e instanceof LaunchError) throw new UsageError(e.message);
    throw e;
  }
  if (result.message) warn(`vit-adapter train: ${result.message}`);
  return result.code;
}

/** `train`. */
export const trainCommand: TrainCommand = {
  summary: 'train a segmentor with the authors\' recipe (AdamW + layer decay, poly + warmup, mmseg augmentation), checkpoints, resume',
  usage: 'vit-adapter train --config NAME|file.json --data ROOT --work-dir DIR [--dataset ade20k|custom] [--pretrained FILE] ' +
    '[--iters N] [--batch N] [--lr X] [--device cpu|cuda] [--amp bf16|fp16] [--resume [FILE]] [--eval-interval N] ' +
    '[--eval-limit N] [--checkpoint-interval N] [--keep K] [--seed S] [--threads N] [--workers N] [--accumulate N] ' +
    '[--clip-grad X] [--freeze-backbone] [--with-cp] [--skip-bad-samples] [--train-img-dir D --train-ann-dir D ' +
    '--val-img-dir D --val-ann-dir D] [--log-interval N] [--export FILE.safetensors] [--json] ' +
    '[--nproc N [--nnodes M --node-rank R --master-addr HOST] [--master-port P]] [--dist-backend gloo|nccl] [--dist-timeout SEC] ' +
    '| --describe-params --config NAME [--json]',
  options: {
    config: 'string', data: 'string', dataset: 'string', 'work-dir': 'string', pretrained: 'string', iters: 'number',
    batch: 'number', lr: 'number', device: 'string', amp: 'string', resume: 'boolean', 'eval-interval': 'number',
    'eval-limit': 'number', 'checkpoint-interval': 'number', keep: 'number', seed: 'number', threads: 'number',
    workers: 'number', accumulate: 'number', 'clip-grad': 'number', 'freeze-backbone': 'boolean', 'with-cp': 'boolean',
    'skip-bad-samples': 'boolean', 'train-img-dir': 'string', 'train-ann-dir': 'string', 'val-img-dir': 'string',
    'val-ann-dir': 'string', 'log-interval': 'number', json: 'boolean', 'describe-params': 'boolean', export: 'string',
    nproc: 'number', nnodes: 'number', 'node-rank': 'number', 'master-addr': 'string', 'master-port': 'number',
    'dist-backend': 'string', 'dist-timeout': 'number',
  },
  async run(p) {
    let wenv: WorkerEnv | null;
    try {
      wenv = workerEnv();
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const launcher = [...LAUNCHER_KEYS].some((k) => p.options[k] !== undefined);
    if (wenv && launcher && !p.options['describe-params']) {
      throw new UsageError(`train: this process is already a worker of a launched job (WORLD_SIZE=${wenv.worldSize} in the environment); ` +
        `--nproc/--nnodes/--node-rank/--master-addr/--master-port belong to the launcher (unset WORLD_SIZE to launch from here)`);
    }
    const backendOpt = stringOption(p, 'dist-backend');
    if (backendOpt !== undefined && backendOpt !== 'gloo' && backendOpt !== 'nccl') throw new UsageError(`--dist-backend must be gloo or nccl, got ${JSON.stringify(backendOpt)}`);
    const distTimeout = num(p, 'dist-timeout');
    if (distTimeout !== undefined && !(distTimeout > 0 && distTimeout <= 2_000_000)) throw new UsageError(`--dist-timeout must be a positive number of seconds, got ${distTimeout}`);
    if (p.options.threads !== undefined) setNumThreads(intOption(p, 'threads', 1));
    else if (wenv && wenv.localWorldSize > 1) setNumThreads(Math.max(1, Math.floor(availableParallelism() / wenv.localWorldSize)));
    const configName = stringOption(p, 'config');
    if (!configName) throw new UsageError('train: --config NAME|file.json is required');
    const config = loadConfig(configName);
    const json = Boolean(p.options.json);
    if (p.options['describe-params']) {
      if (p.positionals.length) throw new UsageError(`train --describe-params: unexpected argument ${JSON.stringify(p.positionals[0])}`);
      const recipe = effectiveRecipe(config, { ...(num(p, 'lr') !== undefined ? { lr: num(p, 'lr')! } : {}) });
      const model = buildSegmentor(config);
      const groups = paramGroupsFor(model, recipe, p.options['freeze-backbone'] ? ['backbone.'] : []);
      const d = describeParamGroups(groups, { betas: recipe.optimizer.betas, ...(recipe.optimizer.eps !== undefined ? { eps: recipe.optimizer.eps } : {}) });
      if (json) {
        print(JSON.stringify(d));
      } else {
        print(`${config.name}: ${d.groups.length} parameter groups, ${d.groups.reduce((a, g) => a + g.num_params, 0)} parameters ` +
          `(${recipe.optimizer.constructor}, lr ${recipe.optimizer.lr}, weight decay ${recipe.optimizer.weight_decay})`);
        for (const g of d.groups) {
          print(`  ${String(g.index).padStart(3)} ${g.group_name.padEnd(20)} lr_scale ${g.lr_scale.toFixed(6)} lr ${g.lr.toExponential(4)} ` +
            `wd ${g.weight_decay} ${String(g.num_params).padStart(4)} params ${String(g.numel).padStart(10)} values  ` +
            `${g.param_names.slice(0, 3).join(', ')}${g.param_names.length > 3 ? ', ...' : ''}`);
        }
      }
      model.dispose();
      return 0;
    }
    let resume: string | true | null = null;
    if (p.options.resume) {
      if (p.positionals.length > 1) throw new UsageError('train: --resume takes at most one file');
      resume = p.positionals[0] ?? true;
    } else if (p.positionals.length) {
      throw new UsageError(`train: unexpected argument ${JSON.stringify(p.positionals[0])}`);
    }
    const data = stringOption(p, 'data');
    if (!data) throw new UsageError('train: --data ROOT is required');
    const workDir = stringOption(p, 'work-dir');
    if (!workDir) throw new UsageError('train: --work-dir DIR is required');
    const nproc = p.options.nproc === undefined ? 1 : intOption(p, 'nproc', 1);
    if (nproc > 1 || (p.options.nnodes !== undefined && intOption(p, 'nnodes', 1) > 1)) return runLauncher(p);
    if (launcher && !wenv) {
      // --nproc 1 on one machine: a plain single-process run (the other launcher options have nothing to do)
      if (p.options['master-port'] !== undefined || p.options['master-addr'] !== undefined || p.options['node-rank'] !== undefined) {
        warn('note: --master-addr/--master-port/--node-rank are ignored with one process on one machine');
      }
    }
    if (wenv) exitWithLauncher(wenv.launcherPid);
    const main = !wenv || wenv.rank === 0;
    const kind = stringOption(p, 'dataset');
    if (kind !== undefined && kind !== 'ade20k' && kind !== 'custom') throw new UsageError('--dataset must be ade20k or custom');
    if (kind === 'ade20k' && config.dataset.type !== 'ADE20KDataset') {
      throw new UsageError(`--dataset ade20k: config ${config.name} is for a ${config.dataset.type} (${config.dataset.classes?.length ?? '?'} classes)`);
    }
    const device = stringOption(p, 'device') ?? 'cpu';
    if (!/^(cpu|cuda(:\d+)?)$/.test(device)) throw new UsageError(`--device must be cpu, cuda or cuda:N, got ${JSON.stringify(device)}`);
    if (device !== 'cpu' && !cuda.isAvailable()) throw new Error(`--device ${device}: CUDA is not available in this libtorch build / machine`);
    if (wenv && wenv.worldSize > 1 && device === 'cuda' && cuda.deviceCount() <= wenv.localRank) {
      throw new Error(`--device cuda: worker LOCAL_RANK ${wenv.localRank} needs cuda:${wenv.localRank}, but this machine has ${cuda.deviceCount()} CUDA device(s)`);
    }
    const amp = stringOption(p, 'amp');
    if (amp !== undefined) {
      if (amp !== 'bf16' && amp !== 'fp16') throw new UsageError(`--amp must be bf16 or fp16, got ${JSON.stringify(amp)}`);
      if (amp === 'fp16' && device === 'cpu') throw new UsageError('--amp fp16 needs --device cuda (float16 autocast is CUDA-only); use --amp bf16 on CPU');
      if (!autocastSupported()) throw new Error('--amp: this native addon has no autocast support; rebuild it (node scripts/build-native.mjs)');
    }
    const logInterval = intOption(p, 'log-interval', 10);
    const opt = <T>(key: string, v: T | undefined): Record<string, T> => (v === undefined ? {} : { [key]: v });
    const clip = num(p, 'clip-grad');
    if (clip !== undefined && !(clip > 0)) throw new UsageError(`--clip-grad must be a positive number, got ${clip}`);
    let bar: ProgressBar | null = null;
    const tty = Boolean(process.stderr.isTTY);
    const started = Date.now();
    const result = await trainSegmentor({
      config, dataRoot: data, workDir,
      ...opt('trainImgDir', stringOption(p, 'train-img-dir')), ...opt('trainAnnDir', stringOption(p, 'train-ann-dir')),
      ...opt('valImgDir', stringOption(p, 'val-img-dir')), ...opt('valAnnDir', stringOption(p, 'val-ann-dir')),
      ...opt('pretrained', stringOption(p, 'pretrained')),
      ...opt('iters', p.options.iters === undefined ? undefined : intOption(p, 'iters', 1)),
      ...opt('batch', p.options.batch === undefined ? undefined : intOption(p, 'batch', 1)),
      ...opt('lr', num(p, 'lr')),
      device, resume, amp: (amp as 'bf16' | 'fp16' | undefined) ?? null,
      ...opt('evalInterval', p.options['eval-interval'] === undefined ? undefined : intOption(p, 'eval-interval', 0, 0)),
      ...opt('evalLimit', p.options['eval-limit'] === undefined ? undefined : intOption(p, 'eval-limit', 1)),
      ...opt('checkpointInterval', p.options['checkpoint-interval'] === undefined ? undefined : intOption(p, 'checkpoint-interval', 1)),
      ...opt('keep', p.options.keep === undefined ? undefined : intOption(p, 'keep', 1)),
      ...opt('seed', p.options.seed === undefined ? undefined : intOption(p, 'seed', 0, 0)),
      ...opt('workers', p.options.workers === undefined ? undefined : intOption(p, 'workers', 0, 0)),
      ...opt('accumulate', p.options.accumulate === undefined ? undefined : intOption(p, 'accumulate', 1)),
      ...opt('clipGrad', clip),
      skipBadSamples: Boolean(p.options['skip-bad-samples']),
      freezeBackbone: Boolean(p.options['freeze-backbone']),
      withCp: Boolean(p.options['with-cp']),
      ...(wenv && wenv.worldSize > 1 ? {
        dist: {
          rank: wenv.rank, worldSize: wenv.worldSize, localRank: wenv.localRank, masterAddr: wenv.masterAddr, masterPort: wenv.masterPort,
          ...(backendOpt ? { backend: backendOpt as 'gloo' | 'nccl' } : {}),
          ...(distTimeout !== undefined ? { timeoutMs: Math.round(distTimeout * 1000) } : {}),
        },
      } : {}),
      onMessage: warn,
      onIteration: (r, it) => {
        const l = r.losses;
        const terms = Object.entries(l).filter(([k]) => k.includes('loss')).map(([k, v]) => `${k} ${fmt(v)}`).join(' ');
        const note = `lr ${r.lr.toExponential(2)} wait ${(it.dataWaitShare * 100).toFixed(0)}% ${terms}`;
        if (tty) {
          bar ??= new ProgressBar(it.total - it.done + 1, { label: 'train' });
          bar.tick(1, `it ${it.done} ${note}`);
        } else if (it.done % logInterval === 0 || it.done === it.total) {
          const secs = (Date.now() - started) / 1000;
          warn(`iter ${it.done}/${it.total} ${note} ${r.time.toFixed(2)} s/it (data ${r.data_time.toFixed(2)} s) elapsed ${secs.toFixed(0)} s`);
        }
      },
      onEvaluation: (iter, m) => {
        if (tty) process.stderr.write('\n');
        const f = (x: number | null | undefined): string => (typeof x === 'number' ? (x * 100).toFixed(2) : 'nan');
        warn(`eval at iter ${iter}: mIoU ${f(m.mIoU)} aAcc ${f(m.aAcc)} mAcc ${f(m.mAcc)}`);
      },
      onCheckpoint: (path, iter) => {
        if (!tty) warn(`checkpoint at iter ${iter}: ${path}`);
      },
    });
    (bar as ProgressBar | null)?.finish();
    // ranks above 0 of a data-parallel job say nothing on success: rank 0 reports for the job
    if (!main) return result.interrupted ? 130 : 0;
    if (result.pretrained) warn(formatPretrainedReport(result.pretrained));
    const exportPath = stringOption(p, 'export');
    let exported: ReturnType<typeof exportWeights> | null = null;
    if (exportPath && result.checkpoint && !result.interrupted) {
      exported = exportWeights(result.checkpoint, exportPath, {
        dtype: 'float16',
        metadata: {
          config: result.config, iterations: String(result.iterations), val_mIoU: result.mIoU === null ? 'null' : String(result.mIoU),
          source_checkpoint: resolve(result.checkpoint), command: `vit-adapter train ${process.argv.slice(3).join(' ')}`,
        },
      });
      warn(`exported the model weights (float16) to ${exportPath} (${(exported.bytes / 1e6).toFixed(2)} MB)`);
    }
    const out = {
      config: result.config, iterations: result.iterations, ran: result.ran, world_size: result.world_size, dist: result.dist,
      sync_bn: result.sync_bn,
      losses: result.losses, checkpoint: result.checkpoint ? resolve(result.checkpoint) : null, mIoU: result.mIoU,
      eval: result.eval, evals: result.evals, seconds: result.seconds, it_per_s: result.it_per_s,
      data_wait_share: result.data_wait_share, interrupted: result.interrupted, resumed_from: result.resumed_from,
      train_samples: result.train_samples, val_samples: result.val_samples, num_parameters: result.num_parameters,
      work_dir: resolve(workDir), log: resolve(workDir, 'log.jsonl'), export: exported ? resolve(exported.path) : null,
    };
    if (json) {
      print(JSON.stringify(out));
    } else {
      print(`${result.interrupted ? 'interrupted' : 'trained'} ${result.config}: ${result.iterations} iterations ` +
        `(${result.ran} in this run, ${result.it_per_s.toFixed(2)} it/s, data wait ${(result.data_wait_share * 100).toFixed(1)}%)`);
      print(`losses: ${Object.entries(result.losses).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`);
      if (result.mIoU !== null) print(`mIoU (val): ${(result.mIoU * 100).toFixed(2)}`);
      print(`checkpoint: ${out.checkpoint ?? 'none'}`);
    }
    return result.interrupted ? 130 : 0;
  },
};

/** The options of `synth` (shared with `synth --coco`): output folder, scene count and size, seed, val split. */
export function synthOptions(p: Parsed): { out: string; count: number; size: number; seed: number; val?: number } {
  if (p.positionals.length) throw new UsageError(`synth: unexpected argument ${JSON.stringify(p.positionals[0])}`);
  const out = stringOption(p, 'out');
  if (!out) throw new UsageError('synth: --out DIR is required');
  const count = intOption(p, 'count', 200, 2);
  const size = intOption(p, 'size', 128, 32);
  const seed = intOption(p, 'seed', 0, 0);
  return { out, count, size, seed, ...(p.options.val === undefined ? {} : { val: intOption(p, 'val', 1) }) };
}

/** `synth`. */
export const synthCommand: TrainCommand = {
  summary: 'write a generated segmentation dataset (synthetic scenes) in the custom layout with a train/val split',
  usage: 'vit-adapter synth --out DIR [--count 200] [--size 128] [--seed 0] [--val N] [--json]',
  options: { out: 'string', count: 'number', size: 'number', seed: 'number', val: 'number', json: 'boolean' },
  async run(p) {
    const { out, ...o } = synthOptions(p);
    const { size, seed } = o;
    const bar = new ProgressBar(o.count, { label: 'synth' });
    const r = await writeSyntheticSplits(out, { ...o, onProgress: () => bar.tick() });
    bar.finish();
    const res = { out: resolve(out), train: r.train, val: r.val, size, seed, layout: 'img_dir/{train,val}, ann_dir/{train,val}' };
    if (p.options.json) print(JSON.stringify(res));
    else print(`wrote ${r.train} train + ${r.val} val scenes (${size}×${size}, seed ${seed}) to ${res.out}`);
    return 0;
  },
};

/** The training commands under their CLI names, for `main.ts`. */
export const trainingCommands: Record<'train' | 'synth', TrainCommand> = { train: trainCommand, synth: synthCommand };
