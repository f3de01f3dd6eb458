#!/usr/bin/env python3
"""The GPU's fp16 matrix ceiling, as cuBLAS reaches it through PyTorch: an
8192^3 half-precision product with fp32 accumulation, CUDA-event median of
20 after 10 warm-up products, in TFLOP/s. The denominator of the "fraction of
peak" figures in docs/PERFORMANCE.md.

    python3 bench/gpu_matmul_peak.py
"""
import torch

n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.float16)
b = torch.randn(n, n, device="cuda", dtype=torch.float16)
for _ in range(10):
    a @ b
ts = []
for _ in range(20):
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    a @ b
    e1.record()
    e1.synchronize()
    ts.append(e0.elapsed_time(e1) * 1e-3)
ts.sort()
print(f"{torch.cuda.get_device_name(0)}: fp16 matmul {2 * n ** 3 / ts[10] / 1e12:.0f} TFLOP/s "
      f"(median of 20, torch {torch.__version__})")
