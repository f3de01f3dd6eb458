#!/usr/bin/env bash
# GPU checks and timings, for a machine with an NVIDIA GPU (CUDA toolkit,
# CMake; PyTorch for the baseline). Builds, runs the CUDA test sweep,
# compute-sanitizer memcheck and racecheck on a subset, the seed benchmark on
# the GPU and the PyTorch side-by-side; full logs go to $OUT (default
# ./gpu-out), a short summary is printed last.
#
#     tests/gpu/run.sh [stages...]     stages: build test sanitize bench long baseline backward python
#                                      sass playground (default: all of these), ncu (on request)
#
# The python stage installs the package with its CUDA backend (pip install
# --no-build-isolation .) into a virtual environment that sees the system's
# PyTorch, runs tests/python (CPU and CUDA tensors) and times the host time
# per call (bench/python_overhead.py); the backward stage, which runs after
# it, then times that package (with rda._native); on a machine
# without network, scikit-build-core comes from wheels in $RDA_WHEELS
# (default .whl).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
stages=${*:-build test sanitize bench long baseline backward python sass playground}
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
# run_test LABEL LOG LIMIT ENV BINARY: a test binary (ENV: VAR=value settings
# or ""), its failures shown, its last line in the summary
run_test() {
    env $4 timeout "$3" "$5" > "$OUT/$2" 2>&1
    local rc=$?
    grep FAIL "$OUT/$2" | head -20
    summary+=("$1: rc=$rc, $(tail -1 "$OUT/$2")")
}
# sanitize TOOL LABEL LOG ENV BINARY: compute-sanitizer on the binary's quick subset
sanitize() {
    env RDA_TEST_QUICK=1 $4 timeout 300 compute-sanitizer --tool "$1" --error-exitcode 3 "$5" > "$OUT/$3" 2>&1
    local rc=$?
    summary+=("compute-sanitizer $1$2: rc=$rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/$3" | tail -1)")
}
if has test; then
    run_test test_cuda test_cuda.log 560 "" ./build-gpu/tests/test_cuda
    # the same sweep with the fp32 accumulator between patterns and ring steps
    # (by default the rows' state is kept in the output)
    run_test "test_cuda (RDA_CUDA_OUT_STATE=0)" test_cuda_acc.log 560 RDA_CUDA_OUT_STATE=0 \
        ./build-gpu/tests/test_cuda
    # the caller's streams and CUDA graph capture
    run_test test_cuda_stream test_cuda_stream.log 200 "" ./build-gpu/tests/test_cuda_stream
    # the backward: one rank, rings, N = 65536, graph capture (on Hopper the
    # fused bwd_wgmma); then the two-kernel tensor-core form on its own
    run_test test_cuda_backward test_cuda_backward.log 600 "" ./build-gpu/tests/test_cuda_backward
    run_test "test_cuda_backward (RDA_CUDA_BWD_FUSED=0)" test_cuda_backward_pair.log 600 RDA_CUDA_BWD_FUSED=0 \
        ./build-gpu/tests/test_cuda_backward
    # every D = 64 fused-backward phase on bwd_wgmma1 split into three CTAs per key tile (uneven and empty
    # parts of the query tiles); then every one on bwd_wgmma_ws (whole and in three parts), which by
    # default takes only the phases of many key tiles
    run_test "test_cuda_backward (RDA_CUDA_BWD_WS=0 RDA_CUDA_BWD_QPARTS=3)" test_cuda_backward_parts.log 600 \
        "RDA_CUDA_BWD_WS=0 RDA_CUDA_BWD_QPARTS=3" ./build-gpu/tests/test_cuda_backward
    run_test "test_cuda_backward (RDA_CUDA_BWD_WS=1)" test_cuda_backward_ws.log 600 RDA_CUDA_BWD_WS=1 \
        ./build-gpu/tests/test_cuda_backward
    run_test "test_cuda_backward (RDA_CUDA_BWD_WS=1 RDA_CUDA_BWD_QPARTS=3)" test_cuda_backward_ws_parts.log 600 \
        "RDA_CUDA_BWD_WS=1 RDA_CUDA_BWD_QPARTS=3" ./build-gpu/tests/test_cuda_backward
    # what one call launches, from the graphs the two tests capture
    summary+=("launches per call (captured graphs):" "$(grep -h 'launches' "$OUT/test_cuda_stream.log" "$OUT/test_cuda_backward.log")")
