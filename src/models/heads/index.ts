/**
 * Semantic-segmentation heads with mmseg 0.x semantics and state-dict keys: `ConvModule`, the `DecodeHead` base,
 * `UPerHead` (ViT-Adapter's decode head), `FCNHead` (its auxiliary head), Semantic FPN (`FPN` neck + `FPNHead`),
 * the authors' `Mask2FormerHead`, and builders from mmseg config dicts.
 */
import type { DecodeHead } from './decode-head.js';
import { Mask2FormerHead, type Mask2FormerHeadConfig } from './mask2former/index.js';
import { FCNHead, type FCNHeadConfig } from './fcn-head.js';
import { FPN, type FPNConfig, FPNHead, type FPNHeadConfig } from './fpn.js';
import { UPerHead, type UPerHeadConfig } from './uper-head.js';

export * from './conv-module.js';
export * from './decode-head.js';
export * from './uper-head.js';
export * from './fcn-head.js';
export * from './fpn.js';
export * from './mask2former/index.js';

/** An mmseg decode-head config dict: `type` plus that head's keys (snake_case, verbatim). */
export type HeadConfig =
  | ({ type: 'UPerHead' } & UPerHeadConfig)
  | ({ type: 'FCNHead' } & FCNHeadConfig)
  | ({ type: 'FPNHead' } & FPNHeadConfig)
  | ({ type: 'Mask2FormerHead' } & Mask2FormerHeadConfig);

/** Head types {@link buildHead} knows. */
export const HEAD_TYPES = ['UPerHead', 'FCNHead', 'FPNHead', 'Mask2FormerHead'] as const;

function splitType(where: string, cfg: unknown): [string, Record<string, unknown>] {
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new Error(`${where}: config must be a dict`);
  const { type, ...rest } = cfg as Record<string, unknown>;
  if (typeof type !== 'string') throw new Error(`${where}: config needs a string "type"`);
  return [type, rest];
}

/**
 * Builds a decode head from an mmseg config dict (`{type: 'UPerHead' | 'FCNHead' | 'FPNHead' | 'Mask2FormerHead',
 * ...}`). Unknown keys, unsupported `norm_cfg` / `act_cfg` / `conv_cfg` / losses / samplers are errors naming them.
 */
export function buildHead(cfg: HeadConfig | Record<string, unknown>): DecodeHead | Mask2FormerHead {
  const [type, rest] = splitType('buildHead', cfg);
  switch (type) {
    case 'UPerHead': return new UPerHead(rest as unknown as UPerHeadConfig);
    case 'FCNHead': return new FCNHead(rest as unknown as FCNHeadConfig);
    case 'FPNHead': return new FPNHead(rest as unknown as FPNHeadConfig);
    case 'Mask2FormerHead': return new Mask2FormerHead(rest as unknown as Mask2FormerHeadConfig);
    default:
      throw new Error(`buildHead: unknown head type ${JSON.stringify(type)}; supported: ${HEAD_TYPES.join(', ')}`);
  }
}

/** An mmseg neck config dict (`{type: 'FPN', ...}`). */
export type NeckConfig = { type: 'FPN' } & FPNConfig;

/** Builds a neck from an mmseg config dict; only `FPN`. */
export function buildNeck(cfg: NeckConfig | Record<string, unknown>): FPN {
  const [type, rest] = splitType('buildNeck', cfg);
  if (type !== 'FPN') throw new Error(`buildNeck: unknown neck type ${JSON.stringify(type)}; supported: FPN`);
  return new FPN(rest as unknown as FPNConfig);
}
