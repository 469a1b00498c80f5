/**
 * Segmentor benchmark: ViT-Adapter-T + UperNet (`upernet_deit_adapter_tiny_512_160k_ade20k`), whole-mode inference
 * of one image, CPU, random weights. The TypeScript `EncoderDecoder` against the PyTorch re-implementation in
 * bench/torch_segmentor.py (same architecture: its UPerHead reproduces the shared head fixtures, its backbone is
 * bench/torch_vit_adapter.py), same size and thread count, in one run; plus a backbone / head split of both sides.
 *
 *   node dist/bench/segmentor.js [--size 512] [--repeats 5] [--warmup 1] [--threads N] [--rounds 1]
 *     [--config upernet_deit_adapter_tiny_512_160k_ade20k] [--msda auto|native|composition] [--profile-repeats 5]
 *     [--no-profile] [--no-e2e] [--no-python] [--python /usr/bin/python3] [--json]
 *
 * Timed on the TypeScript side:
 *  - `encodeDecode`: `model.encodeDecode(img)` on a 1×3×S×S normal tensor, under `noGrad` and `scope` (backbone,
 *    decode head, bilinear resize of the logits to S×S) — what mmseg's `whole_inference` runs;
 *  - `segmentImage`: the whole prediction of an S×S×3 uint8 image with the config's test pipeline in whole mode
 *    (resize no-op at S = 512, normalise, `encodeDecode`, softmax, argmax, class shares).
 * PyTorch times `encode_decode` on the same shape, and (`--end-to-end`) normalise + `encode_decode` + softmax +
 * argmax of a uint8 image. `--rounds K` alternates TS and PyTorch K times and pools the timings.
 *
 *   node dist/bench/segmentor.js --photo 4000x3000[,2000x1500,...] [--threads N] [--config ...] [--no-old] [--json]
 *
 * Memory of one photo (`--photo`): `segmentImage` in the config's test mode (slide for the ADE20K configs), without
 * and with flip TTA, each in a fresh child process that reports its peak RSS and time; and the previous
 * full-resolution final stage (src/tools/full-resolution.ts) on the same network passes when its estimated peak fits
 * in this machine's memory, with the ratios and whether the labels are identical.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { availableParallelism, freemem, loadavg, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import {
  type Tensor, backend, getNumThreads, manualSeed, noGrad, randn, scope, setNumThreads,
} from '../src/engine/index.js';
import { hasNativeMsDeformAttn, setMsDeformAttnImpl } from '../src/models/adapter/index.js';
import type { UPerHead } from '../src/models/heads/index.js';
import {
  type EncoderDecoder, type SegConfig, buildSegmentor, loadConfig, numClassesOf, segmentImage,
} from '../src/tasks/segmentation/index.js';
import { segmentImageFullResolution } from '../src/tools/full-resolution.js';
import {
  type CommonOptions, type MsdaMode, type Ratio, type Stats, Timers, checkSize, commonFlag, cpuSeconds, envLine,
  loadEndLine, machineLine, ms, openblasEnv, parseFlags, poolStats as pool, printRows, pythonBaseline,
  ratio, reporters, runPython as runPythonScript, stats, timeCalls, wrapMethod,
} from './common.js';

// ---- options -------------------------------------------------------------------------------------------------

interface Options extends CommonOptions {
  config: string;
  msda: MsdaMode;
  e2e: boolean;
  /** `--photo`: photo sizes [width, height] for the memory benchmark. */
  photos: [number, number][];
  /** `--no-old`: skip the full-resolution baseline in the memory benchmark. */
  old: boolean;
  /** `--photo-child W H flip|noflip streamed|full`: one measurement (internal). */
  child: { w: number; h: number; flip: boolean; path: 'streamed' | 'full' } | null;
}

const USAGE = `usage: node dist/bench/segmentor.js [--size 512] [--repeats 5] [--warmup 1] [--threads N] [--rounds K]
  [--config upernet_deit_adapter_tiny_512_160k_ade20k] [--msda auto|native|composition] [--profile-repeats 5]
  [--no-profile] [--no-e2e] [--no-python] [--python /usr/bin/python3] [--json]
       node dist/bench/segmentor.js --photo WxH[,WxH...] [--no-old] [--threads N] [--config NAME] [--json]`;

