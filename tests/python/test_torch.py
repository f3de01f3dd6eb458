"""The PyTorch package (python/rda) on CPU tensors: forward and gradients of
every mode against a plain PyTorch implementation of SPEC.md (explicit masks,
fp64, autograd), the modules against the seed project's per-segment
formula, torch.library.opcheck, gradcheck in fp64 (the reference backend),
torch.compile(fullgraph=True), and bad arguments."""
import math

import pytest
import torch
import torch.nn.functional as F

import rda

torch.manual_seed(0)


# ---------------------------------------------------------------- SPEC.md in plain PyTorch

def head_groups(H, G):
    out, first = [], 0
    for g in range(G):
        size = H // G + (1 if g < H % G else 0)
        out.append(range(first, first + size))
        first += size
    return out


def pattern_attention(q, k, v, w, r, off, causal, scale):
    """One pattern, one head: q, k, v [B, N, D]; (out [B, N, D], lse [B, N])."""
    N = q.shape[1]
    pos = torch.arange(N)
    seg = pos // w
    sel = (pos - seg * w) % r == off
    mask = sel[:, None] & sel[None, :] & (seg[:, None] == seg[None, :])
    if causal:
        mask &= pos[None, :] <= pos[:, None]
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - safe.unsqueeze(-1))
    return p @ v, lse


def spec_attention(q, k, v, mode, patterns, causal, scale=None):
    """O and L of SPEC.md for [B, N, H, D] inputs (K/V heads shared by groups of query heads)."""
    B, N, H, D = q.shape
    Hkv = k.shape[2]
    scale = scale if scale is not None else 1.0 / math.sqrt(D)
    if mode == "dense":
        mode, patterns = "longnet", [(N, 1)]
    outs, lses = [], []
    groups = head_groups(H, len(patterns))
    for h in range(H):
        kh = h // (H // Hkv)
        qh, kk, vv = q[:, :, h], k[:, :, kh], v[:, :, kh]
        if mode == "groups":
            g = next(i for i, hs in enumerate(groups) if h in hs)
            w, r = patterns[g]
            o, lse = pattern_attention(qh, kk, vv, w, r, g % r, causal, scale)
            outs.append(o / len(patterns))
            lses.append(lse)
        else:
            parts = [pattern_attention(qh, kk, vv, w, r, h % r, causal, scale) for w, r in patterns]
            L = torch.logsumexp(torch.stack([l for _, l in parts]), dim=0)
            Ls = torch.where(torch.isinf(L), torch.zeros_like(L), L)
            o = sum(torch.exp(l - Ls).unsqueeze(-1) * oi for oi, l in parts)
            outs.append(o)
            lses.append(L)
    return torch.stack(outs, dim=2), torch.stack(lses, dim=1)


def rel_l2(x, ref):
    x, ref = x.double(), ref.double()
    return (torch.linalg.norm(x - ref) / torch.linalg.norm(ref).clamp_min(1e-30)).item()


def call(mode, q, k, v, patterns, causal, **kw):
    if mode == "dense":
        return rda.attention(q, k, v, is_causal=causal, **kw)
    return rda.dilated_attention(q, k, v, [w for w, _ in patterns], [r for _, r in patterns], mode=mode,
                                 is_causal=causal, **kw)


MODES = [("dense", []), ("groups", [(16, 1), (32, 2), (64, 4)]), ("longnet", [(16, 1), (32, 2), (64, 4)]),
         ("longnet", [(32, 1), (32, 2)]), ("groups", [(500, 1), (1000, 3)])]
TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
GRAD_TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("mode,patterns", MODES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_forward_and_gradients(mode, patterns, causal, dtype):
    B, N, H, Hkv, D = 2, 70, 6, 3, 16
    x = [torch.rand(B, N, h, D, dtype=torch.float64) * 2 - 1 for h in (H, Hkv, Hkv)]
    x = [t.to(dtype) for t in x]
    do = (torch.rand(B, N, H, D, dtype=torch.float64) * 2 - 1).to(dtype)
    q, k, v = (t.clone().requires_grad_(True) for t in x)
    o, lse = call(mode, q, k, v, patterns, causal, return_lse=True)
    (o.float() * do.float()).sum().backward()
    # the reference on the same rounded values, fp64
    r = [t.double().requires_grad_(True) for t in x]
    ro, rl = spec_attention(*r, mode, patterns, causal)
    (ro * do.double()).sum().backward()
    assert o.dtype == dtype and o.shape == (B, N, H, D) and lse.shape == (B, H, N)
    assert rel_l2(o, ro) <= TOL[dtype]
    finite = torch.isfinite(rl)
    assert torch.equal(torch.isinf(lse), torch.isinf(rl))
    assert (lse[finite].double() - rl[finite]).abs().max().item() <= (1e-5 if dtype == torch.float32 else 2e-3)
    for got, want in ((q.grad, r[0].grad), (k.grad, r[1].grad), (v.grad, r[2].grad)):
        assert torch.isfinite(got).all()
        assert rel_l2(got, want) <= GRAD_TOL[dtype], (rel_l2(got, want), dtype)


def test_strided_inputs():
    """Views that are not contiguous (a transposed [B, H, N, D] buffer, a
    broadcast K/V head) give what their contiguous copies give."""
    B, N, H, D = 1, 50, 4, 8
    qt = torch.randn(B, H, N, D)
    q = qt.transpose(1, 2)
    k = torch.randn(B, N, 1, D).expand(B, N, H, D)
    v = torch.randn(B, N, H, D)
    a = rda.dilated_attention(q, k, v, [16, 32], [1, 2], mode="longnet")
    b = rda.dilated_attention(q.contiguous(), k.contiguous(), v, [16, 32], [1, 2], mode="longnet")
    assert torch.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- the modules against the seed's formula

def seed_dilated(q, k, v, segments, dilations, causal):
    """fkodom's DilatedAttention formula (per group: segments, offset rows,
    attention per segment, scatter back), divided by the number of groups;
    short tail segments as SPEC.md extends it."""
    B, N, H, D = q.shape
    G = len(segments)
    out = torch.zeros_like(q)
    for g, hs in enumerate(head_groups(H, G)):
        if not hs:
            continue
        w, r = segments[g], dilations[g]
        h0, h1 = hs.start, hs.stop
        for a in range(0, N, w):
            e = min(a + w, N)
            rows = torch.arange(a + g % r, e, r)
            if len(rows) == 0:
                continue
            qs, ks, vs = (t[:, rows, h0:h1].transpose(1, 2) for t in (q, k, v))
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal)
            out[:, rows, h0:h1] = o.transpose(1, 2) / G
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_attention_module(causal):
    m = rda.DilatedAttention(segment_lengths=[32, 64], dilation_rates=[1, 2])
    q, k, v = (torch.randn(2, 128, 4, 16) for _ in range(3))
    assert rel_l2(m(q, k, v, is_causal=causal), seed_dilated(q, k, v, [32, 64], [1, 2], causal)) <= 1e-5
    # the seed's keyword
    assert torch.equal(m(q, k, v, causal=causal), m(q, k, v, is_causal=causal))


def test_multihead_dilated_attention():
    torch.manual_seed(1)
    m = rda.MultiheadDilatedAttention(64, 8, dilation_rates=[1, 2], segment_lengths=[32, 64])
    x = torch.randn(2, 128, 64, requires_grad=True)
    y, w = m(x, x, x, is_causal=True)
    assert w is None and y.shape == (2, 128, 64)
    # the same projections around the seed's formula
    q, k, v = (p(x).unflatten(-1, (8, -1)) for p in (m.q_proj, m.k_proj, m.v_proj))
    ref = m.out_proj(m.norm(seed_dilated(q, k, v, [32, 64], [1, 2], True).flatten(-2)))
    assert rel_l2(y, ref) <= 1e-5
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_modules_refuse_what_they_do_not_do():
    with pytest.raises(ValueError, match="dropout"):
        rda.DilatedAttention([32], [1], attention_dropout=0.1)
    with pytest.raises(ValueError, match="dropout"):
        rda.MultiheadDilatedAttention(64, 8, [1], [32], dropout=0.1)
    with pytest.raises(ValueError, match="divisible"):
        rda.MultiheadDilatedAttention(60, 8, [1], [32])
    with pytest.raises(ValueError, match="equal"):
        rda.MultiheadDilatedAttention(64, 8, [1, 2], [32])


