#!/usr/bin/env bash
# Installs what the build needs when it is missing (Debian/Ubuntu, as root or
# with sudo): a C11 compiler, make and CMake; Open MPI for the MPI engine and
# its tests. The library itself needs only the C library and POSIX threads;
# MPI and CUDA parts are built when present. With --test, also what the test
# suite's portability checks use: Python 3 with venv, the AArch64 cross-compiler and
# qemu-user (to run that build, and x86-64 builds on smaller emulated CPUs),
# and clang with libFuzzer for the fuzzers.
set -euo pipefail
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v mpicc >/dev/null 2>&1 || missing+=(libopenmpi-dev)
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
if [ "${1:-}" = "--test" ]; then
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    # (the Python package's test installs it into a fresh virtual environment)
    python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
    command -v objdump >/dev/null 2>&1 || missing+=(binutils)
    command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu)
    [ -e /usr/aarch64-linux-gnu/include/stdio.h ] || missing+=(libc6-dev-arm64-cross)
    command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
    command -v clang >/dev/null 2>&1 || missing+=(clang)
    # libFuzzer's runtime (Debian's libclang-rt-N-dev for clang N)
    if ! command -v clang >/dev/null 2>&1 || ! ls "$(clang -print-resource-dir 2>/dev/null)"/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
        v=$(clang --version 2>/dev/null | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1)
        missing+=("libclang-rt-${v:-14}-dev")
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
