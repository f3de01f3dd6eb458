#!/usr/bin/env python3
"""The CPU fast path at every instruction-set level this machine runs,
against PyTorch and numpy at the same level, measured in one run.

For each level `rda version` lists as runnable here (avx512, avx2, sse2 on
x86-64) a worker process is started with that level forced on every side:
  rda      RDA_CPU_ISA=<level>
  numpy    OPENBLAS_CORETYPE=SkylakeX / Haswell / Prescott (OpenBLAS's
           AVX-512, AVX2 and SSE3 kernels; threadpoolctl reports the kernel)
  PyTorch  ATEN_CPU_CAPABILITY=avx512 / avx2 / default and
           MKL_ENABLE_INSTRUCTIONS=AVX512 / AVX2 / SSE4_2
and once with nothing forced (each library's own choice). Each worker times,
on all cores, fp32:
  - the matrix ceiling: a 2048^3 product in numpy and in PyTorch (median of
    5 after 5 warm-up products);
  - the seed's dense row (B=1, N=4096, H=8, D=64) and its groups row
    (segments 1024/2048, dilations 1/2) through `rda bench` (median of
    --reps, checked against the fp64 reference on sampled rows) and through
    PyTorch: scaled_dot_product_attention, per segment for groups (the
    gather of bench/pytorch_baseline.py).
Prints the CPU model, date, command and one Markdown table; writes the raw
figures to bench/results/cpu_isa.json.

    pip install torch numpy threadpoolctl
    python3 bench/cpu_isa.py [--rda build/rda] [--reps 5]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FORCE = {  # level: (OPENBLAS_CORETYPE, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS)
    "avx512": ("SkylakeX", "avx512", "AVX512"),
    "avx2": ("Haswell", "avx2", "AVX2"),
    "sse2": ("Prescott", "default", "SSE4_2"),
    "neon": (None, "default", None),
}
CONFIGS = [
    dict(name="dense N=4096", mode="dense", N=4096, patterns=[]),
    dict(name="groups N=4096", mode="groups", N=4096, patterns=[(1024, 1), (2048, 2)]),
]


def median_time(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def worker(args):
    import numpy as np
    import torch
    sys.path.insert(0, HERE)
    from pytorch_baseline import torch_forward
    out = dict(level=args.worker)
    try:
        from threadpoolctl import threadpool_info
        out["numpy_blas"] = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
                             for i in threadpool_info() if i.get("user_api") == "blas"]
    except ImportError:
        out["numpy_blas"] = ["(threadpoolctl not installed)"]
    out["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    out["threads"] = torch.get_num_threads()
    n = 2048
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    out["numpy_gflops"] = 2 * n ** 3 / median_time(lambda: a @ b, 5, 5) / 1e9
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["torch_gflops"] = 2 * n ** 3 / median_time(lambda: ta @ tb, 5, 5) / 1e9
    env = dict(os.environ)
    rows = []
    for cfg in CONFIGS:
        torch.manual_seed(0)
        q, k, v = (torch.rand(1, cfg["N"], 8, 64) * 2 - 1 for _ in range(3))
        t_torch = 1e3 * median_time(lambda: torch_forward(q, k, v, cfg["mode"], cfg["patterns"], False),
                                    args.reps, 1)
        js = os.path.join(args.tmp, f"{args.worker}.json")
        variant = "StandardRingAttention" if cfg["mode"] == "dense" else "ImprovedDilatedAttention"
        cmd = [args.rda, "bench", "--seq-lens", str(cfg["N"]), "--variants", variant, "--reps", str(args.reps),
               "--full-ref-limit", "0", "--sample-rows", "64", "--quiet", "--out-md", js + ".md",
               "--out-json", js]
        if cfg["mode"] != "dense":
            cmd += ["--mode", cfg["mode"], "--segments", ",".join(str(w) for w, _ in cfg["patterns"]),
                    "--dilations", ",".join(str(r) for _, r in cfg["patterns"])]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        r = json.load(open(js))["rows"][0]
        rows.append(dict(config=cfg["name"], rda_ms=r["time_ms"], rda_gflops=1e3 * r["tflops"],
                         rda_correct=r["correctness"], torch_ms=t_torch))
    out["rows"] = rows
    json.dump(out, sys.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rda", default=os.path.join(HERE, "..", "build", "rda"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="/tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.rda = os.path.abspath(args.rda)
    if args.worker:
        return worker(args)
    ver = subprocess.run([args.rda, "version"], check=True, capture_output=True, text=True).stdout
    levels = [l for l in ver.split("this CPU runs:")[1].split()]
    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = []
    for level in [None] + levels:
        env = dict(os.environ)
        for var in ("RDA_CPU_ISA", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "ATEN_CPU_CAPABILITY",
                    "MKL_ENABLE_INSTRUCTIONS"):
            env.pop(var, None)
        if level:
            blas, aten, mkl = FORCE[level]
            env["RDA_CPU_ISA"] = level
            for var, val in (("OPENBLAS_CORETYPE", blas), ("ATEN_CPU_CAPABILITY", aten),
                             ("MKL_ENABLE_INSTRUCTIONS", mkl)):
                if val:
                    env[var] = val
        p = subprocess.run([sys.executable, __file__, "--worker", level or "default", "--rda", args.rda,
                            "--reps", str(args.reps)], check=True, capture_output=True, text=True, env=env)
        r = json.loads(p.stdout)
        print(f"{r['level']}: numpy {r['numpy_gflops']:.0f} GFLOP/s ({'; '.join(r['numpy_blas'])}), "
              f"torch {r['torch_gflops']:.0f} GFLOP/s (ATen {r['torch_capability']})", file=sys.stderr)
        results.append(r)
    import torch
    print(f"CPU: {cpu}; {results[0]['threads']} threads; {datetime.date.today()}; "
          f"torch {torch.__version__}; command: python3 bench/cpu_isa.py --reps {args.reps}")
    print("fp32, B=1, H=8, D=64, all cores. Matrix ceilings: numpy's and PyTorch's 2048^3 product in the "
          "same worker (the same level forced, where the library honours it). rda correct: fraction of "
          "sampled rows within SPEC.md's tolerance of the fp64 reference.\n")
    print("| level | matmul GFLOP/s numpy / PyTorch | work | rda ms | rda GFLOP/s | rda / numpy | "
          "rda / PyTorch matmul | PyTorch SDPA ms | rda speed-up | rda correct |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        name = r["level"] if r["level"] != "default" else f"none forced ({r['torch_capability']})"
        for row in r["rows"]:
            print(f"| {name} | {r['numpy_gflops']:.0f} / {r['torch_gflops']:.0f} | {row['config']} | "
                  f"{row['rda_ms']:.1f} | {row['rda_gflops']:.0f} | {row['rda_gflops'] / r['numpy_gflops']:.2f}x | "
                  f"{row['rda_gflops'] / r['torch_gflops']:.2f}x | {row['torch_ms']:.1f} | "
                  f"{row['torch_ms'] / row['rda_ms']:.2f}x | {row['rda_correct']:.3f} |")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    json.dump(dict(cpu=cpu, date=str(datetime.date.today()), levels=results),
              open(os.path.join(HERE, "results", "cpu_isa.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
