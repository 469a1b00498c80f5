/** Times ViT-Adapter backbone forward passes with random weights (the `bench backbone` command). */
import { backend, getNumThreads, manualSeed, noGrad, randn, scope, cuda } from '../engine/index.js';
import {
  BEIT_ADAPTER_PRESETS, BEiTAdapter, BACKBONE_PRESETS, ViTAdapter, backbonePreset, beitAdapterPreset,
} from '../models/adapter/index.js';

/** Backbone preset names `bench backbone` accepts: the ViT-Adapter sizes and the BEiT-Adapter ones. */
export const BENCH_PRESETS: readonly string[] = Object.freeze([...Object.keys(BACKBONE_PRESETS), ...Object.keys(BEIT_ADAPTER_PRESETS)]);

/**
 * Builds a preset's backbone for `size`×`size` inputs: a ViT-Adapter size (`tiny`, `small`, `base`, `large`) or a
 * BEiT-Adapter one (`beit-base`, `beit-large`; its relative position grid is the input's).
 */
export function buildBenchBackbone(preset: string, size: number): ViTAdapter | BEiTAdapter {
  if (preset in BEIT_ADAPTER_PRESETS) return new BEiTAdapter(beitAdapterPreset(preset, size));
  if (preset in BACKBONE_PRESETS) return new ViTAdapter(backbonePreset(preset));
  throw new Error(`unknown backbone preset ${JSON.stringify(preset)}; expected one of ${BENCH_PRESETS.join(', ')}`);
}

/** Options of {@link benchBackbone}. */
export interface BenchBackboneOptions {
  preset: string;
  size: number;
  batch?: number;
  device?: string;
  repeats?: number;
  warmup?: number;
  /** Force the deformable-attention implementation (native kernel or grid_sample composition). */
  msda?: 'native' | 'composition' | 'auto';
}

/** Result of {@link benchBackbone}; times in seconds per batch. */
export interface BenchBackboneResult {
  preset: string;
  size: number;
  batch: number;
  device: string;
  threads: number;
  torch_version: string;
  msda: string;
  num_parameters: number;
  median_s: number;
  min_s: number;
  max_s: number;
  times_s: number[];
}

/** Builds the preset with random weights, warms up, and times `repeats` forward passes. */
export async function benchBackbone(o: BenchBackboneOptions): Promise<BenchBackboneResult> {
  const { setMsDeformAttnImpl, hasNativeMsDeformAttn } = await import('../models/adapter/deformable-attention.js');
  const msda = o.msda ?? 'auto';
  setMsDeformAttnImpl(msda === 'auto' ? null : msda === 'native');
  const batch = o.batch ?? 1;
  const device = o.device ?? 'cpu';
  const repeats = o.repeats ?? 5;
  if (o.size % 32) throw new Error(`--size must be a multiple of 32, got ${o.size}`);
  manualSeed(0);
  const model = buildBenchBackbone(o.preset, o.size).eval();
  if (device !== 'cpu') model.to(device);
  const input = randn([batch, 3, o.size, o.size], { device }).keep();
  const sync = (): void => { if (device.startsWith('cuda')) cuda.synchronize(); };
  const run = (): number => {
    const t0 = performance.now();
    scope(() => noGrad(() => { model.forward(input); sync(); }));
    return (performance.now() - t0) / 1000;
  };
  for (let i = 0; i < (o.warmup ?? 1); i++) run();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) times.push(run());
  const sorted = [...times].sort((a, b) => a - b);
  const result: BenchBackboneResult = {
    preset: o.preset, size: o.size, batch, device, threads: getNumThreads(), torch_version: backend().info().torchVersion,
    msda: msda === 'auto' ? (hasNativeMsDeformAttn() ? 'native' : 'composition') : msda,
    num_parameters: model.numParameters(),
    median_s: sorted[Math.floor(sorted.length / 2)]!, min_s: sorted[0]!, max_s: sorted[sorted.length - 1]!, times_s: times,
  };
  setMsDeformAttnImpl(null);
  model.dispose();
  input.dispose();
  return result;
}
