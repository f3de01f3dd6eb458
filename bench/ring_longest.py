#!/usr/bin/env python3
"""The longest LongNet-like sequence a ring of P GPUs (one process each,
NCCL; or CPU processes, gloo) runs forward and backward through the
PyTorch package: rda.ring_dilated_attention with bench/ring_scaling.py's
patterns that span ranks (segments [2048, 16384, 131072, 1048576, 4194304],
dilations [1, 8, 64, 512, 2048]), fp16 (fp32 on the CPU), B=1, H=8, D=64.

N starts at --start and grows by --step (a multiple of the largest
segment) until a size fails on some rank: its tensors cannot be allocated
(the ranks agree on that before the call) or the ring call fails. For every
size that ran: forward and forward+backward time (one run each after the
first size's warm-up, CUDA events, the slowest rank), peak memory per GPU
against the 4 KiB a token of Q, K, V, O (and the gradients' 8 KiB a token
across the ring), and the failure that ended it.

    python3 bench/ring_longest.py --world 8 [--start 33554432] [--step 16777216] [--max N]

Keep NCCL_NVLS_ENABLE=0 set on multi-GPU machines. Prints one Markdown
table; writes bench/results/ring_longest.json.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist

import rda
from ring_scaling import LN5, spawn_world


def _agree(ok, device):
    """Whether every rank says ok."""
    t = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _timed(fn, device):
    if device == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        out = fn()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) / 1e3, out
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def worker(rank, world, init, device, sizes, queue):
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=init, rank=rank, world_size=world)
    dtype = torch.float16 if device == "cuda" else torch.float32
    rows, H, D = [], 8, 64
    try:
        for N in sizes:
            n = sum(c for _, c in rda.ring_partition(N, world, "contiguous", rank))
            q = k = v = do = None
            try:
                g = torch.Generator(device=device).manual_seed(rank + N)
                q, k, v, do = (torch.empty(1, n, H, D, device=device, dtype=dtype).uniform_(-1, 1, generator=g)
                               for _ in range(4))
                ok, why = True, ""
            except (RuntimeError, MemoryError) as e:  # (torch.cuda.OutOfMemoryError is a RuntimeError)
                ok, why = False, f"allocating the inputs: {type(e).__name__}: {str(e).splitlines()[0]}"
            if not _agree(ok, device):
                rows.append(dict(N=N, failed=why or "another rank could not allocate its inputs"))
                break
            for t in (q, k, v):
                t.requires_grad_(True)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            r = dict(N=N, rows=n)
            try:
                ring = lambda: rda.ring_dilated_attention(q, k, v, LN5[0], LN5[1], mode="longnet")  # noqa: E731
                with torch.no_grad():
                    r["fwd_s"], _ = _timed(ring, device)
                r["fwd_bwd_s"], _ = _timed(lambda: ring().backward(do), device)
                if device == "cuda":
                    r["peak_bytes"] = torch.cuda.max_memory_allocated()
                ok = True
            except (RuntimeError, MemoryError, ValueError) as e:
                r["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
                ok = False
            rows.append(r)
            del q, k, v, do
            if device == "cuda":
                torch.cuda.empty_cache()
            if not _agree(ok, device):
                break
    except Exception as e:  # noqa: BLE001 (reported; the others must not wait for this rank)
        rows.append(dict(error=f"rank {rank}: {type(e).__name__}: {e}"))
    finally:
        queue.put((rank, rows))
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--start", type=int, default=4 * 4194304)
    ap.add_argument("--step", type=int, default=4 * 4194304)
    ap.add_argument("--max", type=int, default=1 << 31)
    args = ap.parse_args()
    if args.start < 1 or args.step < 1:
        sys.exit("--start and --step must be positive")
    sizes = list(range(args.start, args.max + 1, args.step))
    got = spawn_world(worker, args.world, (args.device, sizes), timeout=24 * 3600)
    per_rank = [rows for _, rows in sorted(got)]
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{dev} x {args.world}; LongNet-like longnet (segments {LN5[0]}, dilations {LN5[1]}), "
          f"{'fp16' if args.device == 'cuda' else 'fp32'}, B=1 H=8 D=64; one run per size, the slowest rank")
    print("| N | rows per rank | fwd (s) | fwd+bwd (s) | peak memory per GPU (GB, max over ranks) | "
          "Q, K, V, O, dO, dQ, dK, dV per GPU (GB) | outcome |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    out, largest = [], None
    for i in range(max(len(rs) for rs in per_rank)):
        rs = [rows[i] for rows in per_rank if len(rows) > i]
        errors = [r["error"] for r in rs if "error" in r]
        if errors:
            print("\n".join(errors), file=sys.stderr)
            break
        fails = [r["failed"] for r in rs if "failed" in r]
        N = rs[0]["N"]
        rows_max = max(r.get("rows", 0) for r in rs)
        if fails or len(rs) != args.world:
            print(f"| {N} | {rows_max or '-'} | | | | | failed: {fails[0] if fails else 'a rank stopped'} |")
            out.append(dict(N=N, failed=fails[0] if fails else "a rank stopped"))
            break
        f, fb = max(r["fwd_s"] for r in rs), max(r["fwd_bwd_s"] for r in rs)
        peak = max(r.get("peak_bytes", 0) for r in rs) / 1e9
        tensors = 8 * rows_max * 8 * 64 * (2 if args.device == "cuda" else 4) / 1e9
        print(f"| {N} | {rows_max} | {f:.3f} | {fb:.3f} | {peak:.1f} | {tensors:.1f} | ran |")
        out.append(dict(N=N, rows=rows_max, fwd_s=f, fwd_bwd_s=fb, peak_gb=peak))
        largest = N
    print(f"\nlongest that ran forward and backward: {largest if largest else 'none'}")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ring_longest.json")
    with open(path, "w") as fh:
        json.dump(dict(device=dev, world=args.world, rows=out, longest=largest), fh, indent=1)


if __name__ == "__main__":
    main()
