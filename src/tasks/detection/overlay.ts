/**
 * Drawing detections: translucent instance masks blended into the image, then boxes and "class score" labels
 * rendered from an SVG by sharp (librsvg) and composited on top; written as an RGB PNG, atomically.
 */
import sharp from 'sharp';
import { writeFileAtomic } from '../../io/files.js';
import type { Palette } from '../segmentation/classes.js';

/** The detections of one image (the shape `MaskRCNN.simpleTest` returns). */
export interface DetectionsLike {
  /** D×4 `x1, y1, x2, y2` in original-image pixels. */
  boxes: Float32Array;
  scores: Float32Array;
  /** Class index 0..K−1 per detection. */
  labels: Int32Array;
  /** D × H × W binary masks at the original size (row-major), when the model has a mask head. */
  masks?: Uint8Array | undefined;
}

/** Options of {@link drawDetections}. */
export interface OverlayOptions {
  /** Class names by label. */
  classNames: readonly string[];
  /** Colour by label. */
  palette: Palette;
  /** Draw detections with `score >= scoreThr` only (default 0.3, mmdetection's `show_result` default). */
  scoreThr?: number;
  /** Weight of the mask colour (default 0.5, as mmdetection). */
  maskAlpha?: number;
}

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The SVG (boxes and labels) of the kept detections; `keep` lists detection indices. */
function overlaySvg(det: DetectionsLike, keep: number[], w: number, h: number, o: OverlayOptions): string {
  const font = Math.max(9, Math.min(16, Math.round(Math.min(w, h) / 40)));
  const stroke = Math.max(1, Math.round(Math.min(w, h) / 300));
  const parts: string[] = [];
  for (const i of keep) {
    const [x1, y1, x2, y2] = [det.boxes[4 * i]!, det.boxes[4 * i + 1]!, det.boxes[4 * i + 2]!, det.boxes[4 * i + 3]!];
    const label = det.labels[i]!;
    const c = o.palette[label % o.palette.length] ?? [255, 0, 0];
    const rgb = `rgb(${c[0]},${c[1]},${c[2]})`;
    const text = `${o.classNames[label] ?? `class ${label}`} ${det.scores[i]!.toFixed(2)}`;
    const tw = Math.ceil(text.length * font * 0.6) + 4;
    const ty = y1 - font - 2 >= 0 ? y1 - font - 2 : y1; // above the box, or inside it at the top edge
    // dark text on light colours, white on dark ones
    const ink = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150 ? 'black' : 'white';
    parts.push(
      `<rect x="${x1.toFixed(1)}" y="${y1.toFixed(1)}" width="${Math.max(0, x2 - x1).toFixed(1)}" height="${Math.max(0, y2 - y1).toFixed(1)}" fill="none" stroke="${rgb}" stroke-width="${stroke}"/>`,
      `<rect x="${x1.toFixed(1)}" y="${ty.toFixed(1)}" width="${tw}" height="${font + 2}" fill="${rgb}" fill-opacity="0.8"/>`,
      `<text x="${(x1 + 2).toFixed(1)}" y="${(ty + font - 1).toFixed(1)}" font-family="DejaVu Sans, sans-serif" font-size="${font}" fill="${ink}">${esc(text)}</text>`,
    );
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}">${parts.join('')}</svg>`;
}

/**
 * Blends the masks of the detections with `score >= scoreThr` into a copy of the image
 * (`pixel · (1 − α) + colour · α`, truncated, in ascending score order so the best detection is on top).
 *
 * @returns the blended RGB bytes and the indices of the kept detections (descending score)
 */
export function blendMasks(image: { data: Uint8Array; height: number; width: number }, det: DetectionsLike, o: OverlayOptions): { data: Uint8Array; keep: number[] } {
  const { height: h, width: w } = image;
  const thr = o.scoreThr ?? 0.3;
  const alpha = o.maskAlpha ?? 0.5;
  const n = det.scores.length;
  if (det.boxes.length !== 4 * n || det.labels.length !== n) throw new RangeError(`overlay: ${n} scores but ${det.boxes.length / 4} boxes and ${det.labels.length} labels`);
  if (det.masks && det.masks.length !== n * h * w) throw new RangeError(`overlay: masks hold ${det.masks.length} values, expected ${n}×${h}×${w}`);
  const keep: number[] = [];
  for (let i = 0; i < n; i++) if (det.scores[i]! >= thr) keep.push(i);
  keep.sort((a, b) => det.scores[b]! - det.scores[a]! || a - b);
  const out = Uint8Array.from(image.data);
  if (det.masks) {
    const plane = h * w;
    for (let k = keep.length - 1; k >= 0; k--) {
      const i = keep[k]!;
      const c = o.palette[det.labels[i]! % o.palette.length] ?? [255, 0, 0];
      const m = det.masks.subarray(i * plane, (i + 1) * plane);
      for (let p = 0; p < plane; p++) {
        if (!m[p]) continue;
        for (let ch = 0; ch < 3; ch++) out[3 * p + ch] = Math.trunc(out[3 * p + ch]! * (1 - alpha) + c[ch]! * alpha);
      }
    }
  }
  return { data: out, keep };
}

/**
 * Renders the overlay of one image (masks, boxes, "class score" labels of the detections with `score >= scoreThr`)
 * as PNG bytes.
 */
export async function renderOverlay(image: { data: Uint8Array; height: number; width: number }, det: DetectionsLike, o: OverlayOptions): Promise<Uint8Array> {
  const { height: h, width: w } = image;
  const { data, keep } = blendMasks(image, det, o);
  let img = sharp(data, { raw: { width: w, height: h, channels: 3 } });
  if (keep.length) img = img.composite([{ input: Buffer.from(overlaySvg(det, keep, w, h, o)), top: 0, left: 0 }]);
  const buf = await img.removeAlpha().png().toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Writes {@link renderOverlay}'s PNG to `path` atomically. */
export async function writeOverlay(path: string, image: { data: Uint8Array; height: number; width: number }, det: DetectionsLike, o: OverlayOptions): Promise<void> {
  writeFileAtomic(path, await renderOverlay(image, det, o));
}
