#!/usr/bin/python3
"""PyTorch ViT-Adapter backbone: the timing baseline of bench/backbone.ts, and a parity check on the fixtures.

A self-contained re-implementation (written for this project) of the architecture that src/models/adapter/ implements:
a timm-style plain ViT (patch embedding, bicubically resized position table, pre-norm blocks with optional layer
scale and window attention), the spatial prior module, injectors / extractors built on multi-scale deformable
attention (the plain grid_sample composition of the core), and the output pyramid, in both the `segmentation` and
`detection` variants. Parameter names equal the authors' state-dict keys, so fixture weights load strictly.

  /usr/bin/python3 bench/torch_vit_adapter.py --check /work/shared/fixtures/reference/vit_adapter_tiny
  /usr/bin/python3 bench/torch_vit_adapter.py --bench --preset tiny --size 512 --repeats 5 --threads 2 --json
  /usr/bin/python3 bench/torch_vit_adapter.py --profile --preset tiny --size 512 --repeats 3 --threads 2 [--json]
"""
import argparse
import contextlib
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import (  # noqa: E402
    Profiler, add_backbone_args, bench_line, compare, fastest_pass, load_strict, openblas_env, parse_backbone_args,
    read_safetensors, summary, time_calls)

# ----------------------------------------------------------------------------------------------------------------
# profiling: section timers (bench/torch_common.py), on only while profiling

PROF = Profiler()

# ----------------------------------------------------------------------------------------------------------------
# plain ViT


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x):
        y = self.proj(x)
        _, _, H, W = y.shape
        return y.flatten(2).transpose(1, 2), H, W


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Attention(nn.Module):
    """Global multi-head self-attention: softmax(q k^T * scale) v."""

    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attend(self, q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1) @ v

    def forward(self, x, H, W):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = self.attend(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class WindowedAttention(Attention):
    """qkv for every token, zero-pad the qkv map to a multiple of the window (padded q = k = v = 0, unmasked),
    attention inside non-overlapping windows, crop back."""

    def __init__(self, dim, num_heads, qkv_bias, window_size):
        super().__init__(dim, num_heads, qkv_bias)
        self.window_size = window_size

    def forward(self, x, H, W):
        B, N, C = x.shape
        ws = self.window_size
        Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
        nh, nw = Hp // ws, Wp // ws
        hd = C // self.num_heads
        qkv = self.qkv(x).reshape(B, H, W, 3 * C)
        if Hp != H or Wp != W:
            qkv = F.pad(qkv, (0, 0, 0, Wp - W, 0, Hp - H))
        win = qkv.reshape(B, nh, ws, nw, ws, 3, self.num_heads, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = win.reshape(3, B * nh * nw, self.num_heads, ws * ws, hd).unbind(0)
        y = self.attend(q, k, v)
        y = y.reshape(B, nh, nw, self.num_heads, ws, ws, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        if Hp != H or Wp != W:
            y = y[:, :H, :W]
        return self.proj(y.reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, layer_scale, windowed, window_size, eps):
        super().__init__()
        if layer_scale:
            self.gamma1 = nn.Parameter(torch.ones(dim))
            self.gamma2 = nn.Parameter(torch.ones(dim))
        else:
            self.gamma1 = self.gamma2 = None
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = (WindowedAttention(dim, num_heads, qkv_bias, window_size) if windowed
                     else Attention(dim, num_heads, qkv_bias))
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W):
        a = self.attn(self.norm1(x), H, W)
        x = x + (a * self.gamma1 if self.gamma1 is not None else a)
        m = self.mlp(self.norm2(x))
        return x + (m * self.gamma2 if self.gamma2 is not None else m)


# ----------------------------------------------------------------------------------------------------------------
# multi-scale deformable attention


def ms_deform_attn_core(value, shapes, locations, weights):
    """value N x S x M x D, locations N x Lq x M x L x P x 2 (x, y in [0, 1]), weights N x Lq x M x L x P
    -> N x Lq x (M*D). Bilinear sampling, zero padding, align_corners=False."""
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # N*M x Lq x P x 2
        sampled.append(F.grid_sample(v, g, mode='bilinear', padding_mode='zeros', align_corners=False))
    w = weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * w).sum(-1).view(N, M * D, Lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    def __init__(self, d_model, n_levels, n_heads, n_points, ratio):
        super().__init__()
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.value_dim = int(d_model * ratio)
        if self.value_dim % n_heads:
            raise ValueError(f'value dim {self.value_dim} not divisible by {n_heads} heads')
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, self.value_dim)
        self.output_proj = nn.Linear(self.value_dim, d_model)
        self.reset_parameters()

    def reset_parameters(self):
        M, L, P = self.n_heads, self.n_levels, self.n_points
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(M, dtype=torch.float32) * (2.0 * math.pi / M)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(M, 1, 1, 2).repeat(1, L, P, 1) * torch.arange(1, P + 1, dtype=torch.float32).view(1, 1, P, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query, reference_points, feat, shapes, level_start):
        N, Lq, _ = query.shape
        S = feat.shape[1]
        assert S == sum(h * w for h, w in shapes)
        M, L, P = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(feat).view(N, S, M, self.value_dim // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        weights = torch.softmax(self.attention_weights(query).view(N, Lq, M, L * P), -1).view(N, Lq, M, L, P)
        normaliser = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference_points.reshape(reference_points.shape[0], Lq, 1, 1, 1, 2) + \
            offsets / normaliser.view(1, 1, 1, L, 1, 2)
        with PROF.section('msda_core'):
            out = ms_deform_attn_core(value, shapes, locations, weights)
        return self.output_proj(out)


def reference_points(shapes, device):
    parts = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        gy, gx = torch.meshgrid(ys, xs, indexing='ij')
        parts.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], -1))
    return torch.cat(parts, 0).view(1, -1, 1, 2)


