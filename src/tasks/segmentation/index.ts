/**
 * Semantic segmentation with ViT-Adapter: class lists and palettes, datasets, metrics, the image test pipeline,
 * synthetic scenes, the `EncoderDecoder` segmentor, the authors' configs, inference (whole / slide / TTA) and
 * dataset evaluation; the training pipeline (mmseg augmentation, OpenCV-exact colour conversions, seeded random sources).
 */
export * from './classes.js';
export * from './datasets.js';
export * from './metrics.js';
export * from './pipeline-image.js';
export * from './synthetic.js';
export * from './segmentor.js';
export * from './configs.js';
export * from './inference.js';
export * from './evaluate.js';
export { ForcedRandom, SeededRandom } from '../../train/random.js';
export type { PipelineRandom, RecordedDraw, SeededRandomState } from '../../train/random.js';
export * from './cv-color.js';
export * from './pipeline-train.js';
