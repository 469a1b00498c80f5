#!/bin/bash
# GPU check: on a machine with an NVIDIA GPU (H100/H200), CUDA (nvcc) and a Python PyTorch 2.x but no Node.js,
# builds the addon against that torch, then runs `info`, `check-reference --device cuda`, the training benchmark
# (bench/train.ts) for ViT-Adapter-T and -S at 512x512 batch 8 in float32 and bf16, the CUDA detection-kernel tests
# (test/native/cuda-detect-ops), and the test suite (last). check-reference includes the Mask R-CNN fixture.
# Prepare the checkout first, on a machine with Node: scripts/gpu-prepare.sh (packs .node-runtime/ and .gpu/).
#
#   scripts/gpu-check.sh                 # logs + summary.json under $OUT (else ./gpu-out)
#   scripts/gpu-check.sh --cpu-dry-run   # the same steps on the CPU with tiny sizes (to try the script anywhere)
#
# Inputs: $VIT_FIXTURES (a fixtures folder; default ./.gpu/fixtures), $LIBTORCH (a libtorch folder; default the
# Python torch: scripts/libtorch-config.mjs), $PYTHON (default python3), $CUDA_ARCHS (default from nvidia-smi),
# $GPU_CHECK_BUDGET (seconds for all steps together, default 450), $GPU_CHECK_TEST_FILTER (test file filter),
# $GPU_CHECK_LIMIT_SCALE (factor on every step's limit; default 1, 4 with --cpu-dry-run).
# Every step is time-boxed (`timeout`) within the budget; a failed step is recorded and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
dry=0
for a in "$@"; do
  case "$a" in
    --cpu-dry-run) dry=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu-check: unknown argument $a (use --cpu-dry-run or nothing)" >&2; exit 2 ;;
  esac
done
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
budget=${GPU_CHECK_BUDGET:-450}
start=$(date +%s)
results=()   # "name|status|seconds|log"

# ---- environment ------------------------------------------------------------------------------------------------
if [ -f .node-runtime/activate.sh ]; then
  # shellcheck disable=SC1091
  source .node-runtime/activate.sh >/dev/null
fi
command -v node >/dev/null || { echo 'gpu-check: no node (run scripts/gpu-prepare.sh where Node is, carry .node-runtime)' >&2; exit 1; }
if [ ! -d node_modules/node-addon-api ]; then
  if [ -f .gpu/node_modules.tar.xz ]; then
    rm -rf node_modules   # a dangling symlink from the source checkout, or nothing
    tar -xJf .gpu/node_modules.tar.xz
  else
    echo 'gpu-check: node_modules missing and no .gpu/node_modules.tar.xz (scripts/gpu-prepare.sh)' >&2
  fi
fi
if [ ! -f dist/src/cli/bin.js ] && [ -f .gpu/dist.tar.xz ]; then tar -xJf .gpu/dist.tar.xz; fi
if [ -d node_modules/typescript ]; then npx --no-install tsc -p tsconfig.json || echo 'gpu-check: tsc failed (using the carried dist/)'; fi

fixtures=${VIT_FIXTURES:-$root/.gpu/fixtures}
shared=$(mktemp -d /tmp/vit-gpu-shared.XXXXXX)
if [ -d "$fixtures" ]; then
  ln -s "$(cd "$fixtures" && pwd)" "$shared/fixtures"
else
  echo "gpu-check: no fixtures at $fixtures: fixture tests skip, check-reference is skipped" >&2
fi
export VIT_ADAPTER_SHARED=$shared   # test/helpers/fixtures.ts reads it instead of ../shared
# the first interpreter that imports torch: $PYTHON, python3, /usr/bin/python3
py=
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
  if "$cand" -c 'import torch' >/dev/null 2>&1; then py=$cand; break; fi
done
[ -n "$py" ] || { py=${PYTHON:-python3}; echo "gpu-check: no Python with torch found (tried \$PYTHON, python3, /usr/bin/python3)" >&2; }