def level_starts(shapes):
    out, s = [], 0
    for h, w in shapes:
        out.append(s)
        s += h * w
    return out


def deform_inputs(h, w, device):
    three = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    one = [(h // 16, w // 16)]
    return ((reference_points(one, device), three, level_starts(three)),
            (reference_points(three, device), one, level_starts(one)))


# ----------------------------------------------------------------------------------------------------------------
# adapter modules


class Injector(nn.Module):
    def __init__(self, dim, num_heads, n_points, n_levels, deform_ratio, init_values, eps):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))
        self.query_norm = nn.LayerNorm(dim, eps=eps)
        self.feat_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = MSDeformAttn(dim, n_levels, num_heads, n_points, deform_ratio)

    def forward(self, query, ref, feat, shapes, level_start):
        a = self.attn(self.query_norm(query), ref, self.feat_norm(feat), shapes, level_start)
        return query + self.gamma * a


class DWConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        n = N // 21
        levels = [(0, 16 * n, 2 * H, 2 * W), (16 * n, 4 * n, H, W), (20 * n, N - 20 * n, H // 2, W // 2)]
        outs = []
        for start, length, h, w in levels:
            m = x[:, start:start + length].transpose(1, 2).reshape(B, C, h, w)
            outs.append(self.dwconv(m).flatten(2).transpose(1, 2))
        return torch.cat(outs, 1)


class ConvFFN(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, H, W):
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), H, W)))


class Extractor(nn.Module):
    def __init__(self, dim, num_heads, n_points, n_levels, deform_ratio, with_cffn, cffn_ratio, eps):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=eps)
        self.feat_norm = nn.LayerNorm(dim, eps=eps)
        self.attn = MSDeformAttn(dim, n_levels, num_heads, n_points, deform_ratio)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
            self.ffn_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, query, ref, feat, shapes, level_start, H, W):
        q = query + self.attn(self.query_norm(query), ref, self.feat_norm(feat), shapes, level_start)
        if self.with_cffn:
            q = q + self.ffn(self.ffn_norm(q), H, W)
        return q


class InteractionBlock(nn.Module):
    def __init__(self, dim, num_heads, n_points, init_values, with_cffn, cffn_ratio, deform_ratio, extra_extractor, eps):
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, 3, deform_ratio, init_values, eps)
        self.extractor = Extractor(dim, num_heads, n_points, 1, deform_ratio, with_cffn, cffn_ratio, eps)
        if extra_extractor:
            self.extra_extractors = nn.ModuleList(
                [Extractor(dim, num_heads, n_points, 1, deform_ratio, with_cffn, cffn_ratio, eps) for _ in range(2)])
        else:
            self.extra_extractors = None

    def forward(self, x, c, blocks, d_inj, d_ext, H, W):
        with PROF.section('injector'):
            x = self.injector(x, d_inj[0], c, d_inj[1], d_inj[2])
        with PROF.section('vit_blocks'):
            for blk in blocks:
                x = blk(x, H, W)
        with PROF.section('extractor'):
            c = self.extractor(c, d_ext[0], x, d_ext[1], d_ext[2], H, W)
            if self.extra_extractors is not None:
                for e in self.extra_extractors:
                    c = e(c, d_ext[0], x, d_ext[1], d_ext[2], H, W)
        return x, c


