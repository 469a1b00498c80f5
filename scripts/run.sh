#!/usr/bin/env bash
# The main job: set-up (idempotent), then the demo (see README "Quick start"). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node dist/src/cli/bin.js info
node dist/src/cli/bin.js demo "$@"