# ---------------------------------------------------------------- operator checks

def test_opcheck():
    q, k, v = (torch.randn(1, 40, 4, 8) for _ in range(3))
    torch.library.opcheck(torch.ops.rda.attention_forward.default, (q, k, v, 2, True, 0.0, [16, 32], [1, 2], False))
    o, lse = torch.ops.rda.attention_forward(q, k, v, 2, True, 0.0, [16, 32], [1, 2], False)
    do = torch.randn_like(o)
    torch.library.opcheck(torch.ops.rda.attention_backward.default,
                          (do, q, k, v, o, lse, 2, True, 0.0, [16, 32], [1, 2], False))


def _op_path(q, k, v, mode, causal, seg, dil):
    """The operator itself (what torch.compile and tracing see), not the eager path."""
    o, _ = torch.ops.rda.attention_forward(q, k, v, mode, causal, 0.0, seg, dil, False)
    return o


@pytest.mark.parametrize("mode,seg,dil", [(0, [], []), (1, [16, 32], [1, 2]), (2, [16, 32], [1, 2])])
def test_eager_path_equals_operator(mode, seg, dil, monkeypatch):
    """Plain eager calls skip the operator's dispatch; they must give the
    operator's outputs and gradients bit for bit, and the operator must still
    be what every other caller sees."""
    from rda import ops
    x = [torch.randn(2, 48, 4, 8) for _ in range(3)]
    do = torch.randn(2, 48, 4, 8)
    a = [t.clone().requires_grad_() for t in x]
    b = [t.clone().requires_grad_() for t in x]
    name = {0: "dense", 1: "groups", 2: "longnet"}[mode]
    oa = call(name, *a, list(zip(seg, dil)), True)
    (oa * do).sum().backward()
    ob = _op_path(*b, mode, True, seg, dil)
    (ob * do).sum().backward()
    assert type(oa.grad_fn).__name__ != type(ob.grad_fn).__name__  # the two paths really differ
    assert torch.equal(oa, ob)
    for s, t in zip(a, b):
        assert torch.equal(s.grad, t.grad)
    # no autograd: the implementation itself, without the operator
    calls = []
    monkeypatch.setattr(ops, "_forward", lambda *args: calls.append(1))
    with torch.no_grad():
        assert torch.equal(call(name, *x, list(zip(seg, dil)), True), ob)
    assert not calls
    # a dispatch mode (fake tensors) goes through the operator
    monkeypatch.undo()
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode_:
        f = [mode_.from_tensor(t) for t in x]
        of = call(name, *f, list(zip(seg, dil)), True)
        assert of.shape == ob.shape and type(of).__name__ == "FakeTensor"


def test_native_calls_equal_ctypes(monkeypatch):
    """The C module that describes the tensors (python/native, built by pip
    install) and the ctypes path make the same calls: bit-identical outputs
    and gradients, strided and GQA inputs included. RDA_EXPECT_NATIVE=1 (the
    test command's pip-installed package) requires the module to be there."""
    import os
    from rda import _lib, ops
    if os.environ.get("RDA_EXPECT_NATIVE") == "1":
        assert _lib._native is not None, "rda._native was not built by pip install"
    if _lib._native is None:
        pytest.skip("rda._native not built (the package from PYTHONPATH)")
    q = torch.randn(2, 40, 4, 16)[:, ::2]  # strided rows
    k, v = torch.randn(2, 20, 2, 16), torch.randn(2, 20, 2, 16)
    do = torch.randn(2, 20, 4, 16)
    out = []
    for native in (_lib._native, None):
        monkeypatch.setattr(ops, "_native", native)
        a = [t.clone().requires_grad_() for t in (q, k, v)]
        o = rda.dilated_attention(*a, [8, 16], [1, 2], mode="longnet", is_causal=True)
        (o * do).sum().backward()
        out.append([o] + [t.grad for t in a])
    for x, y in zip(*out):
        assert torch.equal(x, y)


