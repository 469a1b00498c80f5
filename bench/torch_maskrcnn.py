#!/usr/bin/python3
"""PyTorch Mask R-CNN on ViT-Adapter: the timing baseline of bench/detect.ts (section 2).

A self-contained re-implementation (written for this project) of the test path of mmdetection 2.x's `MaskRCNN` as
the authors' `mask_rcnn_deit_adapter_tiny_fpn_3x_coco` config builds it, with mmdetection's state-dict key names:
the ViT-Adapter backbone of bench/torch_vit_adapter.py in its `detection` variant (window attention in 8 of the 12
blocks), `FPN` (1x1 laterals, nearest top-down, 3x3 outputs, P6 by stride-2 max-pool), `RPNHead` (anchors, per-level
top-1000, delta decoding, batched NMS per level, 1000 proposals), `StandardRoIHead` (level mapping with
finest_scale 56, RoIAlign 7x7 / 14x14 with aligned=True and adaptive sampling, `Shared2FCBBoxHead`, class-specific
decoding, multi-class NMS with score_thr 0.05 and 100 detections, `FCNMaskHead`) and mmdetection's mask pasting at
the original image size. torchvision is not available here, so RoIAlign is a grid_sample composition (border
padding + a validity mask reproduce mmcv's edge rules) and NMS a greedy loop over a precomputed IoU matrix.

  # the model's state dict as {key: shape} (bench/detect.ts compares it with the TypeScript model's)
  /usr/bin/python3 bench/torch_maskrcnn.py --keys

  # per-image time: normalise + pad + backbone + FPN + RPN + RoI heads + masks pasted at the original size,
  # weights from a safetensors file written by bench/detect.ts (mmdetection keys), image from a raw HxWx3 RGB file
  /usr/bin/python3 bench/torch_maskrcnn.py --bench --weights W.safetensors --image IMG.rgb --height 800 --width 1333 \
      --repeats 2 --warmup 1 --threads 2 --json
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import add_timing_args, load_strict, openblas_env, parse_timing_args, read_safetensors, summary, time_calls  # noqa: E402
from torch_vit_adapter import ViTAdapter  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------
# configuration (the authors' ViT-Adapter-T Mask R-CNN, COCO)

BACKBONE = dict(pretrain_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4, qkv_bias=True,
                layer_scale=True, conv_inplane=64, n_points=4, deform_num_heads=6, cffn_ratio=0.25, deform_ratio=1.0,
                with_cffn=True, add_vit_feature=True, use_extra_extractor=True, init_values=0.0, variant='detection',
                interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
                window_attn=[True, True, False] * 4, window_size=[14, 14, None] * 4)
NUM_CLASSES = 80
IMG_SCALE = (1333, 800)
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
RPN_CFG = dict(nms_pre=1000, max_per_img=1000, iou=0.7)
RCNN_CFG = dict(score_thr=0.05, iou=0.5, max_per_img=100, mask_thr=0.5)
STRIDES = [4, 8, 16, 32, 64]

# ----------------------------------------------------------------------------------------------------------------
# ops


def nms(boxes, scores, iou_thr):
    """Greedy NMS (mmcv: descending score, suppress IoU > thr, no +1): indices kept, in descending score."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    xx1 = torch.maximum(x1[:, None], x1[None])
    yy1 = torch.maximum(y1[:, None], y1[None])
    xx2 = torch.minimum(x2[:, None], x2[None])
    yy2 = torch.minimum(y2[:, None], y2[None])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    over = (inter / (area[:, None] + area[None] - inter) > iou_thr).numpy()
    n = b.shape[0]
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[torch.as_tensor(keep, dtype=torch.long)]


