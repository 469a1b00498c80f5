/**
 * Parity check of the Mask R-CNN fixtures (`../shared/fixtures/detection/maskrcnn_*`): the model after the backbone
 * (FPN neck, RPN head, standard RoI head) built from the JSON's mmdetection config, the weights loaded strictly, the
 * stored backbone maps `in0..in3` and `img_metas` fed to {@link MaskRCNN.simpleTestFromFeatures}, and every stored
 * stage compared:
 * - float tensors: max |out − ref| / max |ref| (tolerance 1e-4); a different shape (another number of proposals or
 *   detections) fails;
 * - `det_labels`, `extra.roi_levels`: identical (the row's value is the fraction that differ);
 * - `segm_masks`: identical except at the `segm_ambiguous` pixels (the value is the fraction of the other pixels
 *   that differ);
 * - `extra.*`: the bbox / mask RoI extractors applied to the hand-made `extra.rois` on `neck.0..3`.
 */
import { readFileSync } from 'node:fs';
import { type Tensor, noGrad, scope } from '../engine/index.js';
import { type Detections, type DetectorBackbone, MaskRCNN, type MaskRCNNConfig, type ImageMeta } from '../models/detectors/index.js';
import { Module, loadWeights, readStateDict } from '../nn/index.js';
import { maxRelativeError } from './compare.js';
import { type CheckReferenceOptions, PARITY_TOLERANCE, type ParityRow } from './reference.js';

/** Whether a fixture JSON is a Mask R-CNN (detection) fixture. */
export function isDetectionFixture(cfg: Record<string, unknown>): boolean {
  const m = cfg.model as Record<string, unknown> | undefined;
  return typeof m === 'object' && m !== null && m.type === 'MaskRCNN' && 'img_metas' in cfg;
}

/** A stand-in backbone without state (the fixture gives the backbone's maps). */
class GivenFeatures extends Module implements DetectorBackbone {
  forward(): Tensor[] {
    throw new Error('the detection fixture runs from stored backbone features');
  }
}

/** The image meta of an mmdetection `img_metas` entry. */
export function imageMetaFromMmdet(m: Record<string, unknown>): ImageMeta {
  const two = (k: string): [number, number] => {
    const v = m[k] as number[] | undefined;
    if (!Array.isArray(v) || v.length < 2) throw new Error(`img_metas.${k} must be a list (h, w[, c]), got ${JSON.stringify(v)}`);
    return [v[0]!, v[1]!];
  };
  const sf = m.scale_factor as number[];
  if (!Array.isArray(sf) || sf.length !== 4) throw new Error(`img_metas.scale_factor must be 4 numbers, got ${JSON.stringify(sf)}`);
  return { imgShape: two('img_shape'), oriShape: two('ori_shape'), padShape: two('pad_shape'), scaleFactor: [sf[0]!, sf[1]!, sf[2]!, sf[3]!] };
}

/** Builds the fixture's model (no backbone) from its JSON config. */
export function buildDetectionFixtureModel(cfg: Record<string, any>): MaskRCNN {
  const m = cfg.model as Record<string, any>;
  const modelCfg: MaskRCNNConfig = { neck: m.neck, rpn_head: m.rpn_head, roi_head: m.roi_head, test_cfg: cfg.test_cfg };
  return new MaskRCNN(modelCfg, new GivenFeatures());
}

function exactRow(name: string, got: Tensor, ref: Tensor): ParityRow {
  if (got.shape.join() !== ref.shape.join()) return { name, maxRelErr: Number.NaN, ok: false };
  const g = got.toTypedArray();
  const r = ref.toTypedArray();
  let bad = 0;
  for (let i = 0; i < r.length; i++) if (g[i] !== r[i]) bad++;
  const frac = r.length ? bad / r.length : 0;
  return { name, maxRelErr: frac, ok: bad === 0 };
}

function floatRow(name: string, got: Tensor, ref: Tensor, tol: number): ParityRow {
  if (got.shape.join() !== ref.shape.join()) return { name, maxRelErr: Number.NaN, ok: false };
  const e = maxRelativeError(got, ref);
  return { name, maxRelErr: e, ok: e < tol && Number.isFinite(e) };
}

/** Compares pasted masks, ignoring the listed ambiguous (detection, y, x) pixels. */
function masksRow(name: string, got: Uint8Array | undefined, ref: Tensor, ambiguous: Tensor | undefined): ParityRow {
  const [D, H, W] = ref.shape as [number, number, number];
  if (!got || got.length !== D * H * W) return { name, maxRelErr: Number.NaN, ok: false };
  const skip = new Set<number>();
  if (ambiguous) {
    const a = ambiguous.toTypedArray();
    for (let i = 0; i < a.length; i += 3) skip.add(a[i]! * H * W + a[i + 1]! * W + a[i + 2]!);
  }
  const r = ref.toTypedArray();
  let bad = 0;
  for (let i = 0; i < r.length; i++) if (!skip.has(i) && got[i] !== r[i]) bad++;
  return { name, maxRelErr: bad / Math.max(1, r.length - skip.size), ok: bad === 0 };
}

