/**
 * Image and label-map file I/O on plain typed arrays.
 *
 * - Photos are decoded with sharp (libvips) to 8-bit RGB, HWC, row-major.
 * - Label maps are decoded with fast-png, which keeps palette *indices* (sharp would expand a
 *   palette PNG to colours, destroying the class ids), and are written as indexed PNGs so that
 *   the class ids survive and the file still looks right in an image viewer.
 *
 * Parity notes against mmseg/mmcv (`LoadImageFromFile` → `mmcv.imfrombytes(flag='color', backend='cv2')`):
 * - EXIF orientation IS applied: OpenCV's `IMREAD_COLOR` honours the EXIF Orientation tag unless
 *   `IMREAD_IGNORE_ORIENTATION` is set (OpenCV ≥ 3.1), and mmcv's 'color' flag does not set it.
 *   We call sharp's `.rotate()` without arguments, which does the same.
 * - mmcv returns BGR; we return RGB. Channel order is handled in `normalizeToCHW` (pipeline-image.ts).
 * - Alpha is dropped (not composited), grey images are replicated to 3 channels, 16-bit images
 *   are reduced to 8 bits — as `IMREAD_COLOR` does.
 * - JPEG decoding: both use libjpeg-turbo-derived decoders with default (islow IDCT, fancy
 *   upsampling) settings; on the JPEGs we compared (opencv-python 4.14 vs sharp 0.35) the pixels
 *   were identical, as were EXIF-rotated JPEG/PNG and 16-bit PNG results. Other library versions
 *   may differ by ±1. sharp converts images that embed a non-sRGB ICC profile to sRGB, while
 *   OpenCV ignores ICC profiles.
 *
 * Label maps (`LoadAnnotations`, `imdecode_backend='pillow'`, flag 'unchanged'): palette PNGs
 * give indices, grey PNGs give grey values (1-bit → 0/1, 2/4-bit scaled to 0..255 like PIL's
 * 'L' mode), 16-bit grey values are accepted only if ≤ 255 (mmseg would silently wrap them with
 * `astype(np.uint8)`; we refuse instead). Colour label PNGs are refused.
 */
import { dirname } from 'node:path';
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { decode as decodePngRaw, encode as encodePngRaw, hasPngSignature } from 'fast-png';
import { FileAccessError, ensureDir, readRegularFile, readStdinBytes, writeFileAtomic } from './files.js';

/** An 8-bit RGB image in HWC layout (row-major, 3 bytes per pixel). */
export interface RgbImage {
  /** Pixel bytes: `data[(y * width + x) * 3 + c]`, c = 0 R, 1 G, 2 B. */
  data: Uint8Array;
  /** Rows. */
  height: number;
  /** Columns. */
  width: number;
  /** Always 3. */
  channels: 3;
  /**
   * Decoder warnings (e.g. a corrupt or truncated JPEG that was decoded anyway, with visible artefacts); absent
   * when the file decoded cleanly.
   */
  warnings?: string[];
}

/** Default limit on the size of an image file: 512 MiB. */
export const DEFAULT_MAX_IMAGE_BYTES = 512 * 1024 * 1024;
/** Default limit on the pixel count (width × height from the header) of an image: 250 megapixels. */
export const DEFAULT_MAX_IMAGE_PIXELS = 250_000_000;

/**
 * Limits applied before an image is decoded: the file size and the pixel count read from the header (so a
 * "decompression bomb" is refused before any pixel memory is allocated).
 */
export interface ImageLimits {
  /** Largest file in bytes (default {@link DEFAULT_MAX_IMAGE_BYTES}). */
  maxBytes?: number;
  /** Largest width × height (default {@link DEFAULT_MAX_IMAGE_PIXELS}). */
  maxPixels?: number;
}

/** A single-channel map of class indices, row-major. */
export interface LabelMap {
  /** `data[y * width + x]` is the class id (or ignore value) of that pixel. */
  data: Uint8Array;
  /** Rows. */
  height: number;
  /** Columns. */
  width: number;
}

