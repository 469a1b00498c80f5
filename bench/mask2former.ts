/**
 * Mask2Former head benchmark: semantic inference of the authors' Mask2Former decode head (deformable pixel decoder,
 * masked-attention transformer decoder, semantic scores) on random stride-4..32 maps of an S×S image, CPU, random
 * weights, against the PyTorch re-implementation in bench/torch_mask2former.py (same architecture and sizes; it
 * reproduces the shared mask2former fixture, which this script checks first when the fixture is there), same thread
 * count, in one run. Peak memory: each process's maximum resident set size, and its growth from before the model
 * was built.
 *
 *   node dist/bench/mask2former.js [--size 256] [--batch 1] [--in-channels 256] [--channels 256] [--heads 8]
 *     [--ffn 1024] [--queries 100] [--classes 150] [--enc-layers 6] [--dec-layers 9] [--repeats 5] [--warmup 1]
 *     [--threads N] [--msda auto|native|composition] [--no-python] [--python /usr/bin/python3] [--json]
 *
 * The defaults are the authors' Mask2Former head at the width of their ResNet/Swin-T configs (256 channels, 8
 * heads, 100 queries, 150 classes); the BEiT-Adapter-L configs use 1024 channels, 32 heads, FFN 4096 (pass
 * `--in-channels 1024 --channels 1024 --heads 32 --ffn 4096`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { getNumThreads, manualSeed, noGrad, randn, scope, setNumThreads } from '../src/engine/index.js';
import { hasNativeMsDeformAttn, setMsDeformAttnImpl } from '../src/models/adapter/index.js';
import { Mask2FormerHead, buildHead } from '../src/models/heads/index.js';
import { mask2formerHeadCfg } from '../src/tasks/segmentation/configs.js';
import {
  type MsdaMode, type Stats, envLine, intArg, loadEndLine, machineLine, ms, openblasEnv, parseFlags, pythonBaseline,
  ratio, reporters, runPython, timeCalls,
} from './common.js';

interface Options {
  size: number;
  batch: number;
  inChannels: number;
  channels: number;
  heads: number;
  ffn: number;
  queries: number;
  classes: number;
  encLayers: number;
  decLayers: number;
  repeats: number;
  warmup: number;
  threads: number;
  msda: MsdaMode;
  pythonExe: string;
  json: boolean;
}

const USAGE = `usage: node dist/bench/mask2former.js [--size 256] [--batch 1] [--in-channels 256] [--channels 256] [--heads 8]
  [--ffn 1024] [--queries 100] [--classes 150] [--enc-layers 6] [--dec-layers 9] [--repeats 5] [--warmup 1]
  [--threads N] [--msda auto|native|composition] [--no-python] [--python /usr/bin/python3] [--json]`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    size: 256, batch: 1, inChannels: 256, channels: 256, heads: 8, ffn: 1024, queries: 100, classes: 150, encLayers: 6,
    decLayers: 9, repeats: 5, warmup: 1, threads: 0, msda: 'auto', pythonExe: '/usr/bin/python3', json: false,
  };
  parseFlags(argv, USAGE, (flag, val) => {
    switch (flag) {
      case '--size': o.size = intArg(flag, val(), 32); break;
      case '--batch': o.batch = intArg(flag, val(), 1); break;
      case '--in-channels': o.inChannels = intArg(flag, val(), 1); break;
      case '--channels': o.channels = intArg(flag, val(), 32); break;
      case '--heads': o.heads = intArg(flag, val(), 1); break;
      case '--ffn': o.ffn = intArg(flag, val(), 1); break;
      case '--queries': o.queries = intArg(flag, val(), 1); break;
      case '--classes': o.classes = intArg(flag, val(), 1); break;
      case '--enc-layers': o.encLayers = intArg(flag, val(), 1); break;
      case '--dec-layers': o.decLayers = intArg(flag, val(), 1); break;
      case '--repeats': o.repeats = intArg(flag, val(), 1); break;
      case '--warmup': o.warmup = intArg(flag, val(), 0); break;
      case '--threads': o.threads = intArg(flag, val(), 1); break;
      case '--no-python': o.pythonExe = ''; break;
      case '--python': o.pythonExe = val(); break;
      case '--json': o.json = true; break;
      case '--msda': {
        const v = val();
        if (v !== 'auto' && v !== 'native' && v !== 'composition') throw new Error(`--msda: expected auto|native|composition, got ${v}`);
        o.msda = v;
        break;
      }
      default: return false;
    }
    return true;
  });
  if (o.size % 32) throw new Error(`--size must be a multiple of 32, got ${o.size}`);
  if (o.channels % 32 || o.channels % o.heads) throw new Error('--channels must be a multiple of 32 (GroupNorm) and of --heads');
  return o;
}

/** This process's peak resident set size so far (`VmHWM`), in MB; `maxRSS` where /proc is missing. */
function peakRssMb(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) / 1024;
  } catch { /* no /proc */ }
  return process.resourceUsage().maxRSS / 1024;
}

interface TorchResult extends Stats {
  torch_version: string;
  threads: number;
  num_parameters: number;
  base_rss_mb: number;
  peak_rss_mb: number;
}

