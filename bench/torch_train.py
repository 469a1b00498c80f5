#!/usr/bin/python3
"""PyTorch training step of ViT-Adapter + UperNet + auxiliary FCN head: the baseline of bench/train.ts.

The model is bench/torch_segmentor.py's `EncoderDecoder` (backbone from bench/torch_vit_adapter.py) switched to what
mmseg trains with the authors' configs:
  - drop path in the ViT blocks (rates `linspace(0, drop_path_rate, depth)`, timm's per-sample mask scaled by
    1 / keep) and in the extractors' ConvFFN branch (rate `drop_path_rate`), as the authors' ViT-Adapter;
  - `Dropout2d(0.1)` before each head's `conv_seg`;
  - BatchNorm in training mode (batch statistics, running-average updates);
  - losses as mmseg 0.20: logits resized (bilinear, align_corners False) to the label size, cross entropy with
    ignore index 255 averaged over all pixels, decode weight 1.0, auxiliary weight 0.4, plus the pixel accuracy.
The optimizer is `torch.optim.AdamW` (torch's own default implementation choice) over the parameter groups that
bench/train.ts writes from the TypeScript model (`--groups FILE`: the authors' layer-decay groups: names, lr,
weight decay), so both sides update exactly the same groups.

  /usr/bin/python3 bench/torch_train.py --groups groups.json --preset tiny --size 512 --batch 2 \
      --repeats 3 --warmup 1 --threads 2 [--device cpu|cuda] [--amp bf16|fp16] [--json]

Prints one JSON object last with `--json`: step statistics, the forward / backward / optimizer split (median over
the timed steps), peak RSS (`ru_maxrss`), and on CUDA `torch.cuda.max_memory_allocated` / `max_memory_reserved`.
"""
import argparse
import contextlib
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_common import add_timing_args, openblas_env, summary  # noqa: E402
import torch_vit_adapter as tva  # noqa: E402
import torch_segmentor as tseg  # noqa: E402

IGNORE_INDEX = 255
AUX_WEIGHT = 0.4
HEAD_DROPOUT = 0.1


# ----------------------------------------------------------------------------------------------------------------
# training-mode pieces the inference baseline leaves out


def drop_path(x, p, training):
    """timm DropPath: zero whole samples with probability p, scale the kept ones by 1 / (1 - p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


def block_forward(self, x, H, W):
    a = self.attn(self.norm1(x), H, W)
    x = x + drop_path(a * self.gamma1 if self.gamma1 is not None else a, self.dp, self.training)
    m = self.mlp(self.norm2(x))
    return x + drop_path(m * self.gamma2 if self.gamma2 is not None else m, self.dp, self.training)


def extractor_forward(self, query, ref, feat, shapes, level_start, H, W):
    q = query + self.attn(self.query_norm(query), ref, self.feat_norm(feat), shapes, level_start)
    if self.with_cffn:
        q = q + drop_path(self.ffn(self.ffn_norm(q), H, W), self.dp, self.training)
    return q


def cls_seg(self, feat):
    return self.conv_seg(F.dropout2d(feat, HEAD_DROPOUT, self.training))


def build_train_model(preset, num_classes, seed):
    """bench/torch_segmentor.py's segmentor with drop path, head dropout and training mode (see the module notes)."""
    tva.Block.forward = block_forward
    tva.Extractor.forward = extractor_forward
    tseg.BaseDecodeHead.cls_seg = cls_seg
    model = tseg.build_segmentor(preset, num_classes, seed)
    rate = tva.PRESETS[preset]['drop_path_rate']
    depth = len(model.backbone.blocks)
    for blk, r in zip(model.backbone.blocks, torch.linspace(0, rate, depth).tolist()):
        blk.dp = r
    for m in model.backbone.modules():
        if isinstance(m, tva.Extractor):
            m.dp = rate
    return model.train()


def seg_loss(logits, label):
    """mmseg 0.20 decode-head loss: resize to the label, CE (ignore 255, mean over all pixels), pixel accuracy."""
    logits = F.interpolate(logits, size=label.shape[1:], mode='bilinear', align_corners=False)
    loss = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction='none').mean()
    with torch.no_grad():
        valid = label != IGNORE_INDEX
        acc = (logits.argmax(1) == label)[valid].float().mean() * 100
    return loss, acc


# ----------------------------------------------------------------------------------------------------------------
# parameter groups


def param_groups(model, path):
    """torch.optim groups from bench/train.ts's JSON (`groups[]` with `param_names`, `lr`, `weight_decay`): every
    trainable parameter in exactly one group, else exit with the difference."""
    with open(path) as f:
        spec = json.load(f)['groups']
    named = dict(model.named_parameters())
    seen = set()
    groups = []
    for g in spec:
        missing = [n for n in g['param_names'] if n not in named]
        if missing:
            raise SystemExit(f'{path}: group {g["group_name"]}: no such parameters in the PyTorch model: {missing[:8]}')
        seen.update(g['param_names'])
        groups.append({'params': [named[n] for n in g['param_names']], 'lr': g['lr'],
                       'weight_decay': g['weight_decay'], 'group_name': g['group_name']})
    left = [n for n, p in named.items() if p.requires_grad and n not in seen]
    if left:
        raise SystemExit(f'{path}: trainable PyTorch parameters in no group: {left[:8]}')
    return groups


