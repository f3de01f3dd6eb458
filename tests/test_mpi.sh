#!/usr/bin/env bash
# Real rings over MPI processes (CPU): correctness against one rank for
# P = 1..4 and 8 over modes, causal contiguous and zig-zag, N divisible by P and
# not; a configuration mismatch; a hung peer (SIGSTOP) and a dead peer
# (kill -9) mid-ring, several trials each, with the time every survivor took.
# Usage: tests/test_mpi.sh path/to/rda [trials]   (exit 77 without mpirun)
# Environment: RING_ARGS (extra `rda ring` options, e.g. "--backend cuda
# --dtype fp16" for GPU ranks through NCCL), MAX_P (rings 1..MAX_P, default
# 4), EXTRA_P (further ring sizes, default 8; "" for none), FAULT_NP
# (processes in the fault trials, default 3), SIZES (sequence lengths of the
# correctness runs, default "600 601"), SHAPE (their head count and head dim,
# default "--heads 3 --head-dim 16"), BACKWARD (1, the default: also rings
# running forward and backward, correctness and faults; 0: forwards only).
set -u
rda=${1:?path to the rda tool}
trials=${2:-3}
extra=${RING_ARGS:-}
max_p=${MAX_P:-4}
extra_p=${EXTRA_P-8}
np=${FAULT_NP:-3}
sizes=${SIZES:-600 601}
shape=${SHAPE:---heads 3 --head-dim 16}
command -v mpirun >/dev/null 2>&1 || { echo "mpi: skipped (no mpirun)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# ASan builds: Open MPI's own allocations are not ours to report
export ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
run() { timeout 120 mpirun -np "$@" 2>&1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# correctness: forwards, then (BACKWARD=1, the default) forward+backward
for P in $(seq 1 "$max_p") $extra_p; do
    for N in $sizes; do
        for args in "--mode dense" "--mode dense --causal --layout zigzag" \
                    "--mode groups --segments 64,128 --dilations 1,2" \
                    "--mode longnet --segments 64,256 --dilations 1,4 --causal" \
                    "--mode longnet --segments 100,300 --dilations 2,3 --causal --layout zigzag" \
                    "--mode groups --segments 256,512 --dilations 1,2"; do
            out=$(run "$P" "$rda" ring --seq-len "$N" $shape $args $extra --check --timeout 30)
            if [ $? -eq 0 ] && grep -q ": ok" <<<"$out"; then ok; else bad "P=$P N=$N $args: $(tail -3 <<<"$out")"; fi
        done
    done
done
if [ "${BACKWARD:-1}" = 1 ]; then
    for P in $(seq 1 "$max_p") $extra_p; do
        for N in $sizes; do
            for args in "--mode dense --causal" "--mode groups --segments 64,128 --dilations 1,2 --layout zigzag --causal" \
                        "--mode longnet --segments 100,300 --dilations 2,3"; do
                out=$(run "$P" "$rda" ring --seq-len "$N" $shape $args $extra --check --backward --timeout 30)
                if [ $? -eq 0 ] && grep -q ": ok" <<<"$out"; then ok; else bad "backward P=$P N=$N $args: $(tail -3 <<<"$out")"; fi
            done
        done
    done
fi

# every rank must report a configuration mismatch, quickly
t0=$(now_ms)
out=$(run "$np" "$rda" ring --seq-len 300 --heads 2 --head-dim 16 --skew-config 1 --timeout 20 $extra)
rc=$? t=$(( $(now_ms) - t0 ))
n=$(grep -c "configuration differs between ranks" <<<"$out")
if [ $rc -ne 0 ] && [ "$n" -eq "$np" ] && [ "$t" -lt 15000 ]; then ok; else bad "mismatch: rc=$rc, $n of $np ranks reported, $t ms"; fi

# faults: a peer stopped or killed mid-ring
deadline=4
fault() { # $1: signal (STOP or KILL), $2: trial, $3: more `rda ring` options
    local dir; dir=$(mktemp -d)
    local log="$dir/log"
    timeout 120 mpirun -np "$np" "$rda" ring --seq-len 2048 --heads 4 --head-dim 32 --reps 100000 \
        --timeout $deadline --pid-dir "$dir" $extra ${3:-} > "$log" 2>&1 &
    local job=$!
    for _ in $(seq 1 300); do [ -f "$dir/ready" ] && break; sleep 0.1; done
    if [ ! -f "$dir/ready" ]; then bad "fault $1: the ring never started"; kill $job; return; fi
    local victim; victim=$(cat "$dir/rank1.pid")
    local t0; t0=$(now_ms)
    kill -"$1" "$victim"
    wait $job
    local rc=$? t; t=$(( $(now_ms) - t0 ))
    [ "$1" = STOP ] && kill -KILL "$victim" 2>/dev/null
    local survivors; survivors=$(grep "rda ring: rank [0-9]*: timeout" "$log" | grep -vc "rda ring: rank 1:")
    echo "fault SIG$1 trial $2${3:+ ($3)}: mpirun exit $rc after $t ms; $survivors of $((np - 1)) survivors reported a timeout"
    grep "rda ring: rank" "$log" | sed 's/^/    /'
    if [ "$1" = STOP ]; then
        # every other rank returns the timeout within the deadline + 5 s; the job fails
        if [ $rc -ne 0 ] && [ "$survivors" -eq $((np - 1)) ] && [ "$t" -lt $(( (deadline + 5) * 1000 )) ]; then ok; else bad "hung peer trial $2"; fi
    else
        # the job ends within the deadline + 30 s, non-zero
        if [ $rc -ne 0 ] && [ "$t" -lt $(( (deadline + 30) * 1000 )) ]; then ok; else bad "dead peer trial $2"; fi
    fi
    rm -rf "$dir"
}
for i in $(seq 1 "$trials"); do fault STOP "$i"; done
for i in $(seq 1 "$trials"); do fault KILL "$i"; done
if [ "${BACKWARD:-1}" = 1 ]; then # the same, in rings running forward and backward
    fault STOP 1 --backward
    fault KILL 1 --backward
fi

echo "mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
