/** The engine layer: tensors, autograd, devices and functional operations over a backend. */
export * from './dtype.js';
export type { Backend, BackendInfo, CudaMemoryStats, Handle } from './backend.js';
export * from './tensor.js';
export * from './functional.js';
export { libtorchBackend } from './native.js';
export * from './autocast.js';
export * from './dist.js';
