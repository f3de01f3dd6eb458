#!/usr/bin/env bash
# The whole test suite. Exits non-zero on any failure or sanitizer report.
#   1. release build (-Werror), ctest once per CPU instruction-set level this
#      CPU runs (RDA_CPU_ISA forces each; the MPI test at the best level only);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build, ctest likewise
#      (the MPI test at the best level only); a ThreadSanitizer build of the
#      backward's rings;
#   3. portability: -Werror builds for -march=x86-64, x86-64-v3, x86-64-v4;
#      no spills in the kernels' inner loops (scripts/check_spills.py); the
#      release build on emulated CPUs without AVX-512 (AMD Zen 3) and without
#      AVX (x86-64 baseline) under qemu-user; an AArch64 cross-build (-Werror,
#      NEON kernels) and its quick subset under qemu-user;
#   4. libFuzzer targets (the .npy reader; configuration and tensor
#      validation), 20 s each from tests/fuzz/corpus: no crash, no report;
#   5. the installed library found by a C program (find_package(rda)); the
#      Python package installed with pip into a fresh virtual environment
#      and its pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
jobs=$(nproc 2>/dev/null || echo 2)
t0=$(date +%s)
stamp() { echo "   ($(( $(date +%s) - t0 )) s so far)"; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU tests: a GPU is present; ctest runs the 'cuda' test (tests/gpu/run.sh adds compute-sanitizer and timings)"
else
    echo "GPU tests: skipped (no NVIDIA GPU on this machine; ctest lists 'cuda' as skipped, and the CUDA backend is still compiled when nvcc is found)"
fi

levels_of() { "$1" version | sed -n 's/^cpu kernels this CPU runs: //p'; }

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DRDA_WERROR=ON >/dev/null
cmake --build build -j "$jobs" >/dev/null
levels=$(levels_of ./build/rda)
echo "   CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'); levels it runs: $levels"
best=1
for level in $levels; do
    # the MPI rings (process start-up, faults; their arithmetic is the other
    # tests' at every level) once, at the best level; the lower levels run
    # the per-rank memory checks and the backward's sweep at their light
    # sizes (the same code paths)
    skip=(); light=""; [ $best = 1 ] || { skip=(-E '^mpi$'); light=1; }
    echo "== release suite, RDA_CPU_ISA=$level ${skip[*]}${light:+ (light sizes)}"
    (cd build && env RDA_CPU_ISA=$level ${light:+RDA_TEST_LIGHT=1} ctest --output-on-failure "${skip[@]}")
    best=0
    stamp
done

echo "== sanitizer build (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRDA_SANITIZE=ON -DRDA_WERROR=ON >/dev/null
cmake --build build-asan -j "$jobs" >/dev/null
best=1
for level in $levels; do
    # the MPI rings (process start-up, faults) and the ring test (its
    # kernels are fast_vs_ref's and backward's, which run at every level)
    # once, at the best level
    skip=(); [ $best = 1 ] || skip=(-E '^(mpi|ring)$')
    echo "== sanitizer suite, RDA_CPU_ISA=$level ${skip[*]}"
    # (the MPI rings under the sanitizers at one sequence length: the
    # release suite runs both, divisible by P and not)
    (cd build-asan && RDA_CPU_ISA=$level ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 SIZES=601 \
        UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure "${skip[@]}")
    best=0
    stamp
done

echo "== ThreadSanitizer: the backward's rings, 3 threads per rank (items of one phase side by side)"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRDA_TSAN=ON -DRDA_WERROR=ON -DRDA_WITH_CUDA=OFF \
    -DRDA_WITH_MPI=OFF >/dev/null
cmake --build build-tsan -j "$jobs" --target test_backward >/dev/null
RDA_TEST_LIGHT=1 RDA_TEST_PART=rings TSAN_OPTIONS=halt_on_error=1:exitcode=66 ./build-tsan/tests/test_backward | tail -1
stamp

echo "== install: cmake --install, then a C program finds it with find_package(rda) (shared and static)"
cmake --install build --prefix "$PWD/build/install" >/dev/null
cmake -S tests/install -B build/consumer -DCMAKE_PREFIX_PATH="$PWD/build/install" >/dev/null
cmake --build build/consumer >/dev/null
./build/consumer/consumer_shared && ./build/consumer/consumer_static

echo "== Python package: pip install . into a fresh virtual environment, then its tests (CPU tensors)"
# PyTorch from the system's Python when it has one, else installed into the
# environment (the package's only requirement); the package's CUDA backend
# is left out here (CPU tests; tests/gpu/run.sh builds it with CUDA)
rm -rf build-py
if python3 -c "import torch" >/dev/null 2>&1; then
    python3 -m venv --system-site-packages build-py/venv
else
    python3 -m venv build-py/venv
fi
build-py/venv/bin/python -m pip install -q --upgrade pip >/dev/null
build-py/venv/bin/python -m pip install -q pytest
build-py/venv/bin/python -c "import torch" >/dev/null 2>&1 || build-py/venv/bin/python -m pip install -q torch
build-py/venv/bin/python -m pip install -q -C cmake.define.RDA_WITH_CUDA=OFF .
(cd build-py && RDA_EXPECT_NATIVE=1 venv/bin/python -m pytest -q -p no:cacheprovider ../tests/python 2>&1 | tail -3)
stamp

echo "== portability: kernels free of spills in their inner loops"
python3 scripts/check_spills.py build/CMakeFiles/rda_objects.dir/src/cpu/kern_*.o

if [ "$(uname -m)" = x86_64 ]; then
    for march in x86-64 x86-64-v3 x86-64-v4; do
        echo "== portability: -Werror build with -march=$march"
        cmake -S . -B "build-$march" -DCMAKE_BUILD_TYPE=Release -DRDA_WERROR=ON -DRDA_WITH_CUDA=OFF \
            -DCMAKE_C_FLAGS="-march=$march" >/dev/null
        cmake --build "build-$march" -j "$jobs" >/dev/null
    done
    stamp
    # the default build on smaller CPUs: Zen 3 (AVX2 and FMA, no AVX-512) and
    # the x86-64 baseline (no AVX): the best level there is chosen, the levels
    # above it are refused, every level it has computes correctly
    for cpu in EPYC-Milan qemu64; do
        echo "== portability: the release build on an emulated $cpu CPU (qemu-x86_64 -cpu $cpu)"
        emu=(qemu-x86_64 -cpu "$cpu")
        elevels=$("${emu[@]}" ./build/rda version 2>/dev/null | sed -n 's/^cpu kernels this CPU runs: //p')
        echo "   levels it runs: $elevels"
        case "$cpu:$elevels" in
            EPYC-Milan:"avx2 sse2" | qemu64:sse2) ;;
            *) echo "unexpected levels on $cpu: '$elevels'"; exit 1 ;;
        esac
        "${emu[@]}" ./build/tests/test_isa 2>/dev/null | tail -1
        for level in avx512 avx2 sse2; do
            "${emu[@]}" ./build/tests/test_isa "$level" 2>/dev/null | tail -1
        done
        (cd build/tests && "${emu[@]}" ./test_edge 2>/dev/null | tail -1 &&
            "${emu[@]}" ./test_invalid 2>/dev/null | tail -1)
    done
    stamp