def _conv_bn_relu(cin, cout, stride):
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    def __init__(self, inplanes, dim):
        super().__init__()
        p = inplanes
        self.stem = nn.Sequential(*_conv_bn_relu(3, p, 2), *_conv_bn_relu(p, p, 1), *_conv_bn_relu(p, p, 1),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*_conv_bn_relu(p, 2 * p, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * p, 4 * p, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * p, 4 * p, 2))
        self.fc1 = nn.Conv2d(p, dim, 1)
        self.fc2 = nn.Conv2d(2 * p, dim, 1)
        self.fc3 = nn.Conv2d(4 * p, dim, 1)
        self.fc4 = nn.Conv2d(4 * p, dim, 1)

    def forward(self, x):
        s1 = self.stem(x)
        s2 = self.conv2(s1)
        s3 = self.conv3(s2)
        s4 = self.conv4(s3)

        def tokens(t):
            return t.flatten(2).transpose(1, 2)
        return self.fc1(s1), tokens(self.fc2(s2)), tokens(self.fc3(s3)), tokens(self.fc4(s4))


class ViTAdapter(nn.Module):
    def __init__(self, pretrain_size=224, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0, layer_scale=True, window_attn=False,
                 window_size=14, conv_inplane=64, n_points=4, deform_num_heads=6, init_values=0.0,
                 interaction_indexes=None, with_cffn=True, cffn_ratio=0.25, deform_ratio=1.0, add_vit_feature=True,
                 use_extra_extractor=True, norm_eps=1e-6, variant='segmentation', **ignored):
        super().__init__()
        del img_size, drop_path_rate  # the position table uses pretrain_size; eval mode has no drop path
        if variant not in ('segmentation', 'detection'):
            raise ValueError(f'variant must be segmentation or detection, got {variant!r}')
        self.variant = variant
        self.add_vit_feature = add_vit_feature
        self.embed_dim = D = embed_dim
        self.grid = pretrain_size // patch_size
        windowed = window_attn if isinstance(window_attn, (list, tuple)) else [window_attn] * depth
        wsizes = window_size if isinstance(window_size, (list, tuple)) else [window_size] * depth
        if interaction_indexes is None:
            q = depth // 4
            interaction_indexes = [[i * q, (i + 1) * q - 1] for i in range(4)]
        self.interaction_indexes = [list(p) for p in interaction_indexes]

        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, D))
        self.patch_embed = PatchEmbed(patch_size, in_chans, D)
        self.blocks = nn.ModuleList([
            Block(D, num_heads, mlp_ratio, qkv_bias, layer_scale, windowed[i], wsizes[i], norm_eps) for i in range(depth)])
        self.level_embed = nn.Parameter(torch.zeros(3, D))
        self.spm = SpatialPriorModule(conv_inplane, D)
        n = len(self.interaction_indexes)
        self.interactions = nn.ModuleList([
            InteractionBlock(D, deform_num_heads, n_points, init_values, with_cffn, cffn_ratio, deform_ratio,
                             use_extra_extractor and i == n - 1, norm_eps) for i in range(n)])
        self.up = nn.ConvTranspose2d(D, D, 2, 2)
        self.norm1 = nn.BatchNorm2d(D)
        self.norm2 = nn.BatchNorm2d(D)
        self.norm3 = nn.BatchNorm2d(D)
        self.norm4 = nn.BatchNorm2d(D)
        self._init_weights()

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                kh, kw = m.weight.shape[2:]
                fan_out = kh * kw * m.out_channels // m.groups
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def pos_embed_for(self, H, W):
        g, D = self.grid, self.embed_dim
        table = self.pos_embed[:, 1:].reshape(1, g, g, D).permute(0, 3, 1, 2)
        if (H, W) != (g, g):
            table = F.interpolate(table, size=(H, W), mode='bicubic', align_corners=False)
        return table.reshape(1, D, H * W).permute(0, 2, 1)

    def forward(self, x, capture=None):
        B, _, h, w = x.shape
        if h % 32 or w % 32:
            raise ValueError(f'input size must be a multiple of 32, got {h}x{w}')
        D = self.embed_dim
        d_inj, d_ext = deform_inputs(h, w, x.device)
        with PROF.section('spm'):
            c1, c2, c3, c4 = self.spm(x)
        if capture is not None:
            for k, v in zip(('c1', 'c2', 'c3', 'c4'), (c1, c2, c3, c4)):
                capture(f'spm.{k}', v)
        n2, n3 = c2.shape[1], c3.shape[1]
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], 1)
        with PROF.section('embed'):
            tokens, H, W = self.patch_embed(x)
            xt = tokens + self.pos_embed_for(H, W)
        outs = []
        for i, layer in enumerate(self.interactions):
            a, b = self.interaction_indexes[i]
            xt, c = layer(xt, c, self.blocks[a:b + 1], d_inj, d_ext, H, W)
            if capture is not None:
                capture(f'interactions.{i}.x', xt)
                capture(f'interactions.{i}.c', c)
            if self.variant == 'segmentation':
                outs.append(xt.transpose(1, 2).reshape(B, D, H, W))

        def to_map(t, hh, ww):
            return t.transpose(1, 2).reshape(B, D, hh, ww)
        c2 = to_map(c[:, :n2], 2 * H, 2 * W)
        c3 = to_map(c[:, n2:n2 + n3], H, W)
        c4 = to_map(c[:, n2 + n3:], H // 2, W // 2)
        with PROF.section('up_norms'):
            up = self.up(c2)
        c1 = up + c1
        if self.add_vit_feature:
            if self.variant == 'segmentation':
                x1, x2, x3, x4 = outs
            else:
                x1 = x2 = x3 = x4 = to_map(xt, H, W)
            c1 = c1 + F.interpolate(x1, scale_factor=4, mode='bilinear', align_corners=False)
            c2 = c2 + F.interpolate(x2, scale_factor=2, mode='bilinear', align_corners=False)
            c3 = c3 + x3
            c4 = c4 + F.interpolate(x4, scale_factor=0.5, mode='bilinear', align_corners=False)
        with PROF.section('up_norms'):
            return self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)


