"""Pieces shared by the PyTorch benchmark scripts (bench/torch_vit_adapter.py, bench/torch_segmentor.py): the
safetensors reader, strict state-dict loading and the fixture comparison, section timers, the timing loop and its
summary, the fastest-profiled-pass loop, and the environment record."""
import contextlib
import json
import math
import os
import struct
import sys
import time

import torch

# ----------------------------------------------------------------------------------------------------------------
# safetensors reader (8-byte little-endian header length, JSON header, raw little-endian data)

_ST_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8, 'BOOL': torch.bool,
}


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) for a safetensors file."""
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n].decode('utf-8'))
    meta = header.pop('__metadata__', {}) or {}
    buf = bytearray(data[8 + n:])
    out = {}
    for name, info in header.items():
        dtype = _ST_DTYPES[info['dtype']]
        begin, end = info['data_offsets']
        count = math.prod(info['shape'])
        itemsize = torch.tensor([], dtype=dtype).element_size()
        if end - begin != count * itemsize:
            raise ValueError(f'{path}: {name}: {end - begin} bytes for shape {info["shape"]} {info["dtype"]}')
        t = torch.frombuffer(buf, dtype=dtype, count=count, offset=begin) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info['shape']).clone()
    return out, meta


# ----------------------------------------------------------------------------------------------------------------
# fixtures


def load_strict(module, sd, where):
    """Loads `sd` into `module` strictly; BatchNorm counters are optional in the fixtures, as in PyTorch's own
    loader. Exits with `where: state dict mismatch: ...` when keys are missing or unexpected."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise SystemExit(f'{where}: state dict mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}')
    sd = dict(sd)
    for k in own:
        if k.endswith('num_batches_tracked') and k not in sd:
            sd[k] = own[k]
    module.load_state_dict(sd, strict=True)


def compare(name, key, out, ref):
    """(max|out-ref| / max|ref|, max|out-ref|) in float64; exits when the shapes differ."""
    ref = ref.double()
    out = out.double()
    if tuple(out.shape) != tuple(ref.shape):
        raise SystemExit(f'{name}: {key}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}')
    diff = (out - ref).abs().max()
    return (diff / ref.abs().max()).item(), diff.item()


# ----------------------------------------------------------------------------------------------------------------
# profiling: accumulating wall-clock timers (CPU ops are synchronous)

class Profiler:
    """Wall-clock and process CPU time (all threads) per named section."""

    def __init__(self):
        self.enabled = False
        self.acc = {}
        self.cpu = {}

    @contextlib.contextmanager
    def section(self, name):
        if not self.enabled:
            yield
            return
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.acc[name] = self.acc.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0

    def reset(self):
        self.acc = {}
        self.cpu = {}


def fastest_pass(prof, fn, repeats, sections):
    """Runs `fn` `repeats` times with `prof` on, under no_grad; returns (wall, CPU) `sections(acc, total)` of the
    least disturbed pass (smallest wall total): its sections add up to its total."""
    prof.enabled = True
    best = None
    try:
        with torch.no_grad():
            for _ in range(repeats):
                prof.reset()
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                if best is None or wall < best[0]['total']:
                    best = (sections(prof.acc, wall), sections(prof.cpu, cpu))
    finally:
        prof.enabled = False
    return best


# ----------------------------------------------------------------------------------------------------------------
# timing


def time_calls(fn, repeats, warmup):
    """Wall-clock and process CPU seconds of each timed call (under no_grad, after `warmup` untimed calls)."""
    times, cpu = [], []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= warmup:
                times.append(dt)
                cpu.append(dc)
    return times, cpu


def summary(times, cpu, prefix=''):
    s = sorted(times)
    return {f'{prefix}median_s': s[len(s) // 2], f'{prefix}min_s': s[0], f'{prefix}max_s': s[-1],
            f'{prefix}times_s': times, f'{prefix}cpu_median_s': sorted(cpu)[len(cpu) // 2], f'{prefix}cpu_times_s': cpu}


def openblas_env():
    return {k: os.environ.get(k) for k in ('OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE', 'OPENBLAS_NUM_THREADS',
                                          'OMP_NUM_THREADS')}


# ----------------------------------------------------------------------------------------------------------------
# command line


def add_timing_args(ap):
    """--repeats, --warmup, --threads (timed calls, untimed warm-up calls, torch threads)."""
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--threads', type=int, default=None)


def parse_timing_args(ap):
    """Parses the command line of `ap` (which has `add_timing_args`) and applies --threads."""
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    return a


def exit_after_checks(check, prefixes):
    """Runs `check` on every fixture prefix (all of them, also after a failure); exits 0 if all passed, else 1."""
    sys.exit(0 if all([check(p) for p in prefixes]) else 1)


def add_backbone_args(ap, check_help, presets, default_preset):
    """The backbone scripts' options, in this order: --check PREFIX..., --bench, --profile, --preset, --size, --batch,
    the timing options and --json."""
    ap.add_argument('--check', nargs='+', metavar='PREFIX', help=check_help)
    ap.add_argument('--bench', action='store_true', help='time forward passes with random weights')
    ap.add_argument('--profile', action='store_true', help='per-module time of a forward pass')
    ap.add_argument('--preset', default=default_preset, choices=sorted(presets))
    ap.add_argument('--size', type=int, default=512)
    ap.add_argument('--batch', type=int, default=1)
    add_timing_args(ap)
    ap.add_argument('--json', action='store_true', help='print one JSON object')


def parse_backbone_args(ap, check):
    """Parses `add_backbone_args` options (applying --threads); with --check runs `check` on the prefixes and exits,
    otherwise requires --bench or --profile and a --size that is a multiple of 32."""
    a = parse_timing_args(ap)
    if a.check:
        exit_after_checks(check, a.check)
    if not (a.bench or a.profile):
        ap.error('give --check, --bench or --profile')
    if a.size % 32:
        ap.error(f'--size must be a multiple of 32, got {a.size}')
    return a


def bench_line(result, repeats):
    """`median ... ms  min ...  max ...  (N runs); process CPU time median ... ms` of a `summary`."""
    return (f'median {result["median_s"] * 1e3:.1f} ms  min {result["min_s"] * 1e3:.1f}  '
            f'max {result["max_s"] * 1e3:.1f}  ({repeats} runs); process CPU time median '
            f'{result["cpu_median_s"] * 1e3:.1f} ms')
