/**
 * Semantic-segmentation dataset descriptions and file listing, following mmseg's
 * `CustomDataset` / `BaseSegDataset` conventions:
 *
 * - images are found by scanning `img_dir` recursively for files ending in `img_suffix`
 *   (hidden files skipped, like `mmcv.scandir`), sorted by relative path; or, when a split file
 *   is given, one name per line (relative to `img_dir`, without suffix);
 * - the annotation of `<name><img_suffix>` is `<ann_dir>/<name><seg_map_suffix>`;
 * - relative `img_dir`, `ann_dir` and `split` are joined to `data_root` when one is given.
 *
 * Unlike mmseg, a missing annotation is reported up front instead of failing mid-evaluation.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { readRegularFile } from '../../io/files.js';
import { ADE20K_CLASSES, ADE20K_PALETTE, generatePalette, validatePalette, type Palette } from './classes.js';

/** A fully resolved dataset description. */
export interface SegDatasetConfig {
  /** Name used in messages and reports. */
  name: string;
  /** Folder holding the images (absolute, or relative to the working directory). */
  imgDir: string;
  /** Folder holding the label PNGs, or null for an unlabelled set (inference only). */
  annDir: string | null;
  /** Image file suffix, e.g. '.jpg'. */
  imgSuffix: string;
  /** Label file suffix, e.g. '.png'. */
  segMapSuffix: string;
  /** Class names; index = class id after any zero-label reduction. */
  classes: readonly string[];
  /** One RGB colour per class. */
  palette: Palette;
  /** Whether raw label 0 means "ignore" and other labels are shifted down by one (ADE20K). */
  reduceZeroLabel: boolean;
  /** Label value ignored by the metrics (255 in mmseg). */
  ignoreIndex: number;
  /** Optional split file: one image name per line, relative to imgDir, without suffix. */
  split: string | null;
}

/** One image of a dataset. */
export interface SegSample {
  /** Image file path. */
  image: string;
  /** Label PNG path, or null when the dataset has no annotation folder. */
  label: string | null;
  /** Image path relative to imgDir, without the suffix (posix separators). */
  name: string;
}

/** Error for a dataset whose folders or files are missing or inconsistent. */
export class DatasetError extends Error {
  /**
   * @param dataset dataset name
   * @param problem what is wrong
   */
  constructor(dataset: string, problem: string) {
    super(`dataset '${dataset}': ${problem}`);
    this.name = 'DatasetError';
  }
}

/** Splits of ADE20K (ADEChallengeData2016) as laid out on disk. */
export type Ade20kSplit = 'training' | 'validation';

/**
 * ADE20K (ADEChallengeData2016) as mmseg's `ADE20KDataset`: `<root>/images/<split>/*.jpg`,
 * `<root>/annotations/<split>/*.png`, `reduce_zero_label=True`, 150 classes.
 *
 * @param root the `ADEChallengeData2016` folder
 * @param split 'validation' (default) or 'training'
 */
export function ade20kDataset(root: string, split: Ade20kSplit = 'validation'): SegDatasetConfig {
  return {
    name: `ade20k-${split}`,
    imgDir: join(root, 'images', split),
    annDir: join(root, 'annotations', split),
    imgSuffix: '.jpg',
    segMapSuffix: '.png',
    classes: ADE20K_CLASSES,
    palette: ADE20K_PALETTE,
    reduceZeroLabel: true,
    ignoreIndex: 255,
    split: null,
  };
}

/** Options of {@link customDataset}; names follow mmseg's `CustomDataset` arguments. */
export interface CustomDatasetOptions {
  /** Name used in messages (default 'custom'). */
  name?: string;
  /** Prefix for relative imgDir / annDir / split. */
  dataRoot?: string;
  /** Image folder (`img_dir`). */
  imgDir: string;
  /** Label folder (`ann_dir`); omit or null for unlabelled data. */
  annDir?: string | null;
  /** `img_suffix` (default '.jpg'). */
  imgSuffix?: string;
  /** `seg_map_suffix` (default '.png'). */
  segMapSuffix?: string;
  /** Class names. */
  classes: readonly string[];
  /** Colours; default: mmseg's seeded random palette for this many classes. */
  palette?: Palette;
  /** `reduce_zero_label` (default false). */
  reduceZeroLabel?: boolean;
  /** `ignore_index` (default 255). */
  ignoreIndex?: number;
  /** Split file (`split`), one name per line. */
  split?: string | null;
}

/**
 * A generic dataset (mmseg `CustomDataset`): fills mmseg's defaults and resolves relative
 * folders against `dataRoot`.
 *
 * @param opts folders, suffixes, classes, palette and label options
 */
