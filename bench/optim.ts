/**
 * AdamW step micro-benchmark over the parameters of a segmentor preset (default ViT-Adapter-T + UperNet + FCN,
 * 423 tensors, 36.1 M values, the authors' 28 layer-decay groups): the multi-tensor (`aten::_foreach_*`) path
 * against one operator per parameter, and, when `python3 -c "import torch"` works, torch.optim.AdamW
 * (foreach=False and foreach=True) on tensors of the same shapes and groups, run by bench/torch_optim.py.
 *
 *   node dist/bench/optim.js [--preset NAME] [--repeats N] [--threads N] [--json] [--python EXE | --no-python]
 *
 * Every figure is the median wall (and process CPU) time of N steps after 2 warm-up steps; the variants alternate, round by round,
 * so machine noise hits them alike. Compare ratios within one run.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getNumThreads, noGrad, randn, setNumThreads } from '../src/engine/index.js';
import { AdamW, buildParamGroups } from '../src/train/index.js';
import { buildSegmentor } from '../src/tasks/segmentation/inference.js';
import { getPreset } from '../src/tasks/segmentation/configs.js';
import { type Stats, cpuSeconds, intArg, median, ms, parseFlags, pythonBaseline, runPython, stats } from './common.js';

const USAGE = 'usage: node dist/bench/optim.js [--preset NAME] [--repeats N] [--threads N] [--json] [--python EXE | --no-python]';
let preset = 'upernet_deit_adapter_tiny_512_160k_ade20k';
let repeats = 10;
let threads = 2;
let json = false;
let python = '/usr/bin/python3';
parseFlags(process.argv.slice(2), USAGE, (flag, val) => {
  if (flag === '--preset') preset = val();
  else if (flag === '--repeats') repeats = intArg(flag, val(), 1);
  else if (flag === '--threads') threads = intArg(flag, val(), 1);
  else if (flag === '--json') json = true;
  else if (flag === '--python') python = val();
  else if (flag === '--no-python') python = '';
  else return false;
  return true;
});
setNumThreads(threads);
const log = json ? (s: string) => process.stderr.write(s + '\n') : (s: string) => console.log(s);

const model = buildSegmentor(getPreset(preset));
model.train();
const groups = buildParamGroups(model, { lr: 1.2e-4, weightDecay: 0.01, numLayers: 12, layerDecayRate: 0.95 });
const params = groups.flatMap((g) => g.params);
noGrad(() => { for (const p of params) p.grad = randn(p.shape).mul(1e-3); });
const numel = params.reduce((a, p) => a + p.numel(), 0);
log(`AdamW step: ${preset}, ${params.length} tensors, ${(numel / 1e6).toFixed(2)} M values, ${groups.length} groups, ${getNumThreads()} threads, ${repeats} steps each`);

const variants: { name: string; opt: AdamW; times: number[]; cpu: number[] }[] = [
  { name: 'foreach (aten::_foreach_*)', opt: new AdamW(groups, { foreach: true }), times: [], cpu: [] },
  { name: 'per parameter', opt: new AdamW(groups, { foreach: false }), times: [], cpu: [] },
];
for (const v of variants) for (let i = 0; i < 2; i++) v.opt.step();
for (let r = 0; r < repeats; r++) {
  for (const v of variants) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    v.opt.step();
    v.cpu.push(cpuSeconds(c0));
    v.times.push((performance.now() - t0) / 1000);
  }
}
const ts: Record<string, Stats> = Object.fromEntries(variants.map((v) => [v.name, stats(v.times, v.cpu)]));

// PyTorch on the same shapes and groups
let torch: Record<string, number> | null = null;
const { script, problem } = pythonBaseline(python, 'torch_optim.py');
if (problem) {
  log(`PyTorch: skipped (${problem})`);
} else {
  const dir = mkdtempSync(join(tmpdir(), 'vit-optim-'));
  try {
    const spec = join(dir, 'groups.json');
    writeFileSync(spec, JSON.stringify({ groups: groups.map((g) => ({ lr: g.lr, weight_decay: g.weightDecay, shapes: g.params.map((p) => p.shape) })) }));
    torch = JSON.parse(runPython(python, script!, ['--spec', spec, '--repeats', String(repeats), '--threads', String(threads)])) as Record<string, number>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const fe = ts[variants[0]!.name]!.median_s;
const pp = ts[variants[1]!.name]!.median_s;
const rows: string[][] = [['variant', 'median ms', 'min ms', 'CPU median ms']];
for (const v of variants) rows.push([v.name, ms(ts[v.name]!.median_s), ms(ts[v.name]!.min_s), ms(ts[v.name]!.cpu_median_s)]);
if (torch) {
  for (const k of ['single_tensor', 'foreach']) rows.push([`torch ${k}`, ms(torch[`${k}_median_s`]), ms(torch[`${k}_min_s`]), ms(torch[`${k}_cpu_median_s`])]);
}
const width = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
for (const r of rows) log('  ' + r.map((x, c) => (c === 0 ? x.padEnd(width[c]!) : x.padStart(width[c]!))).join('   '));
const feCpu = ts[variants[0]!.name]!.cpu_median_s;
const ppCpu = ts[variants[1]!.name]!.cpu_median_s;
log(`  speedup foreach vs per parameter: ${(pp / fe).toFixed(2)}x wall, ${(ppCpu / feCpu).toFixed(2)}x CPU time`);
if (torch) {
  log(`  foreach / torch foreach: ${(fe / torch.foreach_median_s!).toFixed(2)}x wall, ${(feCpu / torch.foreach_cpu_median_s!).toFixed(2)}x CPU; ` +
    `per parameter / torch single-tensor (torch 1.13's CPU default): ${(pp / torch.single_tensor_median_s!).toFixed(2)}x wall, ${(ppCpu / torch.single_tensor_cpu_median_s!).toFixed(2)}x CPU`);
}
if (json) {
  console.log(JSON.stringify({
    preset, tensors: params.length, numel, groups: groups.length, threads: getNumThreads(), repeats,
    foreach_median_s: fe, per_param_median_s: pp, foreach_cpu_median_s: feCpu, per_param_cpu_median_s: ppCpu, speedup: pp / fe, torch, all_runs_median_s: median([...variants[0]!.times, ...variants[1]!.times]),
  }));
}
for (const v of variants) v.opt.dispose();
model.dispose();