# ----------------------------------------------------------------------------------------------------------------
# presets (src/models/adapter/presets.ts)

_COMMON = dict(pretrain_size=224, patch_size=16, mlp_ratio=4, qkv_bias=True, layer_scale=True, conv_inplane=64,
               n_points=4, cffn_ratio=0.25, deform_ratio=1.0, with_cffn=True, add_vit_feature=True,
               use_extra_extractor=True, init_values=0.0, variant='segmentation')
_FOUR = [[0, 2], [3, 5], [6, 8], [9, 11]]
PRESETS = {
    'tiny': dict(_COMMON, embed_dim=192, depth=12, num_heads=3, deform_num_heads=6, drop_path_rate=0.1,
                 interaction_indexes=_FOUR),
    'small': dict(_COMMON, embed_dim=384, depth=12, num_heads=6, deform_num_heads=6, drop_path_rate=0.2,
                  interaction_indexes=_FOUR),
    'base': dict(_COMMON, embed_dim=768, depth=12, num_heads=12, deform_num_heads=12, drop_path_rate=0.3,
                 deform_ratio=0.5, interaction_indexes=_FOUR),
    'large': dict(_COMMON, embed_dim=1024, depth=24, num_heads=16, deform_num_heads=16, drop_path_rate=0.4,
                  deform_ratio=0.5, interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]]),
}


# ----------------------------------------------------------------------------------------------------------------
# modes


def check(prefix):
    """Builds the fixture's model, loads its weights strictly, compares f1..f4 (and intermediates)."""
    with open(prefix + '.json') as f:
        cfg = json.load(f)
    weights, _ = read_safetensors(prefix + '.weights.safetensors')
    io, _ = read_safetensors(prefix + '.io.safetensors')
    model = ViTAdapter(**cfg['kwargs'], variant=cfg.get('variant', 'segmentation')).float().eval()
    load_strict(model, weights, prefix)
    captured = {}
    with torch.no_grad():
        outs = model(io['input'].float(), capture=lambda n, t: captured.__setitem__(n, t))
    for k, v in zip(('f1', 'f2', 'f3', 'f4'), outs):
        captured[k] = v
    name = os.path.basename(prefix)
    worst = 0.0
    rows = []
    for k in ('f1', 'f2', 'f3', 'f4') + tuple(sorted(k for k in io if k not in ('input', 'f1', 'f2', 'f3', 'f4'))):
        if k not in captured:
            continue
        rel, _ = compare(name, k, captured[k], io[k])
        rows.append((k, rel))
        if k in ('f1', 'f2', 'f3', 'f4'):
            worst = max(worst, rel)
    ok = worst < 1e-4
    print(f'{name} ({cfg.get("variant", "segmentation")}, input {list(io["input"].shape)}): '
          + '  '.join(f'{k} {r:.2e}' for k, r in rows[:4]) + f'  -> {"OK" if ok else "FAIL"} (max|out-ref|/max|ref| < 1e-4)')
    if len(rows) > 4:
        print('  intermediates: ' + '  '.join(f'{k} {r:.1e}' for k, r in rows[4:]))
    return ok


