#!/usr/bin/env python3
"""Where the time of the fused Hopper backward at D = 64 goes: builds the
backward playground (dev/cuda/attend_bwd.cu) against variants of the
library's bwd_wgmma1 (src/cuda/attend_bwd_wgmma.cuh) with one stage left out,
and times a playground version with each: 9 (the library's form, 16-byte
dQ atomics) unless --version says 4 (8-byte ones, backward v5's table in
docs/PERFORMANCE.md). The variants compute wrong gradients on
purpose (their check says FAIL); only their times mean something, as the
differences to the whole kernel.

    cmake --build build-gpu --target rda_bwd_playground
    python3 dev/cuda/bwd_ablate.py build-gpu [--version 4|9] [N D causal ...]   (default 16384 64 0)

The variant headers and binaries go under BUILD/ablate. Needs nvcc and a
Hopper GPU; one line per variant, the whole kernel first.
"""
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK = "/* bwd_wgmma1<T, D>: the library's"

# (bit, what the variant leaves out, [(text of bwd_wgmma1, replacement)])
STAGES = [
    (1, "dQ's atomics", [
        ("                dq_atomics<64, DQ == BWD_DQ_RED4>(dst, dq, kr, bqq, lane, un);",
         "                if (!(ABL & 1)) dq_atomics<64, DQ == BWD_DQ_RED4>(dst, dq, kr, bqq, lane, un);")]),
    (2, "dQ's product and atomics", [
        ("        issue_dq(0);", "        if (!(ABL & 2)) issue_dq(0);"),
        ("            if (half > 0) {", "            if (ABL & 2) { wgmma_wait<0>(); break; }\n            if (half > 0) {")]),
    (4, "dK's and dV's products", [
        ("#pragma unroll\n        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dv, pa[kk], sw_nmajor(gs_s, kk), 1);\n"
         "#pragma unroll\n        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dk, da[kk], sw_nmajor(qs_s, kk), 1);",
         "if (!(ABL & 4)) {\n"
         "#pragma unroll\n        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dv, pa[kk], sw_nmajor(gs_s, kk), 1);\n"
         "#pragma unroll\n        for (int kk = 0; kk < 4; kk++) wgmma_rs<T, D, 1>(dk, da[kk], sw_nmajor(qs_s, kk), 1);\n"
         "        }")]),
    (8, "the exponentials (P = the scaled score)", [
        ("const float p = ok ? ex2(fmaf(s[nt * 4 + e], a.qscale, nl[e & 1])) : 0.f;",
         "const float p = ok ? ((ABL & 8) ? fmaf(s[nt * 4 + e], a.qscale, nl[e & 1])"
         " : ex2(fmaf(s[nt * 4 + e], a.qscale, nl[e & 1]))) : 0.f;")]),
    (16, "the fp16 dS exponent's block maximum and its barrier", [
        ("if (SCALED) { /* one exponent", "if (SCALED && !(ABL & 16)) { /* one exponent")]),
]


def variant_header():
    src = open(os.path.join(ROOT, "src/cuda/attend_bwd_wgmma.cuh")).read()
    head, tail = src[:src.index(MARK)], src[src.index(MARK):]
    for _, what, subs in STAGES:
        for old, new in subs:  # in bwd_wgmma1, else in the helpers above it
            if tail.count(old) == 1:
                tail = tail.replace(old, new)
            elif head.count(old) == 1:
                head = head.replace(old, new)
            else:
                sys.exit(f"bwd_ablate: bwd_wgmma1 no longer has the text this script changes ({what}): {old!r}")
    head = head.replace('#include "attend_bwd_mma.cuh"', '#include "cuda/attend_bwd_mma.cuh"')
    head = head.replace('#include "attend_wgmma.cuh"', '#include "cuda/attend_wgmma.cuh"')
    return head + tail


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    build = os.path.abspath(sys.argv[1])
    cfgs = sys.argv[2:]
    version = "9"
    if cfgs[:1] == ["--version"]:
        if len(cfgs) < 2 or cfgs[1] not in ("4", "9"):
            sys.exit("bwd_ablate: --version takes 4 or 9 (the playground's versions of bwd_wgmma1)")
        version, cfgs = cfgs[1], cfgs[2:]
    cfgs = cfgs or ["16384", "64", "0"]
    if len(cfgs) % 3:
        sys.exit("bwd_ablate: the configurations come as N D causal triples")
    link = os.path.join(build, "CMakeFiles/rda_bwd_playground.dir/link.txt")
    if not os.path.exists(link):
        sys.exit(f"bwd_ablate: {link} not found; build the playground first (cmake --build {build} "
                 "--target rda_bwd_playground)")
    out = os.path.join(build, "ablate")
    os.makedirs(os.path.join(out, "cuda"), exist_ok=True)
    with open(os.path.join(out, "cuda/attend_bwd_wgmma.cuh"), "w") as f:
        f.write(variant_header())
    variants = [(0, "nothing (the whole kernel)")] + [(b, w) for b, w, _ in STAGES]
    procs = []
    for bit, _ in variants:
        procs.append(subprocess.Popen(
            ["nvcc", "-std=c++17", "-O3", "-gencode", "arch=compute_90a,code=sm_90a", "-I" + out,
             "-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "src"), f"-DABL={bit}", "-c",
             os.path.join(ROOT, "dev/cuda/attend_bwd.cu"), "-o", os.path.join(out, f"abl{bit}.o")]))
    if any(p.wait() for p in procs):
        sys.exit("bwd_ablate: a variant did not compile")
    cmd = open(link).read().strip()
    for bit, _ in variants:
        c = cmd.replace("@CMakeFiles/rda_bwd_playground.dir/objects1.rsp", os.path.join(out, f"abl{bit}.o"))
        c = c.replace("-o rda_bwd_playground", "-o " + shlex.quote(os.path.join(out, f"abl{bit}")))
        subprocess.run(c, shell=True, cwd=build, check=True)
    env = dict(os.environ, RDA_PG_SAMPLES=os.environ.get("RDA_PG_SAMPLES", "2"))
    for i in range(0, len(cfgs), 3):
        base = None
        for bit, what in variants:
            r = subprocess.run([os.path.join(out, f"abl{bit}"), version] + cfgs[i:i + 3], env=env,
                               capture_output=True, text=True)
            line = ((r.stdout + r.stderr).strip().splitlines() or ["(no output)"])[-1]
            if " ms" not in line:
                sys.exit(f"bwd_ablate: variant {bit} did not run: {line}")
            ms = float(line.split(" ms")[0].split()[-1])
            base = ms if bit == 0 else base
            print(f"N={cfgs[i]} D={cfgs[i + 1]} causal={cfgs[i + 2]}  without {what:<52} {ms:8.3f} ms"
                  f"  ({base - ms:+.3f} ms)")


if __name__ == "__main__":
    main()
