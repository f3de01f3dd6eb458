"""The PyTorch package on CUDA tensors (skipped without a GPU, or with a
library built without its CUDA backend): forward and gradients against the
plain PyTorch implementation of SPEC.md (fp64 on the CPU), the work on
PyTorch's current stream, a captured CUDA graph, and a short training loop
of a small model with MultiheadDilatedAttention against the same model on a
PyTorch-only attention."""
import pytest
import torch

import rda
from test_torch import GRAD_TOL, MODES, TOL, call, rel_l2, seed_dilated, spec_attention

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and rda.cuda_available()),
                                reason="needs a CUDA device and the library's CUDA backend")


@pytest.mark.parametrize("mode,patterns", MODES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("D", [64, 128, 40])
def test_cuda_forward_and_gradients(mode, patterns, causal, dtype, D):
    B, N, H, Hkv = 1, 300, 4, 2
    x = [(torch.rand(B, N, h, D, dtype=torch.float64) * 2 - 1).to(dtype) for h in (H, Hkv, Hkv)]
    do = (torch.rand(B, N, H, D, dtype=torch.float64) * 2 - 1).to(dtype)
    q, k, v = (t.cuda().requires_grad_(True) for t in x)
    o = call(mode, q, k, v, patterns, causal)
    (o.float() * do.cuda().float()).sum().backward()
    r = [t.double().requires_grad_(True) for t in x]
    ro, _ = spec_attention(*r, mode, patterns, causal)
    (ro * do.double()).sum().backward()
    assert rel_l2(o.cpu(), ro) <= TOL[dtype]
    for got, want in ((q.grad, r[0].grad), (k.grad, r[1].grad), (v.grad, r[2].grad)):
        assert torch.isfinite(got).all()
        assert rel_l2(got.cpu(), want) <= GRAD_TOL[dtype]


def test_cuda_current_stream():
    """Work queued on a side stream is ordered by that stream alone."""
    q, k, v = (torch.randn(1, 8192, 8, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    want = rda.attention(q, k, v, is_causal=True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = rda.attention(q, k, v, is_causal=True)
    torch.cuda.current_stream().wait_stream(s)
    assert torch.equal(got, want)


def test_cuda_graph_capture():
    q, k, v = (torch.randn(1, 4096, 8, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up: the library's workspace and tables for this shape
            rda.dilated_attention(q, k, v, [1024, 2048], [1, 2], mode="longnet", is_causal=True)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = rda.dilated_attention(q, k, v, [1024, 2048], [1, 2], mode="longnet", is_causal=True)
    q.copy_(torch.randn_like(q))
    g.replay()
    torch.cuda.synchronize()
    want = rda.dilated_attention(q, k, v, [1024, 2048], [1, 2], mode="longnet", is_causal=True)
    assert torch.equal(out, want)


class SeedAttention(torch.nn.Module):
    """MultiheadDilatedAttention's attention on the seed's per-segment formula (PyTorch only)."""

    def __init__(self, segments, dilations):
        super().__init__()
        self.segments, self.dilations = segments, dilations

    def forward(self, q, k, v, is_causal=False):
        return seed_dilated(q, k, v, self.segments, self.dilations, is_causal)


def test_cuda_training_loop():
    def model(attention_impl):
        torch.manual_seed(3)
        m = torch.nn.Sequential()
        m.embed = torch.nn.Embedding(64, 128)
        m.attn = rda.MultiheadDilatedAttention(128, 4, dilation_rates=[1, 2], segment_lengths=[128, 256])
        if attention_impl is not None:
            m.attn.attention = attention_impl
        m.head = torch.nn.Linear(128, 64)
        return m.cuda()

    def losses(m):
        torch.manual_seed(4)
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        x = torch.randint(0, 64, (2, 512), device="cuda")
        out = []
        for _ in range(8):
            h = m.embed(x)
            y, _ = m.attn(h, h, h, is_causal=True)
            loss = torch.nn.functional.cross_entropy(m.head(y).flatten(0, 1), x.roll(-1, 1).flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    ours, theirs = losses(model(None)), losses(model(SeedAttention([128, 256], [1, 2])))
    assert ours[-1] < ours[0]
    assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-3 * max(1.0, abs(theirs[0]))


def _nccl_worker(body, rank, world, init, queue):
    """body(rank, world) -> failures, on GPU `rank` of a NCCL process group
    (a run_world target through functools.partial)."""
    import torch.distributed as dist
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=init, rank=rank, world_size=world)
    failures = []
    try:
        failures = body(rank, world)
    except Exception as e:  # noqa: BLE001
        failures.append(f"rank {rank}: {type(e).__name__}: {e}")
    finally:
        queue.put((rank, failures))
        dist.destroy_process_group()


def _on_every_gpu(body):
    import functools
    from test_ring_torch import run_world
    _, results = run_world(functools.partial(_nccl_worker, body), torch.cuda.device_count())
    failures = [f for _, fs in results for f in fs]
    assert not failures, "\n".join(failures)


def _ring_outputs_and_gradients(rank, world):
    failures = []
    g = torch.Generator().manual_seed(7)
    N, layout = 4096, "zigzag"
    q, k, v, do = ((torch.rand(1, N, h, 64, generator=g) * 2 - 1).to(torch.float16).cuda() for h in (8, 8, 8, 8))
    fq, fk, fv = (t.clone().requires_grad_(True) for t in (q, k, v))
    fo = rda.attention(fq, fk, fv, is_causal=True)
    (fo.float() * do.float()).sum().backward()
    parts = rda.ring_partition(N, world, layout, rank)
    rows = lambda x: torch.cat([x[:, s:s + c] for s, c in parts], dim=1)  # noqa: E731
    lq, lk, lv = (rows(t).requires_grad_(True) for t in (q, k, v))
    lo = rda.ring_attention(lq, lk, lv, is_causal=True, layout=layout)
    (lo.float() * rows(do).float()).sum().backward()
    for name, got, want in (("o", lo, rows(fo)), ("dq", lq.grad, rows(fq.grad)), ("dk", lk.grad, rows(fk.grad)),
                            ("dv", lv.grad, rows(fv.grad))):
        err = ((got.float() - want.float()).norm() / want.float().norm()).item()
        if err > 2e-3:
            failures.append(f"rank {rank}: {name} rel_l2 {err:.3g}")
    return failures


def test_cuda_ring_over_nccl():
    """rda.ring_attention on CUDA tensors: the library's NCCL engine from a
    unique id broadcast over the group; a world of one per GPU there is
    (the multi-GPU worlds run on multi-GPU machines)."""
    _on_every_gpu(_ring_outputs_and_gradients)


def _ring_training(rank, world):
    from test_ring_torch import ring_training_losses
    one, ring = ring_training_losses(rank, world, "cuda")
    if not one[-1] < one[0] or max(abs(a - b) for a, b in zip(one, ring)) > 1e-4 * abs(one[0]):
        return [f"rank {rank}: ring losses {ring} against one GPU {one}"]
    return []


def test_cuda_ring_training_loop():
    """A sequence-parallel training loop over NCCL on every GPU there is
    (rda.ring_dilated_attention, segments spanning ranks) gives one GPU's
    losses."""
    _on_every_gpu(_ring_training)


def test_cuda_deterministic():
    """deterministic=True on CUDA: gradients bit-identical over runs (GQA,
    fp16, D = 64); a shape off the tensor-core kernels raises."""
    g = torch.Generator().manual_seed(5)
    x = [(torch.rand(1, 3000, h, 64, generator=g) * 2 - 1).half().cuda() for h in (8, 2, 2)]
    do = torch.rand(1, 3000, 8, 64, generator=g).half().cuda()
    grads = []
    for _ in range(3):
        q, k, v = (t.clone().requires_grad_(True) for t in x)
        o = rda.dilated_attention(q, k, v, [512, 1024], [1, 2], mode="longnet", deterministic=True)
        (o.float() * do.float()).sum().backward()
        grads.append((q.grad, k.grad, v.grad))
    for run in grads[1:]:
        for a, b in zip(grads[0], run):
            assert torch.equal(a, b)
    q = torch.rand(1, 64, 2, 40, device="cuda", requires_grad=True)
    o = rda.attention(q, q.detach(), q.detach(), deterministic=True)
    with pytest.raises(ValueError, match="deterministic"):
        o.sum().backward()
