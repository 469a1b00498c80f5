/**
 * The public API of `vit-adapter` (what `import … from 'vit-adapter'` gives):
 *
 * - `engine`: tensors, autograd, devices and functional operations on libtorch;
 * - `io`: checkpoint formats (safetensors, PyTorch .pth, .npz), image and label-map files, guarded file access;
 * - `nn`: modules with PyTorch-compatible state dicts, layers, initialisers, weight loading;
 * - `models`: the ViT, the ViT-Adapter backbone and presets, the segmentation heads;
 * - `segmentation`: configs, datasets, metrics, the test pipeline, the segmentor, inference and evaluation.
 * - `detection`: Mask R-CNN configs, the detection test pipeline, COCO results and evaluation, overlays, synthetic COCO data.
 *
 * Each layer is also exported as a namespace of the same name (`engine.tensor`, `segmentation.loadConfig`), and the
 * names below are re-exported flat for convenience (`import { ViTAdapter, loadConfig } from 'vit-adapter'`).
 */
export * as engine from './engine/index.js';
export * as io from './io/index.js';
export * as image from './io/image.js';
export * as nn from './nn/index.js';
export * as models from './models/index.js';
export * as segmentation from './tasks/segmentation/index.js';
export * as detection from './tasks/detection/index.js';

export * from './engine/index.js';
export * from './io/index.js';
export * from './io/image.js';
export * from './nn/index.js';
export * from './models/index.js';
export * from './tasks/segmentation/index.js';
