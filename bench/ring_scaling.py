#!/usr/bin/env python3
"""Ring scaling over P processes (one GPU each, NCCL; or CPU processes,
gloo): the library's rings from PyTorch (rda.ring_attention,
rda.ring_dilated_attention) against a plain PyTorch ring in the same run:
K/V blocks rotated with torch.distributed.batch_isend_irecv, SDPA's
flash kernel per (query chunk, key chunk) pair returning its LSE, merged
in fp32; its backward sends the dK/dV accumulators around with the blocks
and home at the end. fp16 on GPUs (fp32 on the CPU), B=1, H=8, D=64.

For every world size and row: forward and forward+backward time (median
of --reps after warm-up, CUDA events on the current stream / wall clock
on the CPU, the slowest rank), TFLOP/s (SPEC.md's convention), speed-up
over the smallest world, parallel efficiency, bytes sent per rank, busy
time max/min over the ranks (each rank's whole call, its waits included),
peak memory per GPU. The PyTorch ring covers
the dense rows (dilated rows: the library alone).

    python3 bench/ring_scaling.py --worlds 1,2,4 [--device cuda] [--reps 5] [--configs NAME,...]

Keep NCCL_NVLS_ENABLE=0 set on multi-GPU machines. Prints one Markdown
table; writes bench/results/ring_scaling.json.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import rda  # the package (pip install ., or PYTHONPATH=python with RDA_LIBRARY)

LN5 = ([2048, 16384, 131072, 1048576, 4194304], [1, 8, 64, 512, 2048])
CONFIGS = [
    dict(name="dense N=32768", mode="dense", N=32768, causal=False, layout="contiguous"),
    dict(name="dense N=32768 causal zig-zag", mode="dense", N=32768, causal=True, layout="zigzag"),
    dict(name="dense N=262144", mode="dense", N=262144, causal=False, layout="contiguous"),
    dict(name="dense N=262144 causal zig-zag", mode="dense", N=262144, causal=True, layout="zigzag"),
    dict(name="LongNet-like longnet N=4194304", mode="longnet", N=4194304, causal=False, layout="contiguous",
         segments=LN5[0], dilations=LN5[1]),
]


# ---------------------------------------------------------------- the PyTorch ring

def _flash(q, k, v, causal):
    """SDPA's flash kernel on [B, H, n, D]: (out, lse [B, H, n] fp32, what its backward needs)."""
    if q.is_cuda:
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False)
        return r[0], r[1], r
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)
    return o, lse, None


def _flash_bwd(do, q, k, v, o, lse, causal):
    if q.is_cuda:
        # no dropout: the sequence offsets and the generator state are unused
        none = torch.empty(0, dtype=torch.int64, device=q.device)
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            do, q, k, v, o, lse, none, none, q.shape[2], k.shape[2], 0.0, causal, none, none)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(do, q, k, v, o, lse, 0.0, causal)


def _shift(tensors, rank, world, rows):
    """tensors ([B, H, n, D]) to rank + 1; from rank - 1 the same with `rows` rows."""
    out = [t.new_empty(t.shape[:2] + (rows,) + t.shape[3:]) for t in tensors]
    ops = [dist.P2POp(dist.isend, t, (rank + 1) % world) for t in tensors]
    ops += [dist.P2POp(dist.irecv, t, (rank - 1) % world) for t in out]
    for w in dist.batch_isend_irecv(ops):
        w.wait()
    return out


def _chunks(N, world, layout, rank):
    return rda.ring_partition(N, world, layout, rank)


