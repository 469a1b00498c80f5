import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '../../src/io/checkpoint.js';
import { fixtureOptions, fixturesDir } from './helpers.js';

const FILE = 'vit_adapter_tiny.weights.safetensors';

test('reading every tensor one at a time keeps peak RSS below ~3x the file size', fixtureOptions(FILE), () => {
  const path = join(fixturesDir()!, FILE);
  const size = statSync(path).size;
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  let bytes = 0;
  let checksum = 0;
  const ck = loadCheckpoint(path);
  try {
    for (const t of ck.tensors.values()) {
      const data = t.read();
      bytes += data.byteLength;
      checksum = (checksum + data[data.length >> 1]!) | 0; // touch the data
      const rss = process.memoryUsage().rss;
      if (rss > peak) peak = rss;
    }
  } finally {
    ck.close();
  }
  gc?.();
  const after = process.memoryUsage().rss;
  assert.ok(bytes > 0.95 * size, `read ${bytes} of ${size} bytes`);
  assert.ok(Number.isInteger(checksum));
  const growth = peak - before;
  assert.ok(
    growth < 3 * size,
    `peak RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB for a ${(size / 2 ** 20).toFixed(1)} MiB file `
    + `(before ${(before / 2 ** 20).toFixed(1)} MiB, after ${(after / 2 ** 20).toFixed(1)} MiB)`,
  );
});