def batched_nms(boxes, scores, idxs, iou_thr):
    """mmcv batched_nms: boxes of different groups never suppress each other (coordinate offset per group)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    offset = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offset[:, None], scores, iou_thr)


def roi_align(feat, rois, out_size, scale):
    """mmcv RoIAlign (aligned=True, sampling_ratio=0, avg) of one image's map `feat` (1, C, H, W) for `rois` (n, 4)
    in image pixels: bins of roi/out_size, ceil(roi/out_size) samples per bin; samples beyond [-1, H] x [-1, W]
    count 0, others are clamped into the map (border padding) and bilinearly interpolated."""
    n = rois.shape[0]
    C, H, W = feat.shape[1:]
    out = feat.new_zeros(n, C, out_size, out_size)
    if n == 0:
        return out
    x0 = rois[:, 0] * scale - 0.5
    y0 = rois[:, 1] * scale - 0.5
    rw = (rois[:, 2] - rois[:, 0]) * scale
    rh = (rois[:, 3] - rois[:, 1]) * scale
    gw = torch.ceil(rw / out_size).long().clamp(min=1)
    gh = torch.ceil(rh / out_size).long().clamp(min=1)
    keys = (gh * 1000 + gw).tolist()
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    p = torch.arange(out_size, dtype=feat.dtype)
    for k, idx in groups.items():
        g_h, g_w = k // 1000, k % 1000
        idx_t = torch.as_tensor(idx)
        for start in range(0, len(idx), 64):
            sel = idx_t[start:start + 64]
            m = sel.numel()
            bh = (rh[sel] / out_size)[:, None, None]
            bw = (rw[sel] / out_size)[:, None, None]
            iy = (torch.arange(g_h, dtype=feat.dtype) + 0.5) / g_h
            ix = (torch.arange(g_w, dtype=feat.dtype) + 0.5) / g_w
            ys = y0[sel][:, None, None] + (p[None, :, None] + iy[None, None, :]) * bh  # (m, S, g_h)
            xs = x0[sel][:, None, None] + (p[None, :, None] + ix[None, None, :]) * bw  # (m, S, g_w)
            ys = ys.reshape(m, -1)
            xs = xs.reshape(m, -1)
            vy = ((ys >= -1) & (ys <= H)).to(feat.dtype)
            vx = ((xs >= -1) & (xs <= W)).to(feat.dtype)
            gy = ys.clamp(min=0) / max(H - 1, 1) * 2 - 1
            gx = xs.clamp(min=0) / max(W - 1, 1) * 2 - 1
            grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # (m, Sy, Sx, 2)
            grid = grid.reshape(1, m * grid.shape[1], grid.shape[2], 2)
            s = F.grid_sample(feat, grid, mode='bilinear', padding_mode='border', align_corners=True)
            s = s.reshape(C, m, out_size * g_h, out_size * g_w) * (vy[:, :, None] * vx[:, None, :])[None]
            s = s.reshape(C, m, out_size, g_h, out_size, g_w).sum((3, 5)) / (g_h * g_w)
            out[sel] = s.permute(1, 0, 2, 3)
    return out


def decode(boxes, deltas, stds, max_shape):
    """DeltaXYWHBBoxCoder.decode (means 0): dw/dh clamped to |log(16/1000)|, clamped to max_shape (h, w)."""
    d = deltas * deltas.new_tensor(stds).repeat(deltas.shape[-1] // 4)
    dx, dy, dw, dh = d[..., 0::4], d[..., 1::4], d[..., 2::4], d[..., 3::4]
    r = abs(math.log(16 / 1000))
    dw, dh = dw.clamp(-r, r), dh.clamp(-r, r)
    px = ((boxes[..., 0] + boxes[..., 2]) * 0.5)[..., None]
    py = ((boxes[..., 1] + boxes[..., 3]) * 0.5)[..., None]
    pw = (boxes[..., 2] - boxes[..., 0])[..., None]
    ph = (boxes[..., 3] - boxes[..., 1])[..., None]
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = px + pw * dx, py + ph * dy
    x1, y1 = (gx - gw * 0.5).clamp(0, max_shape[1]), (gy - gh * 0.5).clamp(0, max_shape[0])
    x2, y2 = (gx + gw * 0.5).clamp(0, max_shape[1]), (gy + gh * 0.5).clamp(0, max_shape[0])
    return torch.stack([x1, y1, x2, y2], -1).reshape(deltas.shape)


# ----------------------------------------------------------------------------------------------------------------
# modules (mmdetection key names)


class ConvModule(nn.Module):
    """mmcv ConvModule without norm and activation: `conv` with bias."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)

    def forward(self, x):
        return self.conv(x)


