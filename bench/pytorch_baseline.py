#!/usr/bin/env python3
"""Side-by-side timing: this library against PyTorch on the same work, on the
CPU (fp32, all cores) or on a GPU (fp16, `--device cuda`).

PyTorch baselines (the same shapes and element type on both sides):
  dense    scaled_dot_product_attention on [B, H, N, D]
  groups   per head group: strided slice of the dilated rows, .contiguous(),
           SDPA per segment on [B*segments, heads, rows, D], scatter back, / G
  longnet  per pattern and offset class: the same gather, the flash kernel
           (which also returns the log-sum-exp), then the LSE-weighted merge
On a GPU, times are CUDA-event medians, taken twice: with SDPA restricted to
its FlashAttention backend (FlashAttention-2; the baselines the speed
targets name), and with SDPA left to pick its backend (cuDNN's fused
attention on an H100 with PyTorch 2.11, faster than FlashAttention-2 there).
The longnet rows call the FlashAttention kernel directly (it returns the
log-sum-exp) either way. The library's rows come from `rda bench --backend
cuda` (host wall time of the call plus a synchronize).
The library side runs `rda bench` for the same configuration, which also
checks its output against the fp64 reference; this script additionally
checks that PyTorch computes the same function (rel_l2 against the
library's `rda run` output on the same inputs).

    pip install torch numpy
    python3 bench/pytorch_baseline.py [--device cpu|cuda] [--rda build/rda] [--reps 5] [--quick]

Prints one Markdown table; writes the raw figures to bench/results/*.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel



def flash_with_lse(q, k, v, causal):
    if q.is_cuda:
        out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, is_causal=causal)
    else:
        out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, is_causal=causal)
    return out[0], out[1].float()


def head_groups(H, G):
    out, first = [], 0
    for g in range(G):
        size = H // G + (1 if g < H % G else 0)
        out.append((first, first + size))
        first += size
    return out


def gathered_attention(x_q, x_k, x_v, w, r, off, causal, want_lse):
    """x_*: [B, N, h, D] (a head slice). Attention inside each segment on the
    rows off, off+r, ... Returns (out [B, N_sel-rows scattered into N], lse)."""
    B, N, h, D = x_q.shape
    out = torch.zeros_like(x_q)
    lse = torch.full((B, h, N), float("-inf"), device=x_q.device) if want_lse else None
    nfull = N // w
    pieces = []
    if nfull:
        pieces.append((0, nfull * w, w, nfull))
    if N % w:
        pieces.append((nfull * w, N, N - nfull * w, 1))
    for a, e, seg, count in pieces:
        if off >= seg:
            continue

        def sel(t):  # [B, count, m, h, D] -> [B*count, h, m, D]
            t = t[:, a:e].reshape(B, count, seg, h, D)[:, :, off::r]
            m = t.shape[2]
            t = t.permute(0, 1, 3, 2, 4)
            if r == 1 and B == 1:  # a strided view SDPA reads as it is (last dimension contiguous)
                return t.reshape(B * count, h, m, D), m
            return t.reshape(B * count, h, m, D).contiguous(), m

        q, m = sel(x_q)
        k, _ = sel(x_k)
        v, _ = sel(x_v)
        if want_lse:
            o, l = flash_with_lse(q, k, v, causal)
        else:
            o, l = F.scaled_dot_product_attention(q, k, v, is_causal=causal), None
        o = o.reshape(B, count, h, m, D).permute(0, 1, 3, 2, 4)
        out[:, a:e].view(B, count, seg, h, D)[:, :, off::r] = o
        if want_lse:
            l = l.reshape(B, count, h, m).permute(0, 2, 1, 3)  # [B, h, count, m]
            lse[:, :, a:e].view(B, h, count, seg)[:, :, :, off::r] = l
    return out, lse


def torch_forward(q, k, v, mode, patterns, causal):
    """q, k, v: [B, N, H, D] fp32 (the library's layout)."""
    B, N, H, D = q.shape
    if mode == "dense":
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=causal)
        return o.transpose(1, 2)
    G = len(patterns)
    if mode == "groups":
        out = torch.empty_like(q)
        for g, (h0, h1) in enumerate(head_groups(H, G)):
            if h0 == h1:
                continue
            w, r = patterns[g]
            o, _ = gathered_attention(q[:, :, h0:h1], k[:, :, h0:h1], v[:, :, h0:h1], w, r, g % r,
                                      causal, False)
            out[:, :, h0:h1] = o / G
        return out
    # longnet: every head every pattern, offset h mod r; LSE-weighted merge
    outs, lses = [], []
    for w, r in patterns:
        o_i = torch.zeros_like(q)
        l_i = torch.full((B, H, N), float("-inf"), device=q.device)
        for off in range(min(r, H)):
            heads = list(range(off, H, r))
            hs = torch.tensor(heads, device=q.device)
            o, l = gathered_attention(q[:, :, hs], k[:, :, hs], v[:, :, hs], w, r, off, causal, True)
            o_i[:, :, hs] = o
            l_i[:, hs] = l
        outs.append(o_i)
        lses.append(l_i)
    L = torch.logsumexp(torch.stack(lses), dim=0)  # [B, H, N]
    Ls = torch.where(torch.isinf(L), torch.zeros_like(L), L)
    out = torch.zeros_like(q, dtype=torch.float32)
    for o_i, l_i in zip(outs, lses):
        wgt = torch.exp(l_i - Ls).transpose(1, 2).unsqueeze(-1)  # [B, N, H, 1]
        out += torch.where(torch.isinf(l_i).transpose(1, 2).unsqueeze(-1), torch.zeros_like(wgt), wgt) * o_i
    return out.to(q.dtype)