fi

echo "== fuzzers (libFuzzer, clang, ASan + UBSan): the .npy reader; configuration and tensor validation"
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DRDA_FUZZ=ON -DRDA_WERROR=ON \
    -DRDA_WITH_CUDA=OFF -DRDA_WITH_MPI=OFF -DRDA_BUILD_TOOLS=OFF \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-fuzz -j "$jobs" --target fuzz_npy fuzz_config >/dev/null
for f in npy config; do
    # from the corpus in the repo (copied: new inputs stay out of the tree)
    rm -rf "build-fuzz/corpus-$f" && cp -r "tests/fuzz/corpus/$f" "build-fuzz/corpus-$f"
    len=$([ $f = npy ] && echo 2048 || echo 256)
    if ! build-fuzz/tests/fuzz_$f -max_total_time=20 -max_len=$len -rss_limit_mb=4096 -print_final_stats=1 \
        "build-fuzz/corpus-$f" > "build-fuzz/fuzz_$f.log" 2>&1; then
        tail -40 "build-fuzz/fuzz_$f.log"
        echo "fuzz_$f: crash or sanitizer report (reproducer in $PWD)"
        exit 1
    fi
    echo "   fuzz_$f: $(grep -m1 -o 'Done [0-9]* runs in [0-9]* second' "build-fuzz/fuzz_$f.log"), no crash"
done
stamp

echo "== portability: AArch64 cross-build (-Werror) and its quick subset under qemu-aarch64"
cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
    -DRDA_WERROR=ON -DRDA_WITH_CUDA=OFF -DRDA_WITH_MPI=OFF >/dev/null
cmake --build build-aarch64 -j "$jobs" >/dev/null
python3 scripts/check_spills.py --objdump aarch64-linux-gnu-objdump build-aarch64/CMakeFiles/rda_objects.dir/src/cpu/kern_*.o
(cd build-aarch64 && ctest --output-on-failure -R '^(isa|isa_neon|isa_avx1024|plan|golden|edge|invalid)$')
stamp