class FPN(nn.Module):
    def __init__(self, in_channels, out_channels, num_outs=5):
        super().__init__()
        self.num_outs = num_outs
        self.lateral_convs = nn.ModuleList([ConvModule(c, out_channels, 1) for c in in_channels])
        self.fpn_convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3) for _ in in_channels])

    def forward(self, inputs):
        lat = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode='nearest')
        outs = [conv(lat[i]) for i, conv in enumerate(self.fpn_convs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


class RPNHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.rpn_conv = nn.Conv2d(c, c, 3, padding=1)
        self.rpn_cls = nn.Conv2d(c, 3, 1)
        self.rpn_reg = nn.Conv2d(c, 12, 1)

    @staticmethod
    def anchors(stride, h, w):
        ratios = torch.tensor([0.5, 1.0, 2.0])
        hr = ratios.sqrt()
        wr = 1 / hr
        ws, hs = stride * wr * 8, stride * hr * 8
        base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], -1)
        sx = torch.arange(w, dtype=torch.float32) * stride
        sy = torch.arange(h, dtype=torch.float32) * stride
        yy, xx = torch.meshgrid(sy, sx, indexing='ij')
        shifts = torch.stack([xx, yy, xx, yy], -1).reshape(-1, 1, 4)
        return (shifts + base[None]).reshape(-1, 4)

    def proposals(self, feats, img_shape):
        scores, deltas, anchors, lvls = [], [], [], []
        for lvl, f in enumerate(feats):
            t = F.relu(self.rpn_conv(f))
            cls = self.rpn_cls(t)[0].permute(1, 2, 0).reshape(-1).sigmoid()
            reg = self.rpn_reg(t)[0].permute(1, 2, 0).reshape(-1, 4)
            a = self.anchors(STRIDES[lvl], f.shape[2], f.shape[3])
            if cls.numel() > RPN_CFG['nms_pre']:
                cls, idx = cls.sort(descending=True)
                cls, idx = cls[:RPN_CFG['nms_pre']], idx[:RPN_CFG['nms_pre']]
                reg, a = reg[idx], a[idx]
            scores.append(cls)
            deltas.append(reg)
            anchors.append(a)
            lvls.append(torch.full((cls.numel(),), lvl, dtype=torch.long))
        s, d, a, lv = torch.cat(scores), torch.cat(deltas), torch.cat(anchors), torch.cat(lvls)
        boxes = decode(a, d, [1.0, 1.0, 1.0, 1.0], img_shape)
        valid = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        boxes, s, lv = boxes[valid], s[valid], lv[valid]
        keep = batched_nms(boxes, s, lv, RPN_CFG['iou'])[:RPN_CFG['max_per_img']]
        return boxes[keep]


class Shared2FCBBoxHead(nn.Module):
    def __init__(self, c, fc, k):
        super().__init__()
        self.shared_fcs = nn.ModuleList([nn.Linear(c * 49, fc), nn.Linear(fc, fc)])
        self.fc_cls = nn.Linear(fc, k + 1)
        self.fc_reg = nn.Linear(fc, 4 * k)

    def forward(self, x):
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class FCNMaskHead(nn.Module):
    def __init__(self, c, m, k):
        super().__init__()
        self.convs = nn.ModuleList([ConvModule(c if i == 0 else m, m, 3) for i in range(4)])
        self.upsample = nn.ConvTranspose2d(m, m, 2, 2)
        self.conv_logits = nn.Conv2d(m, k, 1)

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.conv_logits(F.relu(self.upsample(x)))


def map_levels(rois, finest_scale=56, num_levels=4):
    scale = ((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1])).sqrt()
    return torch.floor(torch.log2(scale / finest_scale + 1e-6)).clamp(0, num_levels - 1).long()


def extract(feats, rois, out_size):
    """SingleRoIExtractor: each RoI on its level's map."""
    out = feats[0].new_zeros(rois.shape[0], feats[0].shape[1], out_size, out_size)
    lv = map_levels(rois)
    for lvl in range(4):
        idx = (lv == lvl).nonzero().flatten()
        if idx.numel():
            out[idx] = roi_align(feats[lvl], rois[idx], out_size, 1.0 / STRIDES[lvl])
    return out