/** Palette for label PNGs: entry i is the RGB colour of index i. */
export type LabelPalette = readonly (readonly [number, number, number])[];

/** Error raised for an unreadable or unsuitable image file; names the file and the problem. */
export class ImageIoError extends Error {
  /** The file (or a description of the in-memory source). */
  readonly file: string;
  /** What went wrong, without the file name. */
  readonly problem: string;

  /**
   * @param file file path or source description
   * @param problem what went wrong
   * @param cause underlying error, if any
   */
  constructor(file: string, problem: string, cause?: unknown) {
    super(`${file}: ${problem}`, cause === undefined ? undefined : { cause });
    this.name = 'ImageIoError';
    this.file = file;
    this.problem = problem;
  }
}

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads a regular file within the size limit; devices, FIFOs and folders are refused (see `files.ts`). */
function readBytes(path: string, limits: ImageLimits, what: string): Uint8Array {
  try {
    return readRegularFile(path, { maxBytes: limits.maxBytes ?? DEFAULT_MAX_IMAGE_BYTES, what });
  } catch (e) {
    if (e instanceof FileAccessError) throw new ImageIoError(path, e.problem, e);
    throw new ImageIoError(path, `cannot read file (${errMsg(e)})`, e);
  }
}

const mp = (n: number): string => `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} megapixels`;

function checkPixels(source: string, width: number, height: number, limits: ImageLimits): void {
  const max = limits.maxPixels ?? DEFAULT_MAX_IMAGE_PIXELS;
  if (width * height > max) {
    throw new ImageIoError(source, `image is ${width}x${height} = ${mp(width * height)}, above the limit of ${mp(max)}`);
  }
}

/** The libvips warnings worth showing (drops the "read gave N warnings" summary and per-tile noise). */
function cleanWarnings(ws: readonly string[]): string[] {
  const out: string[] = [];
  for (const w of ws) {
    const t = w.trim();
    if (t === '' || /^read gave \d+ warnings?$/.test(t) || /^error in tile \d+ x \d+$/.test(t)) continue;
    if (!out.includes(t)) out.push(t);
  }
  return out;
}

function checkDims(source: string, height: number, width: number, length: number, channels: number): void {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height <= 0 || width <= 0) {
    throw new ImageIoError(source, `invalid size ${width}x${height}`);
  }
  if (length !== height * width * channels) {
    throw new ImageIoError(source, `data has ${length} values, expected ${width}x${height}x${channels} = ${height * width * channels}`);
  }
}

/**
 * Decode an encoded image (JPEG, PNG, or anything libvips reads) held in memory to 8-bit RGB HWC,
 * applying EXIF orientation (see the module notes).
 *
 * @param bytes encoded file contents
 * @param source name used in error messages
 * @param limits pixel-count limit, checked from the header before decoding (default 250 megapixels)
 */
export async function decodeImage(bytes: Uint8Array, source = '<buffer>', limits: ImageLimits = {}): Promise<RgbImage> {
  const maxPixels = limits.maxPixels ?? DEFAULT_MAX_IMAGE_PIXELS;
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new ImageIoError(source, `cannot decode image (${errMsg(e)})`, e);
  }
  if (meta.width !== undefined && meta.height !== undefined) checkPixels(source, meta.width, meta.height, limits);
  // Strict first (any decoder warning aborts), so that a clean file is decoded once and a damaged one is noticed;
  // a damaged file is then decoded leniently, as OpenCV would, and its warnings are reported with the pixels.
  const decode = async (failOn: 'warning' | 'error', warnings: string[]): Promise<{ data: Buffer; info: OutputInfo }> => {
    const s = sharp(bytes, { failOn, limitInputPixels: Math.max(1, Math.floor(maxPixels)) });
    s.on('warning', (w: string) => warnings.push(w));
    return s.rotate().removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  };
  const warnings: string[] = [];
  let out: { data: Buffer; info: OutputInfo };
  try {
    out = await decode('warning', warnings);
  } catch (strictErr) {
    const strict = errMsg(strictErr);
    try {
      out = await decode('error', warnings);
    } catch (e) {
      throw new ImageIoError(source, `cannot decode image (${errMsg(e)})`, e);
    }
    warnings.unshift(strict);
  }
  const { width, height, channels } = out.info;
  if (channels !== 3) throw new ImageIoError(source, `decoded to ${channels} channels, expected 3`);
  const data = new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength);
  const ws = cleanWarnings(warnings);
  return ws.length ? { data, height, width, channels: 3, warnings: ws } : { data, height, width, channels: 3 };
}

