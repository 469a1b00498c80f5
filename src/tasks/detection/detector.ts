/**
 * Building and running a detector from a {@link DetConfig}: the backbone by its `type` (the segmentation task's
 * builder), the Mask R-CNN of `models/detectors` around it, checkpoints as mmdetection saves them (`state_dict` +
 * `meta`, keys `backbone.*`, `neck.*`, `rpn_head.*`, `roi_head.*`; loaded strictly), and one image through the
 * test pipeline and `simpleTest`.
 */
import { noGrad, scope } from '../../engine/index.js';
import { StateDictError } from '../../nn/index.js';
import { openStateDict } from '../../nn/serialization.js';
import { type Detections, type DetectorBackbone, MaskRCNN, type MaskRCNNConfig, buildMaskRCNN } from '../../models/detectors/index.js';
import { buildBackbone } from '../segmentation/inference.js';
import type { DetConfig } from './configs.js';
import { type DetImageMeta, type DetRgbImage, detInputTensor, prepareDetectionInput } from './pipeline.js';

/** Options of {@link buildDetector} and {@link loadDetector}. */
export interface DetBuildOptions {
  /** Device to move the model to (default cpu). */
  device?: string;
  /** {@link loadDetector} only: accept checkpoint tensors holding NaN/±Inf (default false). */
  allowNonfinite?: boolean;
}

/**
 * Builds the config's Mask R-CNN with random (initialised) weights, in eval mode. A ViT-Adapter backbone is built by
 * `buildMaskRCNN` (the `detection` variant; the configs' `None` window sizes of global-attention blocks accepted);
 * other backbone types by the segmentation task's backbone builder.
 */
export function buildDetector(config: DetConfig, o: DetBuildOptions = {}): MaskRCNN {
  let model: MaskRCNN;
  const type = config.model.backbone.type ?? 'ViTAdapter';
  if (type === 'ViTAdapter') {
    model = buildMaskRCNN(config.model as unknown as MaskRCNNConfig);
  } else {
    const { backbone: backboneCfg, ...heads } = config.model;
    const backbone = buildBackbone(backboneCfg) as unknown as DetectorBackbone;
    try {
      model = new MaskRCNN(heads as unknown as MaskRCNNConfig, backbone);
    } catch (e) {
      backbone.dispose();
      throw e;
    }
  }
  model.eval();
  if (o.device && o.device !== 'cpu') model.to(o.device);
  return model;
}

/** What {@link loadDetector} loaded. */
export interface DetLoadReport {
  path: string;
  /** Tensors copied into the model. */
  loaded: number;
  /** The class names stored in the checkpoint's `meta.CLASSES` (mmdetection), or null. */
  checkpointClasses: string[] | null;
  /** Notes for the user (e.g. class names that differ from the config's). */
  notes: string[];
}

function metaClasses(metadata: Record<string, unknown>): string[] | null {
  const meta = metadata.meta as { CLASSES?: unknown } | undefined;
  const c = meta?.CLASSES ?? metadata['meta.CLASSES'];
  if (Array.isArray(c) && c.every((x) => typeof x === 'string')) return c as string[];
  if (typeof c === 'string') {
    try {
      const parsed: unknown = JSON.parse(c);
      if (Array.isArray(parsed) && parsed.every((x) => typeof x === 'string')) return parsed as string[];
    } catch { /* not JSON */ }
  }
  return null;
}

/**
 * Builds the config's model and loads a checkpoint into it strictly (safetensors, or an mmdetection `.pth` whose
 * tensors are under `state_dict`; a `module.` prefix is removed; `optimizer.*` / `rng.*` entries of training
 * checkpoints are ignored). A checkpoint whose `meta.CLASSES` has another number of classes than the config is an
 * error; other names than the config's are a note (the config's names are used).
 */
export function loadDetector(config: DetConfig, checkpointPath: string, o: DetBuildOptions = {}): { model: MaskRCNN; report: DetLoadReport } {
  const model = buildDetector(config);
  const { sources, checkpoint } = openStateDict(checkpointPath, { strip: ['module.'] });
  let report: DetLoadReport;
  try {
    for (const k of [...sources.keys()]) if (k.startsWith('optimizer.') || k.startsWith('rng.')) sources.delete(k);
    const classes = metaClasses(checkpoint.metadata);
    const notes: string[] = [];
    if (classes && classes.length !== config.classes.length) {
      throw new Error(`checkpoint ${checkpointPath} was trained for ${classes.length} classes (meta.CLASSES) but config ${config.name} has ${config.classes.length}`);
    }
    if (classes && classes.some((c, i) => c !== config.classes[i])) {
      notes.push(`the checkpoint's class names (meta.CLASSES) differ from config ${config.name}'s; using the config's`);
    }
    const r = model.loadStateDict(sources, { strict: false, allowNonfinite: o.allowNonfinite ?? false });
    if (r.missing.length || r.unexpected.length || r.mismatched.length) {
      throw new StateDictError(r, `MaskRCNN (checkpoint ${checkpointPath})`);
    }
    const loaded = [...model.stateDict().keys()].filter((k) => sources.has(k)).length;
    report = { path: checkpointPath, loaded, checkpointClasses: classes, notes };
  } catch (e) {
    model.dispose();
    throw e;
  } finally {
    checkpoint.close();
  }
  if (o.device && o.device !== 'cpu') model.to(o.device);
  return { model, report };
}

/** The detections of one image, with its pipeline meta and the time taken. */
export interface ImageDetections {
  detections: Detections;
  meta: DetImageMeta;
  /** Milliseconds for pre-processing and the model. */
  ms: number;
}

/**
 * Runs one image through the config's test pipeline and `simpleTest` (no gradient; every intermediate tensor is
 * freed). Boxes are in original-image pixels; masks (when the model has a mask head) at the original size.
 */
export function detectImage(model: MaskRCNN, config: DetConfig, image: DetRgbImage, o: { device?: string; withMask?: boolean } = {}): ImageDetections {
  const t0 = performance.now();
  const input = prepareDetectionInput(image, config.test_pipeline, config.img_norm_cfg);
  const detections = scope(() => noGrad(() => {
    const x = detInputTensor(input, o.device);
    return model.simpleTest(x, input.meta, { withMask: o.withMask ?? true });
  }));
  return { detections, meta: input.meta, ms: performance.now() - t0 };
}
