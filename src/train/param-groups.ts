/**
 * Optimizer parameter groups: the authors' `LayerDecayOptimizerConstructor` (ViT-Adapter, layer-wise lr decay) and
 * the plain constructor (one group). The rules, as in their code (see `../shared/fixtures/training/README.md`):
 *
 * - walk `model.namedParameters()` (PyTorch order), skipping parameters with `requiresGrad` false;
 * - no weight decay iff the parameter is 1-d or its name ends with `.bias` (their extra name list `pos_embed`,
 *   `cls_token`, `visual_embed` is compared with full names and never matches, so it is not applied here either);
 * - layer id 0 for the embeddings (`backbone.cls_token|mask_token|pos_embed|visual_embed`, `backbone.patch_embed*`,
 *   `backbone.visual_embed*`, `decode_head.{mask,cls,level,query}_embed*`, `decode_head.query_feat*`), `i + 1` for
 *   `backbone.blocks.i.*` / `backbone.layers.i.*`, `num_layers + 1` for everything else (adapter and heads);
 * - group `layer_{id}_{decay|no_decay}`, `lr_scale = layer_decay_rate ** (num_layers + 1 - id)` (Python's float pow),
 *   `lr = lr_scale * lr`, weight decay `weight_decay` or 0; groups in the order their first parameter appears.
 */
import type { Tensor } from '../engine/index.js';
import type { Module } from '../nn/index.js';
import { pyPow } from './pow.js';

/** One optimizer parameter group, as the constructors build it. */
export interface ParamGroupSpec {
  /** `layer_{id}_{decay|no_decay}` (layer decay) or `default` (plain). */
  groupName: string;
  /** Layer id (layer decay), or null for the plain constructor. */
  layerId: number | null;
  /** Factor on the base lr (1 for the plain constructor). */
  lrScale: number;
  /** The group's lr (`lrScale * base lr`). */
  lr: number;
  /** The group's weight decay (0 for exempt parameters). */
  weightDecay: number;
  /** The parameters, in `namedParameters()` order. */
  params: Tensor[];
  /** Their dotted names. */
  paramNames: string[];
  /** The state index (torch `optimizer.state_dict()` id) of the group's first parameter; ids run through the groups. */
  stateIndexStart: number;
}

/** Options shared by both constructors. */
export interface ParamGroupOptions {
  /** Base learning rate (the recipe's 1.2e-4). */
  lr: number;
  /** Base weight decay (the recipe's 0.01). */
  weightDecay: number;
  /**
   * Parameter-name prefixes to freeze before grouping (e.g. `['backbone.']` for a frozen backbone, or
   * `['backbone.blocks.', 'backbone.patch_embed.', 'backbone.pos_embed']` for a frozen plain ViT with a trained
   * adapter): their `requiresGrad` is set to false, so they are skipped as every frozen parameter is.
   */
  freeze?: readonly string[];
}

/** Options of {@link buildParamGroups} (the authors' `paramwise_cfg` plus the optimizer's lr and weight decay). */
export interface LayerDecayOptions extends ParamGroupOptions {
  /** Number of transformer blocks (`paramwise_cfg.num_layers`: 12 for T/S/B, 24 for L). */
  numLayers: number;
  /** `paramwise_cfg.layer_decay_rate` (0.95 in the ADE20K configs, 0.9 for some). */
  layerDecayRate: number;
}

const LAYER0_EXACT = new Set(['backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed', 'backbone.visual_embed']);
const LAYER0_PREFIX = [
  'backbone.patch_embed', 'backbone.visual_embed', 'decode_head.mask_embed', 'decode_head.cls_embed',
  'decode_head.level_embed', 'decode_head.query_embed', 'decode_head.query_feat',
];

/**
 * The authors' `get_num_layer_for_vit`: the layer id of a parameter name, with `numMaxLayer = numLayers + 2`.
 */
export function layerIdForVit(name: string, numMaxLayer: number): number {
  if (LAYER0_EXACT.has(name)) return 0;
  if (LAYER0_PREFIX.some((p) => name.startsWith(p))) return 0;
  if (name.startsWith('backbone.blocks') || name.startsWith('backbone.layers')) {
    const part = name.split('.')[2];
    const i = Number(part);
    if (part === undefined || !/^\d+$/.test(part)) {
      throw new Error(`layer decay: cannot read a block index from parameter ${JSON.stringify(name)} (expected backbone.blocks.<i>.*)`);
    }
    return i + 1;
  }
  return numMaxLayer - 1;
}

/** Whether the authors' constructor exempts a parameter from weight decay (1-d or a `.bias`). */
export function isNoDecay(name: string, shape: readonly number[]): boolean {
  return shape.length === 1 || name.endsWith('.bias');
}

