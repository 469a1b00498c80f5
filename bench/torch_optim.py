"""torch.optim.AdamW step timing on tensors of given shapes and groups (the PyTorch side of bench/optim.ts).

    python3 bench/torch_optim.py --spec groups.json [--repeats N] [--threads N]

groups.json: {"groups": [{"lr", "weight_decay", "shapes": [[...], ...]}, ...]}. Prints one JSON line with the median
and minimum seconds per step of the single-tensor (foreach=False) and multi-tensor (foreach=True) implementations.
"""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--spec', required=True)
    ap.add_argument('--repeats', type=int, default=10)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = json.load(open(a.spec))
    out = {}
    variants = {'single_tensor': False, 'foreach': True}
    opts = {}
    for name, foreach in variants.items():
        torch.manual_seed(0)
        groups = []
        for g in spec['groups']:
            ps = [torch.randn(s, requires_grad=True) for s in g['shapes']]
            for p in ps:
                p.grad = torch.randn(p.shape) * 1e-3
            groups.append({'params': ps, 'lr': g['lr'], 'weight_decay': g['weight_decay']})
        opts[name] = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, foreach=foreach)
        for _ in range(2):
            opts[name].step()
    times = {n: [] for n in variants}
    for _ in range(a.repeats):
        for n in variants:
            t0 = time.perf_counter()
            opts[n].step()
            times[n].append(time.perf_counter() - t0)
    for n, ts in times.items():
        out[n + '_median_s'] = statistics.median(ts)
        out[n + '_min_s'] = min(ts)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
