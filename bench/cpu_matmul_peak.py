#!/usr/bin/env python3
"""The CPU's fp32 matrix ceiling, as PyTorch reaches it: a 2048^3 product on
1 thread and on all cores (median of 5 after 5 warm-up products), in GFLOP/s.

    pip install torch && python3 bench/cpu_matmul_peak.py
"""
import time

import torch

n = 2048
a, b = torch.randn(n, n), torch.randn(n, n)
for threads in sorted({1, torch.get_num_threads()}):
    torch.set_num_threads(threads)
    for _ in range(5):  # warm-up: lets the core reach its steady clock
        a @ b
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    ts.sort()
    print(f"{threads} thread(s): {2 * n ** 3 / ts[2] / 1e9:.0f} GFLOP/s (torch {torch.__version__})")