/**
 * Read a photo (JPEG/PNG/...) as 8-bit RGB HWC. EXIF orientation is applied, alpha dropped. Only regular files
 * are read (devices, FIFOs and folders are refused); files above `limits.maxBytes` and images above
 * `limits.maxPixels` (from the header, before decoding) are refused. Decoder warnings (a corrupt JPEG decoded
 * anyway) are returned in `warnings`.
 *
 * @param path image file
 * @param limits file-size and pixel-count limits (defaults 512 MiB, 250 megapixels)
 */
export async function readImage(path: string, limits: ImageLimits = {}): Promise<RgbImage> {
  return decodeImage(readBytes(path, limits, 'image file'), path, limits);
}

/**
 * Read a photo from standard input (as {@link readImage}, with the same limits; the read stops at the first byte
 * over `limits.maxBytes`).
 *
 * @param limits file-size and pixel-count limits
 * @param stream the stream to read (default `process.stdin`)
 */
export async function readImageStdin(limits: ImageLimits = {}, stream: NodeJS.ReadableStream = process.stdin): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readStdinBytes(limits.maxBytes ?? DEFAULT_MAX_IMAGE_BYTES, 'image', stream);
  } catch (e) {
    throw new ImageIoError('<stdin>', e instanceof FileAccessError ? e.problem : `cannot read (${errMsg(e)})`, e);
  }
  if (bytes.length === 0) throw new ImageIoError('<stdin>', 'no data on standard input (expected an encoded image)');
  return decodeImage(bytes, '<stdin>', limits);
}

/** Unpack 1/2/4-bit samples (one channel, rows padded to whole bytes) to one byte per pixel. */
function unpackLowBitDepth(packed: ArrayLike<number>, width: number, height: number, depth: number, scale: number): Uint8Array {
  const out = new Uint8Array(width * height);
  const rowBytes = Math.ceil((width * depth) / 8);
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const byte = packed[y * rowBytes + Math.floor(x / perByte)]!;
      const shift = 8 - depth * ((x % perByte) + 1);
      out[y * width + x] = ((byte >> shift) & mask) * scale;
    }
  }
  return out;
}

/**
 * Decode a label PNG held in memory to class indices (palette indices or grey values).
 * Throws {@link ImageIoError} for non-PNG data, colour PNGs, or 16-bit values above 255.
 *
 * @param bytes PNG file contents
 * @param source name used in error messages
 * @param limits pixel-count limit (checked from the PNG header before decoding)
 */
