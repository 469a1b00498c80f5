#!/usr/bin/python3
"""PyTorch ViT-Adapter + UperNet segmentor: the timing baseline of bench/segmentor.ts, and a head parity check.

A self-contained re-implementation (written for this project) of mmseg 0.x's `UPerHead` (pyramid pooling module,
top-down FPN, `fpn_bottleneck`, `conv_seg`) and of the auxiliary `FCNHead`, with mmseg's state-dict key names
(mmcv `ConvModule` = `conv` without bias, `bn`, ReLU; BatchNorm in eval mode uses the running statistics), put
behind the ViT-Adapter backbone of bench/torch_vit_adapter.py as mmseg's `EncoderDecoder`:
`encode_decode(img) = resize(decode_head(backbone(img)), img size, bilinear, align_corners=False)`.
The auxiliary head exists for key parity only: inference never runs it.

  # parity of the heads on the shared fixtures (exit status 1 if any logits differ by >= 1e-4 relative);
  # a fixture without weights (segmentor_tiny_head) gets a key / shape check of the whole head state dict
  H=/work/shared/fixtures/heads
  /usr/bin/python3 bench/torch_segmentor.py --check-head $H/uperhead_small $H/fcnhead_small $H/segmentor_tiny_head

  # whole-mode forward (encode_decode) of one image, random weights, eval, no_grad
  /usr/bin/python3 bench/torch_segmentor.py --bench --size 512 --repeats 5 --threads 2 --json
  # ... plus pre-processing (normalise a uint8 image), softmax and argmax around it
  /usr/bin/python3 bench/torch_segmentor.py --bench --end-to-end --size 512 --repeats 5 --threads 2 --json

  # backbone / decode head (PPM, laterals, FPN convs, fpn_bottleneck and its conv, conv_seg) / final resize,
  # the fastest of --repeats passes; add --json for {profile_s: {...}, profile_cpu_s: {...}}
  /usr/bin/python3 bench/torch_segmentor.py --profile --size 512 --repeats 3 --threads 2

  # the segmentor's state dict as {key: shape} (bench/segmentor.ts compares it with the TypeScript model's)
  /usr/bin/python3 bench/torch_segmentor.py --keys
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
    Profiler, add_timing_args, bench_line, compare, exit_after_checks, fastest_pass, load_strict, openblas_env,
    parse_timing_args, read_safetensors, summary, time_calls)
from torch_vit_adapter import PRESETS, ViTAdapter  # noqa: E402

# ----------------------------------------------------------------------------------------------------------------
# profiling: wall-clock and process CPU time per named section (CPU ops are synchronous)

PROF = Profiler()
SECTION = PROF.section

# ----------------------------------------------------------------------------------------------------------------
# mmseg heads


def resize(x, size, align_corners=False):
    """mmseg `resize` with an output size: bilinear, no-op when the size already matches."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode='bilinear', align_corners=align_corners)


