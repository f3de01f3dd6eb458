#!/usr/bin/env bash
# Rings over several GPUs (2 or 4, one host): one process driving every GPU
# through NCCL (test_nccl), then one process per GPU started by mpirun with
# the NCCL id shared over MPI (tests/test_mpi.sh with GPU ranks): correctness
# against one rank, a configuration mismatch, a hung peer and a dead peer;
# then the PyTorch package's rings over torch.distributed (NCCL) on every
# GPU against one GPU, and the scaling table against a plain PyTorch ring
# (bench/ring_scaling.py), and the longest LongNet-like sequence that runs
# forward and backward (bench/ring_longest.py). PyTorch: the system's, with the package on
# PYTHONPATH and RDA_LIBRARY pointing at build-gpu/librda.so.
#     tests/gpu/run_multi.sh [trials]      (logs under $OUT)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
trials=${1:-3}
ngpu=$(nvidia-smi -L | wc -l)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DRDA_WITH_CUDA=ON > "$OUT/build.log" 2>&1 &&
    cmake --build build-gpu -j "$(nproc)" >> "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
grep "rda:" "$OUT/build.log"
timeout 300 ./build-gpu/tests/test_nccl > "$OUT/test_nccl.log" 2>&1
echo "test_nccl ($ngpu GPUs, one process): rc=$? $(tail -1 "$OUT/test_nccl.log")"
grep FAIL "$OUT/test_nccl.log" | head
# the sizes where one-GPU rings once failed (from N = 8192), N % P != 0 too,
# forward and backward
BACKWARD=1 RING_ARGS="--backend cuda --dtype fp16" MAX_P=$ngpu EXTRA_P="" FAULT_NP=2 \
    SIZES="600 601 8192 30001 65536" SHAPE="--heads 4 --head-dim 64" timeout 900 \
    tests/test_mpi.sh ./build-gpu/rda "$trials" > "$OUT/test_mpi_gpu.log" 2>&1
echo "test_mpi.sh with GPU ranks (NCCL, one process per GPU): rc=$?"
grep -E "^FAIL|^fault|^    rda ring|^mpi:" "$OUT/test_mpi_gpu.log" | head -40
# the seed report with its ring rows on real GPUs, then on simulated ranks
# of one GPU, for comparison (the one-GPU rows must not change)
for mode in real simulated; do
    flag=$([ $mode = real ] && echo --real-gpus || echo --simulated-rings)
    timeout 300 ./build-gpu/rda bench --backend cuda $flag --out-md "$OUT/seed-$mode.md" \
        --out-json "$OUT/seed-$mode.json" > "$OUT/bench-$mode.log" 2>&1
    echo "seed report, rings on $mode ranks: rc=$? $(grep 'rows ran' "$OUT/bench-$mode.log")"
    grep -A24 '## Summary' "$OUT/seed-$mode.md" | grep -E "ring|Ring|N \|" | cut -c1-120
done
# rings from PyTorch: rda.ring_attention over NCCL on every GPU, against one GPU
export RDA_LIBRARY=$PWD/build-gpu/librda.so PYTHONPATH=$PWD/python
(cd tests/python && timeout 600 python3 -m pytest -q -p no:cacheprovider test_torch_cuda.py -k ring) \
    > "$OUT/pytorch_rings.log" 2>&1
echo "PyTorch rings over NCCL ($ngpu GPUs): rc=$? $(tail -1 "$OUT/pytorch_rings.log")"
# scaling against a plain PyTorch ring, P = 1, 2, 4, 8 up to the GPUs there are
worlds=1; for p in 2 4 8; do [ "$p" -le "$ngpu" ] && worlds+=",$p"; done
timeout 3000 python3 bench/ring_scaling.py --device cuda --worlds "$worlds" --reps 5 \
    > "$OUT/ring_scaling.md" 2> "$OUT/ring_scaling.err"
echo "ring scaling (P = $worlds): rc=$?"
cat "$OUT/ring_scaling.md"
cp bench/results/ring_scaling.json "$OUT/" 2>/dev/null
# the longest LongNet-like sequence forward and backward on all the GPUs
timeout 1800 python3 bench/ring_longest.py --world "$ngpu" --device cuda --start 16777216 --step 16777216 \
    > "$OUT/ring_longest.md" 2> "$OUT/ring_longest.err"
echo "longest ring sequence ($ngpu GPUs): rc=$?"
cat "$OUT/ring_longest.md"
cp bench/results/ring_longest.json "$OUT/" 2>/dev/null
