#!/usr/bin/env python3
"""The SASS instruction mix of the CUDA kernels in an object, executable or
cubin (cuobjdump -sass), per kernel whose name matches a pattern: counts of
the tensor-core, memory, special-function and arithmetic instructions, as
written in the code (static counts, not executed ones), and the MMA span:
the instructions from the kernel's first tensor-core instruction to its last
inclusive (its main loops, without the prologue and the epilogue; two builds
whose spans match in length kept their loops' code to within scheduling).

    python3 scripts/sass_mix.py build/CMakeFiles/rda_objects.dir/src/cuda/backend.cu.o [--match bwd_]
"""
import argparse
import collections
import re
import subprocess
import sys

CLASSES = [("HGMMA", "HGMMA"), ("HMMA", "HMMA"), ("LDSM", "LDSM"), ("LDGSTS", "LDGSTS (cp.async)"),
           ("LDS", "LDS"), ("STS", "STS"), ("LDG", "LDG"), ("STG", "STG"), ("RED", "RED/ATOM"),
           ("ATOM", "RED/ATOM"), ("MUFU", "MUFU"), ("FFMA", "FFMA"), ("FMUL", "FMUL"), ("FADD", "FADD"),
           ("FMNMX", "FMNMX"), ("F2FP", "F2FP (pack)"), ("SHFL", "SHFL"), ("BAR", "BAR"), ("LDL", "LDL/STL (spill)"),
           ("STL", "LDL/STL (spill)")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--match", default="", help="a regular expression on the (mangled) kernel name")
    args = ap.parse_args()
    sass = subprocess.run(["cuobjdump", "-sass", args.binary], capture_output=True, text=True, check=True).stdout
    kernels, name = collections.OrderedDict(), None
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            name = m.group(1)
            kernels.setdefault(name, collections.Counter())
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if name and m:
            op = m.group(1)
            c = kernels[name]
            if op.startswith(("HGMMA", "HMMA")):
                c["_last_mma"] = c["all"] + 1
                c.setdefault("_first_mma", c["all"] + 1)
            for prefix, cls in CLASSES:
                if op.startswith(prefix):
                    kernels[name][cls] += 1
                    break
            kernels[name]["all"] += 1
    for c in kernels.values():
        c["MMA span"] = c["_last_mma"] - c["_first_mma"] + 1 if "_first_mma" in c else 0
    cols = list(dict.fromkeys(c for _, c in CLASSES)) + ["all", "MMA span"]
    rows = [(n, c) for n, c in kernels.items() if re.search(args.match, n)]
    if not rows:
        sys.exit(f"no kernel matches {args.match!r}")
    print("| kernel | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for n, c in rows:
        print(f"| `{n}` | " + " | ".join(str(c.get(k, 0)) for k in cols) + " |")


if __name__ == "__main__":
    main()
