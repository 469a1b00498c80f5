#!/usr/bin/python3
"""PyTorch Mask2Former decode head (semantic inference): the timing baseline of bench/mask2former.ts, and a parity
check on the shared fixture.

A self-contained re-implementation (written for this project from the algorithm in
../shared/fixtures/mask2former/README.md) of the authors' Mask2FormerHead: the deformable-attention pixel decoder
(GroupNorm input convs, sine positions + level encoding, post-norm encoder layers with the grid_sample deformable
attention of bench/torch_vit_adapter.py — what mmcv runs on a CPU —, FPN top-down path, mask feature projection),
the masked-attention transformer decoder (torch.nn.MultiheadAttention, attention masks from the previous stage with
the all-masked fallback) and semantic inference (softmax without "no object" x sigmoid masks, summed over queries).
State-dict keys are the authors' (`pixel_decoder.*`, `transformer_decoder.*`, `query_embed`, ...).

  # parity with the fixture (exit status 1 if any compared tensor differs by >= 1e-4 relative)
  /usr/bin/python3 bench/torch_mask2former.py --check ../shared/fixtures/mask2former/mask2former_small

  # semantic inference of the head on random stride-4..32 maps of a SxS image, random weights, eval, no_grad
  /usr/bin/python3 bench/torch_mask2former.py --bench --size 256 --in-channels 256 --channels 256 --heads 8 \\
      --ffn 1024 --queries 100 --classes 150 --repeats 5 --threads 2 --json
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import (  # noqa: E402
    add_timing_args, bench_line, compare, exit_after_checks, load_strict, openblas_env, parse_timing_args,
    read_safetensors, summary, time_calls)
from torch_vit_adapter import ms_deform_attn_core  # noqa: E402


def sine_pos(h, w, num_feats, device):
    """SinePositionalEncoding(normalize=True, scale 2*pi, eps 1e-6, temperature 10000) of an unpadded h x w map:
    1 x 2*num_feats x h x w, float32."""
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y = y / (float(h) + 1e-6) * (2 * math.pi)
    x = x / (float(w) + 1e-6) * (2 * math.pi)
    k = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * torch.div(k, 2, rounding_mode='floor') / num_feats)

    def enc(v):
        p = v[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)  # n x nf

    py = enc(y).t()[:, :, None].expand(num_feats, h, w)
    px = enc(x).t()[:, None, :].expand(num_feats, h, w)
    return torch.cat([py, px], 0)[None]


class ConvGN(nn.Module):
    """mmcv ConvModule with GroupNorm (`conv`, `gn`), optional ReLU."""

    def __init__(self, cin, cout, k, bias, act, groups=32):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)
        self.gn = nn.GroupNorm(groups, cout)
        self.act = act

    def forward(self, x):
        y = self.gn(self.conv(x))
        return F.relu(y) if self.act else y


class FFN(nn.Module):
    """mmcv FFN (2 fcs): `layers.0.0` Linear -> ReLU -> `layers.1` Linear, plus the identity."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dim), nn.Dropout(0.0))

    def forward(self, x):
        return x + self.layers(x)


class MSDA(nn.Module):
    """mmcv MultiScaleDeformableAttention (self-attention of the pixel decoder), batch-first, plus the identity."""

    def __init__(self, dim, heads, levels, points):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)

    def forward(self, q, pos, ref, shapes):
        B, L, C = q.shape
        M, Lv, P = self.heads, self.levels, self.points
        value = self.value_proj(q).view(B, L, M, C // M)
        qp = q + pos
        off = self.sampling_offsets(qp).view(B, L, M, Lv, P, 2)
        a = self.attention_weights(qp).view(B, L, M, Lv * P).softmax(-1).view(B, L, M, Lv, P)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=q.dtype, device=q.device)
        loc = ref[None, :, None, None, None, :] + off / norm[None, None, None, :, None, :]
        return q + self.output_proj(ms_deform_attn_core(value, shapes, loc, a))


class EncoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.attentions = nn.ModuleList([MSDA(dim, heads, 3, 4)])
        self.ffns = nn.ModuleList([FFN(dim, ffn)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])

    def forward(self, q, pos, ref, shapes):
        q = self.norms[0](self.attentions[0](q, pos, ref, shapes))
        return self.norms[1](self.ffns[0](q))


class Encoder(nn.Module):
    def __init__(self, n, dim, heads, ffn):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(n)])