fi
if has sanitize; then
    for tool in memcheck racecheck; do
        sanitize $tool "" $tool.log "" ./build-gpu/tests/test_cuda
        sanitize $tool " (backward)" $tool-backward.log "" ./build-gpu/tests/test_cuda_backward
        sanitize $tool " (two-kernel backward)" $tool-backward-pair.log RDA_CUDA_BWD_FUSED=0 ./build-gpu/tests/test_cuda_backward
        sanitize $tool " (backward, bwd_wgmma_ws)" $tool-backward-ws.log RDA_CUDA_BWD_WS=1 ./build-gpu/tests/test_cuda_backward
    done
    timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 ./build-gpu/tests/test_cuda_stream \
        > "$OUT/memcheck-stream.log" 2>&1
    summary+=("compute-sanitizer memcheck (streams, graphs): rc=$?, $(grep 'ERROR SUMMARY' "$OUT/memcheck-stream.log" | tail -1)")
fi
if has bench; then
    timeout 300 ./build-gpu/rda bench --backend cuda --out-md "$OUT/gpu-seed-report.md" \
        --out-json "$OUT/gpu-seed-report.json" > "$OUT/bench.log" 2>&1
    rc=$?
    summary+=("seed report on the GPU: rc=$rc, $(grep 'rows ran' "$OUT/bench.log")")
    grep -A24 '## Summary' "$OUT/gpu-seed-report.md" | cut -c1-150 > "$OUT/bench-summary.txt"
    # the same rows with the backward: each also checks dQ, dK and dV against the fp64 reference
    timeout 600 ./build-gpu/rda bench --backend cuda --backward --out-md "$OUT/gpu-seed-report-backward.md" \
        --out-json "$OUT/gpu-seed-report-backward.json" > "$OUT/bench-backward.log" 2>&1
    summary+=("seed report with the backward on the GPU: rc=$?, $(grep 'rows ran' "$OUT/bench-backward.log")")
fi
if has long; then
    # LongNet-like longnet rows (inputs made on the GPU, sampled rows checked
    # against the fp64 reference on the CPU cores): N = 16,777,216, then
    # 33,554,432 with one more pattern, then the 16M row with the fp32
    # accumulator (RDA_CUDA_OUT_STATE=0) for comparison
    segs=2048,16384,131072,1048576,4194304,16777216 dils=1,8,64,512,2048,8192
    for run in 16777216:1 33554432:1 16777216:0; do
        n=${run%:*} os=${run#*:} s=$segs d=$dils
        [ "$n" = 33554432 ] && s+=",33554432" && d+=",16384"
        t0=$(date +%s)
        RDA_CUDA_OUT_STATE=$os /usr/bin/time -v timeout 400 ./build-gpu/rda bench --backend cuda --seq-lens $n \
            --mode longnet --segments $s --dilations $d --variants ImprovedDilatedAttention --reps 3 \
            --out-md "$OUT/long-$n-$os.md" --out-json "$OUT/long-$n-$os.json" > "$OUT/long-$n-$os.log" 2>&1
        rc=$?
        summary+=("long row N=$n, RDA_CUDA_OUT_STATE=$os: rc=$rc, $(( $(date +%s) - t0 )) s end to end, $(grep ImprovedDilated "$OUT/long-$n-$os.log"), host $(grep 'Maximum resident' "$OUT/long-$n-$os.log" | awk '{print $NF}') KB")
    done
fi
if has baseline; then
    timeout 400 python3 bench/pytorch_baseline.py --device cuda --rda build-gpu/rda --reps 20 \
        > "$OUT/baseline.md" 2> "$OUT/baseline.err"
    summary+=("pytorch baseline: rc=$?")
fi
if has python; then
    rm -rf build-py-gpu && python3 -m venv --system-site-packages build-py-gpu/venv
    py=build-py-gpu/venv/bin/python
    # a PyTorch the system's python3 has outside the venv's view (a user or
    # custom site directory): its directory added to the venv by a .pth file
    if ! $py -c "import torch" > /dev/null 2>&1; then
        tdir=$(python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))" 2>/dev/null)
        [ -n "$tdir" ] && echo "$tdir" > "$($py -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/system-torch.pth"
    fi
    wheels=${RDA_WHEELS:-.whl}
    if [ -d "$wheels" ]; then
        $py -m pip install -q --no-index --find-links "$wheels" scikit-build-core pathspec pytest > "$OUT/python.log" 2>&1
    else
        $py -m pip install -q scikit-build-core pytest > "$OUT/python.log" 2>&1
    fi
    $py -m pip install -q --no-build-isolation . >> "$OUT/python.log" 2>&1 &&
        (cd build-py-gpu && venv/bin/python -m pytest -q -p no:cacheprovider ../tests/python >> "$OUT/python.log" 2>&1)
    summary+=("python package (CPU and CUDA tests): rc=$?, $(tail -1 "$OUT/python.log")")
    # the host time the package adds to a call on CUDA tensors (both ways of describing the tensors)
    timeout 300 $py bench/python_overhead.py --device cuda --calls 5000 > "$OUT/python_overhead.md" 2>&1
    summary+=("host time per call on CUDA tensors: rc=$?, $OUT/python_overhead.md")
