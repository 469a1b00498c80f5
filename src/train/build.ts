/**
 * Building the optimizer from an mmcv `optimizer` config dict, as the authors' configs write it, e.g.
 * `{type: 'AdamW', lr: 1.2e-4, betas: [0.9, 0.999], weight_decay: 0.01, constructor: 'LayerDecayOptimizerConstructor',
 *   paramwise_cfg: {num_layers: 12, layer_decay_rate: 0.95}}`.
 */
import type { Module } from '../nn/index.js';
import { AdamW } from './optim.js';
import { type ParamGroupSpec, buildParamGroups, buildPlainParamGroups } from './param-groups.js';

/** mmcv's `optimizer` dict (AdamW only). */
export interface OptimizerConfig {
  type: 'AdamW';
  lr: number;
  betas?: [number, number];
  eps?: number;
  weight_decay?: number;
  /**
   * `LayerDecayOptimizerConstructor` (the ViT-Adapter segmentation configs) or `DefaultOptimizerConstructor` / absent
   * (one group). (`Function` only because every object inherits a `constructor`; an inherited one means absent.)
   */
  // eslint-disable-next-line @typescript-eslint/ban-types
  constructor?: 'LayerDecayOptimizerConstructor' | 'DefaultOptimizerConstructor' | Function;
  /** With `LayerDecayOptimizerConstructor`: `{num_layers, layer_decay_rate}`. */
  paramwise_cfg?: { num_layers: number; layer_decay_rate: number };
}

/** Options of {@link buildOptimizer} beyond the config. */
export interface BuildOptimizerOptions {
  /** Parameter-name prefixes to freeze first (see {@link ParamGroupOptions.freeze}). */
  freeze?: readonly string[];
  /** Multi-tensor operators (default true). */
  foreach?: boolean;
}

const KEYS = ['type', 'lr', 'betas', 'eps', 'weight_decay', 'constructor', 'paramwise_cfg'];

/** The parameter groups an mmcv `optimizer` config makes for `model` (validating the config). */
export function paramGroupsFromConfig(model: Module, cfg: OptimizerConfig, o: BuildOptimizerOptions = {}): ParamGroupSpec[] {
  const where = 'optimizer config';
  if (!cfg || typeof cfg !== 'object') throw new Error(`${where} must be an object`);
  for (const k of Object.keys(cfg)) if (!KEYS.includes(k)) throw new Error(`${where}: unknown key ${JSON.stringify(k)}; allowed: ${KEYS.join(', ')}`);
  if (cfg.type !== 'AdamW') throw new Error(`${where}: type ${JSON.stringify(cfg.type)} is not supported; only AdamW`);
  const weightDecay = cfg.weight_decay ?? 0.01; // torch AdamW's default
  // `constructor` is also inherited from Object.prototype: read it only when the config has it
  const ctor: unknown = Object.prototype.hasOwnProperty.call(cfg, 'constructor') ? cfg.constructor : 'DefaultOptimizerConstructor';
  if (ctor === 'LayerDecayOptimizerConstructor') {
    const pw = cfg.paramwise_cfg;
    if (!pw || typeof pw !== 'object') throw new Error(`${where}: LayerDecayOptimizerConstructor needs paramwise_cfg {num_layers, layer_decay_rate}`);
    for (const k of Object.keys(pw)) if (k !== 'num_layers' && k !== 'layer_decay_rate') throw new Error(`${where}: paramwise_cfg: unknown key ${JSON.stringify(k)}`);
    return buildParamGroups(model, { lr: cfg.lr, weightDecay, numLayers: pw.num_layers, layerDecayRate: pw.layer_decay_rate, freeze: o.freeze });
  }
  if (ctor !== 'DefaultOptimizerConstructor') throw new Error(`${where}: constructor ${JSON.stringify(ctor)} is not supported; expected LayerDecayOptimizerConstructor or DefaultOptimizerConstructor`);
  if (cfg.paramwise_cfg) throw new Error(`${where}: paramwise_cfg is only supported with LayerDecayOptimizerConstructor`);
  return buildPlainParamGroups(model, { lr: cfg.lr, weightDecay, freeze: o.freeze });
}

/** An {@link AdamW} over the groups of {@link paramGroupsFromConfig}. */
export function buildOptimizer(model: Module, cfg: OptimizerConfig, o: BuildOptimizerOptions = {}): AdamW {
  return new AdamW(paramGroupsFromConfig(model, cfg, o), { betas: cfg.betas, eps: cfg.eps, foreach: o.foreach });
}
