#!/usr/bin/env python3
"""Where a small training step's time goes through the package on a GPU
(fp16, B=1, H=8, D=64; default the seed configuration `groups`,
segments [1024, 2048], dilations [1, 2], N = 4096). Each row is timed with
CUDA events on PyTorch's current stream, median of --reps rounds of --calls
calls each, and also by host time per call (perf_counter, the stream
synchronised only between rounds):

  C calls            the package's forward and backward implementations called
                     directly (no autograd, no loss): outputs allocated, tensors
                     described, the library's two calls
  autograd step      rda.dilated_attention, loss = sum(O.float() * dO), backward()
                     (bench/gpu_backward.py's step)
  loss alone         the same loss and backward() on a leaf tensor in O's place
                     (what PyTorch's own part of the step costs)
  SDPA step          the same step on scaled_dot_product_attention, dense,
                     same shapes (for scale)

    python3 bench/gpu_step_parts.py [--N 4096] [--calls 50] [--reps 9]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import rda
from rda import _lib, ops


def timed(fn, calls, reps):
    """(CUDA-event ms per call, host us per call), medians over reps rounds."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ev, host = [], []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        ev.append(a.elapsed_time(b) / calls)
        host.append((t1 - t0) / calls * 1e6)
    return statistics.median(ev), statistics.median(host)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--N", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    B, N, H, D = 1, args.N, 8, 64
    seg, dil = [1024, 2048], [1, 2]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.rand(B, N, H, D, generator=gen, device="cuda", dtype=torch.float16) * 2 - 1
                   for _ in range(4))
    qq, kk, vv = (x.detach().requires_grad_(True) for x in (q, k, v))
    args_c = (_lib.GROUPS, False, 0.0, seg, dil)

    def c_calls():
        o, lse = ops._forward_call(q, k, v, *args_c, True)
        ops._backward_impl(do, q, k, v, o, lse, *args_c, False)

    def c_forward():
        ops._forward_call(q, k, v, *args_c, False)

    def step():
        (rda.dilated_attention(qq, kk, vv, seg, dil).float() * do).sum().backward()
        qq.grad = kk.grad = vv.grad = None

    leaf = q.detach().clone().requires_grad_(True)

    def loss_alone():
        (leaf.float() * do).sum().backward()
        leaf.grad = None

    qt, kt, vt = (x.detach().transpose(1, 2).requires_grad_(True) for x in (q, k, v))

    def sdpa_step():
        (F.scaled_dot_product_attention(qt, kt, vt).float() * do.transpose(1, 2)).sum().backward()
        qt.grad = kt.grad = vt.grad = None

    rows = [("C calls: forward (no LSE)", c_forward), ("C calls: forward + backward", c_calls),
            ("autograd step", step), ("loss alone", loss_alone), ("SDPA step (dense)", sdpa_step)]
    native = ops._native
    if native is not None:  # the same step with the tensors described in Python
        def step_ctypes():
            ops._native = None
            try:
                step()
            finally:
                ops._native = native
        rows.insert(3, ("autograd step, tensors described in Python", step_ctypes))
    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; rda._native "
          f"{'loaded' if native is not None else 'absent (ctypes)'}; fp16 B={B} N={N} H={H} D={D}, groups "
          f"{seg} / {dil}; {args.calls} calls a round, median of {args.reps} rounds")
    print("| part | CUDA events (ms per call) | host (us per call) |")
    print("|---|---:|---:|")
    for name, fn in rows:
        ms, us = timed(fn, args.calls, args.reps)
        print(f"| {name} | {ms:.3f} | {us:.1f} |")


if __name__ == "__main__":
    main()
