"""Rings from PyTorch: every rank of a torch.distributed process group
passes its own rows of Q, K and V (the rows `rda.ring_partition(N, world,
layout, rank)` lists, in that order) and gets its rows of the output, with
autograd through the ring (each rank gets the gradients of its own rows of
Q, K and V).

The ring is the library's (`rda_ring_forward` / `rda_ring_backward`), over a
communicator made once per process group and device:
  CUDA tensors  the library's NCCL engine, its communicator made from an
                NCCL unique id that group rank 0 broadcasts over the group;
  CPU tensors   the group's own point-to-point transfers (torch.distributed
                isend/irecv, the gloo backend), through the library's
                callback communicator.
"""
import ctypes
import datetime
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _lib
from .ops import _MODES, _check_inputs, _check_patterns, _config, _context_for, _strided, _view

_LAYOUTS = {"contiguous": 0, "zigzag": 1}


def _bytes(ptr: int, n: int) -> Tensor:
    """n bytes of the library's memory at ptr as a uint8 tensor (no copy)."""
    return torch.frombuffer((ctypes.c_char * n).from_address(ptr), dtype=torch.uint8)


class _GroupTransport:
    """A callback communicator whose transfers are the group's isend/irecv
    (host memory: the CPU backends)."""

    def __init__(self, group, rank: int, size: int):
        self.group, self.works, self.error = group, [], None
        self._start, self._wait = _lib.START_FN(self._on_start), _lib.WAIT_FN(self._on_wait)
        cb = _lib.Callbacks(self._start, self._wait, _lib.VOID_FN(), _lib.VOID_FN(), None)
        h = _lib._comm_t()
        _lib.check(_lib.lib.rda_comm_create_callbacks(ctypes.byref(cb), rank, size, ctypes.byref(h)), None)
        self.handle = h

    def _peer(self, r: int) -> int:
        return dist.get_global_rank(self.group, r) if self.group is not None else r

    def _on_start(self, user, send, send_bytes, to, recv, recv_bytes, frm):
        try:
            ops = []
            if send_bytes:
                ops.append(dist.P2POp(dist.isend, _bytes(send, send_bytes), self._peer(to), self.group))
            if recv_bytes:
                ops.append(dist.P2POp(dist.irecv, _bytes(recv, recv_bytes), self._peer(frm), self.group))
            self.works = dist.batch_isend_irecv(ops) if ops else []
            return 0
        except Exception as e:  # noqa: BLE001 (the library reports the failure with its status)
            self.error = f"{type(e).__name__}: {e}"
            return 2

    def _on_wait(self, user, timeout_s):
        works, self.works = self.works, []
        try:
            for w in works:
                w.wait(datetime.timedelta(seconds=timeout_s))
            return 0
        except Exception as e:  # noqa: BLE001
            self.error = f"{type(e).__name__}: {e}"
            return 1 if "timeout" in str(e).lower() or "timed out" in str(e).lower() else 2

    def __del__(self):
        if getattr(self, "handle", None) and _lib.lib is not None:
            _lib.lib.rda_comm_destroy(self.handle)
            self.handle = None


def _check_ring(status, ctx, comm):
    """_lib.check, with what the transport said when it failed."""
    try:
        _lib.check(status, ctx)
    except RuntimeError as e:
        err = getattr(comm, "error", None)
        if err:
            raise RuntimeError(f"{e} (torch.distributed: {err})") from None
        raise


class _NcclComm:
    """The library's NCCL engine on this rank's GPU, from a unique id that
    group rank 0 makes and broadcasts."""

    def __init__(self, group, rank: int, size: int, device: int):
        idb = ctypes.create_string_buffer(_lib.NCCL_ID_BYTES)
        if rank == 0:
            _lib.check(_lib.lib.rda_nccl_unique_id(idb, _lib.NCCL_ID_BYTES), None)
        box = [idb.raw if rank == 0 else None]
        dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
        idb = ctypes.create_string_buffer(box[0], _lib.NCCL_ID_BYTES)
        h = _lib._comm_t()
        _lib.check(_lib.lib.rda_comm_create_nccl_id(idb, _lib.NCCL_ID_BYTES, size, rank, device, None,
                                                    ctypes.byref(h)), None)
        self.handle = h

    def __del__(self):
        if getattr(self, "handle", None) and _lib.lib is not None:
            _lib.lib.rda_comm_destroy(self.handle)
            self.handle = None


_comms = {}