def time_torch(fn, reps, warmup=1, cuda=False):
    for _ in range(warmup):
        fn()
    if cuda:
        ts = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        return float(np.median(ts))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def run_rda_bench(rda, cfg, reps, outdir, device):
    md, js = os.path.join(outdir, "r.md"), os.path.join(outdir, "r.json")
    variant = "StandardRingAttention" if cfg["mode"] == "dense" else "ImprovedDilatedAttention"
    cmd = [rda, "bench", "--seq-lens", str(cfg["N"]), "--heads", str(cfg["H"]), "--head-dim", str(cfg["D"]),
           "--variants", variant, "--reps", str(reps), "--quiet", "--out-md", md, "--out-json", js,
           "--backend", device, "--dtype", "fp16" if device == "cuda" else "fp32"]
    if device == "cuda":  # the check's fp64 reference runs on the CPU: sample long rows
        cmd += ["--full-ref-limit", "2e10"]
    if cfg["mode"] != "dense":
        cmd += ["--mode", cfg["mode"], "--segments", ",".join(str(w) for w, _ in cfg["patterns"]),
                "--dilations", ",".join(str(r) for _, r in cfg["patterns"])]
    if cfg.get("causal"):
        cmd.append("--causal")
    if cfg.get("time_reference"):
        cmd.append("--time-reference")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.load(open(js))["rows"][0]