def paste_masks(probs, boxes, h, w, thr):
    """mmdetection `_do_paste_mask` (CPU: one mask at a time, over the box's pixel extent), then > thr."""
    out = torch.zeros(probs.shape[0], h, w, dtype=torch.uint8)
    for i in range(probs.shape[0]):
        x0, y0, x1, y1 = boxes[i].tolist()
        x0i, y0i = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
        x1i, y1i = min(int(math.ceil(x1)) + 1, w), min(int(math.ceil(y1)) + 1, h)
        if x1i <= x0i or y1i <= y0i:
            continue
        iy = (torch.arange(y0i, y1i, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        ix = (torch.arange(x0i, x1i, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack(torch.broadcast_tensors(ix[None, :], iy[:, None]), -1)[None]
        m = F.grid_sample(probs[i][None, None], grid, align_corners=False)[0, 0]
        out[i, y0i:y1i, x0i:x1i] = (m > thr).to(torch.uint8)
    return out


class StandardRoIHead(nn.Module):
    def __init__(self, c, fc, m, k):
        super().__init__()
        self.num_classes = k
        self.bbox_head = Shared2FCBBoxHead(c, fc, k)
        self.mask_head = FCNMaskHead(c, m, k)

    def forward(self, feats, proposals, img_shape, ori_shape, scale_factor):
        cls, reg = self.bbox_head(extract(feats, proposals, 7))
        scores = F.softmax(cls, -1)
        boxes = self._decode(proposals, reg, img_shape)
        boxes = boxes / scale_factor
        k = self.num_classes
        s = scores[:, :k].reshape(-1)
        b = boxes.reshape(-1, 4)
        labels = torch.arange(k).repeat(proposals.shape[0])
        valid = s > RCNN_CFG['score_thr']
        b, s, labels = b[valid], s[valid], labels[valid]
        keep = batched_nms(b, s, labels, RCNN_CFG['iou'])[:RCNN_CFG['max_per_img']]
        det, det_s, det_l = b[keep], s[keep], labels[keep]
        if det.shape[0] == 0:
            return det, det_s, det_l, torch.zeros(0, *ori_shape, dtype=torch.uint8)
        mask_pred = self.mask_head(extract(feats, det * scale_factor, 14))
        probs = mask_pred[torch.arange(det.shape[0]), det_l].sigmoid()
        return det, det_s, det_l, paste_masks(probs, det, ori_shape[0], ori_shape[1], RCNN_CFG['mask_thr'])

    def _decode(self, proposals, reg, img_shape):
        n, k = proposals.shape[0], self.num_classes
        return decode(proposals[:, None, :].expand(n, k, 4), reg.reshape(n, k, 4), [0.1, 0.1, 0.2, 0.2], img_shape)


class MaskRCNN(nn.Module):
    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.backbone = ViTAdapter(**BACKBONE)
        self.neck = FPN([192] * 4, 256, 5)
        self.rpn_head = RPNHead(256)
        self.roi_head = StandardRoIHead(256, 1024, 256, num_classes)

    def forward(self, img, img_shape, ori_shape, scale_factor):
        feats = self.neck(self.backbone(img))
        proposals = self.rpn_head.proposals(feats, img_shape)
        return self.roi_head(feats[:4], proposals, img_shape, ori_shape, scale_factor)


# ----------------------------------------------------------------------------------------------------------------
# pipeline: keep-ratio resize (not needed for an image already at the scale), normalise, pad to 32


def prepare(rgb):
    """(H, W, 3) uint8 RGB -> (1, 3, Hp, Wp) normalised and zero-padded to multiples of 32, img_shape, scale_factor.
    The benchmark image is already at the test scale (800x1333), so mmdetection's resize is the identity."""
    h, w = rgb.shape[:2]
    scale = min(max(IMG_SCALE) / max(h, w), min(IMG_SCALE) / min(h, w))
    nw, nh = int(w * scale + 0.5), int(h * scale + 0.5)
    if (nh, nw) != (h, w):
        raise SystemExit(f'bench image {w}x{h} is not at the test scale ({nw}x{nh}): only the identity resize is implemented')
    x = torch.from_numpy(rgb).permute(2, 0, 1).float()
    x = (x - torch.tensor(MEAN)[:, None, None]) * (1 / torch.tensor(STD, dtype=torch.float64)).float()[:, None, None]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    x = F.pad(x, (0, pw - w, 0, ph - h))[None]
    sf = torch.tensor([nw / w, nh / h, nw / w, nh / h], dtype=torch.float32)
    return x, (nh, nw), sf


def detect(model, rgb):
    x, img_shape, sf = prepare(rgb)
    return model(x, img_shape, rgb.shape[:2], sf)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--keys', action='store_true', help='print the state dict as {key: shape}')
    ap.add_argument('--bench', action='store_true', help='time detect() on one image')
    ap.add_argument('--weights', help='safetensors state dict (mmdetection keys); random weights without it')
    ap.add_argument('--image', help='raw RGB bytes, height x width x 3')
    ap.add_argument('--height', type=int, default=800)
    ap.add_argument('--width', type=int, default=1333)
    add_timing_args(ap)
    ap.add_argument('--json', action='store_true', help='print one JSON object')
    a = parse_timing_args(ap)
    torch.manual_seed(0)
    model = MaskRCNN().float().eval()
    if a.keys:
        print(json.dumps({k: list(v.shape) for k, v in model.state_dict().items()}))
        return
    if not a.bench:
        ap.error('give --keys or --bench')
    if a.weights:
        sd, _ = read_safetensors(a.weights)
        load_strict(model, sd, a.weights)
    if a.image:
        rgb = np.fromfile(a.image, dtype=np.uint8).reshape(a.height, a.width, 3)
    else:
        rgb = np.random.default_rng(0).integers(0, 256, (a.height, a.width, 3), dtype=np.uint8)
    with torch.no_grad():
        det, scores, labels, masks = detect(model, rgb)
    result = dict(torch_version=torch.__version__, threads=torch.get_num_threads(), height=a.height, width=a.width,
                  detections=int(det.shape[0]), mask_pixels=int(masks.sum()), env=openblas_env(),
                  num_parameters=sum(p.numel() for p in model.parameters()))
    result.update(summary(*time_calls(lambda: detect(model, rgb), a.repeats, a.warmup)))
    if a.json:
        print(json.dumps(result))
    else:
        print(f'PyTorch {result["torch_version"]} Mask R-CNN ViT-Adapter-T {a.width}x{a.height}, {result["threads"]} threads: '
              f'median {result["median_s"] * 1e3:.0f} ms ({a.repeats} runs), {result["detections"]} detections')


if __name__ == '__main__':
    main()