export function decodeLabelPng(bytes: Uint8Array, source = '<buffer>', limits: ImageLimits = {}): LabelMap {
  if (!hasPngSignature(bytes)) {
    throw new ImageIoError(source, 'not a PNG file (label maps must be PNG: palette or 8-bit grayscale)');
  }
  // IHDR is the first chunk: width and height are big-endian at bytes 16..23. Check them before decoding.
  if (bytes.length >= 24) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    checkPixels(source, dv.getUint32(16), dv.getUint32(20), limits);
  }
  let png: ReturnType<typeof decodePngRaw>;
  try {
    png = decodePngRaw(bytes);
  } catch (e) {
    throw new ImageIoError(source, `cannot decode PNG (${errMsg(e)})`, e);
  }
  const { width, height, depth, channels } = png;
  const indexed = png.palette !== undefined;
  if (channels !== 1) {
    const kind = channels === 2 ? 'grayscale+alpha' : channels === 3 ? 'RGB' : channels === 4 ? 'RGBA' : `${channels}-channel`;
    throw new ImageIoError(
      source,
      `label map PNG is ${kind} (${channels} channels); expected a palette (indexed) or single-channel grayscale PNG of class indices`,
    );
  }
  if (depth === 16) {
    const d = png.data;
    const out = new Uint8Array(width * height);
    for (let i = 0; i < out.length; i++) {
      const v = d[i]!;
      if (v > 255) {
        const x = i % width;
        const y = Math.floor(i / width);
        throw new ImageIoError(source, `16-bit label value ${v} at (x=${x}, y=${y}) does not fit in 0..255`);
      }
      out[i] = v;
    }
    return { data: out, height, width };
  }
  if (depth < 8) {
    // Palette: raw indices. Grey: PIL semantics ('1' → 0/1, 'L;2' ×85, 'L;4' ×17).
    const scale = indexed || depth === 1 ? 1 : depth === 2 ? 85 : 17;
    return { data: unpackLowBitDepth(png.data, width, height, depth, scale), height, width };
  }
  const d = png.data;
  const data = d instanceof Uint8Array ? d : Uint8Array.from(d);
  if (data.length !== width * height) {
    throw new ImageIoError(source, `decoded ${data.length} samples for a ${width}x${height} image`);
  }
  return { data, height, width };
}

/**
 * Read a label map PNG keeping palette indices (do not use sharp for label files: it expands
 * palettes to colours). 8-bit grayscale PNGs give their grey values.
 *
 * @param path label PNG file
 * @param limits file-size and pixel-count limits
 */
export async function readLabelMap(path: string, limits: ImageLimits = {}): Promise<LabelMap> {
  return decodeLabelPng(readBytes(path, limits, 'label file'), path, limits);
}

/**
 * Encode class indices as an 8-bit PNG: indexed (palette) when a palette is given, grayscale
 * otherwise. The palette is padded with black up to the largest index used, so every index is
 * valid for PNG readers (e.g. 255 = ignore).
 *
 * @param labels class index per pixel (H*W, values 0..255)
 * @param height rows
 * @param width columns
 * @param palette RGB colour per index (at most 256 entries); omit for a grayscale PNG
 */
export function encodeLabelPng(labels: ArrayLike<number>, height: number, width: number, palette?: LabelPalette): Uint8Array {
  const source = '<label map>';
  checkDims(source, height, width, labels.length, 1);
  const data = new Uint8Array(height * width);
  let maxIndex = 0;
  for (let i = 0; i < data.length; i++) {
    const v = labels[i]!;
    if (!Number.isInteger(v) || v < 0 || v > 255) {
      throw new ImageIoError(source, `label value ${v} at index ${i} is not an integer in 0..255`);
    }
    data[i] = v;
    if (v > maxIndex) maxIndex = v;
  }
  if (palette === undefined) {
    return encodePngRaw({ width, height, data, depth: 8, channels: 1 });
  }
  if (palette.length > 256) throw new ImageIoError(source, `palette has ${palette.length} colours; PNG allows at most 256`);
  const pal: number[][] = [];
  const n = Math.max(palette.length, maxIndex + 1);
  for (let i = 0; i < n; i++) {
    const c = palette[i];
    if (c === undefined) {
      pal.push([0, 0, 0]);
    } else {
      if (c.length !== 3 || !c.every((v) => Number.isInteger(v) && v >= 0 && v <= 255)) {
        throw new ImageIoError(source, `palette entry ${i} is not an RGB triple in 0..255: ${JSON.stringify(c)}`);
      }
      pal.push([c[0], c[1], c[2]]);
    }
  }
  return encodePngRaw({ width, height, data, depth: 8, channels: 1, palette: pal });
}

