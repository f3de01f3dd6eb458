#!/usr/bin/env python3
"""Checks that no instruction-set level of the CPU fast path spills in its
inner loops: disassembles each kernel object (src/cpu/kern_*.c) and, in every
innermost loop of its functions that does vector floating-point arithmetic,
counts instructions that address the stack (%rsp, and %rbp where the
function keeps its frame pointer there, on x86-64; sp/x29 on AArch64). A loop with any is a spill (or a reload of a spilled value) on the
hot path: the script lists it and exits 1.

    python3 scripts/check_spills.py [--objdump aarch64-linux-gnu-objdump] OBJ...
"""
import argparse
import re
import subprocess
import sys

FUNC = re.compile(r"^([0-9a-f]+) <(.+)>:$")
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")
BRANCH_X86 = re.compile(r"^j[a-z]+$")
BRANCH_A64 = re.compile(r"^(b(\.[a-z]+)?|cbn?z|tbn?z)$")
VEC_FP = re.compile(r"^(v?fn?m(add|sub)\d*[a-z]*|v?(mul|add)ps|fmla|fmul|fadd)$")
STACK_X86 = re.compile(r"\(%rsp")
STACK_X86_FP = re.compile(r"\(%r[sb]p")  # where the function keeps a frame pointer in %rbp
STACK_A64 = re.compile(r"\[(sp|x29)\b")


def functions(obj, objdump):
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", obj], check=True,
                         capture_output=True, text=True).stdout
    name, body = None, []
    for line in out.splitlines():
        m = FUNC.match(line)
        if m:
            if name:
                yield name, body
            name, body = m.group(2), []
            continue
        m = INSN.match(line)
        if m and name:
            body.append((int(m.group(1), 16), m.group(2), m.group(3)))
    if name:
        yield name, body


def inner_loops(body, a64):
    branch = BRANCH_A64 if a64 else BRANCH_X86
    loops = []
    for addr, op, args in body:
        if not branch.match(op):
            continue
        t = re.match(r"([0-9a-f]+)\s*<", args.split(",")[-1].strip())
        if t and int(t.group(1), 16) <= addr:
            loops.append((int(t.group(1), 16), addr))
    # innermost: contains no other loop
    return [l for l in loops if not any(o != l and l[0] <= o[0] and o[1] <= l[1] for o in loops)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objdump", default="objdump")
    ap.add_argument("objects", nargs="+")
    a = ap.parse_args()
    bad = 0
    for obj in a.objects:
        a64 = "aarch64" in a.objdump
        nloops = 0
        for name, body in functions(obj, a.objdump):
            # %rbp is a stack address only where the function made it the frame pointer
            frame = any(op.startswith("mov") and args.replace(" ", "") == "%rsp,%rbp" for _, op, args in body)
            stack = STACK_A64 if a64 else (STACK_X86_FP if frame else STACK_X86)
            for lo, hi in inner_loops(body, a64):
                insns = [i for i in body if lo <= i[0] <= hi]
                if not any(VEC_FP.match(op) for _, op, _ in insns):
                    continue
                nloops += 1
                refs = [i for i in insns if stack.search(i[2])]
                if refs:
                    bad += 1
                    print(f"{obj}: {name}: loop {lo:#x}-{hi:#x} ({len(insns)} instructions) "
                          f"addresses the stack {len(refs)} times, e.g. {refs[0][1]} {refs[0][2]}")
        print(f"{obj}: {nloops} vector inner loops checked")
    if bad:
        print(f"{bad} inner loops touch the stack")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