class ConvModule(nn.Module):
    """mmcv ConvModule with a norm: conv (no bias, padding k // 2) -> BatchNorm (`bn`, eps 1e-5) -> ReLU."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BaseDecodeHead(nn.Module):
    """`conv_seg` (1x1 with bias) behind Dropout2d (identity in eval: not applied here, it has no state)."""

    def __init__(self, channels, num_classes, align_corners=False):
        super().__init__()
        self.channels = channels
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def cls_seg(self, feat):
        with SECTION('head.conv_seg'):
            return self.conv_seg(feat)


class UPerHead(BaseDecodeHead):
    """mmseg UPerHead (in_index = all inputs in order, multiple_select)."""

    def __init__(self, in_channels, channels, num_classes, pool_scales=(1, 2, 3, 6), align_corners=False):
        super().__init__(channels, num_classes, align_corners)
        top = in_channels[-1]
        self.psp_modules = nn.ModuleList(
            [nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(top, channels, 1)) for s in pool_scales])
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList([ConvModule(c, channels, 1) for c in in_channels[:-1]])
        self.fpn_convs = nn.ModuleList([ConvModule(channels, channels, 3) for _ in in_channels[:-1]])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)

    def psp_forward(self, x, capture=None):
        branches = []
        for i, m in enumerate(self.psp_modules):
            pooled = m[0](x)
            out = resize(m[1](pooled), x.shape[2:], self.align_corners)
            if capture is not None:
                capture(f'ppm_pool.{i}', pooled)
                capture(f'ppm.{i}', out)
            branches.append(out)
        out = self.bottleneck(torch.cat([x] + branches, 1))
        if capture is not None:
            capture('psp_out', out)
        return out

    def features(self, inputs, capture=None):
        with SECTION('head.laterals'):
            laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        if capture is not None:
            for i, t in enumerate(laterals):
                capture(f'lateral.{i}', t)
        with SECTION('head.psp'):
            laterals.append(self.psp_forward(inputs[-1], capture))
        n = len(laterals)
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], self.align_corners)
        if capture is not None:
            for i, t in enumerate(laterals):
                capture(f'topdown.{i}', t)
        with SECTION('head.fpn_convs'):
            outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        if capture is not None:
            for i, t in enumerate(outs):
                capture(f'fpn.{i}', t)
        outs.append(laterals[-1])
        fused_in = torch.cat([resize(o, outs[0].shape[2:], self.align_corners) for o in outs], 1)
        with SECTION('head.fpn_bottleneck'):
            fb = self.fpn_bottleneck
            with SECTION('head.fpn_bottleneck.conv'):
                y = fb.conv(fused_in)
            fused = F.relu(fb.bn(y))
        if capture is not None:
            capture('fpn_out', fused)
        return fused

    def forward(self, inputs, capture=None):
        logits = self.cls_seg(self.features(inputs, capture))
        if capture is not None:
            capture('logits', logits)
        return logits


class FCNHead(BaseDecodeHead):
    """mmseg FCNHead with num_convs 1, concat_input False (the auxiliary head; training only)."""

    def __init__(self, in_channels, channels, num_classes, in_index=2, num_convs=1, kernel_size=3, align_corners=False):
        super().__init__(channels, num_classes, align_corners)
        self.in_index = in_index
        self.convs = nn.Sequential(*[ConvModule(in_channels if i == 0 else channels, channels, kernel_size)
                                     for i in range(num_convs)])

    def forward(self, inputs, capture=None):
        feat = self.convs(inputs[self.in_index])
        if capture is not None:
            capture('feat', feat)
        logits = self.cls_seg(feat)
        if capture is not None:
            capture('logits', logits)
        return logits


def build_head(cfg):
    """A head from an mmseg config dict (the keys the fixtures and the ViT-Adapter configs use)."""
    cfg = dict(cfg)
    kind = cfg.pop('type')
    for k in ('norm_cfg', 'act_cfg', 'conv_cfg'):
        v = cfg.pop(k, None)
        if k == 'norm_cfg' and v is not None and v.get('type') not in ('BN', 'SyncBN', 'BN2d'):
            raise ValueError(f'norm_cfg {v} not supported')
        if k == 'act_cfg' and v is not None and v.get('type') != 'ReLU':
            raise ValueError(f'act_cfg {v} not supported')
        if k == 'conv_cfg' and v is not None:
            raise ValueError(f'conv_cfg {v} not supported')
    cfg.pop('dropout_ratio', None)  # Dropout2d: identity in eval, no state
    cfg.pop('loss_decode', None)
    if kind == 'UPerHead':
        if list(cfg.pop('in_index', range(len(cfg['in_channels'])))) != list(range(len(cfg['in_channels']))):
            raise ValueError('UPerHead: only in_index = [0, 1, ..., n-1] is implemented')
        return UPerHead(cfg['in_channels'], cfg['channels'], cfg['num_classes'], tuple(cfg.get('pool_scales', (1, 2, 3, 6))),
                        cfg.get('align_corners', False))
    if kind == 'FCNHead':
        if cfg.get('concat_input', False):
            raise ValueError('FCNHead: concat_input=True is not implemented')
        return FCNHead(cfg['in_channels'], cfg['channels'], cfg['num_classes'], cfg.get('in_index', 2),
                       cfg.get('num_convs', 2), cfg.get('kernel_size', 3), cfg.get('align_corners', False))
    raise ValueError(f'head type {kind} not implemented')


def uper_head_cfg(D, num_classes=150, channels=512):
    """`upernet_r50.py`'s UPerHead with ViT-Adapter's `in_channels=[D]*4` (src/tasks/segmentation/configs.ts)."""
    return dict(type='UPerHead', in_channels=[D] * 4, in_index=[0, 1, 2, 3], pool_scales=[1, 2, 3, 6], channels=channels,
                dropout_ratio=0.1, num_classes=num_classes, norm_cfg=dict(type='SyncBN', requires_grad=True),
                align_corners=False)


def aux_head_cfg(D, num_classes=150):
    return dict(type='FCNHead', in_channels=D, in_index=2, channels=256, num_convs=1, concat_input=False,
                dropout_ratio=0.1, num_classes=num_classes, norm_cfg=dict(type='SyncBN', requires_grad=True),
                align_corners=False)


# ----------------------------------------------------------------------------------------------------------------
# the segmentor


class EncoderDecoder(nn.Module):
    """mmseg EncoderDecoder without a neck: `backbone`, `decode_head`, `auxiliary_head` (registered in that order)."""

    def __init__(self, backbone, decode_head, auxiliary_head=None):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    def encode_decode(self, img):
        with SECTION('backbone'):
            feats = self.backbone(img)
        with SECTION('head'):
            logits = self.decode_head(feats)
        with SECTION('resize'):
            return resize(logits, img.shape[2:], self.decode_head.align_corners)

    forward = encode_decode


def mmseg_init(model):
    """mmseg's initialisation of the heads (kaiming-normal convs, fan_out, BN 1/0, conv_seg N(0, 0.01)); the backbone
    keeps torch_vit_adapter's own initialisation. Values do not change the timing; they keep activations sane."""
    for head in (model.decode_head, model.auxiliary_head):
        if head is None:
            continue
        for m in head.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(head.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(head.conv_seg.bias)


def build_segmentor(preset='tiny', num_classes=150, seed=0):
    """ViT-Adapter-<preset> + UperNet + auxiliary FCNHead, as `upernet_deit_adapter_<preset>_512_160k_ade20k`."""
    torch.manual_seed(seed)
    D = PRESETS[preset]['embed_dim']
    model = EncoderDecoder(ViTAdapter(**PRESETS[preset]), build_head(uper_head_cfg(D, num_classes)),
                           build_head(aux_head_cfg(D, num_classes)))
    mmseg_init(model)
    return model.float().eval()


# ----------------------------------------------------------------------------------------------------------------
# --check-head


def _strip(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def check_keys(prefix, cfg):
    """No weights shipped: the model's full state-dict key list, order and shapes against the fixture's."""
    name = os.path.basename(prefix)
    heads = {'decode_head': build_head(cfg['decode_head'])}
    if 'auxiliary_head' in cfg:
        heads['auxiliary_head'] = build_head(cfg['auxiliary_head'])
    ours = [(f'{p}.{k}', list(v.shape)) for p, h in heads.items() for k, v in h.state_dict().items()]
    ref_keys = cfg['weights']['keys']
    ref_shapes = cfg['weights']['shapes']
    ref = [(k, list(ref_shapes[k] if isinstance(ref_shapes, dict) else ref_shapes[i])) for i, k in enumerate(ref_keys)]
    n_params = sum(math.prod(s) for k, s in ours if not k.endswith('num_batches_tracked'))
    ok = ours == ref
    detail = ''
    if not ok:
        diff = [(a, b) for a, b in zip(ours, ref) if a != b][:4]
        detail = f' first differences (ours, fixture): {diff}; {len(ours)} vs {len(ref)} keys'
    print(f'{name} (no weights shipped: key check): {len(ours)} tensors, {n_params:,} parameters (fixture '
          f'{cfg["weights"].get("num_tensors")}, {cfg["weights"].get("num_params"):,}), key order and shapes '
          f'{"identical" if ok else "DIFFER"}{detail} -> {"OK" if ok else "FAIL"}')
    return ok


def check_head(prefix):
    """Builds the fixture's head, loads its weights strictly, compares logits (and intermediates)."""
    with open(prefix + '.json') as f:
        cfg = json.load(f)
    if not os.path.exists(prefix + '.weights.safetensors'):
        return check_keys(prefix, cfg)
    name = os.path.basename(prefix)
    weights, _ = read_safetensors(prefix + '.weights.safetensors')
    io, _ = read_safetensors(prefix + '.io.safetensors')
    results = []
    attrs = [k for k in ('decode_head', 'auxiliary_head') if k in cfg]
    for attr in attrs:
        head = build_head(cfg[attr]).float().eval()
        load_strict(head, _strip(weights, attr + '.'), f'{name}: {attr}')
        captured = {}
        inputs = [io[f'in{i}'].float() for i in range(4)]
        with torch.no_grad():
            head(inputs, capture=lambda n, t: captured.__setitem__(n, t))
        # with both heads in one fixture the auxiliary logits are stored as aux_logits (and only they)
        rename = 'aux_' if attr == 'auxiliary_head' and len(attrs) > 1 else ''
        captured = {rename + k: v for k, v in captured.items()}
        out_key = rename + 'logits'
        keys = [k for k in io if not k.startswith('in') and k not in ('seg', 'seg_margin')]
        if rename:
            keys = [out_key]
        for k in sorted(keys, key=lambda k: (k != out_key, k)):
            if k not in captured:
                continue
            rel, diff = compare(name, k, captured[k], io[k])
            results.append((k, rel, diff, k == out_key))
    worst = max(r for _, r, _, main in results if main)
    ok = worst < 1e-4
    mains = [r for r in results if r[3]]
    print(f'{name} ({", ".join(c["type"] for c in (cfg.get("decode_head"), cfg.get("auxiliary_head")) if c)}, '
          f'{sum(t.numel() for t in weights.values() if t.is_floating_point()):,} parameters): '
          + '  '.join(f'{k} max|out-ref|/max|ref| {r:.2e} (max abs {a:.1e})' for k, r, a, _ in mains)
          + f'  -> {"OK" if ok else "FAIL"} (< 1e-4)')
    rest = [r for r in results if not r[3]]
    if rest:
        print('  intermediates: ' + '  '.join(f'{k} {r:.1e}' for k, r, _, _ in rest))
    return ok


# ----------------------------------------------------------------------------------------------------------------
# --bench / --profile

ADE_MEAN = (123.675, 116.28, 103.53)
ADE_STD = (58.395, 57.12, 57.375)


def predict(model, image_u8):
    """A 512x512-or-so RGB uint8 HWC image -> uint8 label map: normalise (ImageNet mean/std), whole-mode
    encode_decode, softmax over classes, argmax. The input needs no resize when its sides are multiples of 32 and
    its scale fits (2048, 512), as for 512x512."""
    x = torch.from_numpy(image_u8).float()
    mean = torch.tensor(ADE_MEAN)
    std = torch.tensor(ADE_STD)
    x = ((x - mean) / std).permute(2, 0, 1).unsqueeze(0).contiguous()
    logits = model.encode_decode(x)
    return torch.softmax(logits, 1).argmax(1).to(torch.uint8).numpy()


PROFILE_ORDER = ['backbone', 'head.psp', 'head.laterals', 'head.fpn_convs', 'head.fpn_bottleneck.conv',
                 'head.fpn_bottleneck.bn_relu', 'head.conv_seg', 'head.other', 'head', 'resize', 'other']


def sections(acc, total):
    a = lambda k: acc.get(k, 0.0)  # noqa: E731
    out = {
        'backbone': a('backbone'), 'head.psp': a('head.psp'), 'head.laterals': a('head.laterals'),
        'head.fpn_convs': a('head.fpn_convs'), 'head.fpn_bottleneck': a('head.fpn_bottleneck'),
        'head.fpn_bottleneck.conv': a('head.fpn_bottleneck.conv'),
        'head.fpn_bottleneck.bn_relu': a('head.fpn_bottleneck') - a('head.fpn_bottleneck.conv'),
        'head.conv_seg': a('head.conv_seg'), 'head': a('head'), 'resize': a('resize'),
    }
    out['head.other'] = out['head'] - sum(out[k] for k in ('head.psp', 'head.laterals', 'head.fpn_convs',
                                                           'head.fpn_bottleneck', 'head.conv_seg'))
    out['other'] = total - out['backbone'] - out['head'] - out['resize']
    out['total'] = total
    return out


def profile(model, x, repeats, warmup):
    """Per-section (wall, process CPU) seconds of one encode_decode: the fastest of `repeats` passes."""
    time_calls(lambda: model.encode_decode(x), 0, warmup)
    return fastest_pass(PROF, lambda: model.encode_decode(x), repeats, sections)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--check-head', nargs='+', metavar='PREFIX', help='fixture prefix(es), e.g. DIR/uperhead_small')
    ap.add_argument('--bench', action='store_true', help='time whole-mode encode_decode with random weights')
    ap.add_argument('--end-to-end', action='store_true',
                    help='with --bench: also time normalise + encode_decode + softmax + argmax of a uint8 image')
    ap.add_argument('--profile', action='store_true', help='backbone / head / resize split of encode_decode')
    ap.add_argument('--preset', default='tiny', choices=sorted(PRESETS))
    ap.add_argument('--num-classes', type=int, default=150)
    ap.add_argument('--size', type=int, default=512)
    add_timing_args(ap)
    ap.add_argument('--keys', action='store_true',
                    help='print the segmentor state dict as one JSON object {key: shape} (for the TS side to compare)')
    ap.add_argument('--json', action='store_true', help='print one JSON object')
    a = parse_timing_args(ap)
    if a.check_head:
        exit_after_checks(check_head, a.check_head)
    if a.keys:
        sd = build_segmentor(a.preset, a.num_classes).state_dict()
        print(json.dumps({k: list(v.shape) for k, v in sd.items()}))
        return
    if not (a.bench or a.profile):
        ap.error('give --check-head, --bench, --profile or --keys')
    if a.size % 32:
        ap.error(f'--size must be a multiple of 32, got {a.size}')
    model = build_segmentor(a.preset, a.num_classes)
    torch.manual_seed(1)
    x = torch.randn(1, 3, a.size, a.size)
    n_inf = sum(p.numel() for n, p in model.named_parameters() if not n.startswith('auxiliary_head.'))
    result = dict(preset=a.preset, size=a.size, batch=1, mode='whole', torch_version=torch.__version__,
                  threads=torch.get_num_threads(), num_parameters=n_inf, env=openblas_env())
    if a.bench:
        result.update(summary(*time_calls(lambda: model.encode_decode(x), a.repeats, a.warmup)))
        if a.end_to_end:
            image = torch.randint(0, 256, (a.size, a.size, 3), dtype=torch.uint8).numpy()
            result.update(summary(*time_calls(lambda: predict(model, image), a.repeats, a.warmup), 'e2e_'))
    if a.profile:
        result['profile_s'], result['profile_cpu_s'] = profile(model, x, a.repeats, a.warmup)
    if a.json:
        print(json.dumps(result))
        return
    print(f'PyTorch {result["torch_version"]} ViT-Adapter-{a.preset} + UperNet, whole mode, 1x3x{a.size}x{a.size}, '
          f'{result["threads"]} threads, {n_inf / 1e6:.2f} M parameters (without the auxiliary head), env {result["env"]}')
    if a.bench:
        print(f'  encode_decode: {bench_line(result, a.repeats)}')
        if a.end_to_end:
            print(f'  end to end (normalise + encode_decode + softmax + argmax): median '
                  f'{result["e2e_median_s"] * 1e3:.1f} ms  min {result["e2e_min_s"] * 1e3:.1f}  '
                  f'max {result["e2e_max_s"] * 1e3:.1f}')
    if a.profile:
        p, c = result['profile_s'], result['profile_cpu_s']
        print(f'  {"section":<28} {"wall ms":>9}  {"%":>5}  {"CPU ms":>9}')
        for k in PROFILE_ORDER + ['total']:
            print(f'  {k:<28} {p[k] * 1e3:9.1f}  {100 * p[k] / p["total"]:5.1f}  {c[k] * 1e3:9.1f}')


if __name__ == '__main__':
    main()