def build(preset, seed=0):
    torch.manual_seed(seed)
    return ViTAdapter(**PRESETS[preset]).float().eval()


def time_forwards(model, x, repeats, warmup):
    """Wall-clock and process CPU seconds of each timed forward."""
    return time_calls(lambda: model(x), repeats, warmup)


PROFILE_ORDER = ['embed', 'spm', 'vit_blocks', 'injector.msda_core', 'injector.rest', 'extractor.msda_core',
                 'extractor.rest', 'up_norms', 'other']


def profile(model, x, repeats, warmup):
    """Per-module (wall, process CPU) seconds of one forward, plus the totals: the fastest of `repeats` passes."""
    time_forwards(model, x, 0, warmup)
    # attribute MSDA core time to the enclosing injector / extractor section
    stack = []
    orig_section = PROF.section

    @contextlib.contextmanager
    def section(name):
        stack.append(name)
        try:
            with orig_section(name if name != 'msda_core' else f'{stack[-2]}.msda_core'):
                yield
        finally:
            stack.pop()
    PROF.section = section
    try:
        return fastest_pass(PROF, lambda: model(x), repeats, sections)
    finally:
        PROF.section = orig_section


def sections(acc, total):
    out = {
        'embed': acc.get('embed', 0.0), 'spm': acc.get('spm', 0.0), 'vit_blocks': acc.get('vit_blocks', 0.0),
        'injector.msda_core': acc.get('injector.msda_core', 0.0),
        'injector.rest': acc.get('injector', 0.0) - acc.get('injector.msda_core', 0.0),
        'extractor.msda_core': acc.get('extractor.msda_core', 0.0),
        'extractor.rest': acc.get('extractor', 0.0) - acc.get('extractor.msda_core', 0.0),
        'up_norms': acc.get('up_norms', 0.0),
    }
    out['other'] = total - sum(out.values())
    out['total'] = total
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_args(ap, 'fixture prefix(es), e.g. DIR/vit_adapter_tiny', PRESETS, 'tiny')
    a = parse_backbone_args(ap, check)
    model = build(a.preset)
    torch.manual_seed(1)
    x = torch.randn(a.batch, 3, a.size, a.size)
    result = dict(preset=a.preset, size=a.size, batch=a.batch, torch_version=torch.__version__,
                  threads=torch.get_num_threads(), num_parameters=sum(p.numel() for p in model.parameters()),
                  env=openblas_env())
    if a.bench:
        result.update(summary(*time_forwards(model, x, a.repeats, a.warmup)))
    if a.profile:
        result['profile_s'], result['profile_cpu_s'] = profile(model, x, a.repeats, a.warmup)
    if a.json:
        print(json.dumps(result))
        return
    print(f'PyTorch {result["torch_version"]} ViT-Adapter-{a.preset} {a.batch}x3x{a.size}x{a.size}, '
          f'{result["threads"]} threads, {result["num_parameters"] / 1e6:.2f} M parameters, env {result["env"]}')
    if a.bench:
        print(f'  {bench_line(result, a.repeats)}')
    if a.profile:
        p, c = result['profile_s'], result['profile_cpu_s']
        print(f'  {"section":<22} {"wall ms":>9}  {"%":>5}  {"CPU ms":>9}  {"%":>5}')
        for k in PROFILE_ORDER + ['total']:
            print(f'  {k:<22} {p[k] * 1e3:9.1f}  {100 * p[k] / p["total"]:5.1f}  {c[k] * 1e3:9.1f}  '
                  f'{100 * c[k] / c["total"]:5.1f}')


if __name__ == '__main__':
    main()