def check_same_function(rda, cfg, q, k, v, outdir, torch_out):
    """rel_l2 between PyTorch's output and `rda run` (CPU, fp32) on the same inputs."""
    paths = {n: os.path.join(outdir, n + ".npy") for n in ("q", "k", "v", "o")}
    for n, t in (("q", q), ("k", k), ("v", v)):
        np.save(paths[n], t.float().cpu().numpy())
    cmd = [rda, "run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"], "--out", paths["o"],
           "--mode", cfg["mode"]]
    if cfg["mode"] != "dense":
        cmd += ["--segments", ",".join(str(w) for w, _ in cfg["patterns"]),
                "--dilations", ",".join(str(r) for _, r in cfg["patterns"])]
    if cfg.get("causal"):
        cmd.append("--causal")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ours = np.load(paths["o"]).astype(np.float64)
    theirs = torch_out.float().cpu().numpy().astype(np.float64)
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(ours))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rda", default=os.path.join(os.path.dirname(__file__), "..", "build", "rda"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--configs", default="", help="comma-separated names to run (default: all of the device's)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip the N = 32768 configuration")
    ap.add_argument("--time-reference", action="store_true",
                    help="also time the full fp64 reference (slow: minutes at N = 32768)")
    args = ap.parse_args()
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    B, H, D = 1, 8, 64
    configs = [
        dict(name="seed dense, N=4096", mode="dense", N=4096, patterns=[]),
        dict(name="seed groups, N=4096", mode="groups", N=4096, patterns=[(1024, 1), (2048, 2)]),
        dict(name="seed groups causal, N=4096", mode="groups", N=4096, patterns=[(1024, 1), (2048, 2)],
             causal=True),
        dict(name="LongNet-like longnet, N=32768", mode="longnet", N=32768,
             patterns=[(2048, 1), (4096, 2), (8192, 4)]),
        dict(name="LongNet-like groups, N=32768", mode="groups", N=32768,
             patterns=[(2048, 1), (4096, 2), (8192, 4)]),
    ]
    if cuda:  # the GPU targets
        configs = [
            dict(name="seed groups, N=4096", mode="groups", N=4096, patterns=[(1024, 1), (2048, 2)]),
            dict(name="seed groups, N=1048576", mode="groups", N=1 << 20, patterns=[(1024, 1), (2048, 2)]),
            dict(name="LongNet longnet, N=524288", mode="longnet", N=1 << 19,
                 patterns=[(2048, 1), (4096, 2), (8192, 4), (16384, 8)]),
            dict(name="LongNet longnet causal, N=524288", mode="longnet", N=1 << 19,
                 patterns=[(2048, 1), (4096, 2), (8192, 4), (16384, 8)], causal=True),
            dict(name="dense, N=16384", mode="dense", N=16384, patterns=[]),
            dict(name="dense causal, N=16384", mode="dense", N=16384, patterns=[], causal=True),
            dict(name="dense, N=65536", mode="dense", N=65536, patterns=[]),
            dict(name="dense causal, N=65536", mode="dense", N=65536, patterns=[], causal=True),
        ]
    if args.configs:
        keep = args.configs.split(",")
        configs = [c for c in configs if any(c["name"].startswith(k) for k in keep)]
    if args.quick:
        configs = [c for c in configs if c["N"] <= 16384]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in configs:
            cfg.update(H=H, D=D, time_reference=args.time_reference)
            dev = "cuda" if cuda else "cpu"
            q, k, v = ((torch.rand(B, cfg["N"], H, D, device=dev) * 2 - 1).to(dtype) for _ in range(3))
            causal = cfg.get("causal", False)
            fn = lambda: torch_forward(q, k, v, cfg["mode"], cfg["patterns"], causal)

            def flash_only():
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    return fn()

            t_torch = time_torch(flash_only if cuda else fn, args.reps, cuda=cuda)
            t_default = time_torch(fn, args.reps, cuda=True) if cuda else None
            # the same function? (checked on the CPU in fp32, on sizes it can afford)
            same = check_same_function(args.rda, cfg, q, k, v, tmp, fn()) \
                if cfg["N"] <= (16384 if cuda else 65536) else float("nan")
            ours = run_rda_bench(args.rda, cfg, args.reps, tmp, args.device)
            row = dict(config=cfg["name"], torch_ms=t_torch, rda_ms=ours["time_ms"],
                       speedup=t_torch / ours["time_ms"], rda_tflops=ours["tflops"],
                       rda_correct=ours["correctness"], rda_rel_l2=ours["rel_l2"], torch_vs_rda_rel_l2=same)
            if t_default is not None:
                row["torch_default_ms"] = t_default
                row["speedup_default"] = t_default / ours["time_ms"]
            if "reference_ms" in ours:
                row["reference_ms"] = ours["reference_ms"]
                row["reference_over_rda"] = ours["reference_ms"] / ours["time_ms"]
            rows.append(row)
            print(f"{cfg['name']}: torch {t_torch:.1f} ms, rda {ours['time_ms']:.1f} ms", file=sys.stderr)
    where = torch.cuda.get_device_name(0) if cuda else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}; B={B} H={H} D={D} {str(dtype).replace('torch.', '')}")
    if cuda:
        print("| configuration | PyTorch FA (ms) | PyTorch default (ms) | rda (ms) | rda vs FA | rda vs default | "
              "rda TFLOP/s | rda correct | PyTorch vs rda rel_l2 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("| configuration | PyTorch (ms) | rda (ms) | rda speed-up | rda TFLOP/s | rda correct | "
              "PyTorch vs rda rel_l2 | fp64 reference (ms) |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = f"{r['reference_ms']:.0f} ({r['reference_over_rda']:.0f}x)" if "reference_ms" in r else "-"
        same = "-" if r["torch_vs_rda_rel_l2"] != r["torch_vs_rda_rel_l2"] else f"{r['torch_vs_rda_rel_l2']:.1e}"
        if cuda:
            print(f"| {r['config']} | {r['torch_ms']:.3f} | {r['torch_default_ms']:.3f} | {r['rda_ms']:.3f} | "
                  f"{r['speedup']:.2f}x | {r['speedup_default']:.2f}x | {r['rda_tflops']:.1f} | "
                  f"{r['rda_correct']:.3f} | {same} |")
        else:
            print(f"| {r['config']} | {r['torch_ms']:.3f} | {r['rda_ms']:.3f} | {r['speedup']:.2f}x | "
                  f"{r['rda_tflops']:.1f} | {r['rda_correct']:.3f} | {same} | {ref} |")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    out = os.path.join(os.path.dirname(__file__), "results", f"pytorch_{args.device}_baseline.json")
    json.dump(dict(torch=torch.__version__, threads=torch.get_num_threads(), rows=rows), open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