if [ $dry = 1 ]; then
  device=cpu; size=64; batch=2; repeats=1; warmup=0
  scale=${GPU_CHECK_LIMIT_SCALE:-4}   # a small shared CPU is far slower than the GPU the limits are sized for
  test_filter=${GPU_CHECK_TEST_FILTER:-test/heads/}
else
  device=cuda; size=512; batch=8; repeats=5; warmup=2
  scale=${GPU_CHECK_LIMIT_SCALE:-1}
  test_filter=${GPU_CHECK_TEST_FILTER:-}
  if [ -z "${CUDA_ARCHS:-}" ] && command -v nvidia-smi >/dev/null; then
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    [ -n "$cap" ] && export CUDA_ARCHS=$cap
  fi
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
fi

{
  echo "gpu-check $(date -u +%FT%TZ) dry_run=$dry device=$device"
  node --version
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)' 2>&1
  command -v nvcc >/dev/null && nvcc --version | tail -1 || echo 'nvcc: not found'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv 2>&1 || echo 'nvidia-smi: not found'
  nproc
} > "$out/environment.txt" 2>&1
cat "$out/environment.txt"

# run_step NAME LIMIT_S COMMAND...: time-boxed within the remaining budget, output to $out/NAME.log
run_step() {
  local name=$1 limit=$(($2 * scale)); shift 2
  local left=$((budget - ($(date +%s) - start)))
  local log="$out/$name.log"
  if [ "$left" -lt 10 ]; then
    echo "== $name: skipped (budget of ${budget}s spent)"
    results+=("$name|skipped (budget)|0|$log")
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local dt=$(($(date +%s) - t0))
  local status=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then status="timeout (${limit}s)"; elif [ $rc != 0 ]; then status="failed (rc $rc)"; fi
  tail -n 4 "$log" | cut -c1-200 | sed "s/^/   | /"
  echo "   -> $status in ${dt}s"
  results+=("$name|$status|$dt|$log")
  [ "$status" = ok ]
}

# ---- steps ------------------------------------------------------------------------------------------------------
run_step build 240 node scripts/build-native.mjs
run_step info 30 node dist/src/cli/bin.js info

refs=()
if [ -d "$fixtures/reference" ]; then
  for f in "$fixtures"/reference/vit_adapter_*.json; do [ -e "$f" ] && refs+=("${f%.json}"); done
  for f in "$fixtures"/reference/msda_*.safetensors; do [ -e "$f" ] && refs+=("$f"); done
