/** The nn layer: modules with PyTorch-compatible state dicts, standard layers and initialisers. */
export * from './module.js';
export * from './layers.js';
export * as init from './init.js';
export * from './serialization.js';
export * from './ops/index.js';