/** Creates the parent folder (guarded, see `files.ts`) and writes atomically (temporary file + rename). */
async function writeBytes(path: string, bytes: Uint8Array): Promise<void> {
  try {
    ensureDir(dirname(path));
    writeFileAtomic(path, bytes);
  } catch (e) {
    throw new ImageIoError(path, e instanceof FileAccessError ? e.problem : `cannot write file (${errMsg(e)})`, e);
  }
}

/**
 * Write class indices as an indexed (palette) PNG, so that reading it back with
 * {@link readLabelMap} returns the same indices. Parent folders are created; the file is written atomically
 * (temporary file in the same folder, then renamed).
 *
 * @param path output .png file
 * @param labels class index per pixel (H*W, values 0..255)
 * @param height rows
 * @param width columns
 * @param palette RGB colour per index; omit for a grayscale PNG
 */
export async function writeLabelPng(
  path: string,
  labels: ArrayLike<number>,
  height: number,
  width: number,
  palette?: LabelPalette,
): Promise<void> {
  let bytes: Uint8Array;
  try {
    bytes = encodeLabelPng(labels, height, width, palette);
  } catch (e) {
    if (e instanceof ImageIoError) throw new ImageIoError(path, e.problem, e);
    throw e;
  }
  await writeBytes(path, bytes);
}

/**
 * Write 8-bit RGB HWC pixels as a (lossless) PNG. Parent folders are created; written atomically.
 *
 * @param path output .png file
 * @param data H*W*3 bytes
 * @param height rows
 * @param width columns
 */
export async function writeRgbPng(path: string, data: Uint8Array, height: number, width: number): Promise<void> {
  checkDims(path, height, width, data.length, 3);
  await writeBytes(path, encodePngRaw({ width, height, data, depth: 8, channels: 3 }));
}

/**
 * Write 8-bit RGB HWC pixels as a JPEG via sharp (4:2:0 chroma subsampling as libjpeg's default).
 * Parent folders are created.
 *
 * @param path output .jpg file
 * @param data H*W*3 bytes
 * @param height rows
 * @param width columns
 * @param quality JPEG quality 1..100 (default 95)
 */
export async function writeRgbJpeg(path: string, data: Uint8Array, height: number, width: number, quality = 95): Promise<void> {
  checkDims(path, height, width, data.length, 3);
  let bytes: Buffer;
  try {
    bytes = await sharp(data, { raw: { width, height, channels: 3 } }).jpeg({ quality }).toBuffer();
  } catch (e) {
    throw new ImageIoError(path, `cannot encode JPEG (${errMsg(e)})`, e);
  }
  await writeBytes(path, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/**
 * Colour a label map with a palette and blend it over the image, as mmseg's `show_result`:
 * `out = uint8(image * (1 - opacity) + colour * opacity)` (truncated toward zero). Labels without
 * a palette colour (e.g. 255) blend with black, as in mmseg.
 *
 * @param image RGB HWC image
 * @param labels class index per pixel (H*W)
 * @param palette RGB colour per class
 * @param opacity weight of the label colours, 0..1 (default 0.5)
 */
export function blendOverlay(
  image: { data: Uint8Array; height: number; width: number },
  labels: ArrayLike<number>,
  palette: LabelPalette,
  opacity = 0.5,
): Uint8Array {
  const { data, height, width } = image;
  checkDims('<overlay image>', height, width, data.length, 3);
  if (labels.length !== height * width) {
    throw new ImageIoError('<overlay labels>', `label map has ${labels.length} pixels, image has ${width}x${height}`);
  }
  if (!(opacity >= 0 && opacity <= 1)) throw new RangeError(`opacity must lie in [0, 1], got ${opacity}`);
  const out = new Uint8Array(data.length);
  const keep = 1 - opacity;
  for (let i = 0; i < labels.length; i++) {
    const c = palette[labels[i]!];
    for (let k = 0; k < 3; k++) {
      const v = data[i * 3 + k]! * keep + (c === undefined ? 0 : c[k]!) * opacity;
      out[i * 3 + k] = Math.trunc(v);
    }
  }
  return out;
}