@pytest.mark.parametrize("mode,patterns", MODES)
def test_forward_without_lse(mode, patterns):
    """Without autograd and without return_lse the library is asked for no
    LSE (none is written); O is the same, bit for bit."""
    q, k, v = (torch.randn(2, 24, 4, 8) for _ in range(3))
    with torch.no_grad():
        o = call(mode, q, k, v, patterns, True)
        o2, lse = call(mode, q, k, v, patterns, True, return_lse=True)
    assert torch.equal(o, o2) and lse.shape == (2, 4, 24)


def test_native_refuses_bad_arguments():
    """The C module's own checks: a clear exception, never a call."""
    from rda import _lib, ops
    if _lib._native is None:
        pytest.skip("rda._native not built (the package from PYTHONPATH)")
    n = _lib._native
    t = torch.randn(1, 4, 1, 8)
    ctx = ops._context_for(t)
    cfg = ops._config(_lib.DENSE, False, 0.0, [], [])
    lse = torch.empty(1, 1, 4)
    with pytest.raises(ValueError, match="null context"):
        n.forward(0, cfg.address, t, t, t, t.clone(), lse)
    with pytest.raises(TypeError, match="a context, a config and 5 tensors"):
        n.forward(ctx, cfg.address, t, t, t)
    with pytest.raises(ValueError, match="at most 4 dimensions"):
        n.forward(ctx, cfg.address, t[None], t, t, t.clone(), lse)
    with pytest.raises(TypeError, match="unsupported tensor dtype"):
        n.forward(ctx, cfg.address, t.to(torch.int32), t, t, t.clone(), lse)
    with pytest.raises(AttributeError):
        n.forward(ctx, cfg.address, 3, t, t, t.clone(), lse)
    # the library's own checks still answer through it: a bad shape is a status
    o = t.clone()
    st = n.forward(ctx, cfg.address, t, torch.randn(1, 4, 1, 4), t, o, lse)
    assert st != 0 and "shape" in _lib.lib.rda_context_last_error(ctx).decode().lower()
    assert torch.equal(o, t)  # nothing written
    # LSE is optional; the rest is not
    assert n.forward(ctx, cfg.address, t, t, t, o, None) == 0
    with pytest.raises(AttributeError):
        n.forward(ctx, cfg.address, t, t, None, o, lse)


def test_eager_path_not_under_functorch_transforms():
    """Inside vmap or grad (functorch-wrapped tensors, still of type
    torch.Tensor) calls take the operator, never the eager path."""
    from rda import ops
    x = torch.randn(2, 3)
    assert ops._plain(x)
    seen = []
    torch.func.vmap(lambda t: seen.append(ops._plain(t)) or t)(x)
    torch.func.grad(lambda t: seen.append(ops._plain(t)) or t.sum())(x)
    assert seen == [False, False]
    assert ops._plain(x)