# ----------------------------------------------------------------------------------------------------------------
# the timed step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--groups', required=True, help='parameter groups JSON written by bench/train.ts')
    ap.add_argument('--preset', default='tiny', choices=sorted(tva.PRESETS))
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--num-classes', type=int, default=150)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--amp', choices=['bf16', 'fp16'], default=None)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', action='store_true')
    add_timing_args(ap)
    a = ap.parse_args()
    if a.size % 32:
        raise SystemExit(f'--size must be a multiple of 32, got {a.size}')
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == 'cuda'
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f'--device {a.device}: torch.cuda.is_available() is False')
    if a.amp == 'fp16' and not cuda:
        raise SystemExit('--amp fp16 needs --device cuda (a dynamic loss scaler on CUDA)')
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    model = build_train_model(a.preset, a.num_classes, a.seed).to(dev)
    groups = param_groups(model, a.groups)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    scaler = torch.cuda.amp.GradScaler() if a.amp == 'fp16' else None
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(a.amp)

    g = torch.Generator().manual_seed(a.seed + 1)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=g).to(dev)
    y = torch.randint(0, a.num_classes, (a.batch, a.size, a.size), generator=g).to(dev)

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=amp_dtype)

    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats(dev)

    losses = {}

    def step():
        """Returns (forward, backward, optimizer) seconds."""
        t0 = time.perf_counter()
        with autocast():
            feats = model.backbone(x)
            dec, acc = seg_loss(model.decode_head(feats), y)
            aux, acc_aux = seg_loss(model.auxiliary_head(feats), y)
            loss = dec + AUX_WEIGHT * aux
        # the TypeScript trainer reads every logged term once per iteration; so does mmcv's logger
        losses.update({'decode.loss_ce': dec.item(), 'decode.acc_seg': acc.item(), 'aux.loss_ce': AUX_WEIGHT * aux.item(),
                       'aux.acc_seg': acc_aux.item(), 'loss': loss.item()})
        t1 = time.perf_counter()
        (scaler.scale(loss) if scaler else loss).backward()
        sync()
        t2 = time.perf_counter()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    times, cpu, parts = [], [], []
    for i in range(a.warmup + a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        p = step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= a.warmup:
            times.append(dt)
            cpu.append(dc)
            parts.append(p)
        if not a.json:
            print(f'step {i + 1}/{a.warmup + a.repeats}{" (warm-up)" if i < a.warmup else ""}: {dt * 1e3:.0f} ms, '
                  f'loss {losses["loss"]:.4f}', file=sys.stderr)

    def med(v):
        return sorted(v)[len(v) // 2]

    res = summary(times, cpu)
    res.update({
        'torch': torch.__version__, 'threads': torch.get_num_threads(), 'device': str(dev), 'amp': a.amp,
        'preset': a.preset, 'size': a.size, 'batch': a.batch, 'repeats': a.repeats, 'warmup': a.warmup,
        'optimizer': 'torch.optim.AdamW (defaults: foreach=None)', 'groups': len(groups),
        'num_parameters': sum(p.numel() for p in model.parameters()),
        'profile_s': {'forward': med([p[0] for p in parts]), 'backward': med([p[1] for p in parts]),
                      'optimizer': med([p[2] for p in parts])},
        'losses': losses,
        'img_per_s': a.batch / res['median_s'],
        'rss_before_model_bytes': rss0 * 1024,
        'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        'environment': openblas_env(),
    })
    if cuda:
        res['cuda_max_allocated_bytes'] = torch.cuda.max_memory_allocated(dev)
        res['cuda_max_reserved_bytes'] = torch.cuda.max_memory_reserved(dev)
        res['cuda_device'] = torch.cuda.get_device_name(dev)
    if a.json:
        print(json.dumps(res))
    else:
        pr = res['profile_s']
        print(f'PyTorch {torch.__version__} train step, {a.preset} {a.size}x{a.size} batch {a.batch} on {dev}'
              f'{" amp " + a.amp if a.amp else ""}: median {res["median_s"] * 1e3:.0f} ms, min {res["min_s"] * 1e3:.0f} ms '
              f'(forward {pr["forward"] * 1e3:.0f}, backward {pr["backward"] * 1e3:.0f}, optimizer '
              f'{pr["optimizer"] * 1e3:.0f}); peak RSS {res["peak_rss_bytes"] / 2**20:.0f} MiB')


if __name__ == '__main__':
    main()
