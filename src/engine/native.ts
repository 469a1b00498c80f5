/** Loads the libtorch Node-API addon and exposes it as a {@link Backend}. */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import type { Backend } from './backend.js';

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('vit-adapter: cannot find the package root (with native/) above ' + import.meta.url);
    dir = up;
  }
}

let loaded: Backend | null = null;

/** The libtorch backend (the addon is loaded on first use). */
export function libtorchBackend(): Backend {
  if (loaded) return loaded;
  const file = process.env.VIT_ADAPTER_ADDON ?? join(packageRoot(), 'native/build/Release/vit_adapter.node');
  if (!existsSync(file)) {
    throw new Error(`vit-adapter: native addon not built (${file} missing). Run "bash scripts/setup.sh" ` +
      '(or "npm run build:native" when libtorch is already installed).');
  }
  const require = createRequire(import.meta.url);
  const addon = require(file) as Omit<Backend, 'name'>;
  loaded = Object.assign(Object.create(null), addon, { name: 'libtorch' }) as Backend;
  // libtorch's default can be 1 thread under some OpenMP setups: use the cores we have unless the user chose.
  if (!process.env.OMP_NUM_THREADS) loaded.setNumThreads(availableParallelism());
  return loaded;
}