def test_eager_backward_ignores_the_lse():
    """The LSE is not differentiable: a loss that also uses it has O's
    gradients alone (no zero gradient is made for it, none is read)."""
    q, k, v = (torch.randn(1, 12, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    w = torch.randn(1, 12, 2, 8, dtype=torch.float64)
    o, lse = rda.attention(q, k, v, return_lse=True)
    assert not lse.requires_grad
    ((o * w).sum() + lse.sum()).backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    (rda.attention(q, k, v) * w).sum().backward()
    for t, g in zip((q, k, v), got):
        assert torch.equal(t.grad, g)


def test_eager_path_refuses_double_backward():
    """Second derivatives are not implemented: asking for one raises, it is
    not silently zero."""
    q, k, v, w = (torch.randn(1, 16, 2, 8, requires_grad=True) for _ in range(4))
    (g,) = torch.autograd.grad((rda.attention(q, k, v) * w).sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


@pytest.mark.parametrize("mode,patterns", [("dense", []), ("groups", [(8, 1), (16, 2)]), ("longnet", [(8, 1), (16, 2)])])
def test_gradcheck_fp64(mode, patterns):
    q, k, v = (torch.randn(1, 20, 2, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda a, b, c: call(mode, a, b, c, patterns, True), (q, k, v))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    def f(q, k, v):
        return rda.dilated_attention(q, k, v, [16, 32], [1, 2], mode="longnet", is_causal=True).sum()

    q, k, v = (torch.randn(1, 64, 4, 8, requires_grad=True) for _ in range(3))
    g = torch.compile(f, fullgraph=True, backend=backend)
    a = g(q, k, v)
    a.backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    b = f(q, k, v)
    b.backward()
    assert torch.allclose(a, b)
    assert all(torch.allclose(x, t.grad) for x, t in zip(grads, (q, k, v)))


# ---------------------------------------------------------------- bad arguments

def test_bad_arguments():
    q = torch.randn(1, 32, 2, 8)
    with pytest.raises(TypeError):
        rda.attention([[1.0]], q, q)
    with pytest.raises(ValueError, match="B, N, H, D"):
        rda.attention(q[0], q[0], q[0])
    with pytest.raises(TypeError, match="dtype"):
        rda.attention(q, q.half(), q)
    with pytest.raises(TypeError, match="dtype"):
        rda.attention(q.int(), q.int(), q.int())
    with pytest.raises(ValueError, match="mode"):
        rda.dilated_attention(q, q, q, [16], [1], mode="sparse")
    with pytest.raises(ValueError, match="len"):
        rda.dilated_attention(q, q, q, [16, 32], [1])
    with pytest.raises(TypeError):
        rda.dilated_attention(q, q, q, [16.5], [1])
    with pytest.raises(ValueError, match="softmax_scale"):
        rda.attention(q, q, q, softmax_scale=-1.0)
    # the library's own checks come back as ValueError with its message
    with pytest.raises(ValueError, match="rda: "):
        rda.dilated_attention(q, q, q, [16], [0])
    with pytest.raises(ValueError, match="rda: "):
        rda.attention(q, torch.randn(1, 31, 2, 8), torch.randn(1, 31, 2, 8))
    with pytest.raises(ValueError, match="rda: "):
        rda.attention(q, torch.randn(1, 32, 3, 8), torch.randn(1, 32, 3, 8))  # 2 query heads over 3
    # the operators themselves, called with tensors of the wrong rank
    o, lse = torch.ops.rda.attention_forward(q, q, q, 0, False, 0.0, [], [], False)
    with pytest.raises(ValueError, match="lse must have 3 dimensions"):
        torch.ops.rda.attention_backward(torch.randn_like(o), q, q, q, o, lse[0], 0, False, 0.0, [], [], False)
    with pytest.raises(ValueError, match="B, N, H, D"):
        torch.ops.rda.attention_forward(q[None], q[None], q[None], 0, False, 0.0, [], [], False)
    with pytest.raises(ValueError, match="at most 4 dimensions"):
        torch.ops.rda.attention_forward(q, q[None], q, 0, False, 0.0, [], [], False)


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("N,world", [(100, 1), (100, 3), (4096, 8), (9, 4)])
def test_ring_partition(layout, N, world):
    """Every position owned by exactly one rank; zig-zag ranks hold chunks r and 2P-1-r."""
    owner = [None] * N
    for rank in range(world):
        for start, count in rda.ring_partition(N, world, layout, rank):
            for p in range(start, start + count):
                assert owner[p] is None
                owner[p] = rank
    assert None not in owner
    with pytest.raises(ValueError, match="layout"):
        rda.ring_partition(N, world, "striped")
    with pytest.raises(ValueError, match="rda: "):
        rda.ring_partition(N, world, layout, world)  # no such rank
    if world > 1:
        with pytest.raises(ValueError, match="rda: "):
            rda.ring_partition(2 * world - 1, world, "zigzag", 0)  # fewer rows than the 2P chunks


def test_deterministic_cpu():
    """deterministic=True: accepted, and on the CPU (no atomics there) the
    gradients equal the default's bit for bit, run after run."""
    g = torch.Generator().manual_seed(11)
    x = [torch.rand(1, 200, h, 16, generator=g) * 2 - 1 for h in (4, 2, 2)]
    do = torch.rand(1, 200, 4, 16, generator=g)
    grads = []
    for det in (False, True, True):
        q, k, v = (t.clone().requires_grad_(True) for t in x)
        o = rda.dilated_attention(q, k, v, [32, 64], [1, 2], mode="longnet", is_causal=True, deterministic=det)
        (o * do).sum().backward()
        grads.append((q.grad, k.grad, v.grad))
    for run in grads[1:]:
        for a, b in zip(grads[0], run):
            assert torch.equal(a, b)