class PixelDecoder(nn.Module):
    def __init__(self, cin, dim, layers, heads, ffn):
        super().__init__()
        self.dim = dim
        self.input_convs = nn.ModuleList([ConvGN(cin, dim, 1, True, False) for _ in range(3)])
        self.encoder = Encoder(layers, dim, heads, ffn)
        self.level_encoding = nn.Embedding(3, dim)
        self.lateral_convs = nn.ModuleList([ConvGN(cin, dim, 1, False, False)])
        self.output_convs = nn.ModuleList([ConvGN(dim, dim, 3, False, True)])
        self.mask_feature = nn.Conv2d(dim, dim, 1)

    def forward(self, feats, cap):
        B = feats[0].shape[0]
        toks, poss, shapes, refs = [], [], [], []
        for i in range(3):
            f = feats[3 - i]
            h, w = f.shape[-2:]
            x = self.input_convs[i](f)
            pos = sine_pos(h, w, self.dim // 2, f.device).to(f.dtype) + self.level_encoding.weight[i].view(1, -1, 1, 1)
            toks.append(x.flatten(2).transpose(1, 2))
            poss.append(pos.expand(B, -1, h, w).flatten(2).transpose(1, 2))
            shapes.append((h, w))
            ys, xs = torch.meshgrid((torch.arange(h, dtype=f.dtype) + 0.5) / h, (torch.arange(w, dtype=f.dtype) + 0.5) / w,
                                    indexing='ij')
            refs.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
        q, pos, ref = torch.cat(toks, 1), torch.cat(poss, 1), torch.cat(refs, 0)
        for layer in self.encoder.layers:
            q = layer(q, pos, ref, shapes)
        outs = [t.reshape(B, -1, h, w) for t, (h, w) in zip(q.transpose(1, 2).split([h * w for h, w in shapes], 2), shapes)]
        for i, o in enumerate(outs):
            cap[f'ms_memory.{i}'] = o
        cur = self.lateral_convs[0](feats[0])
        y = self.output_convs[0](cur + F.interpolate(outs[-1], size=cur.shape[-2:], mode='bilinear', align_corners=False))
        mf = self.mask_feature(y)
        cap['mask_features'] = mf
        return mf, outs


class MHA(nn.Module):
    """mmcv MultiheadAttention: identity + attn(query + query_pos, key + key_pos, value)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, q, k, v, qpos, kpos, mask=None):
        return q + self.attn(q + qpos, k + kpos, v, attn_mask=mask, need_weights=False)[0]


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, ffn):
        super().__init__()
        self.attentions = nn.ModuleList([MHA(dim, heads), MHA(dim, heads)])
        self.ffns = nn.ModuleList([FFN(dim, ffn)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(3)])


class Decoder(nn.Module):
    def __init__(self, n, dim, heads, ffn):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(dim, heads, ffn) for _ in range(n)])
        self.post_norm = nn.LayerNorm(dim)


class Mask2FormerHead(nn.Module):
    def __init__(self, cin, dim, queries, classes, enc_layers, enc_heads, dec_layers, dec_heads, ffn_enc, ffn_dec):
        super().__init__()
        self.dim, self.heads, self.classes = dim, dec_heads, classes
        self.pixel_decoder = PixelDecoder(cin, dim, enc_layers, enc_heads, ffn_enc)
        self.transformer_decoder = Decoder(dec_layers, dim, dec_heads, ffn_dec)
        self.query_embed = nn.Embedding(queries, dim)
        self.query_feat = nn.Embedding(queries, dim)
        self.level_embed = nn.Embedding(3, dim)
        self.cls_embed = nn.Linear(dim, classes + 1)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim),
                                        nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def predict(self, x, mf, size):
        z = self.transformer_decoder.post_norm(x)
        cls = self.cls_embed(z)
        mask = torch.einsum('bqc,bchw->bqhw', self.mask_embed(z), mf)
        blocked = F.interpolate(mask, size, mode='bilinear', align_corners=False).flatten(2).sigmoid() < 0.5
        return cls, mask, blocked

    def forward(self, feats, cap=None):
        cap = {} if cap is None else cap
        mf, ms = self.pixel_decoder(feats, cap)
        B = mf.shape[0]
        kv, kpos, sizes = [], [], []
        for l in range(3):
            h, w = ms[l].shape[-2:]
            kv.append(ms[l].flatten(2).transpose(1, 2) + self.level_embed.weight[l])
            kpos.append(sine_pos(h, w, self.dim // 2, mf.device).to(mf.dtype).flatten(2).transpose(1, 2).expand(B, -1, -1))
            sizes.append((h, w))
        x = self.query_feat.weight[None].expand(B, -1, -1)
        qpos = self.query_embed.weight[None].expand(B, -1, -1)
        cls, mask, blocked = self.predict(x, mf, sizes[0])
        cap['cls_pred.0'], cap['mask_pred.0'] = cls, mask
        for i, layer in enumerate(self.transformer_decoder.layers):
            lvl = i % 3
            blocked = blocked & ~blocked.all(-1, keepdim=True)
            m = blocked.repeat_interleave(self.heads, dim=0)  # (B*heads) x Q x S, batch-major as torch expects
            x = layer.norms[0](layer.attentions[0](x, kv[lvl], kv[lvl], qpos, kpos[lvl], m))
            x = layer.norms[1](layer.attentions[1](x, x, x, qpos, qpos))
            x = layer.norms[2](layer.ffns[0](x))
            cls, mask, blocked = self.predict(x, mf, sizes[(i + 1) % 3])
            cap[f'cls_pred.{i + 1}'], cap[f'mask_pred.{i + 1}'] = cls, mask
        probs = F.softmax(cls, -1)[..., :-1]
        seg = torch.einsum('bqc,bqhw->bchw', probs, mask.sigmoid())
        cap['seg_mask'] = seg
        return seg


def proc_status_mb(field):
    """`VmRSS` (current) or `VmHWM` (peak) of this process from /proc/self/status, in MB. Unlike `ru_maxrss`, the
    peak starts afresh at exec, so the parent's memory at fork time does not count."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise SystemExit(f'/proc/self/status has no {field}')


def head_from_config(cfg):
    enc = cfg['pixel_decoder']['encoder']
    dec = cfg['transformer_decoder']
    et, dt = enc['transformerlayers'], dec['transformerlayers']
    return Mask2FormerHead(
        cfg['in_channels'][0], cfg['feat_channels'], cfg['num_queries'], cfg['num_things_classes'] + cfg['num_stuff_classes'],
        enc['num_layers'], et['attn_cfgs']['num_heads'], dec['num_layers'], dt['attn_cfgs']['num_heads'],
        et['ffn_cfgs']['feedforward_channels'], dt.get('feedforward_channels', dt['ffn_cfgs']['feedforward_channels']))


def check(prefix):
    with open(prefix + '.json') as f:
        meta = json.load(f)
    head = head_from_config(meta['decode_head']).eval()
    weights, _ = read_safetensors(prefix + '.weights.safetensors')
    load_strict(head, {k[len('decode_head.'):]: v for k, v in weights.items()}, prefix)
    io, _ = read_safetensors(prefix + '.io.safetensors')
    cap = {}
    with torch.no_grad():
        seg = head([io[f'in{i}'] for i in range(4)], cap)
        cap['seg_logits'] = F.interpolate(seg, size=tuple(meta['img_shape']), mode='bilinear', align_corners=False)
    worst = 0.0
    for k in sorted(cap):
        if k not in io:
            continue
        rel, _ = compare(prefix, k, cap[k], io[k])
        worst = max(worst, rel)
        print(f'{k} max_rel_err={rel:.2e} {"ok" if rel < 1e-4 else "FAIL"}')
    print(f'{os.path.basename(prefix)}: {len([k for k in cap if k in io])} tensors, worst {worst:.2e}')
    return worst < 1e-4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--check', nargs='+', metavar='PREFIX')
    ap.add_argument('--bench', action='store_true')
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--batch', type=int, default=1)
    ap.add_argument('--in-channels', type=int, default=256)
    ap.add_argument('--channels', type=int, default=256)
    ap.add_argument('--heads', type=int, default=8)
    ap.add_argument('--ffn', type=int, default=1024)
    ap.add_argument('--queries', type=int, default=100)
    ap.add_argument('--classes', type=int, default=150)
    ap.add_argument('--enc-layers', type=int, default=6)
    ap.add_argument('--dec-layers', type=int, default=9)
    ap.add_argument('--json', action='store_true')
    add_timing_args(ap)
    a = parse_timing_args(ap)
    if a.check:
        exit_after_checks(check, a.check)
    if not a.bench:
        ap.error('give --check or --bench')
    base_rss = proc_status_mb('VmHWM')
    torch.manual_seed(0)
    head = Mask2FormerHead(a.in_channels, a.channels, a.queries, a.classes, a.enc_layers, a.heads, a.dec_layers, a.heads,
                           a.ffn, a.ffn).eval()
    feats = [torch.randn(a.batch, a.in_channels, a.size // s, a.size // s) for s in (4, 8, 16, 32)]
    times, cpu = time_calls(lambda: head(feats), a.repeats, a.warmup)
    res = summary(times, cpu)
    res.update({
        'torch_version': torch.__version__, 'threads': torch.get_num_threads(), 'env': openblas_env(),
        'num_parameters': sum(p.numel() for p in head.parameters()),
        'base_rss_mb': base_rss, 'peak_rss_mb': proc_status_mb('VmHWM'),
    })
    if a.json:
        print(json.dumps(res))
    else:
        print(f'PyTorch Mask2Former head, {a.size}x{a.size}: {bench_line(res, a.repeats)}; peak RSS '
              f'{res["peak_rss_mb"]:.0f} MB (base {res["base_rss_mb"]:.0f} MB)')


if __name__ == '__main__':
    main()
