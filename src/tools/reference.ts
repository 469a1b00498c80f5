/**
 * Parity checks against reference fixtures (the format of ../shared/fixtures): ViT-Adapter backbones
 * (`DIR/NAME` with NAME.json, NAME.weights.safetensors, NAME.io.safetensors) and deformable-attention cores
 * (`msda_*.safetensors`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { type DType, type Tensor, noGrad, scope } from '../engine/index.js';
import { ViTAdapter, type ViTAdapterOptions, msDeformAttnCore } from '../models/adapter/index.js';
import { BEiTAdapter, type BEiTAdapterOptions } from '../models/adapter/beit-adapter.js';
import { BEiTBaseline, type BEiTBaselineOptions } from '../models/beit.js';
import { type Module, loadWeights, readStateDict } from '../nn/index.js';
import { maxRelativeError } from './compare.js';
import { buildHeadFixture } from './reference-heads.js';
import { beitFixtureKind, checkBEiTFixture } from './reference-beit.js';
import { checkDetectionFixture, isDetectionFixture } from './reference-detection.js';

/** One compared tensor. */
export interface ParityRow { name: string; maxRelErr: number; ok: boolean }

/** The tolerance of the fixtures' README for float32 implementations. */
export const PARITY_TOLERANCE = 1e-4;

/** Options of {@link checkReference}. */
export interface CheckReferenceOptions { device?: string; dtype?: DType; tolerance?: number }

function row(name: string, got: Tensor, ref: Tensor, tol: number): ParityRow {
  const e = maxRelativeError(got, ref);
  return { name, maxRelErr: e, ok: e < tol && Number.isFinite(e) };
}

/** A comparison of one stored tensor other than the relative error (e.g. label maps). */
export type CustomCompare = (got: Tensor, ref: Tensor) => ParityRow;

/**
 * Compares every stored tensor of a fixture's io file (except the inputs) with what the run produced under the same
 * name; a name the run did not produce fails. `custom` replaces the relative-error comparison for the names it
 * holds. Disposes both maps.
 */
export function compareStored(io: Map<string, Tensor>, got: Map<string, Tensor>, tol: number,
  isInput: (name: string) => boolean, custom: ReadonlyMap<string, CustomCompare> = new Map()): ParityRow[] {
  const rows: ParityRow[] = [];
  for (const [name, ref] of io) {
    if (isInput(name)) continue;
    const g = got.get(name);
    const c = custom.get(name);
    rows.push(!g ? { name, maxRelErr: Number.NaN, ok: false } : c ? c(g, ref) : row(name, g, ref, tol));
  }
  io.forEach((t) => t.dispose());
  got.forEach((t) => t.dispose());
  return rows;
}

/** Deformable-attention core fixture: forward and the three gradients. */
export function checkMsdaFixture(path: string, o: CheckReferenceOptions = {}): ParityRow[] {
  const tol = o.tolerance ?? PARITY_TOLERANCE;
  const device = o.device ?? 'cpu';
  const dtype = o.dtype ?? 'float32';
  return scope(() => {
    const f = readStateDict(path);
    const get = (k: string): Tensor => {
      const t = f.get(k);
      if (!t) throw new Error(`${path}: no tensor ${JSON.stringify(k)} (is this an msda fixture?)`);
      return t;
    };
    const shapesT = get('spatial_shapes').toTypedArray();
    const shapes: [number, number][] = [];
    for (let i = 0; i < shapesT.length; i += 2) shapes.push([shapesT[i]!, shapesT[i + 1]!]);
    const starts = Array.from(get('level_start_index').toTypedArray());
    const leaf = (k: string): Tensor => get(k).to({ dtype, device }).detach().requiresGrad_(true);
    const value = leaf('value');
    const loc = leaf('sampling_locations');
    const attn = leaf('attention_weights');
    const out = msDeformAttnCore(value, shapes, starts, loc, attn);
    out.mul(get('grad_output').to({ dtype, device })).sum().backward();
    const rows = [row('output', out, get('output'), tol)];
    for (const [n, t] of [['grad_value', value], ['grad_sampling_locations', loc], ['grad_attention_weights', attn]] as const) {
      const g = t.grad;
      if (!g) throw new Error(`no gradient for ${n}`);
      rows.push(row(n, g, get(n), tol));
    }
    f.forEach((t) => t.dispose());
    return rows;
  });
}

