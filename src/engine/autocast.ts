/**
 * Automatic mixed precision (`torch.autocast`): inside {@link autocast}, operators that libtorch lists as safe in
 * lower precision (matmul, linear, conv, bmm, ...) run in bfloat16 or float16, and precision-sensitive ones (softmax,
 * norms, losses, reductions) in float32, with inputs cast as needed. Parameters stay float32 (their casts are cached
 * for the region). CUDA: bfloat16 or float16; CPU: bfloat16 (libtorch 1.13 has no CPU float16 autocast).
 */
import { backend } from './tensor.js';
import { type DType, SCALAR_TYPE, dtypeFromScalarType } from './dtype.js';

/** The device types autocast knows. */
export type AutocastDevice = 'cpu' | 'cuda';

function checkArgs(dtype: DType, device: string): AutocastDevice {
  const dev = device.startsWith('cuda') ? 'cuda' : device;
  if (dev !== 'cpu' && dev !== 'cuda') throw new Error(`autocast: device must be cpu or cuda, got ${JSON.stringify(device)}`);
  if (dtype !== 'bfloat16' && dtype !== 'float16') throw new Error(`autocast: dtype must be bfloat16 or float16, got ${JSON.stringify(dtype)}`);
  if (dev === 'cpu' && dtype === 'float16') throw new Error('autocast: CPU autocast supports bfloat16 only');
  return dev;
}

/** Whether the backend supports autocast at all. */
export function autocastSupported(): boolean {
  const b = backend();
  return typeof b.setAutocast === 'function' && typeof b.getAutocast === 'function' && typeof b.autocastNesting === 'function';
}

/** Current autocast state of a device type. */
export function autocastState(device: AutocastDevice): { enabled: boolean; dtype: DType } {
  const b = backend();
  if (!b.getAutocast) return { enabled: false, dtype: 'float32' };
  const [enabled, st] = b.getAutocast(device);
  return { enabled, dtype: dtypeFromScalarType(st) };
}

/**
 * Runs `fn` with autocast on for `device` ('cpu', 'cuda' or 'cuda:N') in `dtype` (bfloat16 or float16), restoring
 * the previous state afterwards (regions nest). Synchronous functions only (the state is per thread, set around the
 * call). Run the backward pass outside the region, as with torch.
 */
export function autocast<T>(dtype: DType, device: string, fn: () => T): T {
  const dev = checkArgs(dtype, device);
  const b = backend();
  if (!b.setAutocast || !b.autocastNesting) throw new Error(`autocast: the ${b.name} backend has no mixed-precision support`);
  const prev = b.setAutocast(dev, true, SCALAR_TYPE[dtype]);
  b.autocastNesting(1);
  try {
    const r = fn();
    if (r instanceof Promise) throw new Error('autocast(): the function must be synchronous (it returned a Promise)');
    return r;
  } finally {
    b.autocastNesting(-1);
    b.setAutocast(dev, prev[0], prev[1]);
  }
}
