#!/usr/bin/env node
// Builds the addon (native/build/Release/vit_adapter.node) against the libtorch found by libtorch-config.mjs.
// Skips the build when the addon is newer than every source and the libtorch choice is unchanged.
// With a CUDA libtorch, every native/src/*.cu is compiled by nvcc first and linked in.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { findLibtorch } from './libtorch-config.mjs';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const nativeDir = join(root, 'native');
const out = join(nativeDir, 'build/Release/vit_adapter.node');
const stamp = join(nativeDir, 'build/libtorch.json');
const force = process.argv.includes('--force');

const cfg = findLibtorch();
if (!cfg) {
  console.error('build-native: libtorch not found. Set LIBTORCH to a libtorch folder, install a Python torch, ' +
    'or run scripts/setup.sh (installs Debian libtorch-dev).');
  process.exit(1);
}
const cfgText = JSON.stringify(cfg);
const sources = [...readdirSync(join(nativeDir, 'src')).map((f) => join(nativeDir, 'src', f)), join(nativeDir, 'binding.gyp'),
  join(root, 'scripts/libtorch-config.mjs')];
const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
const upToDate = existsSync(out) && statSync(out).mtimeMs >= newest && existsSync(stamp) && readFileSync(stamp, 'utf8') === cfgText;
if (upToDate && !force) {
  console.log(`build-native: up to date (${cfg.source})`);
  process.exit(0);
}
console.log(`build-native: libtorch from ${cfg.source}${cfg.cuda ? ' (CUDA)' : ''}`);
mkdirSync(join(nativeDir, 'build'), { recursive: true });
if (cfg.cuda) {
  const nvcc = process.env.NVCC ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : 'nvcc');
  const arch = (process.env.CUDA_ARCHS ?? '80,90').split(',').flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]);
  // every native/src/*.cu (msda_cuda.cu, det_cuda.cu); libtorch-config.mjs links the matching build/*.o
  for (const cu of readdirSync(join(nativeDir, 'src')).filter((f) => f.endsWith('.cu')).sort()) {
    console.log(`build-native: nvcc ${cu}`);
    execFileSync(nvcc, ['-std=c++17', '-O3', '-Xcompiler', '-fPIC', ...arch, '-c', join(nativeDir, 'src', cu),
      '-o', join(nativeDir, 'build', cu.replace(/\.cu$/, '.o'))], { stdio: 'inherit' });
  }
}
const require = createRequire(import.meta.url);
const gyp = join(dirname(require.resolve('node-gyp/package.json')), 'bin/node-gyp.js');
const jobs = String(Math.max(1, cpus().length));
const needConfigure = force || !existsSync(join(nativeDir, 'build/Makefile')) || !existsSync(stamp) || readFileSync(stamp, 'utf8') !== cfgText;
// Build against the headers of the running Node (no download): $npm_config_nodedir, else <prefix>/include/node.
const prefix = dirname(dirname(process.execPath));
const nodedir = process.env.npm_config_nodedir ?? (existsSync(join(prefix, 'include/node/node_api.h')) ? prefix : null);
const dirArgs = nodedir ? [`--nodedir=${nodedir}`] : [];
if (needConfigure) execFileSync(process.execPath, [gyp, 'configure', '--loglevel=warn', ...dirArgs], { cwd: nativeDir, stdio: 'inherit' });
execFileSync(process.execPath, [gyp, 'build', '--loglevel=warn', '-j', jobs, ...dirArgs], { cwd: nativeDir, stdio: 'inherit' });
writeFileSync(stamp, cfgText);
console.log(`build-native: built ${out}`);