def _check_torch_ring(device, N=1000, causal=True, layout="zigzag"):
    """The PyTorch ring against SDPA on the full rows, before any timing."""
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(3)
    dt = torch.float16 if device == "cuda" else torch.float32
    q, k, v, do = ((torch.rand(1, 2, N, 64, generator=g) * 2 - 1).to(device=device, dtype=dt) for _ in range(4))
    idx = torch.cat([torch.arange(s, s + c) for s, c in _chunks(N, world, layout, rank)]).to(device)
    lq, lk, lv = (t[:, :, idx].clone().requires_grad_(True) for t in (q, k, v))
    o = TorchRing.apply(lq, lk, lv, N, causal, layout)
    o.backward(do[:, :, idx])
    # the reference: the same inputs in fp64 (fp32 on the GPU), SDPA's math
    wide = torch.float64 if device == "cpu" else torch.float32
    fq, fk, fv = (t.to(wide).requires_grad_(True) for t in (q, k, v))
    fo = torch.nn.functional.scaled_dot_product_attention(fq, fk, fv, is_causal=causal)
    fo.backward(do.to(wide))
    for name, got, want in (("o", o, fo[:, :, idx]), ("dq", lq.grad, fq.grad[:, :, idx]),
                            ("dk", lk.grad, fk.grad[:, :, idx]), ("dv", lv.grad, fv.grad[:, :, idx])):
        err = ((got.float() - want.float()).norm() / want.float().norm()).item()
        if err > (5e-3 if device == "cuda" else 1e-4):
            raise AssertionError(f"the PyTorch ring: {name} rel_l2 {err:.3g} on rank {rank} of {world} "
                                 f"(causal={causal}, {layout})")


def _pairs(my, their, causal):
    """(query chunk, key chunk, causal) index pairs with allowed keys."""
    out = []
    for i, (qs, qn) in enumerate(my):
        for j, (ks, kn) in enumerate(their):
            if not causal or ks + kn <= qs:
                out.append((i, j, False))
            elif ks == qs:
                out.append((i, j, True))
    return out


class TorchRing(torch.autograd.Function):
    """q, k, v: [B, H, n, D], this rank's rows (the ring_partition layout)."""

    @staticmethod
    def forward(ctx, q, k, v, N, causal, layout):
        rank, world = dist.get_rank(), dist.get_world_size()
        my = _chunks(N, world, layout, rank)
        cut = lambda x, parts, i: x[:, :, sum(c for _, c in parts[:i]):sum(c for _, c in parts[:i + 1])]  # noqa: E731
        acc = [None] * len(my)
        lse = [None] * len(my)
        kb, vb = k, v
        for step in range(world):
            src = (rank - step) % world
            their = _chunks(N, world, layout, src)
            rows_next = sum(c for _, c in _chunks(N, world, layout, (rank - step - 1) % world))
            nxt = _shift([kb, vb], rank, world, rows_next) if step + 1 < world else None
            for i, j, c in _pairs(my, their, causal):
                o, l, _ = _flash(cut(q, my, i), cut(kb, their, j), cut(vb, their, j), c)
                if acc[i] is None:
                    acc[i], lse[i] = o.float(), l
                else:
                    m = torch.logaddexp(lse[i], l)
                    acc[i] = acc[i] * torch.exp(lse[i] - m).unsqueeze(-1) + o.float() * torch.exp(l - m).unsqueeze(-1)
                    lse[i] = m
            if nxt:
                kb, vb = nxt
        out = torch.cat([a.to(q.dtype) for a in acc], dim=2)
        lse = torch.cat(lse, dim=2)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.N, ctx.causal, ctx.layout = N, causal, layout
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse = ctx.saved_tensors
        rank, world, N = dist.get_rank(), dist.get_world_size(), ctx.N
        my = _chunks(N, world, ctx.layout, rank)
        offs = lambda parts: [sum(c for _, c in parts[:i]) for i in range(len(parts) + 1)]  # noqa: E731
        mo = offs(my)
        do = do.contiguous()
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        kb, vb = k, v
        dkb = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dvb = torch.zeros_like(dkb)
        for step in range(world):
            src = (rank - step) % world
            their = _chunks(N, world, ctx.layout, src)
            to = offs(their)
            for i, j, c in _pairs(my, their, ctx.causal):
                sq, sk = slice(mo[i], mo[i + 1]), slice(to[j], to[j + 1])
                qi, ki, vi = q[:, :, sq].contiguous(), kb[:, :, sk].contiguous(), vb[:, :, sk].contiguous()
                oi, li = out[:, :, sq].contiguous(), lse[:, :, sq].contiguous()
                g = _flash_bwd(do[:, :, sq].contiguous(), qi, ki, vi, oi, li, c)
                dq[:, :, sq] += g[0].float()
                dkb[:, :, sk] += g[1].float()
                dvb[:, :, sk] += g[2].float()
            # the block and its accumulators move on; after the last step the
            # accumulators alone go home
            if step + 1 < world:
                rows_next = sum(c for _, c in _chunks(N, world, ctx.layout, (rank - step - 1) % world))
                kb, vb, dkb, dvb = _shift([kb, vb, dkb, dvb], rank, world, rows_next)
            elif world > 1:
                dkb, dvb = _shift([dkb, dvb], rank, world, k.shape[2])
        return dq.to(q.dtype), dkb.to(k.dtype), dvb.to(v.dtype), None, None, None


