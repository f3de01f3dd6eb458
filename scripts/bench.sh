#!/usr/bin/env bash
# The main job: builds the library and runs `rda bench`, which reproduces the
# seed benchmark report on this machine and writes reports/rda-report.md and
# reports/rda-report.json. Extra arguments go to `rda bench` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
exec ./build/rda bench "$@"