fi
if has backward; then
    # the backward and forward+backward against PyTorch's autograd (cuDNN and FlashAttention backends), the
    # library through its package on this build: the python stage's pip-installed package (with rda._native)
    # when that stage ran, else the source tree's; RDA_BEFORE=OLD/rda times an older build's forward next to it
    pyenv=(env RDA_LIBRARY=$PWD/build-gpu/librda.so PYTHONPATH=$PWD/python python3) pylabel="source tree's package"
    if [ -x build-py-gpu/venv/bin/python ] && build-py-gpu/venv/bin/python -c "import rda" > /dev/null 2>&1; then
        pyenv=(build-py-gpu/venv/bin/python) pylabel="pip-installed package"
    fi
    timeout 900 "${pyenv[@]}" -u bench/gpu_backward.py \
        --rda build-gpu/rda --reps 5 ${RDA_BEFORE:+--before "$RDA_BEFORE"} > "$OUT/gpu_backward.md" 2> "$OUT/gpu_backward.err"
    summary+=("backward against PyTorch ($pylabel): rc=$?")
    cp bench/results/gpu_backward.json "$OUT/" 2>/dev/null
fi
if has sass; then
    obj=$(find build-gpu -name 'backend.cu.o' | head -1)
    cuobjdump -sass "$obj" > "$OUT/sass.txt" 2>&1
    summary+=("sass: HMMA $(grep -c HMMA "$OUT/sass.txt"), HGMMA $(grep -c HGMMA "$OUT/sass.txt")")
    # the instruction mix per kernel (the forward's and the backward's)
    python3 scripts/sass_mix.py "$obj" --match "attend_|bwd_" > "$OUT/sass_mix.md" 2>&1
    summary+=("sass mix per kernel: $OUT/sass_mix.md (rc=$?)")
