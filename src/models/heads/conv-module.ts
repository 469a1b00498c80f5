/**
 * mmcv's `ConvModule` (conv → norm → activation, the default order) and the config checks every head shares.
 *
 * State-dict keys as mmcv writes them: `conv.weight` (+ `conv.bias` when no norm follows, mmcv's `bias='auto'`) and,
 * with a norm, `bn.{weight,bias,running_mean,running_var,num_batches_tracked}` (mmcv names the norm layer after its
 * type's abbreviation: `bn` for `BN`, `SyncBN` and `BN2d`), or `gn.{weight,bias}` for `GN` (GroupNorm, no buffers). `SyncBN` checkpoints load into a plain
 * {@link BatchNorm2d}: at inference both normalise with the running statistics; in training this one uses the
 * statistics of the local batch only (no cross-device synchronisation).
 *
 * Supported configs: `conv_cfg` null / `{type:'Conv2d'|'Conv'}`; `norm_cfg` null / `{type:'BN'|'SyncBN'|'BN2d',
 * requires_grad?, eps?, momentum?}` / `{type:'GN', num_groups, requires_grad?, eps?}`; `act_cfg` null /
 * `{type:'ReLU', inplace?}`. Anything else is an error.
 */
import type { Tensor } from '../../engine/index.js';
import { relu, scope } from '../../engine/index.js';
import { BatchNorm2d, Conv2d, GroupNorm, Module, SyncBatchNorm2d, type UnaryModule } from '../../nn/index.js';
import { constant_, kaimingNormal_ } from '../../nn/init.js';
import { checkInt, checkWidth } from '../validate.js';

/** mmcv `norm_cfg` for batch norm. */
export interface BatchNormCfg {
  type: 'BN' | 'SyncBN' | 'BN2d';
  /** Whether the norm's affine parameters are trained (mmcv default true). */
  requires_grad?: boolean;
  eps?: number;
  momentum?: number;
}

/** mmcv `norm_cfg` for group norm (`num_groups` is required, as in mmcv). */
export interface GroupNormCfg {
  type: 'GN';
  num_groups: number;
  /** Whether the norm's affine parameters are trained (mmcv default true). */
  requires_grad?: boolean;
  eps?: number;
}

/** mmcv `norm_cfg`: batch norm or group norm. */
export type NormCfg = BatchNormCfg | GroupNormCfg;

/** mmcv `act_cfg` (ReLU only). */
export interface ActCfg {
  type: 'ReLU';
  inplace?: boolean;
}

/** mmcv `conv_cfg` (plain convolution only). */
export interface ConvCfg {
  type: 'Conv2d' | 'Conv';
}

/** A plain config dict as read from a JSON / Python config. */
export type ConfigDict = Record<string, unknown>;

