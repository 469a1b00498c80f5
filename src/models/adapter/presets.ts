/**
 * Named backbone presets: the paper's ViT-Adapter sizes (Table 10) with the authors' ADE20K config values.
 * Plain objects: spread and override any field.
 */
import type { ViTAdapterOptions } from './vit-adapter.js';

const common: ViTAdapterOptions = {
  pretrain_size: 224, patch_size: 16, mlp_ratio: 4, qkv_bias: true, layer_scale: true, conv_inplane: 64, n_points: 4,
  cffn_ratio: 0.25, deform_ratio: 1.0, with_cffn: true, add_vit_feature: true, use_extra_extractor: true, init_values: 0,
  variant: 'segmentation',
};
const four: [number, number][] = [[0, 2], [3, 5], [6, 8], [9, 11]];

/** ViT-Adapter presets by size. */
export const BACKBONE_PRESETS = {
  /** ViT-Adapter-T (DeiT-T): 192 wide, 12 blocks, 3 heads, 6 deformable heads. */
  tiny: { ...common, embed_dim: 192, depth: 12, num_heads: 3, deform_num_heads: 6, drop_path_rate: 0.1, interaction_indexes: four },
  /** ViT-Adapter-S (DeiT-S): 384 wide, 12 blocks, 6 heads, 6 deformable heads. */
  small: { ...common, embed_dim: 384, depth: 12, num_heads: 6, deform_num_heads: 6, drop_path_rate: 0.2, interaction_indexes: four },
  /** ViT-Adapter-B (DeiT-B / AugReg-B): 768 wide, 12 blocks, 12 heads, 12 deformable heads, deform_ratio 0.5. */
  base: {
    ...common, embed_dim: 768, depth: 12, num_heads: 12, deform_num_heads: 12, drop_path_rate: 0.3, deform_ratio: 0.5,
    interaction_indexes: four,
  },
  /** ViT-Adapter-L (AugReg-L size): 1024 wide, 24 blocks, 16 heads, 16 deformable heads, deform_ratio 0.5. */
  large: {
    ...common, embed_dim: 1024, depth: 24, num_heads: 16, deform_num_heads: 16, drop_path_rate: 0.4, deform_ratio: 0.5,
    interaction_indexes: [[0, 5], [6, 11], [12, 17], [18, 23]],
  },
} satisfies Record<string, ViTAdapterOptions>;

/** Preset names. */
export type BackbonePreset = keyof typeof BACKBONE_PRESETS;

/** The options of a preset (a fresh copy), with overrides applied. */
export function backbonePreset(name: string, overrides: ViTAdapterOptions = {}): ViTAdapterOptions {
  const p = (BACKBONE_PRESETS as Record<string, ViTAdapterOptions>)[name];
  if (!p) throw new Error(`unknown backbone preset ${JSON.stringify(name)}; expected one of ${Object.keys(BACKBONE_PRESETS).join(', ')}`);
  return structuredClone({ ...p, ...overrides });
}