function parsePhoto(v: string): [number, number] {
  const m = /^(\d+)x(\d+)$/.exec(v);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new Error(`--photo: expected WIDTHxHEIGHT (e.g. 4000x3000), got ${JSON.stringify(v)}`);
  return [Number(m[1]), Number(m[2])];
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    config: 'upernet_deit_adapter_tiny_512_160k_ade20k', size: 512, repeats: 5, warmup: 1, threads: 0, rounds: 1,
    msda: 'auto', profile: true, profileRepeats: 5, e2e: true, pythonExe: '/usr/bin/python3', json: false,
    photos: [], old: true, child: null,
  };
  parseFlags(argv, USAGE, (flag, val) => {
    switch (flag) {
      case '--config': o.config = val(); break;
      case '--no-e2e': o.e2e = false; break;
      case '--photo': o.photos = val().split(',').map(parsePhoto); break;
      case '--no-old': o.old = false; break;
      case '--photo-child': {
        const [w, h, flip, path] = [val(), val(), val(), val()];
        if (path !== 'streamed' && path !== 'full') throw new Error(`--photo-child: unknown path ${path}`);
        o.child = { w: Number(w), h: Number(h), flip: flip === 'flip', path };
        break;
      }
      case '--msda': {
        const v = val();
        if (v !== 'auto' && v !== 'native' && v !== 'composition') throw new Error(`--msda: expected auto|native|composition, got ${v}`);
        o.msda = v;
        break;
      }
      default: return commonFlag(o, flag, val);
    }
    return true;
  });
  checkSize(o.size);
  return o;
}

// ---- the TypeScript model ----------------------------------------------------------------------------------

/** The config with the test pipeline's scale set so that an S×S image is not rescaled (S = 512 is the config's). */
function benchConfig(o: Options): SegConfig {
  const cfg = loadConfig(o.config);
  if (o.size !== 512) cfg.test_pipeline.img_scale = [4 * o.size, o.size];
  return cfg;
}

/** A random S×S×3 uint8 image (deterministic). */
function randomImage(size: number): { data: Uint8Array; height: number; width: number } {
  const data = new Uint8Array(size * size * 3);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { data, height: size, width: size };
}

