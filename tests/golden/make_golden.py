#!/usr/bin/env python3
"""Golden cases for tests/test_golden.c, computed from SPEC.md with numpy
alone (no code shared with the C library).

    pip install numpy && python3 tests/golden/make_golden.py

writes tests/golden/<case>_{q,k,v,o,lse}.npy, the backward's
<case>_{do,dq,dk,dv}.npy and tests/golden/cases.txt, one line per case:
name mode causal scale B N H D G w1 r1 w2 r2 ...
(mode: 0 dense, 1 groups, 2 longnet; scale 0 means 1/sqrt(D)).
q, k, v, do are float32; o and lse are float64 ([B, N, H, D] and [B, H, N]);
dq, dk, dv are float64, the gradients of sum(do * O) computed per pattern
block from o and lse rounded to float32 (what the library's backward reads),
and checked here against central differences of the forward.
"""
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = [
    # name, mode, causal, scale, B, N, H, D, patterns
    ("dense", 0, 0, 0.0, 2, 37, 2, 8, [(37, 1)]),
    ("dense_causal", 0, 1, 0.0, 1, 37, 3, 8, [(37, 1)]),
    ("groups_tail", 1, 0, 0.0, 1, 50, 5, 8, [(16, 1), (20, 2)]),
    ("groups_causal_long", 1, 1, 0.3, 2, 50, 4, 6, [(8, 2), (12, 3), (64, 4)]),
    ("longnet", 2, 0, 0.0, 1, 50, 3, 8, [(16, 1), (20, 2)]),
    ("longnet_causal", 2, 1, 0.0, 1, 50, 5, 8, [(8, 1), (16, 2), (32, 4)]),
    ("longnet_rw", 2, 0, 0.0, 1, 23, 4, 4, [(4, 4), (7, 3), (30, 1)]),
]


def head_patterns(mode, H, patterns):
    """[(pattern index, offset)] for every head, per SPEC.md."""
    G = len(patterns)
    if mode == 2 or mode == 0:
        return [[(i, h % patterns[i][1]) for i in range(G)] for h in range(H)]
    out, h = [], 0
    for g in range(G):
        size = H // G + (1 if g < H % G else 0)
        for _ in range(size):
            out.append([(g, g % patterns[g][1])])
            h += 1
    return out


def forward(q, k, v, mode, causal, scale, patterns):
    B, N, H, D = q.shape
    if mode == 0:
        patterns = [(N, 1)]
    G = len(patterns)
    scale = scale or 1.0 / np.sqrt(D)
    o = np.zeros((B, N, H, D))
    lse = np.full((B, H, N), -np.inf)
    hp = head_patterns(mode, H, patterns)
    for b in range(B):
        for h in range(H):
            outs = np.zeros((G, N, D))
            lses = np.full((G, N), -np.inf)
            for i, off in hp[h]:
                w, r = patterns[i]
                for a in range(0, N, w):
                    pos = np.arange(a + off, min(a + w, N), r)
                    if pos.size == 0:
                        continue
                    s = scale * q[b, pos, h].astype(np.float64) @ k[b, pos, h].astype(np.float64).T
                    if causal:
                        s = np.where(pos[None, :] > pos[:, None], -np.inf, s)
                    m = s.max(axis=1, keepdims=True)
                    p = np.exp(s - m)
                    l = p.sum(axis=1, keepdims=True)
                    outs[i, pos] = (p @ v[b, pos, h].astype(np.float64)) / l
                    lses[i, pos] = (m + np.log(l))[:, 0]
            if mode == 1:
                (i, _), = hp[h]
                o[b, :, h] = outs[i] / G
                lse[b, h] = lses[i]
            else:
                L = np.logaddexp.reduce(lses, axis=0)
                wts = np.where(np.isinf(lses), 0.0, np.exp(lses - np.where(np.isinf(L), 0, L)[None]))
                o[b, :, h] = (wts[:, :, None] * outs).sum(axis=0)
                lse[b, h] = L
    return o, lse


