#!/usr/bin/env python3
"""Training step on the CPU, side by side: this library's forward+backward
against PyTorch's CPU autograd of the same function, fp32, same cores, one
run.

PyTorch (autograd, loss = sum(dO * O)):
  dense    scaled_dot_product_attention on [B, H, N, D]
  groups   per head group: strided slice of the dilated rows, SDPA per
           segment on [B*segments, heads, rows, D], scattered back, / G
           (bench/pytorch_baseline.py's gather)
  longnet  per pattern and offset class the same gather; the merge needs
           each block's log-sum-exp with its gradient, which the SDPA
           kernels do not give (their LSE output has no gradient), so two
           forms are timed and the faster counts: (a) scores materialised
           per segment, logsumexp, exp(s - lse) @ V; (b) SDPA for the output
           plus a logsumexp of the scores for the weights
The library's side is `rda bench --backward` (forward+backward: a forward
with LSE, then the backward; medians after warm-up), which also checks its
gradients against the fp64 reference. This script checks that both compute
the same gradients (rel_l2 of PyTorch's against `rda run --dout` on the same
inputs).

    pip install torch numpy
    python3 bench/cpu_backward.py [--rda build/rda] [--reps 5] [--threads T]

Prints one Markdown table; writes bench/results/cpu_backward.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_baseline import gathered_attention, head_groups, time_torch  # noqa: E402

CONFIGS = [
    dict(name="seed dense, N=4096", mode="dense", N=4096, patterns=[]),
    dict(name="seed groups, N=4096", mode="groups", N=4096, patterns=[(1024, 1), (2048, 2)]),
    dict(name="LongNet-like longnet, N=32768", mode="longnet", N=32768,
         patterns=[(2048, 1), (4096, 2), (8192, 4)]),
]


def blocks(x, w, r, off):
    """[B, N, h, D] -> list of ((a, e, seg, count), [B*count, h, m, D]) gathered rows."""
    B, N, h, D = x.shape
    nfull, out = N // w, []
    pieces = [(0, nfull * w, w, nfull)] if nfull else []
    if N % w:
        pieces.append((nfull * w, N, N - nfull * w, 1))
    for a, e, seg, count in pieces:
        if off >= seg:
            continue
        t = x[:, a:e].reshape(B, count, seg, h, D)[:, :, off::r]
        m = t.shape[2]
        out.append(((a, e, seg, count, m), t.permute(0, 1, 3, 2, 4).reshape(B * count, h, m, D)))
    return out


def block_attention_lse(q, k, v, causal, form):
    """Output and a differentiable log-sum-exp of one gathered block."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    s = (q @ k.transpose(-1, -2)) * scale
    if causal:
        m = s.shape[-1]
        s = s.masked_fill(torch.ones(m, m, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    if form == "scores":
        o = torch.exp(s - lse.unsqueeze(-1)) @ v
    else:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return o, lse


def longnet_forward(q, k, v, patterns, causal, form):
    B, N, H, D = q.shape
    outs, lses = [], []
    for w, r in patterns:
        o_i = torch.zeros_like(q)
        l_i = torch.full((B, H, N), float("-inf"), device=q.device)
        for off in range(min(r, H)):
            hs = torch.tensor(list(range(off, H, r)), device=q.device)
            h = len(hs)
            qb, kb, vb = (dict(blocks(x[:, :, hs], w, r, off)) for x in (q, k, v))
            o_parts, l_parts = [], []
            nfull = N // w
            pieces = ([(0, nfull * w, w, nfull)] if nfull else []) + ([(nfull * w, N, N - nfull * w, 1)] if N % w else [])
            for a, e, seg, count in pieces:
                key = next((sh for sh in qb if sh[0] == a), None)
                if key is None:  # no selected row in this piece
                    o_parts.append(torch.zeros(B, e - a, h, D, dtype=q.dtype, device=q.device))
                    l_parts.append(torch.full((B, h, e - a), float("-inf"), device=q.device))
                    continue
                m = key[4]
                o, l = block_attention_lse(qb[key], kb[key], vb[key], causal, form)
                full = torch.zeros(B, count, seg, h, D, dtype=q.dtype, device=q.device)
                full[:, :, off::r] = o.reshape(B, count, h, m, D).permute(0, 1, 3, 2, 4)
                o_parts.append(full.reshape(B, e - a, h, D))
                lb = torch.full((B, h, count, seg), float("-inf"), device=q.device)
                lb[:, :, :, off::r] = l.reshape(B, count, h, m).permute(0, 2, 1, 3)
                l_parts.append(lb.reshape(B, h, e - a))
            o_i = o_i.index_add(2, hs, torch.cat(o_parts, dim=1))
            l_i = l_i.index_copy(1, hs, torch.cat(l_parts, dim=2))
        outs.append(o_i)
        lses.append(l_i)
    L = torch.logsumexp(torch.stack(lses), dim=0)
    Ls = torch.where(torch.isinf(L), torch.zeros_like(L), L)
    out = torch.zeros_like(q)
    for o_i, l_i in zip(outs, lses):
        wgt = torch.exp(l_i - Ls).transpose(1, 2).unsqueeze(-1)
        out = out + torch.where(torch.isinf(l_i).transpose(1, 2).unsqueeze(-1), torch.zeros_like(wgt), wgt) * o_i
    return out


def groups_forward(q, k, v, patterns, causal):
    B, N, H, D = q.shape
    G = len(patterns)
    parts = []
    for g, (h0, h1) in enumerate(head_groups(H, G)):
        if h0 == h1:
            continue
        w, r = patterns[g]
        o, _ = gathered_attention(q[:, :, h0:h1], k[:, :, h0:h1], v[:, :, h0:h1], w, r, g % r, causal, False)
        parts.append(o / G)
    return torch.cat(parts, dim=2)


def torch_step(cfg, q, k, v, do, form):
    q, k, v = (x.detach().requires_grad_(True) for x in (q, k, v))
    if cfg["mode"] == "dense":
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    elif cfg["mode"] == "groups":
        o = groups_forward(q, k, v, cfg["patterns"], False)
    else:
        o = longnet_forward(q, k, v, cfg["patterns"], False, form)
    (o * do).sum().backward()
    return o.detach(), q.grad, k.grad, v.grad


def pattern_args(cfg):
    if cfg["mode"] == "dense":
        return []
    return ["--mode", cfg["mode"], "--segments", ",".join(str(w) for w, _ in cfg["patterns"]),
            "--dilations", ",".join(str(r) for _, r in cfg["patterns"])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rda", default=os.path.join(os.path.dirname(__file__), "..", "build", "rda"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: all cores (both sides)")
    ap.add_argument("--configs", default="", help="comma-separated name prefixes (default: all)")
    args = ap.parse_args()
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    B, H, D = 1, 8, 64
    rows = []
    configs = [c for c in CONFIGS if not args.configs or any(c["name"].startswith(p) for p in args.configs.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in configs:
            N = cfg["N"]
            gen = torch.Generator().manual_seed(N)
            q, k, v, do = (torch.rand(B, N, H, D, generator=gen) * 2 - 1 for _ in range(4))
            forms = ["scores", "sdpa"] if cfg["mode"] == "longnet" else ["sdpa"]
            times = {f: time_torch(lambda f=f: torch_step(cfg, q, k, v, do, f), args.reps) for f in forms}
            best = min(times, key=times.get)
            _, gq, gk, gv = torch_step(cfg, q, k, v, do, best)
            # the library: timings and its own fp64 check from rda bench
            md, js = os.path.join(tmp, "r.md"), os.path.join(tmp, "r.json")
            variant = "StandardRingAttention" if cfg["mode"] == "dense" else "ImprovedDilatedAttention"
            # (long sequences: the check on 1024 sampled rows per (batch, head), as SPEC.md allows)
            limit = ["--full-ref-limit", "1e10"] if N > 8192 else []
            subprocess.run([args.rda, "bench", "--backend", "cpu", "--seq-lens", str(N), "--heads", str(H),
                            "--head-dim", str(D), "--variants", variant, "--reps", str(args.reps), "--backward",
                            "--threads", str(threads), "--quiet", "--out-md", md, "--out-json", js]
                           + limit + pattern_args(cfg), check=True, stdout=subprocess.DEVNULL)
            ours = json.load(open(js))["rows"][0]
            # the same gradients: rda run --dout on these inputs
            paths = {n: os.path.join(tmp, n + ".npy") for n in ("q", "k", "v", "do", "o", "dq", "dk", "dv")}
            for n, t in (("q", q), ("k", k), ("v", v), ("do", do)):
                np.save(paths[n], t.numpy())
            subprocess.run([args.rda, "run", "--q", paths["q"], "--k", paths["k"], "--v", paths["v"],
                            "--out", paths["o"], "--dout", paths["do"], "--dq", paths["dq"], "--dk", paths["dk"],
                            "--dv", paths["dv"], "--threads", str(threads)] + pattern_args(cfg),
                           check=True, stdout=subprocess.DEVNULL)
            diff = max(float(np.linalg.norm(np.load(paths[n]) - t.numpy()) / np.linalg.norm(np.load(paths[n])))
                       for n, t in (("dq", gq), ("dk", gk), ("dv", gv)))
            rows.append(dict(name=cfg["name"], N=N, torch_ms=times, torch_best=best, rda_fwd_bwd_ms=ours["fwd_bwd_ms"],
                             rda_backward_ms=ours["backward_ms"], rda_forward_ms=ours["time_ms"],
                             rda_grad_correctness=ours["grad_correctness"], grad_rel_l2_vs_torch=diff,
                             speedup=times[best] / ours["fwd_bwd_ms"]))
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    print(f"CPU: {cpu}, {threads} threads; torch {torch.__version__}; fp32, B={B} H={H} D={D}; "
          f"median of {args.reps}")
    print("| work | rda forward+backward (ms) | PyTorch autograd (ms) | ratio | rda grads vs fp64 | rda vs PyTorch grads |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        tt = " / ".join(f"{k} {v:.1f}" for k, v in r["torch_ms"].items())
        print(f"| {r['name']} | {r['rda_fwd_bwd_ms']:.1f} | {tt} | {r['speedup']:.2f}x | "
              f"{'pass' if r['rda_grad_correctness'] == 1 else 'FAIL'} | {r['grad_rel_l2_vs_torch']:.1e} |")
    out = os.path.join(os.path.dirname(__file__), "results", "cpu_backward.json")
    with open(out, "w") as f:
        json.dump(dict(cpu=cpu, threads=threads, torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
