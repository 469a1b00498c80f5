/**
 * A generated dataset in the `custom` layout with a train/val split, as `vit-adapter synth` writes it:
 * `<dir>/img_dir/{train,val}/synthetic_NNNN.png` (RGB) and `<dir>/ann_dir/{train,val}/synthetic_NNNN.png` (palette
 * PNG of class ids, `SYNTHETIC_CLASSES`). Scene i uses the seed `sampleSeed(seed, i)`; the first `count - val` scenes
 * are the train split, the rest the val split.
 */
import { join } from 'node:path';
import { writeLabelPng, writeRgbPng } from '../../io/image.js';
import { SYNTHETIC_PALETTE, generateScene, sampleSeed } from './synthetic.js';

/** Options of {@link writeSyntheticSplits}. */
export interface SyntheticSplitOptions {
  /** Total scenes (train + val). */
  count: number;
  /** Scene side in pixels. */
  size: number;
  seed: number;
  /** Val scenes (default: 20 % of count, at least 1). */
  val?: number;
  /** Called after each scene. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link writeSyntheticSplits} wrote. */
export interface SyntheticSplitResult {
  dir: string;
  train: number;
  val: number;
  size: number;
  seed: number;
}

/** Writes the dataset (see the module notes). */
export async function writeSyntheticSplits(dir: string, o: SyntheticSplitOptions): Promise<SyntheticSplitResult> {
  const { count, size, seed } = o;
  if (!Number.isInteger(count) || count < 2) throw new RangeError(`synth: count must be an integer ≥ 2 (train + val), got ${count}`);
  if (!Number.isInteger(size) || size < 32 || size > 4096) throw new RangeError(`synth: size must be an integer in 32..4096, got ${size}`);
  if (!Number.isSafeInteger(seed)) throw new RangeError(`synth: seed must be an integer, got ${seed}`);
  const val = o.val ?? Math.max(1, Math.round(count * 0.2));
  if (!Number.isInteger(val) || val < 1 || val >= count) throw new RangeError(`synth: val must be in 1..${count - 1}, got ${val}`);
  const train = count - val;
  for (let i = 0; i < count; i++) {
    const split = i < train ? 'train' : 'val';
    const name = `synthetic_${String(i).padStart(4, '0')}.png`;
    const scene = generateScene({ width: size, height: size, seed: sampleSeed(seed, i) });
    await writeRgbPng(join(dir, 'img_dir', split, name), scene.image, size, size);
    await writeLabelPng(join(dir, 'ann_dir', split, name), scene.semantic, size, size, SYNTHETIC_PALETTE);
    o.onProgress?.(i + 1, count);
  }
  return { dir, train, val, size, seed };
}