/** A backbone fixture's JSON: the reference class (`model`), its constructor arguments and the code base. */
export interface BackboneFixtureConfig {
  model?: string;
  kwargs: Record<string, unknown>;
  variant?: string;
}

/** A backbone that parity checks can run: image → four maps, intermediates through `capture`. */
export interface FixtureBackbone extends Module {
  forward(x: Tensor, capture?: (name: string, t: Tensor) => void): Tensor[];
}

/**
 * Builds the model a backbone fixture names (`model`: `ViTAdapter` when absent, `BEiTAdapter`, `BEiTBaseline`) from
 * its `kwargs` and `variant`.
 */
export function buildFixtureBackbone(cfg: BackboneFixtureConfig): FixtureBackbone {
  const variant = (cfg.variant ?? 'segmentation') as 'segmentation' | 'detection';
  switch (cfg.model ?? 'ViTAdapter') {
    case 'ViTAdapter': return new ViTAdapter({ ...(cfg.kwargs as ViTAdapterOptions), variant });
    case 'BEiTAdapter': return new BEiTAdapter({ ...(cfg.kwargs as BEiTAdapterOptions), variant });
    case 'BEiTBaseline': return new BEiTBaseline({ ...(cfg.kwargs as BEiTBaselineOptions), variant });
    default: throw new Error(`check-reference: unknown backbone model ${JSON.stringify(cfg.model)} (expected ViTAdapter, BEiTAdapter or BEiTBaseline)`);
  }
}

/** Backbone fixture `DIR/NAME`: outputs f1..f4 and every intermediate in NAME.io.safetensors. */
export function checkBackboneFixture(prefix: string, o: CheckReferenceOptions = {}): ParityRow[] {
  const tol = o.tolerance ?? PARITY_TOLERANCE;
  const device = o.device ?? 'cpu';
  const cfg = JSON.parse(readFileSync(`${prefix}.json`, 'utf8')) as BackboneFixtureConfig;
  const model = buildFixtureBackbone(cfg);
  loadWeights(model, `${prefix}.weights.safetensors`, { strict: true });
  model.eval();
  if (device !== 'cpu') model.to(device);
  try {
    return scope(() => {
      const io = readStateDict(`${prefix}.io.safetensors`);
      const input = io.get('input');
      if (!input) throw new Error(`${prefix}.io.safetensors has no "input"`);
      const got = new Map<string, Tensor>();
      const outs = noGrad(() => model.forward(input.to(device), (n, t) => got.set(n, t.keep())));
      outs.forEach((t, i) => got.set(`f${i + 1}`, t));
      return compareStored(io, got, tol, (name) => name === 'input');
    });
  } finally {
    model.dispose();
  }
}

/**
 * Checks any supported fixture: an `msda_*.safetensors` file, a backbone prefix, or a head prefix (JSON with
 * `decode_head` / `auxiliary_head`).
 */
export function checkReference(target: string, o: CheckReferenceOptions = {}): ParityRow[] {
  if (target.endsWith('.safetensors') && existsSync(target)) {
    if (!basename(target).startsWith('msda')) throw new Error(`${target}: expected an msda_*.safetensors file or a DIR/NAME prefix`);
    return checkMsdaFixture(target, o);
  }
  const json = `${target}.json`;
  if (!existsSync(json)) throw new Error(`check-reference: ${json} not found (give DIR/NAME of a fixture, or an msda_*.safetensors file)`);
  const cfg = JSON.parse(readFileSync(json, 'utf8')) as Record<string, unknown>;
  if ('kwargs' in cfg) return checkBackboneFixture(target, o);
  if ('decode_head' in cfg || 'auxiliary_head' in cfg) return buildHeadFixture(target, cfg, o);
  if (isDetectionFixture(cfg)) return checkDetectionFixture(target, cfg, o);
  const beit = beitFixtureKind(cfg);
  if (beit) return checkBEiTFixture(beit, target, cfg, o);
  throw new Error(`check-reference: ${json} is neither a backbone fixture (kwargs), a head fixture (decode_head/auxiliary_head) ` +
    'nor a BEiT-family fixture (encoder_config, relative position / position table resize, pretrained checkpoint)');
}
