/**
 * Checkpoint I/O: safetensors, PyTorch zip checkpoints (restricted pickle reader), .npz, and the
 * format-independent `loadCheckpoint` / `inspectFile` / `convertToSafetensors`.
 * Pure TypeScript; tensors come out as engine-independent `RawTensor` / `LazyTensor`.
 */
export * from './errors.js';
export * from './source.js';
export * from './raw.js';
export * from './safetensors.js';
export * from './zip.js';
export * from './pickle.js';
export * from './pth.js';
export * from './npz.js';
export * from './checkpoint.js';
export * from './keys.js';
export * from './inspect.js';

export * from './files.js';