def backward(q, k, v, o, lse, do, mode, causal, scale, patterns):
    """SPEC.md's backward: per pattern block, P = exp(s - L*) with L* the
    row's lse as given, dout = do (/ G in groups mode), Delta = sum(do * o)."""
    B, N, H, D = q.shape
    if mode == 0:
        patterns = [(N, 1)]
    G = len(patterns)
    scale = scale or 1.0 / np.sqrt(D)
    q, k, v, o, do = (x.astype(np.float64) for x in (q, k, v, o, do))
    lse = lse.astype(np.float64)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    hp = head_patterns(mode, H, patterns)
    fac = 1.0 / G if mode == 1 else 1.0
    for b in range(B):
        for h in range(H):
            delta = (do[b, :, h] * o[b, :, h]).sum(axis=1)
            for i, off in hp[h]:
                w, r = patterns[i]
                for a in range(0, N, w):
                    pos = np.arange(a + off, min(a + w, N), r)
                    if pos.size == 0:
                        continue
                    s = scale * q[b, pos, h] @ k[b, pos, h].T
                    p = np.exp(s - lse[b, h, pos][:, None])
                    if causal:
                        p = np.where(pos[None, :] > pos[:, None], 0.0, p)
                    dout = fac * do[b, pos, h]
                    dv[b, pos, h] += p.T @ dout
                    ds = p * (dout @ v[b, pos, h].T - delta[pos][:, None])
                    dq[b, pos, h] += scale * ds @ k[b, pos, h]
                    dk[b, pos, h] += scale * ds.T @ q[b, pos, h]
    return dq, dk, dv


def check_by_differences(q, k, v, do, mode, causal, scale, patterns, grads):
    """Central differences of sum(do * O) at a few elements of q, k, v."""
    rng = np.random.default_rng(7)
    x = [a.astype(np.float64) for a in (q, k, v)]
    h = 1e-6
    for t in range(3):
        for _ in range(6):
            idx = tuple(rng.integers(0, n) for n in x[t].shape)
            keep = x[t][idx]
            x[t][idx] = keep + h
            lp = (do * forward(*x, mode, causal, scale, patterns)[0]).sum()
            x[t][idx] = keep - h
            lm = (do * forward(*x, mode, causal, scale, patterns)[0]).sum()
            x[t][idx] = keep
            fd = (lp - lm) / (2 * h)
            assert abs(fd - grads[t][idx]) <= 1e-5 * (1 + abs(fd)), (t, idx, fd, grads[t][idx])


def main():
    rng = np.random.default_rng(20250627)
    lines = []
    for name, mode, causal, scale, B, N, H, D, patterns in CASES:
        q, k, v = (rng.uniform(-1, 1, (B, N, H, D)).astype(np.float32) for _ in range(3))
        o, lse = forward(q, k, v, mode, causal, scale, patterns)
        do = rng.uniform(-1, 1, q.shape).astype(np.float32)
        grads = backward(q, k, v, o.astype(np.float32), lse.astype(np.float32), do, mode, causal, scale, patterns)
        check_by_differences(q, k, v, do, mode, causal, scale, patterns,
                             backward(q, k, v, o, lse, do, mode, causal, scale, patterns))
        for tag, arr in (("q", q), ("k", k), ("v", v), ("o", o), ("lse", lse), ("do", do),
                         ("dq", grads[0]), ("dk", grads[1]), ("dv", grads[2])):
            np.save(os.path.join(HERE, f"{name}_{tag}.npy"), arr)
        pats = " ".join(f"{w} {r}" for w, r in patterns)
        lines.append(f"{name} {mode} {causal} {scale!r} {B} {N} {H} {D} {len(patterns)} {pats}")
    with open(os.path.join(HERE, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} cases to {HERE}")


if __name__ == "__main__":
    main()
