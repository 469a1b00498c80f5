#!/bin/bash
# Prepares this checkout for scripts/gpu-check.sh on a GPU machine that has CUDA and a Python PyTorch 2.x but no
# Node.js and no ../shared. Run it HERE (where Node, node_modules and ../shared/fixtures exist):
#
#   scripts/gpu-prepare.sh            # then carry .node-runtime and .gpu to the GPU machine
#
# It writes only git-ignored paths:
#   .node-runtime/              Node binary, headers and npm (../shared/tools/pack-node-runtime.sh)
#   .gpu/node_modules.tar.xz    the runtime npm packages (node-addon-api for the build, sharp + libvips, fast-png, ...;
#                               not typescript / @types: the TypeScript is compiled here)
#   .gpu/dist.tar.xz            the compiled TypeScript (dist/), built here with tsc
#   .gpu/fixtures/...           the fixtures the GPU run uses: reference (the micro models and the MSDA cases: the
#                               tiny model's 42 MB are left out), heads, training
# and checks that the tracked files plus .node-runtime and .gpu stay under the 64 MiB a carried tree may have.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
limit=$((64 * 1024 * 1024))
shared=${VIT_ADAPTER_SHARED:-$root/../shared}
[ -d "$shared/fixtures" ] || { echo "gpu-prepare: no fixtures at $shared/fixtures (set VIT_ADAPTER_SHARED)" >&2; exit 1; }
[ -d node_modules/node-addon-api ] || { echo 'gpu-prepare: node_modules is missing (npm ci first)' >&2; exit 1; }

echo '== node runtime'
pack=$shared/tools/pack-node-runtime.sh
[ -f "$pack" ] || pack=$root/../shared/tools/pack-node-runtime.sh
# in a git worktree the script's last step (appending to .git/info/exclude, a file there) fails after everything is
# packed; .node-runtime/ is in .gitignore anyway, so only the packed files count
if [ -s .node-runtime/node.xz ] && [ -s .node-runtime/activate.sh ] && [ -z "${GPU_PREPARE_REPACK:-}" ]; then
  echo 'gpu-prepare: .node-runtime/ is already packed (GPU_PREPARE_REPACK=1 packs it again)'
elif ! bash "$pack"; then
  for f in node.xz node-headers.tgz npm.txz activate.sh; do
    [ -s ".node-runtime/$f" ] || { echo "gpu-prepare: packing the node runtime failed (.node-runtime/$f missing)" >&2; exit 1; }
  done
  echo 'gpu-prepare: (the pack script failed after packing: ignored, .node-runtime/ is git-ignored)'
fi

echo '== compile the TypeScript (dist/)'
npx --no-install tsc -p tsconfig.json
mkdir -p .gpu
rm -rf .gpu/fixtures .gpu/dist.tar.xz .gpu/node_modules.tar.xz
tar -cJf .gpu/dist.tar.xz dist

echo '== runtime npm packages'
# node_modules may be a symlink: pack its contents (-h follows links), without the build-time-only packages
tar -chJf .gpu/node_modules.tar.xz --exclude='node_modules/typescript' --exclude='node_modules/@types' \
  --exclude='node_modules/.cache' node_modules

echo '== fixtures'
copy() {  # copy <sub>/<files...> of the fixtures (globs relative to the fixture folder)
  local sub=$1; shift
  mkdir -p ".gpu/fixtures/$sub"
  # shellcheck disable=SC2048,SC2086  # the globs expand inside the fixture folder
  (cd "$shared/fixtures/$sub" && cp -L --no-preserve=mode $* "$root/.gpu/fixtures/$sub/")
}
copy reference README.md msda_*.safetensors vit_adapter_micro*
copy heads '*'
copy training '*'
copy detection README.md 'maskrcnn_small*'
chmod -R u+w .gpu

echo '== size check'
tracked=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried=$(du -sb .node-runtime .gpu | awk '{s += $1} END {print s + 0}')
total=$((tracked + untracked + carried))
printf '  tracked %.1f MiB + untracked %.1f MiB + .node-runtime and .gpu %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
  "$(echo "$tracked / 1048576" | bc -l)" "$(echo "$untracked / 1048576" | bc -l)" \
  "$(echo "$carried / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
du -sh .node-runtime .gpu/* | sed 's/^/  /'
if [ "$total" -ge "$limit" ]; then
  echo 'gpu-prepare: over the 64 MiB limit: drop fixtures from .gpu/fixtures' >&2
  exit 1
fi
echo 'gpu-prepare: done. Carry .node-runtime and .gpu; on the GPU machine run: scripts/gpu-check.sh'
