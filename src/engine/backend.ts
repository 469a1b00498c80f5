/**
 * The one interface the tensor API talks to. The libtorch addon implements it today; a recording backend (ONNX
 * export) and distributed backends implement the same calls later. Model code never sees a backend: it uses
 * {@link Tensor} and the functions of `src/engine`.
 */

/** An opaque reference to a backend tensor. */
export type Handle = { readonly __handle: unique symbol };

/** Description of the machine and library behind a backend. */
export interface BackendInfo {
  torchVersion: string;
  threads: number;
  interopThreads: number;
  cuda: boolean;
  cudaDevices: number;
  builtWithCuda: boolean;
  config: string;
  parallel: string;
}

/** A tensor backend: runs named ATen-style operators on opaque handles. */
/** {@link Backend.cudaMemoryStats}: current and peak bytes allocated to tensors / reserved by the caching allocator. */
export interface CudaMemoryStats {
  allocated: number;
  peakAllocated: number;
  reserved: number;
  peakReserved: number;
}

export interface Backend {
  /** Short name ("libtorch"). */
  readonly name: string;
  /** Resolves an operator `name.overload` (e.g. `aten::add`, `Tensor`) to an id; null if absent and `optional`. */
  findOp(name: string, overload: string, optional?: boolean): number | null;
  /** The operator's schema text, e.g. `aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor`. */
  opSchema(id: number): string;
  /** Runs an operator with positional arguments (trailing defaults may be omitted). */
  call(id: number, args: unknown[]): unknown;
  /** Creates a tensor from raw little-endian bytes (copied). */
  fromBytes(data: ArrayBufferView, scalarType: number, shape: readonly number[], device?: string): Handle;
  /** Contiguous bytes of a tensor, copied to host memory. */
  toBytes(h: Handle): Uint8Array;
  /** [shape, scalar type code, device string]. */
  meta(h: Handle): [number[], number, string];
  strides(h: Handle): number[];
  dispose(h: Handle): void;
  isDisposed(h: Handle): boolean;
  requiresGrad(h: Handle): boolean;
  setRequiresGrad(h: Handle, on: boolean): void;
  grad(h: Handle): Handle | null;
  setGrad(h: Handle, g: Handle | null): void;
  isLeaf(h: Handle): boolean;
  gradFn(h: Handle): string | null;
  backward(outputs: Handle[], grads: (Handle | null)[], retainGraph: boolean, createGraph: boolean): void;
  autogradGrad(outputs: Handle[], inputs: Handle[], grads: (Handle | null)[], retainGraph: boolean,
    createGraph: boolean, allowUnused: boolean): (Handle | null)[];
  /** Sets grad mode, returning the previous mode. */
  setGradEnabled(on: boolean): boolean;
  isGradEnabled(): boolean;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  manualSeed(seed: number): void;
  /** The default CPU generator's state bytes. */
  getRngState(): Uint8Array;
  /** Restores the default CPU generator's state from {@link getRngState}'s bytes. */
  setRngState(state: Uint8Array): void;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  cudaSynchronize(device?: number): void;
  /**
   * CUDA caching-allocator statistics of one device in bytes (peaks reset afterwards when `reset`); throws in a
   * build without CUDA. Optional: addons built before it existed lack it.
   */
  cudaMemoryStats?(device: number, reset?: boolean): CudaMemoryStats;
  sameData(a: Handle, b: Handle): boolean;
  /**
   * Runs `fn(inputs)` without recording, and records one node that re-runs `fn` with gradients in backward
   * (gradient checkpointing; CPU only).
   */
  checkpoint(fn: (inputs: Handle[]) => Handle[], inputs: Handle[]): Handle[];
  info(): BackendInfo;
  /** Autocast state of a device type: [enabled, scalar type code]. Optional: backends without mixed precision omit it. */
  getAutocast?(deviceType: 'cpu' | 'cuda'): [boolean, number];
  /** Sets autocast (on/off and the low-precision scalar type) for a device type; returns the previous state. */
  setAutocast?(deviceType: 'cpu' | 'cuda', enabled: boolean, scalarType: number): [boolean, number];
  /** Enters (+1) or leaves (-1) an autocast region; leaving the outermost clears the cast cache. Returns the depth. */
  autocastNesting?(delta: 1 | -1): number;
}
