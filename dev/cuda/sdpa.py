#!/usr/bin/env python3
"""PyTorch's dense attention on the playground's shapes, for a side-by-side
in the same run: scaled_dot_product_attention, fp16, B = 1, H = 8, uniform
inputs in [-1, 1), CUDA-event median of 20 after 3 warm-ups (the
timing of bench/pytorch_baseline.py). Each backend is timed on its own: `flash` (the
FlashAttention backend), `cudnn` (cuDNN's fused attention) and `default`
(whatever SDPA picks when left alone), on [B, H, N, D] tensors that are
contiguous, or with --strided views of [B, N, H, D] (the library's layout).

    python3 dev/cuda/sdpa.py [--strided] [--backends flash,cudnn,default] N D causal [N D causal ...]
"""
import argparse
import contextlib
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from pytorch_baseline import time_torch  # noqa: E402


BACKENDS = {"flash": [SDPBackend.FLASH_ATTENTION], "cudnn": [SDPBackend.CUDNN_ATTENTION], "default": None}


def time_sdpa(N, D, causal, backend, strided, H=8):
    if strided:
        q, k, v = ((torch.rand(1, N, H, D, device="cuda", dtype=torch.float16) * 2 - 1).transpose(1, 2)
                   for _ in range(3))
    else:
        q, k, v = (torch.rand(1, H, N, D, device="cuda", dtype=torch.float16) * 2 - 1 for _ in range(3))
    chosen = BACKENDS[backend]
    with sdpa_kernel(chosen) if chosen else contextlib.nullcontext():
        ms = time_torch(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), 20, warmup=3, cuda=True)
    pairs = N * (N + 1) / 2 if causal else N * N
    return ms, 4.0 * D * pairs * H / (ms * 1e-3) / 1e12


if __name__ == "__main__":
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("--strided", action="store_true")
    ap.add_argument("--backends", default="flash")
    ap.add_argument("shapes", nargs="+", type=int)
    args = ap.parse_args()
    if len(args.shapes) % 3:
        ap.error("shapes come as N D causal")
    for i in range(0, len(args.shapes), 3):
        N, D, causal = args.shapes[i:i + 3]
        for backend in args.backends.split(","):
            try:
                ms, tf = time_sdpa(N, D, bool(causal), backend, args.strided)
                print(f"sdpa {backend}{' strided' if args.strided else ''} N={N} D={D} causal={causal}: "
                      f"{ms:.3f} ms, {tf:.1f} TFLOP/s")
            except RuntimeError as e:
                print(f"sdpa {backend} N={N} D={D} causal={causal}: not run ({str(e).splitlines()[0]})")