# ---------------------------------------------------------------- timing

def _timed(fn, reps, device):
    """Median seconds of fn over reps runs after two warm-ups (CUDA events on
    the current stream)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        dist.barrier()
        if device == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(rank, world, init, device, configs, reps, queue):
    if device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo", init_method=init, rank=rank, world_size=world)
    dtype = torch.float16 if device == "cuda" else torch.float32
    rows = []
    try:
        for causal, layout in ((True, "zigzag"), (False, "contiguous")):
            _check_torch_ring(device, causal=causal, layout=layout)
        for cfg in configs:
            N, H, D = cfg["N"], 8, 64
            parts = rda.ring_partition(N, world, cfg["layout"], rank)
            n = sum(c for _, c in parts)
            g = torch.Generator(device=device).manual_seed(1000 * rank + N)
            q, k, v, do = (torch.rand(1, n, H, D, generator=g, device=device, dtype=dtype) * 2 - 1 for _ in range(4))
            for t in (q, k, v):
                t.requires_grad_(True)
            if cfg["mode"] == "dense":
                ring = lambda: rda.ring_attention(q, k, v, is_causal=cfg["causal"], layout=cfg["layout"])  # noqa: E731
            else:
                ring = lambda: rda.ring_dilated_attention(  # noqa: E731
                    q, k, v, cfg["segments"], cfg["dilations"], mode=cfg["mode"], is_causal=cfg["causal"],
                    layout=cfg["layout"])
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            r = dict(name=cfg["name"])
            with torch.no_grad():
                r["rda_fwd"] = _timed(ring, reps, device)
            r["rda_fwd_bwd"] = _timed(lambda: ring().backward(do), reps, device)
            if device == "cuda":
                r["rda_peak_bytes"] = torch.cuda.max_memory_allocated()
            if cfg["mode"] == "dense":
                qt, kt, vt = (t.detach().transpose(1, 2).contiguous().requires_grad_(True) for t in (q, k, v))
                dot = do.transpose(1, 2).contiguous()
                base = lambda: TorchRing.apply(qt, kt, vt, N, cfg["causal"], cfg["layout"])  # noqa: E731
                with torch.no_grad():
                    r["torch_fwd"] = _timed(base, reps, device)
                r["torch_fwd_bwd"] = _timed(lambda: base().backward(dot), reps, device)
            # bytes this rank sends per forward: K and V blocks, P - 1 times
            # (the library sends only the steps it needs; this is the bound)
            r["kv_bytes_bound"] = 2 * n * H * D * q.element_size() * (world - 1)
            rows.append(r)
            del q, k, v, do
    except Exception as e:  # noqa: BLE001 (reported, the others must not wait for this rank)
        rows.append(dict(error=f"rank {rank}: {type(e).__name__}: {e}"))
    finally:
        queue.put((rank, rows))
        dist.destroy_process_group()


def spawn_world(target, world, args, timeout=3600):
    """target(rank, world, init, *args, queue) in `world` spawned processes
    meeting at a file rendezvous; returns what each put on the queue."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        procs = [ctx.Process(target=target, args=(r, world, init) + tuple(args) + (queue,)) for r in range(world)]
        for p in procs:
            p.start()
        got = [queue.get(timeout=timeout) for _ in range(world)]
        for p in procs:
            p.join(timeout=60)
    return got


