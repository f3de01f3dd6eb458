#!/usr/bin/env python3
"""Host time the Python package adds to a call: rda.attention on a tiny input
(B=1, N=1, H=1, D=8; fp32 on the CPU, fp16 on a GPU when there is one)
against the same C calls made directly through ctypes with their arguments
prepared once. Medians of rounds of many calls; the difference is what the
argument checks, the output allocations, the context lookup, the tensor
descriptions and autograd cost.

    python3 bench/python_overhead.py [--calls 20000] [--device cpu|cuda]

Rows: the forward without autograd, the forward recording autograd, and
forward+backward (loss.backward() of the output's sum against the C
forward and backward calls); then the same calls through the operator
(torch.ops.rda.attention_forward, which plain eager calls skip) and, for
scale, on PyTorch's scaled_dot_product_attention and on a
torch.autograd.Function that does nothing (the floor of any Python-defined
autograd function). Also the forward's call through rda._native alone (the five tensors
described in C, the call), where pip built it, and each row once more with
the tensors described in Python (rounds interleaved). On CUDA the calls are asynchronous launches and
the figure is host time per call (the stream is synchronised only between
rounds)."""
import argparse
import statistics
import time

import torch

import rda
from rda import _lib, ops


def paired_us(fns, calls, sync, native, rounds=7):
    """Medians of fns' rounds, interleaved (one round of each in turn, so
    that the machine's drift falls on all alike). fns: (fn, path), path
    "native" or "python": how the package describes its tensors during the
    round (rda._native, or in Python through ctypes), None: as it is."""
    per = [[] for _ in fns]
    for _ in range(rounds):
        for i, (fn, path) in enumerate(fns):
            ops._native = {"native": native, "python": None}.get(path, native)
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            per[i].append((time.perf_counter() - t0) / calls * 1e6)
    ops._native = native
    return [statistics.median(p) for p in per]


def median_us(fn, calls, sync, rounds=7):
    return paired_us([(fn, None)], calls, sync, ops._native, rounds)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = ap.parse_args()
    dev = args.device or ("cuda" if torch.cuda.is_available() and rda.cuda_available() else "cpu")
    torch.set_num_threads(1)
    dtype = torch.float16 if dev == "cuda" else torch.float32
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    q, k, v = (torch.randn(1, 1, 1, 8, device=dev, dtype=dtype) for _ in range(3))
    o, do = torch.empty_like(q), torch.ones_like(q)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    lse = torch.empty(1, 1, 1, device=dev)
    ctx = ops._context_for(q)
    cfg = ops._config(_lib.DENSE, False, 0.0, [], [])
    fwd_views = [ops._view(t) for t in (q, k, v, o, lse)]
    bwd_views = [ops._view(t) for t in (q, k, v, o, lse, do, dq, dk, dv)]
    c_fwd = lambda: _lib.lib.rda_attention_forward(ctx, cfg, *fwd_views)  # noqa: E731
    c_bwd = lambda: _lib.lib.rda_attention_backward(ctx, cfg, *bwd_views)  # noqa: E731
    assert c_fwd() == 0 and c_bwd() == 0
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def train_step():
        rda.attention(qg, kg, vg).sum().backward()

    def c_step():
        c_fwd()
        c_bwd()

    # each row: the C calls, the package's call, and (where pip built rda._native) the package's call with
    # its tensors described in Python instead, rounds interleaved
    native = ops._native
    paths = [None] + (["python"] if native is not None else [])

    def row(name, c, py, calls):
        return (name, *paired_us([(c, None)] + [(py, p) for p in paths], calls, sync, native))

    rows = []
    with torch.no_grad():
        rows.append(row("forward, no autograd", c_fwd, lambda: rda.attention(q, k, v), args.calls))
    rows.append(row("forward, recording autograd", c_fwd, lambda: rda.attention(qg, kg, vg), args.calls))
    # the step's sum() and its gradient are PyTorch's, in the step and not in the C calls
    sum_cost = median_us(lambda: o.sum(), args.calls, sync)
    rows.append(row("forward+backward (loss.backward)", c_step, train_step, args.calls // 4))
    # for scale: the same step on PyTorch's own attention ([B, H, N, D] views of the same tensors)
    qt, kt, vt = (t.transpose(1, 2) for t in (qg, kg, vg))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    sdpa_fwd = median_us(lambda: sdpa(qt, kt, vt), args.calls, sync)
    sdpa_step = median_us(lambda: sdpa(qt, kt, vt).sum().backward(), args.calls // 4, sync)
    # the floor of any Python-defined autograd function: one that does nothing (outputs allocated like
    # the package's, no C call), forward+backward in the same step
    class _Nothing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, c):
            ctx.save_for_backward(a, b, c)
            return torch.empty_like(a)

        @staticmethod
        def backward(ctx, g):
            return g, g, g

    nothing_step = median_us(lambda: _Nothing.apply(qg, kg, vg).sum().backward(), args.calls // 4, sync)
    # the operator itself (what torch.compile and tracing call), which plain eager calls skip
    op = torch.ops.rda.attention_forward
    op_args = (_lib.DENSE, False, 0.0, [], [], False)
    with torch.no_grad():
        op_fwd = median_us(lambda: op(q, k, v, *op_args), args.calls, sync)
    op_grad = median_us(lambda: op(qg, kg, vg, *op_args), args.calls, sync)
    op_step = median_us(lambda: op(qg, kg, vg, *op_args)[0].sum().backward(), args.calls // 4, sync)
    # the package's C call as it makes it: through rda._native (the tensors described in C) where pip built it
    if native is not None:
        with torch.no_grad():
            native_fwd = median_us(lambda: native.forward(ctx, cfg.address, q, k, v, o, lse), args.calls, sync)
    print(f"torch {torch.__version__}, {dev} ({dtype}), 1 thread; host time per call, us (median of 7 rounds); "
          f"the package describes its tensors {'in C (rda._native)' if native is not None else 'in Python (ctypes)'}")
    if native is not None:
        print("| call | C calls through ctypes | rda | added by the package | rda, tensors described in Python | "
              "added that way |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, c, py, pyc in rows:
            print(f"| {name} | {c:.2f} | {py:.2f} | {py - c:.2f} | {pyc:.2f} | {pyc - c:.2f} |")
    else:
        print("| call | C calls through ctypes | rda | added by the package |")
        print("|---|---:|---:|---:|")
        for name, c, py in rows:
            print(f"| {name} | {c:.2f} | {py:.2f} | {py - c:.2f} |")
    print(f"(forward+backward includes PyTorch's own sum() and its backward: the sum alone is {sum_cost:.2f} us)")
    if native is not None:
        print(f"The forward's C call through rda._native, its five tensors described there: {native_fwd:.2f} us")
    print(f"Through the operator torch.ops.rda.attention_forward instead (the path of torch.compile and tracing): "
          f"forward {op_fwd:.2f} us, recording autograd {op_grad:.2f} us, forward+backward {op_step:.2f} us")
    print(f"For scale, PyTorch's scaled_dot_product_attention on the same tensors: forward recording autograd "
          f"{sdpa_fwd:.2f} us, forward+backward {sdpa_step:.2f} us; a torch.autograd.Function that does "
          f"nothing, forward+backward {nothing_step:.2f} us")


if __name__ == "__main__":
    main()