export function customDataset(opts: CustomDatasetOptions): SegDatasetConfig {
  const name = opts.name ?? 'custom';
  if (opts.classes.length === 0) throw new DatasetError(name, 'classes must not be empty');
  const palette = opts.palette ?? generatePalette(opts.classes.length);
  try {
    validatePalette(palette, opts.classes.length);
  } catch (e) {
    throw new DatasetError(name, (e as Error).message);
  }
  const under = (p: string): string => (opts.dataRoot !== undefined && !isAbsolute(p) ? join(opts.dataRoot, p) : p);
  return {
    name,
    imgDir: under(opts.imgDir),
    annDir: opts.annDir === undefined || opts.annDir === null ? null : under(opts.annDir),
    imgSuffix: opts.imgSuffix ?? '.jpg',
    segMapSuffix: opts.segMapSuffix ?? '.png',
    classes: opts.classes,
    palette,
    reduceZeroLabel: opts.reduceZeroLabel ?? false,
    ignoreIndex: opts.ignoreIndex ?? 255,
    split: opts.split === undefined || opts.split === null ? null : under(opts.split),
  };
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** Recursive scan like `mmcv.scandir(dir, suffix, recursive=True)`; returns posix relative paths. */
function scanFiles(root: string, suffix: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = join(dir, entry.name);
      const relPath = rel === '' ? entry.name : `${rel}/${entry.name}`;
      // Follow symlinks the way os.path.isdir / DirEntry.is_file do.
      const file = entry.isFile() || (entry.isSymbolicLink() && isFile(full));
      if (!entry.name.startsWith('.') && file) {
        if (relPath.endsWith(suffix)) out.push(relPath);
      } else if (entry.isDirectory() || (entry.isSymbolicLink() && isDir(full))) {
        walk(full, relPath);
      }
    }
  };
  walk(root, '');
  return out;
}

const byCodePoint = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * List a dataset's images with their label files, sorted by name (or in split-file order).
 * Throws {@link DatasetError} when the image or annotation folder or the split file is missing,
 * when no image is found, when a split entry has no image, or when any image lacks its label
 * (the message names how many and the first few).
 *
 * @param config dataset description (see {@link ade20kDataset}, {@link customDataset})
 */
export function listSamples(config: SegDatasetConfig): SegSample[] {
  const { name: ds, imgDir, annDir, imgSuffix, segMapSuffix } = config;
  if (!isDir(imgDir)) throw new DatasetError(ds, `image folder not found: ${resolve(imgDir)}`);
  if (annDir !== null && !isDir(annDir)) throw new DatasetError(ds, `annotation folder not found: ${resolve(annDir)}`);
  let names: string[];
  if (config.split !== null) {
    if (!existsSync(config.split)) throw new DatasetError(ds, `split file not found: ${resolve(config.split)}`);
    let text: string;
    try {
      text = new TextDecoder().decode(readRegularFile(config.split, { maxBytes: 256 * 2 ** 20, what: 'split file' }));
    } catch (e) {
      throw new DatasetError(ds, (e as Error).message);
    }
    names = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
    const missing = names.filter((n) => !isFile(join(imgDir, n + imgSuffix)));
    if (missing.length > 0) {
      throw new DatasetError(
        ds,
        `${missing.length} of ${names.length} names in split file ${config.split} have no image in ${imgDir} ` +
          `(first: ${missing.slice(0, 3).map((n) => n + imgSuffix).join(', ')})`,
      );
    }
  } else {
    names = scanFiles(imgDir, imgSuffix)
      .map((rel) => rel.slice(0, rel.length - imgSuffix.length))
      .sort(byCodePoint);
  }
  if (names.length === 0) {
    throw new DatasetError(ds, `no images ending in '${imgSuffix}' found in ${resolve(imgDir)}`);
  }
  const nativePath = (n: string): string => (sep === '/' ? n : n.split('/').join(sep));
  const samples: SegSample[] = names.map((n) => ({
    image: join(imgDir, nativePath(n) + imgSuffix),
    label: annDir === null ? null : join(annDir, nativePath(n) + segMapSuffix),
    name: n,
  }));
  if (annDir !== null) {
    const missing = samples.filter((s) => !isFile(s.label!));
    if (missing.length > 0) {
      throw new DatasetError(
        ds,
        `${missing.length} of ${samples.length} images have no annotation in ${resolve(annDir)} ` +
          `(expected e.g. ${missing.slice(0, 3).map((s) => s.label).join(', ')})`,
      );
    }
  }
  return samples;
}