function describe(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

function isDict(v: unknown): v is ConfigDict {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Throws naming every key of `cfg` not in `allowed`. */
export function checkKeys(where: string, cfg: object, allowed: readonly string[]): void {
  const known = new Set(allowed);
  const unknown = Object.keys(cfg).filter((k) => !known.has(k));
  if (unknown.length) {
    throw new Error(`${where}: unknown config key(s) ${unknown.join(', ')}; accepted keys: ${[...allowed].join(', ')}`);
  }
}

/** Validates an mmcv `norm_cfg` (null/undefined = no norm). */
export function parseNormCfg(where: string, v: unknown): NormCfg | null {
  if (v === null || v === undefined) return null;
  if (!isDict(v)) throw new Error(`${where}: norm_cfg must be a dict or null, got ${describe(v)}`);
  if (v.type === 'GN') {
    checkKeys(`${where}: norm_cfg`, v, ['type', 'num_groups', 'requires_grad', 'eps']);
    if (!Number.isInteger(v.num_groups) || (v.num_groups as number) < 1) {
      throw new Error(`${where}: norm_cfg of type GN needs num_groups, a positive integer, got ${describe(v.num_groups)}`);
    }
  } else {
    checkKeys(`${where}: norm_cfg`, v, ['type', 'requires_grad', 'eps', 'momentum']);
  }
  if (v.type !== 'BN' && v.type !== 'SyncBN' && v.type !== 'BN2d' && v.type !== 'GN') {
    throw new Error(`${where}: norm_cfg type ${describe(v.type)} is not supported; only BN, SyncBN, BN2d ` +
      '(batch norm; SyncBN runs as plain BatchNorm2d) and GN (group norm) are implemented');
  }
  if (v.requires_grad !== undefined && typeof v.requires_grad !== 'boolean') {
    throw new Error(`${where}: norm_cfg.requires_grad must be a boolean, got ${describe(v.requires_grad)}`);
  }
  for (const k of ['eps', 'momentum'] as const) {
    if (v[k] !== undefined && (typeof v[k] !== 'number' || !((v[k] as number) >= 0))) {
      throw new Error(`${where}: norm_cfg.${k} must be a non-negative number, got ${describe(v[k])}`);
    }
  }
  return v as unknown as NormCfg;
}

/** Validates an mmcv `act_cfg` (null = no activation; undefined = the default `{type:'ReLU'}`). */
export function parseActCfg(where: string, v: unknown): ActCfg | null {
  if (v === undefined) return { type: 'ReLU' };
  if (v === null) return null;
  if (!isDict(v)) throw new Error(`${where}: act_cfg must be a dict or null, got ${describe(v)}`);
  checkKeys(`${where}: act_cfg`, v, ['type', 'inplace']);
  if (v.type !== 'ReLU') {
    throw new Error(`${where}: act_cfg type ${describe(v.type)} is not supported; only ReLU is implemented`);
  }
  return { type: 'ReLU', inplace: v.inplace === true };
}

/** Validates an mmcv `conv_cfg` (null/undefined = plain Conv2d). */
export function parseConvCfg(where: string, v: unknown): ConvCfg | null {
  if (v === null || v === undefined) return null;
  if (!isDict(v)) throw new Error(`${where}: conv_cfg must be a dict or null, got ${describe(v)}`);
  checkKeys(`${where}: conv_cfg`, v, ['type']);
  if (v.type !== 'Conv2d' && v.type !== 'Conv') {
    throw new Error(`${where}: conv_cfg type ${describe(v.type)} is not supported; only plain convolution (null, Conv2d, Conv)`);
  }
  return { type: v.type };
}

/** Options of {@link ConvModule}. */
export interface ConvModuleOptions {
  /** Square kernel size (default 1). */
  kernelSize?: number;
  /** Stride (default 1). */
  stride?: number;
  /**
   * Zero padding. Default `floor(kernelSize / 2) · dilation` ("same" for odd kernels). mmcv's own default is 0, but
   * every mmseg head and neck passes exactly this value explicitly, so the default only saves typing.
   */
  padding?: number;
  /** Dilation (default 1). */
  dilation?: number;
  /** Groups (default 1). */
  groups?: number;
  /** Conv bias: true, false or `'auto'` (default: bias only when there is no norm, as mmcv). */
  bias?: boolean | 'auto';
  /** The norm: a `norm_cfg`, `true` for plain BN, or null/false for none (default none, as mmcv). */
  norm?: NormCfg | boolean | null;
  /** The activation: an `act_cfg`, `true` for ReLU, or null/false for none (default ReLU, as mmcv). */
  act?: ActCfg | boolean | null;
  /** Checked for config compatibility: only plain convolutions exist here. */
  convCfg?: ConvCfg | null;
}

/** conv → BatchNorm / GroupNorm → ReLU, with mmcv's keys `conv.*`, `bn.*` / `gn.*`. */
export class ConvModule extends Module implements UnaryModule {
  readonly conv: Conv2d;
  readonly bn: BatchNorm2d | null = null;
  readonly gn: GroupNorm | null = null;
  readonly withAct: boolean;
  readonly normCfg: NormCfg | null;

  constructor(readonly inChannels: number, readonly outChannels: number, o: ConvModuleOptions = {}) {
    super();
    const k = o.kernelSize ?? 1;
    const dilation = o.dilation ?? 1;
    checkWidth('ConvModule', 'in_channels', inChannels);
    checkWidth('ConvModule', 'out_channels', outChannels);
    for (const [name, v] of [['kernel_size', k], ['dilation', dilation], ['stride', o.stride ?? 1], ['groups', o.groups ?? 1]] as const) {
      checkInt('ConvModule', name, v, { min: 1, max: 1024 });
    }
    const padding = o.padding ?? Math.floor(k / 2) * dilation;
    checkInt('ConvModule', 'padding', padding, { min: 0, max: 1024 });
    parseConvCfg('ConvModule', o.convCfg);
    this.normCfg = o.norm === true ? { type: 'BN' } : o.norm ? parseNormCfg('ConvModule', o.norm) : null;
    this.withAct = o.act === undefined || o.act === true ? true : o.act ? parseActCfg('ConvModule', o.act) !== null : false;
    const bias = o.bias === undefined || o.bias === 'auto' ? this.normCfg === null : o.bias;
    this.conv = this.registerModule('conv', new Conv2d(inChannels, outChannels, k, {
      stride: o.stride ?? 1, padding, dilation, groups: o.groups ?? 1, bias,
    }));
    if (this.normCfg?.type === 'GN') {
      const gn = new GroupNorm(this.normCfg.num_groups, outChannels, this.normCfg.eps ?? 1e-5);
      this.gn = this.registerModule('gn', gn);
      if (this.normCfg.requires_grad === false) gn.freeze();
    } else if (this.normCfg) {
      const bn = new BatchNorm2d(outChannels, { eps: this.normCfg.eps ?? 1e-5, momentum: this.normCfg.momentum ?? 0.1 });
      this.bn = this.registerModule('bn', bn);
      if (this.normCfg.requires_grad === false) bn.freeze();
    }
    this.initWeights();
  }

  /** mmcv's ConvModule init: Kaiming-normal (fan_out, ReLU gain) conv weights, zero bias; norm weight 1, bias 0. */
  initWeights(): void {
    kaimingNormal_(this.conv.weight, { mode: 'fan_out', nonlinearity: 'relu' });
    if (this.conv.bias) constant_(this.conv.bias, 0);
    const norm = this.bn ?? this.gn;
    if (norm?.weight) constant_(norm.weight, 1);
    if (norm?.bias) constant_(norm.bias, 0);
  }

  forward(x: Tensor): Tensor {
    return scope(() => this.run(x));
  }

  private run(x: Tensor): Tensor {
    let y = this.conv.forward(x);
    if (this.bn) {
      if (this.training) {
        const [n, , h, w] = y.shape as [number, number, number, number];
        // PyTorch refuses batch statistics of a single value per channel (the unbiased running variance would divide
        // by zero); this happens e.g. to the 1×1 pyramid-pooling branch with batch size 1. A SyncBatchNorm2d in a
        // process group counts the values of all ranks (and checks that count itself).
        const synced = this.bn instanceof SyncBatchNorm2d && this.bn.pg !== null && !this.bn.pg.destroyed;
        if (n * h * w === 1 && !synced) {
          throw new Error(`ConvModule: BatchNorm in training mode needs more than 1 value per channel, got input ` +
            `[${y.shape.join(', ')}] (use a batch of at least 2, or eval())`);
        }
      }
      this.bn.training = this.training;
      y = this.bn.forward(y);
    } else if (this.gn) {
      y = this.gn.forward(y);
    }
    return this.withAct ? relu(y) : y;
  }
}
