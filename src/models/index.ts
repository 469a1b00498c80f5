/** The models layer: the plain ViT, the ViT-Adapter backbone (with presets) and the segmentation heads and neck. */
export * from './vit.js';
export * from './adapter/index.js';
export * from './heads/index.js';
export * from './detectors/index.js';
