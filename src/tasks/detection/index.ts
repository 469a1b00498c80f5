/**
 * Object detection and instance segmentation with ViT-Adapter + Mask R-CNN: the authors' test pipeline, configs,
 * COCO class lists, building / loading a detector, COCO results and evaluation, overlays, and a synthetic COCO
 * instance dataset.
 */
export * from './classes.js';
export * from './pipeline.js';
export * from './configs.js';
export * from './detector.js';
export * from './evaluate.js';
export * from './overlay.js';
export * from './synthetic.js';
export * from './coco/index.js';
