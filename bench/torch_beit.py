#!/usr/bin/python3
"""PyTorch BEiT-Adapter backbone (segmentation variant): the timing baseline of bench/backbone.ts for the beit-*
presets, and a parity check on the BEiT-Adapter fixture.

A self-contained re-implementation (written for this project) of what src/models/beit.ts and
src/models/adapter/beit-adapter.ts implement: BEiT blocks (q/v bias, per-block relative position bias over the
img_size grid plus the cls entries, layer scale gamma_1/gamma_2, attention as softmax(q k^T * scale + bias) v), the
class token carried through the interactions, and the adapter modules of bench/torch_vit_adapter.py (spatial prior
module, injectors, extractors with the grid_sample composition of the deformable-attention core, output pyramid).
Parameter names equal the authors' state-dict keys, so fixture weights load strictly.

  /usr/bin/python3 bench/torch_beit.py --check /work/shared/fixtures/beit/beit_adapter_micro
  /usr/bin/python3 bench/torch_beit.py --bench --preset beit-base --size 512 --repeats 3 --threads 2 --json
  /usr/bin/python3 bench/torch_beit.py --profile --preset beit-base --size 512 --repeats 3 --threads 2 [--json]

`--bench` also reports the process's peak resident set size (`peak_rss_bytes`, from getrusage) and the resident size
after imports, before the model is built (`base_rss_bytes`).
"""
import argparse
import json
import os
import resource
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import (  # noqa: E402
    add_backbone_args, bench_line, compare, load_strict, openblas_env, parse_backbone_args, read_safetensors, summary,
    time_calls)
from torch_vit_adapter import (  # noqa: E402
    PROF, PROFILE_ORDER, Extractor, Injector, Mlp, MSDeformAttn, PatchEmbed, SpatialPriorModule, deform_inputs, profile)


