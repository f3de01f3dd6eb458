#!/usr/bin/env bash
# GPU checks and timings, for a machine with an NVIDIA GPU (CUDA toolkit,
# CMake; PyTorch for the baseline). Builds, runs the CUDA test sweep,
# compute-sanitizer memcheck and racecheck on a subset, the seed benchmark on
# the GPU and the PyTorch side-by-side; full logs go to $OUT (default
# ./gpu-out), a short summary is printed last.
#
#     tests/gpu/run.sh [stages...]     stages: build test sanitize bench baseline sass (default: all)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
stages=${*:-build test sanitize bench baseline sass}
summary=()
has() { [[ " $stages " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
summary+=("gpu: $(head -1 "$OUT/gpu.txt")")

if has build; then
    t0=$(date +%s)
    if cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DRDA_WITH_CUDA=ON > "$OUT/build.log" 2>&1 &&
        cmake --build build-gpu -j "$(nproc)" >> "$OUT/build.log" 2>&1; then
        summary+=("build: ok ($(( $(date +%s) - t0 )) s)")
    else
        tail -30 "$OUT/build.log"
        echo "build failed"
        exit 1
    fi
fi
if has test; then
    timeout 400 ./build-gpu/tests/test_cuda > "$OUT/test_cuda.log" 2>&1
    rc=$?
    grep FAIL "$OUT/test_cuda.log" | head -20
    summary+=("test_cuda: rc=$rc, $(tail -1 "$OUT/test_cuda.log")")
fi
if has sanitize; then
    for tool in memcheck racecheck; do
        RDA_TEST_QUICK=1 timeout 300 compute-sanitizer --tool $tool --error-exitcode 3 \
            ./build-gpu/tests/test_cuda > "$OUT/$tool.log" 2>&1
        rc=$?
        summary+=("compute-sanitizer $tool: rc=$rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$tool.log" | tail -1)")
    done
fi
if has bench; then
    timeout 300 ./build-gpu/rda bench --backend cuda --out-md "$OUT/gpu-seed-report.md" \
        --out-json "$OUT/gpu-seed-report.json" > "$OUT/bench.log" 2>&1
    rc=$?
    summary+=("seed report on the GPU: rc=$rc, $(grep 'rows ran' "$OUT/bench.log")")
    grep -A24 '## Summary' "$OUT/gpu-seed-report.md" | cut -c1-150 > "$OUT/bench-summary.txt"
fi
if has baseline; then
    timeout 400 python3 bench/pytorch_baseline.py --device cuda --rda build-gpu/rda --reps 20 \
        > "$OUT/baseline.md" 2> "$OUT/baseline.err"
    summary+=("pytorch baseline: rc=$?")
fi
if has sass; then
    obj=$(find build-gpu -name 'backend.cu.o' | head -1)
    cuobjdump -sass "$obj" > "$OUT/sass.txt" 2>&1
    summary+=("sass: HMMA $(grep -c HMMA "$OUT/sass.txt"), HGMMA $(grep -c HGMMA "$OUT/sass.txt")")
fi
echo
[ -f "$OUT/bench-summary.txt" ] && cat "$OUT/bench-summary.txt"
[ -f "$OUT/baseline.md" ] && cat "$OUT/baseline.md"
printf '%s\n' "${summary[@]}"