def _comm_for(group, t: Tensor):
    """The communicator of (group, t's device), made on first use: every rank
    of the group makes it in the same call."""
    key = (group, t.device)
    c = _comms.get(key)
    if c is None:
        rank, size = dist.get_rank(group), dist.get_world_size(group)
        if t.device.type == "cuda":
            dev = t.device.index if t.device.index is not None else torch.cuda.current_device()
            c = _NcclComm(group, rank, size, dev)
        else:
            c = _GroupTransport(group, rank, size)
        _comms[key] = c
    return c


class _Ring(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, comm, N, cfg):
        B, n, H, _ = q.shape
        q, k, v = _strided(q), _strided(k), _strided(v)
        o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty((B, H, n), dtype=torch.float32, device=q.device)
        c = _context_for(q)
        views = [_view(t) for t in (q, k, v, o, lse)]
        _check_ring(_lib.lib.rda_ring_forward(c, comm.handle, cfg, N, *views, None), c, comm)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.comm, ctx.N, ctx.cfg = comm, N, cfg
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    @once_differentiable  # (the ring's backward is not itself differentiable: a second derivative raises)
    def backward(ctx, do, dlse):
        q, k, v, o, lse = ctx.saved_tensors
        do = torch.zeros_like(o) if do is None else _strided(do.to(q.dtype))
        dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
        c = _context_for(q)
        views = [_view(t) for t in (q, k, v, o, lse, do, dq, dk, dv)]
        _check_ring(_lib.lib.rda_ring_backward(c, ctx.comm.handle, ctx.cfg, ctx.N, *views, None), c, ctx.comm)
        return dq, dk, dv, None, None, None


def _ring(q, k, v, mode, segments, dilations, group, is_causal, softmax_scale, layout, seq_len, return_lse,
          deterministic):
    scale = _check_inputs(q, k, v, softmax_scale)
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("rda: rings need an initialised torch.distributed process group "
                           "(torch.distributed.init_process_group)")
    if layout not in _LAYOUTS:
        raise ValueError(f"rda: layout must be 'contiguous' or 'zigzag' (got {layout!r})")
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    n = q.shape[1]
    if seq_len is None:  # the whole sequence: every rank's rows
        t = torch.tensor([n], dtype=torch.int64, device=q.device if q.device.type == "cuda" else "cpu")
        dist.all_reduce(t, group=group)
        seq_len = int(t.item())
    if isinstance(seq_len, bool) or not isinstance(seq_len, int):
        raise TypeError(f"rda: seq_len must be an int (got {seq_len!r})")
    from . import ring_partition  # (the package's, over rda_ring_partition)
    want = sum(c for _, c in ring_partition(seq_len, size, layout, rank))
    if n != want:
        raise ValueError(f"rda: rank {rank} of {size} holds {n} rows; the {layout} layout of N = {seq_len} gives "
                         f"it {want} (rda.ring_partition)")
    cfg = _config(mode, bool(is_causal), scale, segments, dilations, bool(deterministic), _LAYOUTS[layout])
    o, lse = _Ring.apply(q, k, v, _comm_for(group, q), seq_len, cfg)
    return (o, lse) if return_lse else o


def ring_attention(q: Tensor, k: Tensor, v: Tensor, *, group=None, is_causal: bool = False,
                   softmax_scale: Optional[float] = None, layout: str = "contiguous", seq_len: Optional[int] = None,
                   return_lse: bool = False, deterministic: bool = False):
    """Dense attention over a ring of the ranks of `group` (default: the
    world). q, k, v: this rank's rows [B, n, H, D] (K and V may have fewer
    heads), the rows rda.ring_partition(seq_len, world, layout, rank) lists;
    seq_len defaults to the sum of every rank's n. Returns this rank's rows
    of O, or (O, LSE [B, H, n]). Every rank must call it with the same
    arguments and shapes; deterministic as for rda.attention."""
    return _ring(q, k, v, _lib.DENSE, [], [], group, is_causal, softmax_scale, layout, seq_len, return_lse,
                 deterministic)


def ring_dilated_attention(q: Tensor, k: Tensor, v: Tensor, segment_lengths: Sequence[int],
                           dilation_rates: Sequence[int], *, mode: str = "groups", group=None, is_causal: bool = False,
                           softmax_scale: Optional[float] = None, layout: str = "contiguous",
                           seq_len: Optional[int] = None, return_lse: bool = False, deterministic: bool = False):
    """rda.dilated_attention over a ring of the ranks of `group`: this rank's
    rows in, this rank's rows out (see ring_attention); segments may span
    ranks."""
    seg, dil = _check_patterns(mode, segment_lengths, dilation_rates)
    return _ring(q, k, v, _MODES[mode], seg, dil, group, is_causal, softmax_scale, layout, seq_len, return_lse,
                 deterministic)


__all__ = ["ring_attention", "ring_dilated_attention"]