fi
if has playground; then
    # the kernel versions of dev/cuda/attend.cu, checked and timed one by one
    # ("kernel N D [causal [segment]]" per entry; PG_ARGS replaces the list,
    # entries separated by commas; PG_BIN names a binary built beforehand)
    pg=${PG_BIN:-build-gpu/attend_playground}
    if [ -z "${PG_BIN:-}" ]; then
        mkdir -p build-gpu
        nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/cuda/attend.cu \
            -o "$pg" > "$OUT/playground.log" 2>&1
    fi
    default="0 4096 64,1 4096 64,2 4096 64,2 16384 64,3 16384 128,3 16384 128 1,6 16384 64,6 16384 64 1"
    default+=",9 4096 64 0 1024,9 262144 64 0 1024,33 4096 64 0 1024,33 262144 64 0 1024"
    default+=",40 16384 64,40 16384 64 1,59 16384 64,59 16384 64 1,40 65536 64,59 65536 64,59 65536 64 1"
    default+=",62 16384 128,62 16384 128 1,62 65536 128,63 65536 128 1,60 16384 128,61 16384 128,64 16384 128"
    IFS=, read -ra entries <<< "${PG_ARGS:-$default}"
    for args in "${entries[@]}"; do
        RDA_PG_SAMPLES=16 timeout 60 "$pg" $args >> "$OUT/playground.log" 2>&1 ||
            echo "kernel $args: exit $?" >> "$OUT/playground.log"
    done
    # the backward's versions (dev/cuda/attend_bwd.cu: "version N D [causal [segment]]" per entry;
    # PG_BWD_ARGS replaces the list)
    if cmake --build build-gpu --target rda_bwd_playground >> "$OUT/playground.log" 2>&1; then
        default="1 16384 64,2 16384 64,3 16384 64,4 16384 64,2 16384 64 1,4 16384 64 1,1 16384 128,2 16384 128"
        default+=",4 16384 128,2 16384 128 1,4 16384 128 1,4 65536 64,4 65536 128,4 262144 64 0 1024"
        default+=",2 65536 64,2 65536 128,1 262144 64 0 1024,2 262144 64 0 1024,2 262144 64 1 1024"
        default+=",5 16384 64,5 16384 128,5 16384 128 1,5 65536 128 1,6 16384 64,5 262144 128 1 2048,5 4097 128 1"
        default+=",7 16384 64,8 16384 128,9 16384 64,9 16384 64 1,9 65536 64,9 262144 64 0 1024,10 16384 128,10 4097 128 1"
        default+=",11 16384 64,11 16384 64 1,11 65536 64,11 262144 64 0 1024,11 4097 64 1,12 16384 128,12 16384 128 1,12 65536 128 1,12 4097 128 1"
        default+=",13 16384 64,13 16384 64 1,13 65536 64,13 65536 64 1,13 262144 64 0 1024,13 262144 64 1 2048,13 4097 64 1"
        default+=",14 16384 64,14 65536 64"
        IFS=, read -ra entries <<< "${PG_BWD_ARGS:-$default}"
        for args in "${entries[@]}"; do
            RDA_PG_SAMPLES=16 timeout 120 build-gpu/rda_bwd_playground $args >> "$OUT/playground.log" 2>&1 ||
                echo "backward version $args: exit $?" >> "$OUT/playground.log"
        done
    else
        echo "backward playground: build failed" >> "$OUT/playground.log"
    fi
    # PyTorch's dense attention on the same shapes (PG_SDPA: dev/cuda/sdpa.py's
    # arguments; empty: none)
    sdpa=${PG_SDPA-"--backends flash,cudnn 16384 64 0 16384 64 1 65536 64 0 65536 64 1 16384 128 0 16384 128 1 65536 128 0 65536 128 1"}
    if [ -n "$sdpa" ]; then
        timeout 240 python3 dev/cuda/sdpa.py $sdpa >> "$OUT/playground.log" 2>&1
    fi
    summary+=("playground:" "$(grep -E 'kernel|backward version|sdpa' "$OUT/playground.log")")
fi
if has ncu; then
    # Nsight Compute on the library's Hopper kernels, one launch each, through
    # the playgrounds (dense fp16, B = 1, H = 8, N = 16384): the fused backward
    # (versions 9 and 10: bwd_wgmma1 at D = 64, bwd_wgmma<., 128, 2> at D = 128)
    # and the forward (kernels 40 and 3); throughput, pipes, warp stalls,
    # scheduler, occupancy, and the SASS lines where the warps stall most.
    # NCU_ARGS adds options (e.g. --set full).
    pg=build-gpu/attend_playground
    [ -x "$pg" ] || nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -Iinclude -Isrc dev/cuda/attend.cu \
        -o "$pg" > "$OUT/ncu-build.log" 2>&1
    cmake --build build-gpu --target rda_bwd_playground >> "$OUT/ncu-build.log" 2>&1
    sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
              --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats
              --section InstructionStats --section SourceCounters)
    for run in "bwd_wgmma1:build-gpu/rda_bwd_playground 9 16384 64" "bwd_wgmma:build-gpu/rda_bwd_playground 10 16384 128" \
               "attend_wgmma:$pg 40 16384 64" "attend_wgmma:$pg 3 16384 128"; do
        name=${run%%:*} cmd=${run#*:} log="$OUT/ncu-$(echo "$cmd" | awk '{print $2 "-" $3 "-" $4}').txt"
        RDA_PG_SAMPLES=16 timeout 300 ncu --kernel-name "$name" --launch-skip 2 --launch-count 1 \
            "${sections[@]}" ${NCU_ARGS:-} $cmd > "$log" 2>&1
        summary+=("ncu $cmd: rc=$?, $log")
    done
fi
echo
[ -f "$OUT/bench-summary.txt" ] && cat "$OUT/bench-summary.txt"
[ -f "$OUT/baseline.md" ] && cat "$OUT/baseline.md"
[ -f "$OUT/gpu_backward.md" ] && cat "$OUT/gpu_backward.md"
printf '%s\n' "${summary[@]}"
