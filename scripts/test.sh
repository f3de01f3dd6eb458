#!/usr/bin/env bash
# The whole test suite: a release build and an AddressSanitizer +
# UndefinedBehaviorSanitizer build of the library, tools and tests, each run
# through ctest. Exits non-zero on any failure or sanitizer report.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU tests: a GPU is present; ctest runs the 'cuda' test (tests/gpu/run.sh adds compute-sanitizer and timings)"
else
    echo "GPU tests: skipped (no NVIDIA GPU on this machine; ctest lists 'cuda' as skipped, and the CUDA backend is still compiled when nvcc is found)"
fi

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DRDA_WERROR=ON >/dev/null
cmake --build build -j "$jobs" >/dev/null
(cd build && ctest --output-on-failure)

echo "== sanitizer build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRDA_SANITIZE=ON -DRDA_WERROR=ON >/dev/null
cmake --build build-asan -j "$jobs" >/dev/null
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure)