function checkNumber(where: string, name: string, v: unknown, o: { min?: number; integer?: boolean } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || (o.integer && !Number.isInteger(v)) || (o.min !== undefined && v < o.min)) {
    throw new Error(`${where}: ${name} must be a ${o.integer ? 'integer' : 'finite number'}${o.min !== undefined ? ` >= ${o.min}` : ''}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function applyFreeze(model: Module, prefixes: readonly string[] | undefined): void {
  if (!prefixes?.length) return;
  let hit = 0;
  for (const [n, p] of model.namedParameters()) {
    if (prefixes.some((x) => n.startsWith(x))) { p.requiresGrad = false; hit++; }
  }
  if (hit === 0) throw new Error(`freeze: no parameter name starts with ${prefixes.map((x) => JSON.stringify(x)).join(' or ')}`);
}

/**
 * The authors' `LayerDecayOptimizerConstructor.add_params`: groups in `optimizer.param_groups` order, with names,
 * lr scales, lrs, weight decays, parameter names and state indices exactly as theirs (see the module comment).
 * Works for any module whose names follow the mmseg layout (`backbone.blocks.<i>.*`, `decode_head.*`, ...).
 */
export function buildParamGroups(model: Module, o: LayerDecayOptions): ParamGroupSpec[] {
  const where = 'buildParamGroups';
  const lr = checkNumber(where, 'lr', o.lr, { min: 0 });
  const wd = checkNumber(where, 'weightDecay', o.weightDecay, { min: 0 });
  const numLayers = checkNumber(where, 'numLayers', o.numLayers, { min: 0, integer: true }) + 2;
  const rate = checkNumber(where, 'layerDecayRate', o.layerDecayRate, { min: 0 });
  applyFreeze(model, o.freeze);
  const groups = new Map<string, ParamGroupSpec>();
  for (const [name, p] of model.namedParameters()) {
    if (!p.requiresGrad) continue;
    const noDecay = isNoDecay(name, p.shape);
    const layerId = layerIdForVit(name, numLayers);
    if ((name.startsWith('backbone.blocks') || name.startsWith('backbone.layers')) && layerId - 1 >= numLayers - 2) {
      throw new Error(`${where}: parameter ${name} is in block ${layerId - 1}, but numLayers is ${numLayers - 2} (set it to the backbone's depth)`);
    }
    const groupName = `layer_${layerId}_${noDecay ? 'no_decay' : 'decay'}`;
    let g = groups.get(groupName);
    if (!g) {
      const lrScale = pyPow(rate, numLayers - layerId - 1);
      g = { groupName, layerId, lrScale, lr: lrScale * lr, weightDecay: noDecay ? 0 : wd, params: [], paramNames: [], stateIndexStart: 0 };
      groups.set(groupName, g);
    }
    g.params.push(p);
    g.paramNames.push(name);
  }
  return numberGroups([...groups.values()], where);
}

/**
 * The plain constructor (mmcv's `DefaultOptimizerConstructor` without `paramwise_cfg`): one group `default` with every
 * trainable parameter, lr scale 1, the base weight decay on all of them. (mmcv also puts frozen parameters in that
 * group, where they never receive a gradient; they are left out here, so state indices count trainable ones only.)
 */
export function buildPlainParamGroups(model: Module, o: ParamGroupOptions): ParamGroupSpec[] {
  const where = 'buildPlainParamGroups';
  const lr = checkNumber(where, 'lr', o.lr, { min: 0 });
  const wd = checkNumber(where, 'weightDecay', o.weightDecay, { min: 0 });
  applyFreeze(model, o.freeze);
  const g: ParamGroupSpec = { groupName: 'default', layerId: null, lrScale: 1, lr, weightDecay: wd, params: [], paramNames: [], stateIndexStart: 0 };
  for (const [name, p] of model.namedParameters()) {
    if (!p.requiresGrad) continue;
    g.params.push(p);
    g.paramNames.push(name);
  }
  return numberGroups([g], where);
}

function numberGroups(groups: ParamGroupSpec[], where: string): ParamGroupSpec[] {
  let next = 0;
  for (const g of groups) {
    g.stateIndexStart = next;
    next += g.params.length;
  }
  if (next === 0) throw new Error(`${where}: the model has no trainable parameters (all are frozen)`);
  return groups;
}

/** One group as `--describe-params --json` prints it (the fields of `groups[]` in `param_groups_tiny.json`). */
export interface ParamGroupDescription {
  index: number;
  group_name: string;
  layer_id: number | null;
  lr_scale: number;
  lr: number;
  weight_decay: number;
  betas: [number, number];
  eps: number;
  amsgrad: boolean;
  num_params: number;
  numel: number;
  state_index_start: number;
  param_names: string[];
}

/** Optimizer hyper-parameters shown per group by {@link describeParamGroups} (default: the group's own, else AdamW's defaults). */
export interface DescribeOptions {
  betas?: [number, number];
  eps?: number;
}

/**
 * JSON description of parameter groups, one entry per group with the fields of `groups[]` in
 * `../shared/fixtures/training/param_groups_tiny.json` (in that order). Accepts the constructors' groups or an
 * {@link AdamW}'s `paramGroups` (whose lr may have been changed by a schedule).
 */
export function describeParamGroups(groups: readonly ParamGroupSpec[], o: DescribeOptions = {}): { groups: ParamGroupDescription[] } {
  return {
    groups: groups.map((g, index) => ({
      index,
      group_name: g.groupName,
      layer_id: g.layerId,
      lr_scale: g.lrScale,
      lr: g.lr,
      weight_decay: g.weightDecay,
      betas: [...(o.betas ?? (g as Partial<{ betas: [number, number] }>).betas ?? [0.9, 0.999])] as [number, number],
      eps: o.eps ?? (g as Partial<{ eps: number }>).eps ?? 1e-8,
      amsgrad: false,
      num_params: g.params.length,
      numel: g.params.reduce((a, p) => a + p.numel(), 0),
      state_index_start: g.stateIndexStart,
      param_names: [...g.paramNames],
    })),
  };
}
