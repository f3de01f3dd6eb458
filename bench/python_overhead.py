#!/usr/bin/env python3
"""Host time the Python package adds to a call: rda.attention on a tiny CPU
input (B=1, N=1, H=1, D=8) against the same C call made directly through
ctypes with its arguments prepared once. Both are medians of many calls;
the difference is what the operator, the argument checks, the output
allocation and the context lookup cost.

    python3 bench/python_overhead.py [--calls 20000]
"""
import argparse
import ctypes
import statistics
import time

import torch

import rda
from rda import _lib, ops


def median_us(fn, calls, rounds=7):
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(per)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    q, k, v = (torch.randn(1, 1, 1, 8) for _ in range(3))
    o, lse = torch.empty_like(q), torch.empty(1, 1, 1)
    ctx = _lib.context(_lib.BACKEND_CPU, threads=1)
    cfg = _lib.config(_lib.DENSE, False, 0.0, [])
    views = [ops._view(t) for t in (q, k, v, o, lse)]
    refs = [ctypes.byref(x) for x in views]
    c_call = lambda: _lib.lib.rda_attention_forward(ctx, ctypes.byref(cfg), *refs)  # noqa: E731
    assert c_call() == 0
    py_call = lambda: rda.attention(q, k, v)  # noqa: E731
    with torch.no_grad():
        t_c = median_us(c_call, args.calls)
        t_py = median_us(py_call, args.calls)
    print(f"torch {torch.__version__}, 1 thread: the C call through ctypes {t_c:.2f} us, "
          f"rda.attention {t_py:.2f} us: {t_py - t_c:.2f} us added per call")


if __name__ == "__main__":
    main()
