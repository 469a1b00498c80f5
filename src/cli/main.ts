/** The `vit-adapter` command line. Run `vit-adapter help` for the commands. */
import { dirname } from 'node:path';
import { backend } from '../engine/index.js';
import { ensureDir } from '../io/files.js';
import { convertToSafetensors, inspectFile } from '../io/inspect.js';
import { checkReference } from '../tools/reference.js';
import { benchBackbone } from '../tools/bench-backbone.js';
import { type OptionSpec, type Parsed, UsageError, intOption, parseArgs } from './args.js';
import { installPipeGuard, print, warn } from './output.js';
import { applyThreads, deviceOption, loadedBlas } from './runtime.js';
import { segmentationCommands } from './segment.js';
import { cocoCommands } from './coco.js';
import { trainingCommands } from './train.js';
import { withDetection } from './detect.js';

interface Command {
  summary: string;
  usage: string;
  options: OptionSpec;
  run(p: Parsed): Promise<number> | number;
}

const threadsOption = applyThreads;

const commands: Record<string, Command> = {
  info: {
    summary: 'libtorch version, threads, BLAS and devices',
    usage: 'vit-adapter info [--json]',
    options: { json: 'boolean' },
    run(p) {
      const i = backend().info();
      const torchBlasInfo = /BLAS_INFO=([^,]+)/.exec(i.config)?.[1] ?? 'unknown';
      const blas = loadedBlas();
      const out = {
        torch_version: i.torchVersion, threads: i.threads, interop_threads: i.interopThreads, cuda_available: i.cuda,
        cuda_devices: i.cudaDevices, built_with_cuda: i.builtWithCuda,
        // What the process really uses (mapped shared libraries) vs what libtorch says it was built against.
        blas: blas.name, blas_libraries: blas.libraries, torch_blas_info: torchBlasInfo,
        native_ms_deform_attn: backend().findOp('vit_adapter::ms_deform_attn', '', true) !== null,
        openblas_coretype: process.env.OPENBLAS_CORETYPE ?? null,
      };
      if (p.options.json) print(JSON.stringify(out));
      else for (const [k, v] of Object.entries(out)) print(`${k.padEnd(22)} ${Array.isArray(v) ? v.join(' ') || '-' : String(v)}`);
      return 0;
    },
  },
  inspect: {
    summary: 'list the tensors of a checkpoint (safetensors, PyTorch .pth, .npz)',
    usage: 'vit-adapter inspect <file> [--json] [--state-dict-key KEY]',
    options: { json: 'boolean', 'state-dict-key': 'string' },
    run(p) {
      const file = p.positionals[0];
      if (!file || p.positionals.length > 1) throw new UsageError('inspect: give exactly one file');
      const key = p.options['state-dict-key'] as string | undefined;
      const r = inspectFile(file, key ? { stateDictKey: key } : {});
      if (p.options.json) {
        print(JSON.stringify(r));
        return 0;
      }
      print(`format: ${r.format}`);
      print(`tensors: ${r.tensors.length}, parameters: ${r.num_parameters.toLocaleString('en-US')}`);
      for (const t of r.tensors) print(`  ${t.name.padEnd(60)} ${t.dtype.padEnd(9)} [${t.shape.join(', ')}]`);
      const meta = JSON.stringify(r.metadata);
      if (meta !== '{}') print(`metadata: ${meta.length > 2000 ? `${meta.slice(0, 2000)}…` : meta}`);
      return 0;
    },
  },
  convert: {
    summary: 'convert a checkpoint to safetensors (optionally selecting/stripping key prefixes)',
    usage: 'vit-adapter convert <in> <out.safetensors> [--prefix backbone.] [--strip module.]... [--json]',
    options: { prefix: 'string', strip: 'list', json: 'boolean' },
    run(p) {
      const [src, dst] = p.positionals;
      if (!src || !dst || p.positionals.length !== 2) throw new UsageError('convert: give <in> and <out.safetensors>');
      ensureDir(dirname(dst));
      const r = convertToSafetensors(src, dst, {
        prefix: p.options.prefix as string | undefined, strip: (p.options.strip as string[] | undefined) ?? [],
      });
      if (p.options.json) print(JSON.stringify(r));
      else print(`wrote ${dst}: ${JSON.stringify(r)}`);
      return 0;
    },
  },
  'check-reference': {
    summary: 'compare with a reference fixture (backbone DIR/NAME, head DIR/NAME, or msda_*.safetensors)',
    usage: 'vit-adapter check-reference <DIR/NAME | msda_*.safetensors>... [--device cpu|cuda] [--dtype float32|float64] [--json]',
    options: { device: 'string', dtype: 'string', json: 'boolean', threads: 'number' },
    run(p) {
      threadsOption(p);
      if (p.positionals.length === 0) throw new UsageError('check-reference: give at least one fixture');
      const device = deviceOption(p);
      const dtype = (p.options.dtype as string | undefined) ?? 'float32';
      if (dtype !== 'float32' && dtype !== 'float64') throw new UsageError('--dtype must be float32 or float64');
      let failed = 0;
      const all: unknown[] = [];
      for (const target of p.positionals) {
        const rows = checkReference(target, { device, dtype });
        for (const r of rows) {
          if (!r.ok) failed++;
          if (!p.options.json) print(`${r.name} max_rel_err=${r.maxRelErr.toExponential(2)} ${r.ok ? 'ok' : 'FAIL'}`);
        }
        all.push({ target, rows });
      }
      if (p.options.json) print(JSON.stringify({ parity: failed === 0 ? 'ok' : 'FAIL', failed, fixtures: all }));
      else print(failed === 0 ? 'parity: ok' : `parity: FAIL (${failed} tensors)`);
      return failed === 0 ? 0 : 1;
    },
  },
  bench: {
    summary: 'time a model: bench backbone --preset tiny|small|base|large|beit-base|beit-large --size 512',
    usage: 'vit-adapter bench backbone --preset tiny|small|base|large|beit-base|beit-large [--size 512] [--batch 1] [--device cpu|cuda] ' +
      '[--repeats 5] [--warmup 1] [--msda auto|native|composition] [--threads N] [--json]',
    options: {
      preset: 'string', size: 'number', batch: 'number', device: 'string', repeats: 'number', warmup: 'number',
      msda: 'string', threads: 'number', json: 'boolean',
    },
    async run(p) {
      if (p.positionals[0] !== 'backbone' || p.positionals.length !== 1) throw new UsageError('bench: the only target is "backbone"');
      threadsOption(p);
      const msda = (p.options.msda as string | undefined) ?? 'auto';
      if (!['auto', 'native', 'composition'].includes(msda)) throw new UsageError('--msda must be auto, native or composition');
      const r = await benchBackbone({
        preset: (p.options.preset as string | undefined) ?? 'tiny', size: intOption(p, 'size', 512, 32),
        batch: intOption(p, 'batch', 1), device: deviceOption(p),
        repeats: intOption(p, 'repeats', 5), warmup: intOption(p, 'warmup', 1, 0), msda: msda as 'auto',
      });
      if (p.options.json) print(JSON.stringify(r));
      else {
        print(`${r.preset.startsWith('beit') ? `BEiT-Adapter (${r.preset})` : `ViT-Adapter-${r.preset}`} ${r.size}×${r.size} batch ${r.batch} on ${r.device} (${r.threads} threads, libtorch ${r.torch_version}, msda ${r.msda}, ${(r.num_parameters / 1e6).toFixed(2)} M params)`);
        print(`median ${r.median_s.toFixed(3)} s  min ${r.min_s.toFixed(3)} s  max ${r.max_s.toFixed(3)} s  (${r.times_s.length} runs)`);
      }
      return 0;
    },
  },
  ...segmentationCommands,
  ...trainingCommands,
  ...withDetection(segmentationCommands, trainingCommands),
  ...cocoCommands,
};

function help(): void {
  print('vit-adapter: ViT-Adapter dense prediction on libtorch\n\nCommands:');
  for (const [name, c] of Object.entries(commands)) print(`  ${name.padEnd(16)} ${c.summary}\n  ${''.padEnd(16)} ${c.usage}`);
  print('\nRun "vit-adapter <command> --help" for one command.');
}

/** Runs the CLI with the given arguments and returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  installPipeGuard();
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    help();
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    warn(`vit-adapter: unknown command ${JSON.stringify(name)}`);
    help();
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    print(`${cmd.summary}\nusage: ${cmd.usage}`);
    return 0;
  }
  try {
    return await cmd.run(parseArgs(rest, cmd.options, name));
  } catch (e) {
    const err = e as Error;
    warn(`vit-adapter ${name}: ${err.message}`);
    return err instanceof UsageError ? 2 : 1;
  }
}