def pairs_of(cfg):
    """Allowed pairs (B=1, H=8), by the library's own count."""
    import ctypes
    c = rda._lib.config(rda._lib.DENSE if cfg["mode"] == "dense" else rda._lib.LONGNET, cfg["causal"], 0.0,
                        list(zip(cfg.get("segments", []), cfg.get("dilations", []))))
    out = ctypes.c_int64()
    rda._lib.check(rda._lib.lib.rda_count_pairs(ctypes.byref(c), 1, cfg["N"], 8, ctypes.byref(out)), None)
    return out.value


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worlds", default="1,2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--configs", default="", help="comma-separated name prefixes (default: all)")
    ap.add_argument("--scale-n", type=int, default=1, help="divide every N by this (quick runs)")
    args = ap.parse_args()
    configs = [dict(c) for c in CONFIGS if not args.configs or any(c["name"].startswith(p) for p in args.configs.split(","))]
    for c in configs:
        c["N"] //= args.scale_n
        c["name"] = c["name"].replace(f"N={c['N'] * args.scale_n}", f"N={c['N']}")
    worlds = [int(w) for w in args.worlds.split(",")]
    results = {}
    for world in worlds:
        got = spawn_world(worker, world, (args.device, configs, args.reps))
        results[world] = [rows for _, rows in sorted(got)]
        for _, rows in got:
            for r in rows:
                if "error" in r:
                    print(r["error"], file=sys.stderr)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{dev} x P; {'fp16' if args.device == 'cuda' else 'fp32'}, B=1 H=8 D=64; median of {args.reps}, "
          "the slowest rank; TFLOP/s by SPEC.md's convention")
    print("| work | P | rda fwd (ms) | rda fwd+bwd (ms) | TFLOP/s fwd | speed-up fwd / fwd+bwd | efficiency fwd | "
          "rank time max/min fwd | PyTorch ring fwd / fwd+bwd (ms) | rda vs PyTorch fwd / fwd+bwd | K/V bytes sent per rank "
          "(bound, MB) | peak GPU memory (GB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = []
    for ci, cfg in enumerate(configs):
        flops = 4 * pairs_of(cfg) * 64
        base = None
        for world in worlds:
            rows = [rs[ci] for rs in results[world] if len(rs) > ci and "error" not in rs[ci]]
            if len(rows) != world:
                print(f"| {cfg['name']} | {world} | failed | | | | | | | | | |")
                continue
            f = max(r["rda_fwd"] for r in rows)
            fb = max(r["rda_fwd_bwd"] for r in rows)
            busy = max(r["rda_fwd"] for r in rows) / min(r["rda_fwd"] for r in rows)
            if base is None:
                base = (world, f, fb)
            sp, spb = base[1] / f, base[2] / fb
            eff = sp * base[0] / world
            tf, tfb = rows[0].get("torch_fwd"), rows[0].get("torch_fwd_bwd")
            if tf is not None:
                tf, tfb = max(r["torch_fwd"] for r in rows), max(r["torch_fwd_bwd"] for r in rows)
            peak = max(r.get("rda_peak_bytes", 0) for r in rows) / 1e9
            print(f"| {cfg['name']} | {world} | {f * 1e3:.2f} | {fb * 1e3:.2f} | {flops / f / 1e12:.1f} | "
                  f"{sp:.2f}x / {spb:.2f}x | {eff:.2f} | {busy:.2f} | "
                  + (f"{tf * 1e3:.2f} / {tfb * 1e3:.2f} | {tf / f:.2f}x / {tfb / fb:.2f}x" if tf else "- | -")
                  + f" | {max(r['kv_bytes_bound'] for r in rows) / 1e6:.1f} | {peak:.1f} |")
            out.append(dict(config=cfg, world=world, ranks=rows))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ring_scaling.json")
    with open(path, "w") as fh:
        json.dump(dict(device=dev, reps=args.reps, rows=out), fh, indent=1)


if __name__ == "__main__":
    main()
