/**
 * The authors' Mask R-CNN configs for ViT-Adapter (ViT-Adapter repo, `detection/configs/mask_rcnn/
 * mask_rcnn_deit_adapter_{tiny,small,base}_fpn_3x_coco.py` on mmdetection's `_base_/models/mask_rcnn_r50_fpn.py`),
 * as plain objects with the configs' values.
 *
 * Backbone (ViTAdapter, `detection` variant, defaults pretrain_size 224, layer_scale true, init_values 0, with_cffn,
 * add_vit_feature, use_extra_extractor): patch 16, mlp_ratio 4, conv_inplane 64, n_points 4, cffn_ratio 0.25,
 * interaction_indexes [[0,2],[3,5],[6,8],[9,11]], window attention in blocks 0, 1, 3, 4, 6, 7, 9, 10 (window 14) and
 * global attention in blocks 2, 5, 8, 11.
 * - tiny: embed_dim 192, 3 heads, drop_path_rate 0.1, deform_num_heads 6, deform_ratio 1.0 (checked against the
 *   key list and config of `../shared/fixtures/detection/mask_rcnn_adapter_tiny_keys.json`);
 * - small: embed_dim 384, 6 heads, drop_path_rate 0.2, deform_num_heads 6, deform_ratio 1.0. Unverified detail: the
 *   stored config spells the key `interact_indexes`; we use the standard [[0,2],[3,5],[6,8],[9,11]] (the value it
 *   gives) under `interaction_indexes`. That config also enables fp16 training (`fp16 = dict(...)`), which does not
 *   change the test-time model in float32 here;
 * - base: embed_dim 768, 12 heads, drop_path_rate 0.2, deform_num_heads 12, deform_ratio 0.5.
 * drop_path_rate only matters in training.
 *
 * Neck FPN(in_channels [D]×4, out_channels 256, num_outs 5); heads and `test_cfg` as in mmdetection's
 * `mask_rcnn_r50_fpn.py` (80 COCO classes).
 */
import type { ViTAdapterOptions } from '../adapter/index.js';
import type { MaskRCNNConfig, buildMaskRCNN } from './mask-rcnn.js';

const WINDOW_ATTN = [true, true, false, true, true, false, true, true, false, true, true, false];
const WINDOW_SIZE = [14, 14, null, 14, 14, null, 14, 14, null, 14, 14, null];

function backbone(embed: number, heads: number, dpr: number, deformHeads: number, deformRatio: number): { type: 'ViTAdapter' } & ViTAdapterOptions {
  return {
    type: 'ViTAdapter', patch_size: 16, embed_dim: embed, depth: 12, num_heads: heads, mlp_ratio: 4, drop_path_rate: dpr,
    conv_inplane: 64, n_points: 4, deform_num_heads: deformHeads, cffn_ratio: 0.25, deform_ratio: deformRatio,
    interaction_indexes: [[0, 2], [3, 5], [6, 8], [9, 11]],
    window_attn: [...WINDOW_ATTN], window_size: [...WINDOW_SIZE] as ViTAdapterOptions['window_size'],
    pretrain_size: 224, variant: 'detection',
  };
}

/** The neck and heads of mmdetection's `mask_rcnn_r50_fpn.py` for backbone width `D` and `numClasses` classes. */
export function maskRCNNHeads(D: number, numClasses = 80): Omit<MaskRCNNConfig, 'backbone'> {
  const roiExtractor = (size: number) => ({
    type: 'SingleRoIExtractor' as const, roi_layer: { type: 'RoIAlign' as const, output_size: size, sampling_ratio: 0 },
    out_channels: 256, featmap_strides: [4, 8, 16, 32],
  });
  return {
    type: 'MaskRCNN',
    neck: { type: 'FPN', in_channels: [D, D, D, D], out_channels: 256, num_outs: 5 },
    rpn_head: {
      type: 'RPNHead', in_channels: 256, feat_channels: 256,
      anchor_generator: { type: 'AnchorGenerator', scales: [8], ratios: [0.5, 1.0, 2.0], strides: [4, 8, 16, 32, 64] },
      bbox_coder: { type: 'DeltaXYWHBBoxCoder', target_means: [0, 0, 0, 0], target_stds: [1, 1, 1, 1] },
    },
    roi_head: {
      type: 'StandardRoIHead',
      bbox_roi_extractor: roiExtractor(7),
      bbox_head: {
        type: 'Shared2FCBBoxHead', in_channels: 256, fc_out_channels: 1024, roi_feat_size: 7, num_classes: numClasses,
        bbox_coder: { type: 'DeltaXYWHBBoxCoder', target_means: [0, 0, 0, 0], target_stds: [0.1, 0.1, 0.2, 0.2] },
        reg_class_agnostic: false,
      },
      mask_roi_extractor: roiExtractor(14),
      mask_head: { type: 'FCNMaskHead', num_convs: 4, in_channels: 256, conv_out_channels: 256, num_classes: numClasses },
    },
    test_cfg: {
      rpn: { nms_pre: 1000, max_per_img: 1000, nms: { type: 'nms', iou_threshold: 0.7 }, min_bbox_size: 0 },
      rcnn: { score_thr: 0.05, nms: { type: 'nms', iou_threshold: 0.5 }, max_per_img: 100, mask_thr_binary: 0.5 },
    },
  };
}

/**
 * The authors' ViT-Adapter Mask R-CNN configs (3× schedule) by config name. Build them with {@link buildMaskRCNN}
 * (which maps the configs' `None` window sizes of the global-attention blocks to numbers for the ViT).
 */
export const DETECTOR_PRESETS: Record<string, MaskRCNNConfig> = {
  mask_rcnn_deit_adapter_tiny_fpn_3x_coco: { backbone: backbone(192, 3, 0.1, 6, 1.0), ...maskRCNNHeads(192) },
  mask_rcnn_deit_adapter_small_fpn_3x_coco: { backbone: backbone(384, 6, 0.2, 6, 1.0), ...maskRCNNHeads(384) },
  mask_rcnn_deit_adapter_base_fpn_3x_coco: { backbone: backbone(768, 12, 0.2, 12, 0.5), ...maskRCNNHeads(768) },
};

/** A fresh copy of a detector preset's config. */
export function detectorPreset(name: string): MaskRCNNConfig {
  const p = DETECTOR_PRESETS[name];
  if (!p) throw new Error(`unknown detector preset ${JSON.stringify(name)}; expected one of ${Object.keys(DETECTOR_PRESETS).join(', ')}`);
  return structuredClone(p);
}