function torchArgs(o: Options): string[] {
  return ['--bench', '--size', String(o.size), '--batch', String(o.batch), '--in-channels', String(o.inChannels),
    '--channels', String(o.channels), '--heads', String(o.heads), '--ffn', String(o.ffn), '--queries', String(o.queries),
    '--classes', String(o.classes), '--enc-layers', String(o.encLayers), '--dec-layers', String(o.decLayers),
    '--repeats', String(o.repeats), '--warmup', String(o.warmup), '--threads', String(o.threads), '--json'];
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const { log } = reporters(o.json);
  if (o.threads) setNumThreads(o.threads);
  o.threads = getNumThreads();
  if (o.msda !== 'auto') setMsDeformAttnImpl(o.msda === 'native');
  const load0 = loadavg();
  log(`Mask2Former head, semantic inference of a ${o.size}x${o.size} image's pyramid (batch ${o.batch}): in ${o.inChannels}, ` +
    `width ${o.channels}, ${o.heads} heads, FFN ${o.ffn}, ${o.queries} queries, ${o.classes} classes, ${o.encLayers} encoder / ` +
    `${o.decLayers} decoder layers; ${o.threads} thread(s); deformable attention: ` +
    `${o.msda === 'composition' || (o.msda === 'auto' && !hasNativeMsDeformAttn()) ? 'grid_sample composition' : 'native kernel'}`);
  log(machineLine(load0, ' (busy: timings are noisy)'));
  log(envLine(openblasEnv()));

  // ---- TypeScript (first, so that this process's peak RSS is the model's) ----
  const baseTs = peakRssMb();
  manualSeed(0);
  const head = buildHead(mask2formerHeadCfg({
    inChannels: o.inChannels, channels: o.channels, numQueries: o.queries, numThings: o.classes, numStuff: 0, heads: o.heads,
    ffn: o.ffn, encoderLayers: o.encLayers, decoderLayers: o.decLayers,
  })).eval();
  if (!(head instanceof Mask2FormerHead)) throw new Error('expected a Mask2FormerHead');
  const feats = [4, 8, 16, 32].map((s) => randn([o.batch, o.inChannels, o.size / s, o.size / s]).keep());
  const ts = timeCalls(() => { scope(() => noGrad(() => { head.forward(feats); })); }, o.repeats, o.warmup);
  const peakTs = peakRssMb();
  const params = head.numParameters();
  head.dispose();
  feats.forEach((f) => f.dispose());
  log(`  TypeScript: median ${ms(ts.median_s)} ms  min ${ms(ts.min_s)}  max ${ms(ts.max_s)} (${o.repeats} runs); ` +
    `peak RSS ${peakTs.toFixed(0)} MB (before the model ${baseTs.toFixed(0)} MB); ${(params / 1e6).toFixed(2)} M parameters`);

  // ---- PyTorch ----
  let torch: TorchResult | null = null;
  let torchError: string | null = null;
  let parity: string | null = null;
  const { script, problem } = pythonBaseline(o.pythonExe, 'torch_mask2former.py');
  if (problem) {
    torchError = problem;
  } else {
    try {
      const fixture = new URL('../../../shared/fixtures/mask2former/mask2former_small', import.meta.url).pathname;
      if (existsSync(`${fixture}.json`)) parity = runPython(o.pythonExe, script!, ['--check', fixture]);
      torch = JSON.parse(runPython(o.pythonExe, script!, torchArgs(o))) as TorchResult;
    } catch (e) {
      torchError = (e as Error).message;
    }
  }
  const r = ratio(ts, torch);
  const mem = torch ? { peak: peakTs / torch.peak_rss_mb, growth: (peakTs - baseTs) / (torch.peak_rss_mb - torch.base_rss_mb) } : null;
  if (torch) {
    log(`  PyTorch ${torch.torch_version}: median ${ms(torch.median_s)} ms  min ${ms(torch.min_s)}  max ${ms(torch.max_s)}; ` +
      `peak RSS ${torch.peak_rss_mb.toFixed(0)} MB (before the model ${torch.base_rss_mb.toFixed(0)} MB); ` +
      `${(torch.num_parameters / 1e6).toFixed(2)} M parameters`);
    if (torch.num_parameters !== params) log(`  WARNING: parameter counts differ (${params} vs ${torch.num_parameters})`);
    if (parity) log(`  PyTorch baseline parity with the mask2former fixture: ${parity}`);
    log(`  TS / PyTorch: time ${r!.median.toFixed(2)}x (median), ${r!.min.toFixed(2)}x (min), CPU ${r!.cpu.toFixed(2)}x; ` +
      `peak RSS ${mem!.peak.toFixed(2)}x, RSS growth ${mem!.growth.toFixed(2)}x (targets: time <= 0.7x, memory <= 1.2x)`);
  } else {
    log(`  PyTorch: not run (${torchError})`);
  }
  const load1 = loadavg();
  log(loadEndLine(load1));
  if (o.json) {
    console.log(JSON.stringify({
      options: o, num_parameters: params, ts: { ...ts, base_rss_mb: baseTs, peak_rss_mb: peakTs }, torch, torch_error: torchError,
      torch_parity: parity, ratio: r, memory_ratio: mem, load_start: load0, load_end: load1,
    }));
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).message);
  process.exit(1);
});