def rss_now():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def relative_position_index(wh, ww):
    """(1+N) x (1+N) index of the segmentation code base (cls at 0: row L-3, column L-2, corner L-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    L = (2 * wh - 1) * (2 * ww - 1) + 3
    index = torch.zeros(wh * ww + 1, wh * ww + 1, dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = L - 3
    index[0:, 0] = L - 2
    index[0, 0] = L - 1
    return index, L


class BEiTAttention(nn.Module):
    def __init__(self, dim, num_heads, window):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        index, L = relative_position_index(window, window)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(L, num_heads))
        self.register_buffer('relative_position_index', index)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        rel = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1) + rel.unsqueeze(0), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class BEiTBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, window, init_values, eps=1e-6):
        super().__init__()
        self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
        self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = BEiTAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.gamma_1 * self.attn(self.norm1(x))
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class InteractionBlockWithCls(nn.Module):
    def __init__(self, dim, num_heads, n_points, init_values, cffn_ratio, deform_ratio, extra_extractor, eps=1e-6):
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, 3, deform_ratio, init_values, eps)
        self.extractor = Extractor(dim, num_heads, n_points, 1, deform_ratio, True, cffn_ratio, eps)
        self.extra_extractors = nn.ModuleList(
            [Extractor(dim, num_heads, n_points, 1, deform_ratio, True, cffn_ratio, eps) for _ in range(2)]
        ) if extra_extractor else None

    def forward(self, x, c, cls, blocks, d_inj, d_ext, H, W):
        with PROF.section('injector'):
            x = self.injector(x, d_inj[0], c, d_inj[1], d_inj[2])
        with PROF.section('vit_blocks'):
            x = torch.cat((cls, x), dim=1)
            for blk in blocks:
                x = blk(x)
            cls, x = x[:, :1], x[:, 1:]
        with PROF.section('extractor'):
            c = self.extractor(c, d_ext[0], x, d_ext[1], d_ext[2], H, W)
            if self.extra_extractors is not None:
                for e in self.extra_extractors:
                    c = e(c, d_ext[0], x, d_ext[1], d_ext[2], H, W)
        return x, c, cls


class BEiTAdapter(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
                 init_values=0.0, conv_inplane=64, n_points=4, deform_num_heads=6, cffn_ratio=0.25, deform_ratio=1.0,
                 interaction_indexes=None, **ignored):
        super().__init__()
        D = self.embed_dim = embed_dim
        window = img_size // patch_size
        self.interaction_indexes = [list(p) for p in interaction_indexes]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.level_embed = nn.Parameter(torch.zeros(3, D))
        self.patch_embed = PatchEmbed(patch_size, in_chans, D)
        self.blocks = nn.ModuleList([BEiTBlock(D, num_heads, mlp_ratio, window, init_values) for _ in range(depth)])
        self.spm = SpatialPriorModule(conv_inplane, D)
        n = len(self.interaction_indexes)
        self.interactions = nn.ModuleList([
            InteractionBlockWithCls(D, deform_num_heads, n_points, init_values, cffn_ratio, deform_ratio, i == n - 1)
            for i in range(n)])
        self.up = nn.ConvTranspose2d(D, D, 2, 2)
        self.norm1 = nn.BatchNorm2d(D)
        self.norm2 = nn.BatchNorm2d(D)
        self.norm3 = nn.BatchNorm2d(D)
        self.norm4 = nn.BatchNorm2d(D)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for blk in self.blocks:
            nn.init.trunc_normal_(blk.attn.relative_position_bias_table, std=0.02)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, x, capture=None):
        B, _, h, w = x.shape
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
            xt, H, W = self.patch_embed(x)
        cls = self.cls_token.expand(B, -1, -1)
        outs = []
        for i, layer in enumerate(self.interactions):
            a, b = self.interaction_indexes[i]
            xt, c, cls = layer(xt, c, cls, self.blocks[a:b + 1], d_inj, d_ext, H, W)
            if capture is not None:
                capture(f'interactions.{i}.x', xt)
                capture(f'interactions.{i}.c', c)
                capture(f'interactions.{i}.cls', cls)
            outs.append(xt.transpose(1, 2).reshape(B, D, H, W))

        def to_map(t, hh, ww):
            return t.transpose(1, 2).reshape(B, D, hh, ww)
        c2 = to_map(c[:, :n2], 2 * H, 2 * W)
        c3 = to_map(c[:, n2:n2 + n3], H, W)
        c4 = to_map(c[:, n2 + n3:], H // 2, W // 2)
        with PROF.section('up_norms'):
            c1 = self.up(c2) + c1
        x1, x2, x3, x4 = outs
        c1 = c1 + F.interpolate(x1, scale_factor=4, mode='bilinear', align_corners=False)
        c2 = c2 + F.interpolate(x2, scale_factor=2, mode='bilinear', align_corners=False)
        c3 = c3 + x3
        c4 = c4 + F.interpolate(x4, scale_factor=0.5, mode='bilinear', align_corners=False)
        with PROF.section('up_norms'):
            return self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)


# ----------------------------------------------------------------------------------------------------------------
# presets (src/models/adapter/beit-adapter.ts BEIT_ADAPTER_PRESETS; img_size = the benchmark's input size)

_COMMON = dict(patch_size=16, mlp_ratio=4, init_values=1e-6, conv_inplane=64, n_points=4, cffn_ratio=0.25,
               deform_ratio=0.5)
PRESETS = {
    'beit-base': dict(_COMMON, embed_dim=768, depth=12, num_heads=12, deform_num_heads=12,
                      interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]]),
    'beit-large': dict(_COMMON, embed_dim=1024, depth=24, num_heads=16, deform_num_heads=16,
                       interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]]),
}


def check(prefix):
    with open(prefix + '.json') as f:
        cfg = json.load(f)
    name = os.path.basename(prefix)
    model = BEiTAdapter(**cfg['kwargs']).float().eval()
    weights, _ = read_safetensors(prefix + '.weights.safetensors')
    load_strict(model, weights, name)
    io, _ = read_safetensors(prefix + '.io.safetensors')
    captured = {}
    with torch.no_grad():
        outs = model(io['input'], lambda k, v: captured.__setitem__(k, v))
    for i, t in enumerate(outs):
        captured[f'f{i + 1}'] = t
    worst = 0.0
    for k in io:
        if k == 'input':
            continue
        rel, _ = compare(name, k, captured[k], io[k])
        worst = max(worst, rel)
    ok = worst < 1e-4
    print(f'{name}: {len(io) - 1} tensors, worst max|out-ref|/max|ref| {worst:.2e} -> {"OK" if ok else "FAIL"}')
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_args(ap, 'BEiTAdapter (segmentation) fixture prefix(es)', PRESETS, 'beit-base')
    a = parse_backbone_args(ap, check)
    base_rss = rss_now()
    torch.manual_seed(0)
    model = BEiTAdapter(img_size=a.size, **PRESETS[a.preset]).float().eval()
    torch.manual_seed(1)
    x = torch.randn(a.batch, 3, a.size, a.size)
    result = dict(preset=a.preset, size=a.size, batch=a.batch, torch_version=torch.__version__,
                  threads=torch.get_num_threads(), num_parameters=sum(p.numel() for p in model.parameters()),
                  env=openblas_env(), base_rss_bytes=base_rss)
    if a.bench:
        result.update(summary(*time_calls(lambda: model(x), a.repeats, a.warmup)))
        result['peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if a.profile:
        result['profile_s'], result['profile_cpu_s'] = profile(model, x, a.repeats, a.warmup)
    if a.json:
        print(json.dumps(result))
        return
    print(f'PyTorch {result["torch_version"]} BEiT-Adapter ({a.preset}) {a.batch}x3x{a.size}x{a.size}, '
          f'{result["threads"]} threads, {result["num_parameters"] / 1e6:.2f} M parameters, env {result["env"]}')
    if a.bench:
        print(f'  {bench_line(result, a.repeats)}; peak RSS {result["peak_rss_bytes"] / 2**20:.0f} MiB '
              f'(after imports {base_rss / 2**20:.0f} MiB)')
    if a.profile:
        p, c = result['profile_s'], result['profile_cpu_s']
        for k in PROFILE_ORDER + ['total']:
            print(f'  {k:<22} {p[k] * 1e3:9.1f}  {100 * p[k] / p["total"]:5.1f}  {c[k] * 1e3:9.1f}')


if __name__ == '__main__':
    main()