fi
[ -f "$fixtures/detection/maskrcnn_small.json" ] && refs+=("$fixtures/detection/maskrcnn_small")
if [ ${#refs[@]} -gt 0 ]; then
  run_step check-reference 90 node dist/src/cli/bin.js check-reference "${refs[@]}" --device "$device"
else
  echo '== check-reference: skipped (no reference fixtures)'
  results+=("check-reference|skipped (no fixtures)|0|-")
fi

# the CUDA-only tests early (the whole suite runs last, on what is left of the budget): deformable attention,
# RoIAlign / NMS on the device against the CPU kernels (test/native/cuda-*.test.ts), CUDA memory statistics
run_step cuda-tests 90 env VIT_ADAPTER_TEST_FILTER="${GPU_CHECK_CUDA_FILTER:-test/native/cuda-detect}" node scripts/run-tests.mjs

bench() {  # bench NAME PRESET AMP|-
  local name=$1 preset=$2 amp=$3
  local args=(--preset "$preset" --size "$size" --batch "$batch" --repeats "$repeats" --warmup "$warmup" --device "$device"
    --python "$py" --json)
  [ "$amp" != - ] && args+=(--amp "$amp")
  # the data loader measurement once (T float32); it costs a model build and a few iterations
  if [ "$name" != bench-tiny-fp32 ]; then args+=(--no-loader); fi
  [ $dry = 1 ] && args+=(--threads 2)
  run_step "$name" "$4" node dist/bench/train.js "${args[@]}"
  # the JSON object is the last line of the log
  tail -n 1 "$out/$name.log" > "$out/$name.json" 2>/dev/null || true
}
bench bench-tiny-fp32 tiny - 120
bench bench-tiny-bf16 tiny bf16 60
bench bench-small-fp32 small - 75
bench bench-small-bf16 small bf16 60

# last: the suite gets what is left of the budget (at most 200 s)
run_step tests 200 env VIT_ADAPTER_TEST_FILTER="$test_filter" node scripts/run-tests.mjs

# ---- summary ----------------------------------------------------------------------------------------------------
total=$(($(date +%s) - start))
printf '%s\n' "${results[@]}" > "$out/steps.txt"
node - "$out" "$total" "$dry" <<'EOF'
const fs = require('node:fs');
const [out, total, dry] = process.argv.slice(2);
const steps = fs.readFileSync(`${out}/steps.txt`, 'utf8').trim().split('\n').filter(Boolean).map((l) => {
  const [name, status, seconds, log] = l.split('|');
  return { name, status, seconds: Number(seconds), log };
});
const benches = {};
for (const s of steps.filter((x) => x.name.startsWith('bench-'))) {
  try { benches[s.name] = JSON.parse(fs.readFileSync(`${out}/${s.name}.json`, 'utf8')); } catch { benches[s.name] = null; }
}
const mib = (b) => (typeof b === 'number' && Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : '-');
const f2 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(2) : '-');
console.log(`\ngpu-check summary (${dry === '1' ? 'CPU DRY RUN, tiny sizes: not GPU figures' : 'GPU'}; ${total}s in all)`);
for (const s of steps) console.log(`  ${s.name.padEnd(18)} ${s.status.padEnd(22)} ${String(s.seconds).padStart(4)}s`);
const rows = [['benchmark', 'side', 'img/s', 'median ms', 'peak GPU MiB', 'peak RSS MiB', 'note']];
const table = [];
for (const [name, b] of Object.entries(benches)) {
  if (!b) { rows.push([name, '-', '-', '-', '-', '-', 'no result (see its log)']); continue; }
  for (const side of ['ts', 'torch']) {
    const r = b[side];
    const note = !r ? (b.errors?.[side] ?? b.python_problem ?? 'no result').split('\n')[0].slice(0, 60) : '';
    rows.push([name, side === 'ts' ? 'TS' : 'PyTorch', f2(r?.img_per_s), r ? (r.median_s * 1e3).toFixed(1) : '-',
      mib(r?.cuda_max_allocated_bytes), mib(r?.peak_rss_bytes), note]);
    table.push({ bench: name, side, preset: b.preset, amp: b.amp, device: b.device, batch: b.batch, size: b.size,
      img_per_s: r?.img_per_s ?? null, median_s: r?.median_s ?? null, cuda_max_allocated_bytes: r?.cuda_max_allocated_bytes ?? null,
      peak_rss_bytes: r?.peak_rss_bytes ?? null, error: r ? null : note });
  }
  if (b.loader) console.log(`  ${name}: data-wait share ${(100 * b.loader.data_wait_share).toFixed(1)}% with ${b.loader.workers} workers`);
}
const w = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
console.log('');
for (const r of rows) console.log('  ' + r.map((v, c) => (c >= 2 && c <= 5 ? String(v).padStart(w[c]) : String(v).padEnd(w[c]))).join('  ').trimEnd());
const summary = { dry_run: dry === '1', seconds: Number(total), steps, benchmarks: table, raw: benches,
  environment: fs.readFileSync(`${out}/environment.txt`, 'utf8') };
fs.writeFileSync(`${out}/summary.json.tmp`, JSON.stringify(summary, null, 1));
fs.renameSync(`${out}/summary.json.tmp`, `${out}/summary.json`);
console.log(`\n  logs and summary.json in ${out}`);
EOF
rm -rf "$shared"
bad=$(printf '%s\n' "${results[@]}" | awk -F'|' '$2 != "ok" && $2 !~ /^skipped/' | wc -l)
exit $((bad > 0 ? 1 : 0))
