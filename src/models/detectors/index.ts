/**
 * Detectors with mmdetection 2.x semantics and state-dict keys: Mask R-CNN (FPN neck, RPN head, standard RoI head
 * with box and mask branches), its parts, and the authors' ViT-Adapter Mask R-CNN presets.
 */
export * from './types.js';
export * from './anchor-generator.js';
export * from './bbox-coder.js';
export * from './rpn-head.js';
export * from './roi-extractor.js';
export * from './bbox-head.js';
export * from './mask-head.js';
export * from './roi-head.js';
export * from './mask-rcnn.js';
export * from './presets.js';