/** The model's parameter count without the auxiliary head (unused at inference). */
function inferenceParameters(model: EncoderDecoder): number {
  return model.namedParameters().filter(([k]) => !k.startsWith('auxiliary_head.'))
    .reduce((n, [, t]) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

// ---- profile -------------------------------------------------------------------------------------------------

/** Sections of one profiled pass (the same keys as torch_segmentor.py's `sections`). */
function sections(acc: ReadonlyMap<string, number>, total: number): Record<string, number> {
  const a = (k: string): number => acc.get(k) ?? 0;
  const p: Record<string, number> = {
    backbone: a('backbone'), 'head.psp': a('head.psp'), 'head.laterals': a('head.laterals'),
    'head.fpn_convs': a('head.fpn_convs'), 'head.fpn_bottleneck': a('head.fpn_bottleneck'),
    'head.fpn_bottleneck.conv': a('head.fpn_bottleneck.conv'),
    'head.fpn_bottleneck.bn_relu': a('head.fpn_bottleneck') - a('head.fpn_bottleneck.conv'),
    'head.conv_seg': a('head.conv_seg'), head: a('head'),
  };
  p['head.other'] = p.head! - ['head.psp', 'head.laterals', 'head.fpn_convs', 'head.fpn_bottleneck', 'head.conv_seg']
    .reduce((s, k) => s + p[k]!, 0);
  p.total = total;
  return p;
}

const PROFILE_ROWS: [string, string][] = [
  ['backbone', 'backbone (ViT-Adapter-T)'],
  ['head.psp', '  head: PPM + bottleneck (psp)'],
  ['head.laterals', '  head: lateral 1x1 convs'],
  ['head.fpn_convs', '  head: fpn_convs (3x3, 512->512)'],
  ['head.fpn_bottleneck.conv', '  head: fpn_bottleneck conv (3x3, 2048->512, stride 4)'],
  ['head.fpn_bottleneck.bn_relu', '  head: fpn_bottleneck BN + ReLU'],
  ['head.conv_seg', '  head: conv_seg (1x1, 512->150)'],
  ['head.other', '  head: top-down adds, resizes, concats'],
  ['head', 'decode head (UPerHead)'],
  ['resize_other', 'final resize to the input + glue'],
  ['total', 'total'],
];

/** Adds `resize_other` = total − backbone − head (the TS side cannot time the final resize on its own). */
function withResizeOther(p: Record<string, number>): Record<string, number> {
  return { ...p, resize_other: p.total! - p.backbone! - p.head! };
}

interface Profile {
  profile_s: Record<string, number>;
  profile_cpu_s: Record<string, number>;
}

/** Profiles `encodeDecode`: wraps instance methods from outside, keeps the fastest of `repeats` passes. */
function profileTs(model: EncoderDecoder, input: Tensor, o: Options): Profile & { missing: string[] } {
  const head = model.decode_head as UPerHead;
  if (!head.fpn_bottleneck || !head.lateral_convs) throw new Error('profile: the decode head is not a UPerHead');
  const timers = new Timers();
  const undo: (() => void)[] = [
    wrapMethod(model.backbone, 'forward', timers, 'backbone'),
    wrapMethod(head, 'forward', timers, 'head'),
    wrapMethod(head, 'pspForward', timers, 'head.psp'),
    ...head.lateral_convs.slice(0).map((c) => wrapMethod(c, 'forward', timers, 'head.laterals')),
    ...head.fpn_convs.slice(0).map((c) => wrapMethod(c, 'forward', timers, 'head.fpn_convs')),
    wrapMethod(head.fpn_bottleneck, 'forward', timers, 'head.fpn_bottleneck'),
    wrapMethod(head.fpn_bottleneck.conv, 'forward', timers, 'head.fpn_bottleneck.conv'),
    wrapMethod(head, 'clsSeg', timers, 'head.conv_seg'),
  ];
  const pass = (): void => { scope(() => noGrad(() => { model.encodeDecode(input); })); };
  try {
    for (let i = 0; i < o.warmup; i++) pass();
    let best: Profile | null = null;
    let names: string[] = [];
    for (let i = 0; i < o.profileRepeats; i++) {
      timers.clear();
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      pass();
      const wall = (performance.now() - t0) / 1000;
      const cpu = cpuSeconds(c0);
      names = [...timers.acc.keys()];
      // the least disturbed pass (smallest wall total): its sections add up to its total
      if (!best || wall < best.profile_s.total!) {
        best = { profile_s: withResizeOther(sections(timers.acc, wall)), profile_cpu_s: withResizeOther(sections(timers.cpu, cpu)) };
      }
    }
    const expected = ['backbone', 'head', 'head.psp', 'head.laterals', 'head.fpn_convs', 'head.fpn_bottleneck',
      'head.fpn_bottleneck.conv', 'head.conv_seg'];
    return { ...best!, missing: expected.filter((k) => !names.includes(k)) };
  } finally {
    for (const u of undo.reverse()) u();
  }
}

// ---- PyTorch side ------------------------------------------------------------------------------------------

const SCRIPT = 'torch_segmentor.py';

interface TorchResult extends Stats {
  size: number;
  torch_version: string;
  threads: number;
  num_parameters: number;
  env: Record<string, string | null>;
  e2e_median_s?: number;
  e2e_min_s?: number;
  e2e_max_s?: number;
  e2e_times_s?: number[];
  e2e_cpu_median_s?: number;
  e2e_cpu_times_s?: number[];
  profile_s?: Record<string, number>;
  profile_cpu_s?: Record<string, number>;
}

const runPython = (o: Options, script: string, args: string[]): string => runPythonScript(o.pythonExe, script, args);

function pythonTiming(o: Options, script: string, mode: 'bench' | 'profile'): TorchResult {
  const args = [`--${mode}`, '--preset', 'tiny', '--size', String(o.size),
    '--repeats', String(mode === 'bench' ? o.repeats : o.profileRepeats), '--warmup', String(o.warmup),
    '--threads', String(o.threads), '--json', ...(mode === 'bench' && o.e2e ? ['--end-to-end'] : [])];
  return JSON.parse(runPython(o, script, args)) as TorchResult;
}

/** The PyTorch segmentor's state dict against the TS model's: same keys, order and shapes. */
function compareStateDicts(o: Options, script: string, model: EncoderDecoder): { identical: boolean; tensors: number; detail: string } {
  const py = Object.entries(JSON.parse(runPython(o, script, ['--keys', '--preset', 'tiny'])) as Record<string, number[]>);
  const ts = [...model.stateDictShapes().entries()];
  const problems: string[] = [];
  const pyMap = new Map(py);
  const tsMap = new Map(ts);
  for (const [k, s] of ts) {
    const p = pyMap.get(k);
    if (!p) problems.push(`${k} only in TS`);
    else if (p.join('x') !== s.join('x')) problems.push(`${k}: TS [${s.join(', ')}] vs PyTorch [${p.join(', ')}]`);
  }
  for (const [k] of py) if (!tsMap.has(k)) problems.push(`${k} only in PyTorch`);
  const sameOrder = problems.length === 0 && ts.every(([k], i) => py[i]![0] === k);
  if (problems.length === 0 && !sameOrder) problems.push('same keys and shapes, different order');
  return { identical: problems.length === 0, tensors: ts.length, detail: problems.slice(0, 6).join('; ') };
}

// ---- output --------------------------------------------------------------------------------------------------

function e2eStats(t: TorchResult): Stats | null {
  if (t.e2e_times_s === undefined) return null;
  return stats(t.e2e_times_s, t.e2e_cpu_times_s ?? []);
}

// ---- memory of one photo (--photo) ----------------------------------------------------------------------------

/** A deterministic random W×H×3 uint8 photo. */
function randomPhoto(w: number, h: number): { data: Uint8Array; height: number; width: number } {
  const data = new Uint8Array(w * h * 3);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
  }
  return { data, height: h, width: w };
}

/** What one child process measured. */
interface PhotoRun {
  path: 'streamed' | 'full';
  width: number;
  height: number;
  flip: boolean;
  mode: string;
  threads: number;
  /** Peak resident set size of the child process (bytes), from getrusage. */
  peak_rss_bytes: number;
  /** Resident set size after building the model and the photo, before `segmentImage` (bytes). */
  rss_before_bytes: number;
  /** Wall time of the prediction (ms). */
  ms: number;
  /** Process CPU time of the prediction (s, all threads). */
  cpu_s: number;
  /** The network inputs of the copies. */
  inputs: string[];
  labels_sha256: string;
}

/** The child: builds the model, predicts one photo by one path, prints a {@link PhotoRun}. */
function photoChild(o: Options): void {
  const { w, h, flip, path } = o.child!;
  const config = loadConfig(o.config);
  manualSeed(0);
  const model = buildSegmentor(config);
  const image = randomPhoto(w, h);
  const before = process.memoryUsage().rss;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const r = path === 'streamed' ? segmentImage(model, image, config, { flip }) : segmentImageFullResolution(model, image, config, { flip });
  const wall = performance.now() - t0;
  const run: PhotoRun = {
    path, width: w, height: h, flip, mode: config.model.test_cfg.mode, threads: getNumThreads(),
    peak_rss_bytes: process.resourceUsage().maxRSS * 1024, rss_before_bytes: before, ms: wall, cpu_s: cpuSeconds(c0),
    inputs: r.copies.map((c) => `${c.inputWidth}x${c.inputHeight}`),
    labels_sha256: createHash('sha256').update(r.labels).digest('hex'),
  };
  console.log(JSON.stringify(run));
  model.dispose();
}

function runPhotoChild(o: Options, w: number, h: number, flip: boolean, path: 'streamed' | 'full'): PhotoRun | string {
  const args = [fileURLToPath(import.meta.url), '--photo-child', String(w), String(h), flip ? 'flip' : 'noflip', path,
    '--threads', String(o.threads), '--config', o.config, '--msda', o.msda];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
  if (r.status !== 0) {
    const why = r.signal ? `killed by ${r.signal}${r.signal === 'SIGKILL' ? ' (out of memory?)' : ''}` : `exit status ${r.status}`;
    return `${why}: ${(r.stderr || '').trim().split('\n').slice(-2).join(' ')}`;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as PhotoRun;
}

const gb = (b: number): string => (b / 2 ** 30).toFixed(2);

/** `--photo`: peak RSS and time of the streamed path, and of the full-resolution baseline where it fits. */
function photoBench(o: Options): void {
  const config = loadConfig(o.config);
  const classes = numClassesOf(config);
  const budget = Math.min(0.85 * totalmem(), 0.9 * freemem());
  const { log } = reporters(o.json);
  log(`Segmentation memory (${config.name}, ${config.model.test_cfg.mode} mode, ${classes} classes, random weights, ` +
    `CPU float32, ${o.threads} threads): peak RSS and time of one photo per child process. Machine: ` +
    `${gb(totalmem())} GiB total, ${gb(freemem())} GiB free; the full-resolution baseline runs when its estimate ` +
    `(before-RSS + ${classes}·H·W·4 bytes × 2, × 4 with flip) is under ${gb(budget)} GiB.`);
  const results: { photo: string; flip: boolean; streamed: PhotoRun | string; full: PhotoRun | string | null;
    full_estimate_bytes: number; labels_identical: boolean | null; peak_ratio: number | null; time_ratio: number | null }[] = [];
  for (const [w, h] of o.photos) {
    for (const flip of [false, true]) {
      const streamed = runPhotoChild(o, w, h, flip, 'streamed');
      const before = typeof streamed === 'string' ? 1.2 * 2 ** 30 : streamed.rss_before_bytes;
      const estimate = before + classes * w * h * 4 * (flip ? 4 : 2);
      let full: PhotoRun | string | null = null;
      if (!o.old) full = 'skipped (--no-old)';
      else if (estimate > budget) full = `skipped: estimated ${gb(estimate)} GiB does not fit`;
      else full = runPhotoChild(o, w, h, flip, 'full');
      const ok = typeof streamed !== 'string' && full !== null && typeof full !== 'string';
      const row = {
        photo: `${w}x${h}`, flip, streamed, full, full_estimate_bytes: estimate,
        labels_identical: ok ? (streamed as PhotoRun).labels_sha256 === (full as PhotoRun).labels_sha256 : null,
        peak_ratio: ok ? (full as PhotoRun).peak_rss_bytes / (streamed as PhotoRun).peak_rss_bytes : null,
        time_ratio: ok ? (streamed as PhotoRun).ms / (full as PhotoRun).ms : null,
      };
      results.push(row);
      const desc = (r: PhotoRun | string | null): string => (r === null ? '-' : typeof r === 'string' ? r
        : `peak ${gb(r.peak_rss_bytes)} GiB (before ${gb(r.rss_before_bytes)}), ${(r.ms / 1e3).toFixed(1)} s, CPU ${r.cpu_s.toFixed(1)} s, inputs ${r.inputs.join(',')}`);
      log(`  ${w}x${h}${flip ? ' flip' : ''}: streamed ${desc(streamed)}`);
      log(`  ${' '.repeat(`${w}x${h}${flip ? ' flip' : ''}`.length)}  full-resolution ${desc(full)}` +
        (row.labels_identical === null ? '' : `; labels ${row.labels_identical ? 'identical' : 'DIFFER'}, peak full/streamed ` +
          `${row.peak_ratio!.toFixed(2)}, time streamed/full ${row.time_ratio!.toFixed(2)}`));
    }
  }
  if (o.json) {
    console.log(JSON.stringify({ config: config.name, mode: config.model.test_cfg.mode, classes, threads: o.threads,
      total_memory_bytes: totalmem(), loadavg_end: loadavg(), results }));
  }
}

// ---- main --------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.threads) setNumThreads(o.threads);
  o.threads = getNumThreads();
  if (o.child) {
    setMsDeformAttnImpl(o.msda === 'auto' ? null : o.msda === 'native');
    photoChild(o);
    return;
  }
  if (o.photos.length) {
    photoBench(o);
    return;
  }
  const native = hasNativeMsDeformAttn();
  if (o.msda === 'native' && !native) throw new Error('--msda native: the native ms_deform_attn kernel is not built into this addon');
  setMsDeformAttnImpl(o.msda === 'auto' ? null : o.msda === 'native');
  const msda = o.msda === 'auto' ? (native ? 'native' : 'composition') : o.msda;
  const { script: python, problem } = pythonBaseline(o.pythonExe, SCRIPT);
  const env = openblasEnv();
  const load0 = loadavg();
  const info = backend().info();
  const { log, progress } = reporters(o.json);

  const config = benchConfig(o);
  manualSeed(0);
  const model = buildSegmentor(config);
  const input = randn([1, 3, o.size, o.size]).keep();
  const image = randomImage(o.size);
  const nParams = inferenceParameters(model);

  log(`ViT-Adapter + UperNet segmentor benchmark (${config.name}): whole mode, one ${o.size}x${o.size} image, batch 1, ` +
    `CPU float32, random weights, ${o.threads} threads, ${o.repeats} timed passes after ${o.warmup} warm-up, ` +
    `${o.rounds} round(s); libtorch ${info.torchVersion}`);
  log(`  TS model: ${(nParams / 1e6).toFixed(2)} M parameters without the auxiliary head (unused at inference); ` +
    `deformable attention: ${msda}${msda === 'native' ? ' kernel (PyTorch uses the grid_sample composition; --msda composition for the same algorithm)' : ' (grid_sample composition, as PyTorch)'}`);
  log(envLine(env));
  log(machineLine(load0, '  [busy: timings are noisy; compare the mins, use --rounds]'));
  log(`  PyTorch: ${problem ? `skipped: ${problem}` : `${o.pythonExe} ${python}`}`);

  let stateDict: ReturnType<typeof compareStateDicts> | null = null;
  if (python) {
    try {
      stateDict = compareStateDicts(o, python, model);
      log(`  state dicts (TS EncoderDecoder vs torch_segmentor.py, auxiliary head included): ` +
        (stateDict.identical ? `identical (${stateDict.tensors} tensors, same order and shapes)` : `DIFFER: ${stateDict.detail}`));
    } catch (e) {
      log(`  state-dict comparison failed: ${(e as Error).message}`);
    }
  }

  const tsED: Stats[] = [];
  const tsE2E: Stats[] = [];
  const pyRuns: TorchResult[] = [];
  let torchError: string | undefined;
  let labelsCheck = '';
  try {
    for (let round = 0; round < o.rounds; round++) {
      const tag = `round ${round + 1}/${o.rounds}`;
      progress(`  TS encodeDecode ${tag}...`);
      const ed = timeCalls(() => { scope(() => noGrad(() => { model.encodeDecode(input); })); }, o.repeats, o.warmup);
      tsED.push(ed);
      log(` median ${ms(ed.median_s)} ms, min ${ms(ed.min_s)} (CPU ${ms(ed.cpu_median_s)} ms)`);
      if (o.e2e) {
        progress(`  TS segmentImage ${tag}...`);
        let last: ReturnType<typeof segmentImage> | null = null;
        const e = timeCalls(() => { last = segmentImage(model, image, config, { mode: 'whole' }); }, o.repeats, o.warmup);
        tsE2E.push(e);
        const r = last as ReturnType<typeof segmentImage> | null;
        if (r) labelsCheck = `${r.height}x${r.width} labels, ${r.numClasses} classes, input ${r.copies.map((c) => `${c.inputHeight}x${c.inputWidth}`).join(',')}`;
        log(` median ${ms(e.median_s)} ms, min ${ms(e.min_s)} (CPU ${ms(e.cpu_median_s)} ms)`);
      }
      if (python && !torchError) {
        progress(`  PyTorch encode_decode${o.e2e ? ' + end to end' : ''} ${tag}...`);
        try {
          const r = pythonTiming(o, python, 'bench');
          pyRuns.push(r);
          const e = e2eStats(r);
          log(` median ${ms(r.median_s)} ms, min ${ms(r.min_s)} (CPU ${ms(r.cpu_median_s)} ms)` +
            (e ? `; end to end median ${ms(e.median_s)} ms, min ${ms(e.min_s)}` : '') +
            (r.threads !== o.threads ? `  [warning: PyTorch ran ${r.threads} threads, TS ${o.threads}]` : ''));
        } catch (e) {
          torchError = (e as Error).message;
          log(` failed: ${torchError}`);
        }
      }
    }

    let tsProfile: (Profile & { missing: string[] }) | null = null;
    let pyProfile: Profile | null = null;
    if (o.profile) {
      progress(`  profiling TS (${o.profileRepeats} passes)...`);
      tsProfile = profileTs(model, input, o);
      log(tsProfile.missing.length ? ` warning: sections never entered: ${tsProfile.missing.join(', ')} (src changed?)` : ' done');
      if (python && !torchError) {
        progress(`  profiling PyTorch (${o.profileRepeats} passes)...`);
        try {
          const p = pythonTiming(o, python, 'profile');
          pyProfile = { profile_s: withResizeOther(p.profile_s!), profile_cpu_s: withResizeOther(p.profile_cpu_s!) };
          log(' done');
        } catch (e) {
          log(` failed: ${(e as Error).message}`);
        }
      }
    }

    const ts = { encode_decode: pool(tsED), segment_image: tsE2E.length ? pool(tsE2E) : null };
    let torch: (TorchResult & { end_to_end: Stats | null }) | null = null;
    if (pyRuns.length) {
      const e2es = pyRuns.map(e2eStats).filter((s): s is Stats => s !== null);
      torch = { ...pyRuns[0]!, ...pool(pyRuns), end_to_end: e2es.length ? pool(e2es) : null };
    }
    const ratios = {
      encode_decode: ratio(ts.encode_decode, torch),
      end_to_end: ts.segment_image && torch?.end_to_end ? ratio(ts.segment_image, torch.end_to_end) : null,
    };
    const load1 = loadavg();

    if (o.json) {
      console.log(JSON.stringify({
        config: config.name, mode: 'whole', size: o.size, threads: o.threads, repeats: o.repeats, warmup: o.warmup,
        rounds: o.rounds, libtorch: info.torchVersion, msda, native_msda: native, env, cpus: availableParallelism(),
        loadavg_start: load0, loadavg_end: load1, num_parameters: nParams, python: python ? o.pythonExe : null,
        python_problem: problem, torch_error: torchError ?? null, state_dict: stateDict, ts, torch, ratios,
        profile: o.profile ? { ts: tsProfile, torch: pyProfile } : null,
      }));
      return;
    }

    console.log(`\nms per ${o.size}x${o.size} image, whole mode (pooled over ${o.rounds} round(s) of ${o.repeats} passes). ` +
      `TS/PyTorch = TS median / PyTorch median; mins ratio = TS min / PyTorch min (the quietest passes: the least ` +
      `sensitive to other load); CPU = median process CPU time per pass, all threads.`);
    const rows: string[][] = [['what', 'side', 'median ms', 'min ms', 'max ms', 'CPU ms', 'TS/PyTorch', 'mins ratio', 'CPU ratio']];
    const row = (what: string, side: string, s: Stats | null, q: Ratio | null, note = ''): void => {
      if (!s) { rows.push([what, side, '-', '-', '-', '-', '-', '-', note]); return; }
      rows.push([what, side, ms(s.median_s), ms(s.min_s), ms(s.max_s), ms(s.cpu_median_s),
        q ? q.median.toFixed(3) : '', q ? q.min.toFixed(3) : '', q ? q.cpu.toFixed(3) : '']);
    };
    row('encodeDecode (forward)', 'TS', ts.encode_decode, ratios.encode_decode);
    row('encode_decode (forward)', 'PyTorch', torch, null, torchError ? 'failed' : (problem ?? ''));
    if (ts.segment_image) {
      row('segmentImage (end to end)', 'TS', ts.segment_image, ratios.end_to_end);
      row('normalise+forward+argmax', 'PyTorch', torch?.end_to_end ?? null, null, torchError ? 'failed' : (problem ?? ''));
    }
    printRows(rows, '  ', 2);
    if (labelsCheck) console.log(`  segmentImage output: ${labelsCheck}`);
    if (torchError) console.log(`  PyTorch failed: ${torchError}`);

    if (tsProfile) {
      const t = tsProfile.profile_s;
      const tc = tsProfile.profile_cpu_s;
      const p = pyProfile?.profile_s;
      const pc = pyProfile?.profile_cpu_s;
      console.log(`\n  split of one encodeDecode (each side's fastest of ${o.profileRepeats} profiled passes; wall ms, ` +
        `% of the wall total, process CPU ms of all threads)`);
      const prow: string[][] = [['section', 'TS ms', 'TS %', 'TS CPU ms', ...(p && pc ? ['PyTorch ms', 'PyTorch %', 'PyTorch CPU ms', 'TS/PyTorch'] : [])]];
      for (const [k, label] of PROFILE_ROWS) {
        const r = [label, ms(t[k]), (100 * t[k]! / t.total!).toFixed(1), ms(tc[k])];
        if (p && pc) r.push(ms(p[k]), (100 * p[k]! / p.total!).toFixed(1), ms(pc[k]), (t[k]! / p[k]!).toFixed(2));
        prow.push(r);
      }
      printRows(prow, '    ', 1);
    }
    console.log(loadEndLine(load1));
  } finally {
    setMsDeformAttnImpl(null);
    model.dispose();
    input.dispose();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
