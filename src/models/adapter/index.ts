/** ViT-Adapter (paper Fig. 4): spatial prior module, injector, extractor, interactions, the backbone, presets. */
export * from './deformable-attention.js';
export * from './spm.js';
export * from './injector.js';
export * from './extractor.js';
export * from './interaction.js';
export * from './vit-adapter.js';
export * from './presets.js';
export * from './beit-adapter.js';
export * from './beit3-adapter.js';