/** What {@link checkDetectionFixture} lets a caller inspect before it frees the run (tests use it). */
export interface DetectionFixtureRun {
  detections: Detections;
  /** Every captured stage by the fixture's names (freed after the callback). */
  stages: ReadonlyMap<string, Tensor>;
  /** The fixture's io tensors (freed after the callback). */
  io: ReadonlyMap<string, Tensor>;
  meta: ImageMeta;
}

/**
 * Runs a detection fixture `DIR/NAME` and compares every stored stage (see the file comment). `inspect` (optional)
 * sees the run's detections, stages and the io tensors before they are freed.
 */
export function checkDetectionFixture(prefix: string, cfg: Record<string, any>, o: CheckReferenceOptions = {},
  inspect?: (run: DetectionFixtureRun) => void): ParityRow[] {
  const tol = o.tolerance ?? PARITY_TOLERANCE;
  const device = o.device ?? 'cpu';
  const dtype = o.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float64') throw new Error(`check-reference: detection fixtures run in float32 or float64, not ${dtype}`);
  const model = buildDetectionFixtureModel(cfg);
  try {
    loadWeights(model, `${prefix}.weights.safetensors`, { strict: true });
    model.eval();
    if (dtype !== 'float32') model.to(dtype);
    if (device !== 'cpu') model.to(device);
    const meta = imageMetaFromMmdet((cfg.img_metas as Record<string, unknown>[])[0]!);
    return noGrad(() => scope(() => {
      const io = readStateDict(`${prefix}.io.safetensors`);
      const feats: Tensor[] = [];
      for (let i = 0; io.has(`in${i}`); i++) feats.push(io.get(`in${i}`)!.to({ dtype, device }));
      if (feats.length === 0) throw new Error(`${prefix}.io.safetensors has no inputs in0..`);
      const got = new Map<string, Tensor>();
      const det = model.simpleTestFromFeatures(feats, meta, { capture: (n, t) => got.set(n, t.keep()) });
      const rows: ParityRow[] = [];
      const extraRois = io.get('extra.rois');
      if (extraRois) {
        const rois = extraRois.to({ dtype, device });
        const neck = [0, 1, 2, 3].map((i) => got.get(`neck.${i}`)!);
        got.set('extra.bbox_roi_feats', model.roi_head.bbox_roi_extractor.forward(neck, rois).keep());
        if (model.roi_head.mask_roi_extractor) got.set('extra.mask_roi_feats', model.roi_head.mask_roi_extractor.forward(neck, rois).keep());
        const lv = model.roi_head.bbox_roi_extractor.mapRoiLevels(rois);
        const ref = io.get('extra.roi_levels');
        if (ref) {
          const r = ref.toTypedArray();
          let bad = lv.length === r.length ? 0 : Math.max(lv.length, r.length);
          for (let i = 0; i < Math.min(lv.length, r.length); i++) if (lv[i] !== r[i]) bad++;
          rows.push({ name: 'extra.roi_levels', maxRelErr: bad / Math.max(1, r.length), ok: bad === 0 });
        }
      }
      for (const [name, ref] of io) {
        if (/^in\d+$/.test(name) || name === 'scale_factor' || name === 'extra.rois' || name === 'extra.roi_levels') continue;
        if (name === 'segm_ambiguous' || name === 'segm_ambiguous_prob') continue;
        if (name === 'segm_masks') {
          rows.push(masksRow(name, det.masks, ref, io.get('segm_ambiguous')));
          continue;
        }
        const g = got.get(name);
        if (!g) { rows.push({ name, maxRelErr: Number.NaN, ok: false }); continue; }
        rows.push(name === 'det_labels' ? exactRow(name, g, ref) : floatRow(name, g, ref, tol));
      }
      try {
        inspect?.({ detections: det, stages: got, io, meta });
      } finally {
        io.forEach((t) => t.dispose());
        got.forEach((t) => t.dispose());
      }
      return rows;
    }));
  } finally {
    model.dispose();
  }
}

/** Reads a detection fixture's JSON and runs {@link checkDetectionFixture}. */
export function checkDetectionFixtureFile(prefix: string, o: CheckReferenceOptions = {}): ParityRow[] {
  return checkDetectionFixture(prefix, JSON.parse(readFileSync(`${prefix}.json`, 'utf8')) as Record<string, any>, o);
}
