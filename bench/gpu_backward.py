#!/usr/bin/env python3
"""Training step on one GPU, side by side: this library's backward and
forward+backward against PyTorch's autograd of the same function, fp16,
B=1, H=8, one run.

PyTorch (autograd, loss = sum(dO * O); CUDA-event medians after warm-up):
  dense    scaled_dot_product_attention on [B, H, N, D], timed with SDPA
           restricted to cuDNN's fused attention (its default on Hopper) and
           to its FlashAttention backend; the backward is forward+backward
           minus the forward
  groups   bench/pytorch_baseline.py's gather + SDPA per segment, scattered
           back, / G, on both backends
  longnet  bench/cpu_backward.py's per-segment blocks with a differentiable
           log-sum-exp (scores materialised, or SDPA plus a logsumexp of the
           scores), then the LSE-weighted merge; the faster form counts
The library's side is timed the same way through its PyTorch package
(rda.attention / rda.dilated_attention and autograd, PyTorch's current
stream; also with deterministic=True), and run once more by
`rda bench --backend cuda --backward`, which checks its gradients against the
fp64 reference (sampled rows for long sequences) and times each call by host
wall time plus a synchronize. With --before OLD_RDA, the forward of an older
build's tool is timed by `rda bench` next to this build's in the same run.

    python3 bench/gpu_backward.py [--rda build-gpu/rda] [--reps 5] [--configs NAME,...] [--sample-rows 1024]
                                  [--before OLD/rda]

Prints one Markdown table; writes bench/results/gpu_backward.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cpu_backward import longnet_forward, pattern_args  # noqa: E402
from pytorch_baseline import gathered_attention, head_groups, time_torch  # noqa: E402

LN = [(2048, 1), (4096, 2), (8192, 4), (16384, 8)]
CONFIGS = [dict(name=f"dense D={D} N={N}{' causal' if c else ''}", mode="dense", N=N, D=D, causal=c, patterns=[])
           for D in (64, 128) for N in (16384, 65536) for c in (False, True)]
CONFIGS += [
    dict(name="seed groups N=4096", mode="groups", N=4096, D=64, causal=False, patterns=[(1024, 1), (2048, 2)]),
    dict(name="seed groups N=1048576", mode="groups", N=1048576, D=64, causal=False,
         patterns=[(1024, 1), (2048, 2)]),
    dict(name="LongNet-like longnet N=524288", mode="longnet", N=524288, D=64, causal=False, patterns=LN),
    dict(name="LongNet-like longnet N=524288 causal", mode="longnet", N=524288, D=64, causal=True, patterns=LN),
]
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def torch_out(cfg, q, k, v, form):
    """q, k, v: [B, N, H, D]."""
    if cfg["mode"] == "dense":
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              is_causal=cfg["causal"]).transpose(1, 2)
    if cfg["mode"] == "groups":
        G, parts = len(cfg["patterns"]), []
        for g, (h0, h1) in enumerate(head_groups(q.shape[2], G)):
            w, r = cfg["patterns"][g]
            o, _ = gathered_attention(q[:, :, h0:h1], k[:, :, h0:h1], v[:, :, h0:h1], w, r, g % r, cfg["causal"], False)
            parts.append(o / G)
        return torch.cat(parts, dim=2)
    return longnet_forward(q, k, v, cfg["patterns"], cfg["causal"], form)


def torch_times(cfg, q, k, v, do, reps):
    """{(backend, form): (forward ms, forward+backward ms)}"""
    out = {}
    combos = [(b, "sdpa") for b in BACKENDS]
    if cfg["mode"] == "longnet":  # (the scores form calls no SDPA backend)
        combos.append(("cudnn", "scores"))
    for bname, form in combos:
        backend = BACKENDS[bname]
        qq, kk, vv = (x.detach().requires_grad_(True) for x in (q, k, v))

        def fwd():
            with torch.no_grad(), sdpa_kernel([backend]):
                torch_out(cfg, qq, kk, vv, form)

        def step():
            with sdpa_kernel([backend]):
                o = torch_out(cfg, qq, kk, vv, form)
            (o.float() * do).sum().backward()
            qq.grad = kk.grad = vv.grad = None

        try:
            out[(bname, form)] = (time_torch(fwd, reps, cuda=True), time_torch(step, reps, cuda=True))
        except RuntimeError as e:  # a backend that does not take the shape
            print(f"{cfg['name']}: {bname}/{form}: {str(e).splitlines()[0]}", file=sys.stderr)
        torch.cuda.empty_cache()
    return out


def rda_times(cfg, q, k, v, do, reps):
    """The package's forward and forward+backward (and the latter with
    deterministic=True), CUDA events, on the same inputs: {name: ms}."""
    import rda
    seg, dil = [w for w, _ in cfg["patterns"]], [r for _, r in cfg["patterns"]]
    qq, kk, vv = (x.detach().requires_grad_(True) for x in (q, k, v))

    def call(det):
        if cfg["mode"] == "dense":
            return rda.attention(qq, kk, vv, is_causal=cfg["causal"], deterministic=det)
        return rda.dilated_attention(qq, kk, vv, seg, dil, mode=cfg["mode"], is_causal=cfg["causal"],
                                     deterministic=det)

    def fwd():
        with torch.no_grad():
            call(False)

    def step(det):
        (call(det).float() * do).sum().backward()
        qq.grad = kk.grad = vv.grad = None

    out = dict(forward_ms=time_torch(fwd, reps, cuda=True), fwd_bwd_ms=time_torch(lambda: step(False), reps, cuda=True))
    try:
        out["fwd_bwd_deterministic_ms"] = time_torch(lambda: step(True), reps, cuda=True)
    except ValueError as e:  # a shape the deterministic mode does not take
        print(f"{cfg['name']}: deterministic: {e}", file=sys.stderr)
    out["backward_ms"] = out["fwd_bwd_ms"] - out["forward_ms"]
    return out


def tool_forward_ms(tool, cfg, reps, tmp):
    """`rda bench`'s forward time of one row with the tool at path `tool`."""
    md, js = os.path.join(tmp, "f.md"), os.path.join(tmp, "f.json")
    variant = "StandardRingAttention" if cfg["mode"] == "dense" else "ImprovedDilatedAttention"
    cmd = [tool, "bench", "--backend", "cuda", "--dtype", "fp16", "--seq-lens", str(cfg["N"]), "--heads", "8",
           "--head-dim", str(cfg["D"]), "--variants", variant, "--ring-sizes", "1", "--reps", str(reps), "--quiet",
           "--out-md", md, "--out-json", js, "--full-ref-limit", "1e10", "--sample-rows", "16"] + pattern_args(cfg)
    if cfg["causal"]:
        cmd.append("--causal")
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        print(f"{cfg['name']}: {tool} bench failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.load(open(js))["rows"][0].get("time_ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rda", default=os.path.join(os.path.dirname(__file__), "..", "build-gpu", "rda"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--configs", default="", help="comma-separated name prefixes (default: all)")
    ap.add_argument("--sample-rows", type=int, default=1024,
                    help="rows per (batch, head) of the sampled gradient check above N = 8192 (SPEC.md: 1024 for "
                         "a correctness figure; fewer to time only)")
    ap.add_argument("--before", default=None, help="an older build's rda tool: its forward timed next to this one's")
    args = ap.parse_args()
    B, H = 1, 8
    rows = []
    configs = [c for c in CONFIGS if not args.configs or any(c["name"].startswith(p) for p in args.configs.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in configs:
            N, D = cfg["N"], cfg["D"]
            gen = torch.Generator(device="cuda").manual_seed(N)
            q, k, v, do = (torch.rand(B, N, H, D, generator=gen, device="cuda", dtype=torch.float16) * 2 - 1
                           for _ in range(4))
            t0 = time.time()
            tt = torch_times(cfg, q, k, v, do, args.reps)
            pk = rda_times(cfg, q, k, v, do, args.reps)
            t1 = time.time()
            del q, k, v, do
            torch.cuda.empty_cache()
            md, js = os.path.join(tmp, "r.md"), os.path.join(tmp, "r.json")
            variant = "StandardRingAttention" if cfg["mode"] == "dense" else "ImprovedDilatedAttention"
            cmd = [args.rda, "bench", "--backend", "cuda", "--dtype", "fp16", "--seq-lens", str(N), "--heads", str(H),
                   "--head-dim", str(D), "--variants", variant, "--ring-sizes", "1", "--reps", str(args.reps),
                   "--backward", "--quiet", "--out-md", md, "--out-json", js] + pattern_args(cfg)
            if N > 8192:  # the check on 1024 sampled rows per (batch, head), as SPEC.md allows
                cmd += ["--full-ref-limit", "1e10", "--sample-rows", str(args.sample_rows)]
            if cfg["causal"]:
                cmd.append("--causal")
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            ours = json.load(open(js))["rows"][0] if r.returncode == 0 else {}
            print(f"{cfg['name']}: PyTorch {t1 - t0:.0f} s, rda bench {time.time() - t1:.0f} s; rda backward "
                  f"{ours.get('backward_ms')} fwd+bwd {ours.get('fwd_bwd_ms')} ms, grads {ours.get('grad_correctness')}; "
                  + ", ".join(f"{b}/{f} {t[0]:.3f}/{t[1]:.3f}" for (b, f), t in tt.items()), file=sys.stderr, flush=True)
            if r.returncode:
                print(f"{cfg['name']}: rda bench failed: {r.stderr.strip()[-300:]}", file=sys.stderr)
            fwd_tools = {}
            if args.before:
                fwd_tools = dict(before=tool_forward_ms(args.before, cfg, args.reps, tmp),
                                 this=tool_forward_ms(args.rda, cfg, args.reps, tmp))
            best = min(tt, key=lambda key: tt[key][1]) if tt else None
            rows.append(dict(name=cfg["name"], N=N, D=D, causal=cfg["causal"],
                             torch={f"{b}/{f}": dict(forward_ms=t[0], fwd_bwd_ms=t[1], backward_ms=t[1] - t[0])
                                    for (b, f), t in tt.items()},
                             torch_best="/".join(best) if best else None,
                             rda_forward_ms=ours.get("time_ms"), rda_backward_ms=ours.get("backward_ms"),
                             rda_fwd_bwd_ms=ours.get("fwd_bwd_ms"), rda_backward_tflops=ours.get("backward_tflops"),
                             rda_correct=ours.get("correctness"), rda_grad_correct=ours.get("grad_correctness"),
                             package=pk, tool_forward_ms=fwd_tools))
    dev = torch.cuda.get_device_name()
    print(f"GPU: {dev}; torch {torch.__version__}; fp16, B={B} H={H}; median of {args.reps}; CUDA events, both "
          "sides through PyTorch autograd on its current stream (rda: the package)")
    print("| work | rda fwd / bwd / fwd+bwd (ms) | deterministic fwd+bwd (ms) | PyTorch backward cuDNN / flash (ms) "
          "| PyTorch fwd / fwd+bwd best (ms) | forward ratio | backward ratio | fwd+bwd ratio | rda grads |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    nan = float("nan")
    for r in rows:
        t, pk = r["torch"], r["package"]
        bw = {b: min((v["backward_ms"] for k, v in t.items() if k.startswith(b)), default=nan) for b in BACKENDS}
        fw_best = min((v["forward_ms"] for v in t.values()), default=nan)
        best_fb = t[r["torch_best"]]["fwd_bwd_ms"] if r["torch_best"] else nan
        best_b = min(bw.values())
        g = {1: "pass", 0: "FAIL"}.get(r["rda_grad_correct"], "n/a")
        det = pk.get("fwd_bwd_deterministic_ms", nan)
        print(f"| {r['name']} | {pk['forward_ms']:.3f} / {pk['backward_ms']:.3f} / {pk['fwd_bwd_ms']:.3f} | {det:.3f} | "
              f"{bw['cudnn']:.3f} / {bw['flash']:.3f} | {fw_best:.3f} / {best_fb:.3f} ({r['torch_best']}) | "
              f"{fw_best / pk['forward_ms']:.3f}x | {best_b / pk['backward_ms']:.3f}x | {best_fb / pk['fwd_bwd_ms']:.3f}x "
              f"| {g} |")
    if args.before:
        print("\nForward before/after (`rda bench`, host wall time + synchronize, the same run):")
        print(f"| work | {args.before} (ms) | {args.rda} (ms) | after / before |")
        print("|---|---:|---:|---:|")
        for r in rows:
            b, a = r["tool_forward_ms"].get("before"), r["tool_forward_ms"].get("this")
            ratio = f"{a / b:.3f}" if a and b else "n/a"
            print(f"| {r['name']} | {b} | {a} | {ratio} |")
    out = os.path.join(os.path.dirname(__file__), "results", "gpu_backward.json")
    with open(out, "w") as f:
        json.dump(dict(gpu=dev, torch=torch.__version__, reps=args.reps, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
