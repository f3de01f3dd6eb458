"""The library's forward and backward as PyTorch operators
(torch.library.custom_op, with fake implementations and autograd), and the
functional API built on them."""
import math
import struct
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import _lib

_DTYPES = {torch.float32: _lib.F32, torch.float16: _lib.F16, torch.bfloat16: _lib.BF16, torch.float64: _lib.F64}
_MODES = {"groups": _lib.GROUPS, "longnet": _lib.LONGNET}

# The forward's and backward's C calls: through _native where it was built
# (pip install), which describes the tensors in C, else through ctypes with
# the descriptions packed here (_view). Both make the same call.
_native = _lib._native
if _native is not None:
    _native.init(_lib.ctypes.cast(_lib.lib.rda_attention_forward, _lib.ctypes.c_void_p).value,
                 _lib.ctypes.cast(_lib.lib.rda_attention_backward, _lib.ctypes.c_void_p).value, dict(_DTYPES))


# An rda_tensor's bytes (data, dtype, ndim, shape[4], strides[4] in the
# native layout), passed to the C calls as they are: packing them is a third
# of the time of filling a ctypes structure's fields.
_TENSOR4 = struct.Struct("@Pii4q4q")
_TENSOR3 = struct.Struct("@Pii3qq3qq")
assert _TENSOR4.size == _TENSOR3.size == _lib.ctypes.sizeof(_lib.Tensor)


def _view(t: Tensor) -> bytes:
    """The rda_tensor describing t (4-D, and 3-D for an LSE, directly; the
    library refuses other ranks with its message)."""
    nd = t.dim()
    if nd == 4:
        return _TENSOR4.pack(t.data_ptr(), _DTYPES[t.dtype], 4, *t.shape, *t.stride())
    if nd == 3:
        return _TENSOR3.pack(t.data_ptr(), _DTYPES[t.dtype], 3, *t.shape, 0, *t.stride(), 0)
    if nd > _lib.MAX_DIMS:
        raise ValueError(f"rda: tensors of at most {_lib.MAX_DIMS} dimensions are taken (got {nd})")
    pad = (0,) * (_lib.MAX_DIMS - nd)
    return _TENSOR4.pack(t.data_ptr(), _DTYPES[t.dtype], nd, *t.shape, *pad, *t.stride(), *pad)


_configs = {}


def _config(mode, causal, scale, segments, dilations, deterministic=False, layout=0):
    """The rda_config of these arguments, made once."""
    key = (mode, causal, scale, tuple(segments), tuple(dilations), deterministic, layout)
    cfg = _configs.get(key)
    if cfg is None:
        cfg = _configs[key] = _lib.config(mode, causal, scale, list(zip(segments, dilations)), layout, deterministic)
    return cfg


def _strided(t: Tensor) -> Tensor:
    """t, or a contiguous copy when a dimension of more than one element
    has stride 0 (a broadcast view, such as the gradient of a sum), which
    the library does not take."""
    if t.is_contiguous():  # (the common case, checked in C)
        return t
    if any(s == 0 and n > 1 for n, s in zip(t.shape, t.stride())):
        return t.contiguous()
    return t


# PyTorch's current stream on a device, as the raw cudaStream_t (the private
# binding Triton also uses: a tenth of the cost of torch.cuda.current_stream)
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or \
    (lambda dev: torch.cuda.current_stream(dev).cuda_stream)


def _context_for(t: Tensor):
    """The library context for tensors like t: the CUDA backend on t's device
    and PyTorch's current stream there; on the CPU the fast path (PyTorch's
    thread count), or the fp64 reference backend for float64."""
    if t.is_cuda:
        dev = t.get_device()
        return _lib.context(_lib.BACKEND_CUDA, dev, _raw_stream(dev))
    if not t.is_cpu:
        raise ValueError(f"rda: tensors on {t.device.type} are not supported (CPU and CUDA only)")
    if t.dtype == torch.float64:
        return _lib.context(_lib.BACKEND_REFERENCE, threads=torch.get_num_threads())
    return _lib.context(_lib.BACKEND_CPU, threads=torch.get_num_threads())


def _forward_call(q: Tensor, k: Tensor, v: Tensor, mode: int, causal: bool, scale: float, segments: List[int],
                  dilations: List[int], with_lse: bool):
    """(O, LSE) of the forward; LSE None unless with_lse (the library then
    writes none)."""
    if q.dim() != 4:  # (the rest is checked by the library)
        raise ValueError(f"rda: q must have shape [B, N, H, D] (got {tuple(q.shape)})")
    q, k, v = _strided(q), _strided(k), _strided(v)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32) if with_lse else None
    ctx = _context_for(q)
    cfg = _config(mode, causal, scale, segments, dilations)
    if _native is not None:
        st = _native.forward(ctx, cfg.address, q, k, v, o, lse)
    else:
        st = _lib.lib.rda_attention_forward(ctx, cfg, _view(q), _view(k), _view(v), _view(o),
                                            None if lse is None else _view(lse))
    _lib.check(st, ctx)
    return o, lse


def _forward_impl(q: Tensor, k: Tensor, v: Tensor, mode: int, causal: bool, scale: float, segments: List[int],
                  dilations: List[int], deterministic: bool) -> Tuple[Tensor, Tensor]:
    return _forward_call(q, k, v, mode, causal, scale, segments, dilations, True)


def _backward_impl(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, mode: int, causal: bool,
                   scale: float, segments: List[int], dilations: List[int],
                   deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    if dout.dtype != q.dtype:
        dout = dout.to(q.dtype)
    dout, q, k, v = _strided(dout), _strided(q), _strided(k), _strided(v)
    ctx = _context_for(q)
    cfg = _config(mode, causal, scale, segments, dilations, deterministic)
    if _native is not None:
        st = _native.backward(ctx, cfg.address, q, k, v, o, lse, dout, dq, dk, dv)
    else:
        st = _lib.lib.rda_attention_backward(ctx, cfg, *[_view(t) for t in (q, k, v, o, lse, dout, dq, dk, dv)])
    _lib.check(st, ctx)
    return dq, dk, dv


# The operators: what torch.compile, tracing, fake tensors, tensor subclasses
# and functorch see.
_forward = torch.library.custom_op("rda::attention_forward", _forward_impl, mutates_args=())
_backward = torch.library.custom_op("rda::attention_backward", _backward_impl, mutates_args=())


@_forward.register_fake
def _(q, k, v, mode, causal, scale, segments, dilations, deterministic):
    B, N, H, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((B, H, N), dtype=torch.float32)


@_backward.register_fake
def _(dout, q, k, v, o, lse, mode, causal, scale, segments, dilations, deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, mode, causal, scale, segments, dilations, deterministic = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.args = (mode, causal, scale, segments, dilations, deterministic)
    ctx.mark_non_differentiable(lse)


def _grad(ctx, do, dlse):
    q, k, v, o, lse = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(o)
    backward = _backward_impl if _plain(do, q, k, v) else _backward
    dq, dk, dv = backward(do, q, k, v, o, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None


_forward.register_autograd(_grad, setup_context=_setup_context)


# Plain eager calls skip the operator dispatch (through it a call costs about
# 9 us more host time, and about 34 us more recording autograd:
# bench/python_overhead.py): the same implementation, with autograd by a
# torch.autograd.Function.
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
_torch_function_mode = torch._C._is_torch_function_mode_enabled
_dispatch_modes = torch._C._len_torch_dispatch_stack


def _plain(*ts) -> bool:
    """Whether a call on these tensors may bypass the operator: eager mode
    (not compiling or tracing, no torch function or dispatch mode), plain
    torch.Tensor objects (no subclass, no functorch wrapper: none exists
    while no functorch transform is active, one check instead of one a
    tensor)."""
    if torch.compiler.is_compiling() or _torch_function_mode() or _dispatch_modes():
        return False
    if _transforms_active is not None:
        if _transforms_active():
            return False
        for t in ts:
            if type(t) is not Tensor:
                return False
        return True
    for t in ts:
        if type(t) is not Tensor or _is_wrapped(t):
            return False
    return True


# The backward under create_graph=True: its gradients marked so that
# differentiating them again raises (second derivatives are not implemented)
_grad_once = once_differentiable(_grad)


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, *args):
        o, lse = _forward_impl(q, k, v, *args)
        _setup_context(ctx, (q, k, v) + args, (o, lse))
        # (no zeros made for the LSE's gradient, which the backward ignores;
        # an unused O's gradient comes as None, made zeros in _grad)
        ctx.set_materialize_grads(False)
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        # grad mode is on in a backward only under create_graph=True; without
        # it once_differentiable's wrapper (host time every step) is not needed
        if torch.is_grad_enabled():
            return _grad_once(ctx, do, dlse)
        return _grad(ctx, do, dlse)


def _attend(q, k, v, want_lse, *args):
    """(O, LSE) of the forward, through the operator or its eager path (there
    without autograd LSE is None unless want_lse: not written at all)."""
    if not _plain(q, k, v):
        return _forward(q, k, v, *args)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _Eager.apply(q, k, v, *args)
    return _forward_call(q, k, v, *args[:-1], want_lse)


def _check_inputs(q, k, v, softmax_scale):
    # (the common case in one expression; otherwise each tensor checked, with its message)
    if not (type(q) is Tensor and type(k) is Tensor and type(v) is Tensor and q.dim() == 4 and k.dim() == 4 and
            v.dim() == 4 and q.dtype in _DTYPES and k.dtype == q.dtype and v.dtype == q.dtype):
        _check_each(q, k, v)
    dev = q.device
    if k.device != dev or v.device != dev:
        raise ValueError(f"rda: q, k and v must be on one device (got {q.device}, {k.device}, {v.device})")
    if softmax_scale is None:
        return 0.0
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
        raise TypeError("rda: softmax_scale must be a float or None")
    if not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ValueError(f"rda: softmax_scale must be positive and finite (got {softmax_scale})")
    return float(softmax_scale)


def _check_each(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"rda: {name} must be a torch.Tensor (got {type(t).__name__})")
        if t.dim() != 4:
            raise ValueError(f"rda: {name} must have shape [B, N, H, D] (got {tuple(t.shape)})")
        if t.dtype not in _DTYPES:
            raise TypeError(f"rda: {name} has dtype {t.dtype}; float32, float16 and bfloat16 are supported "
                            "(float64 on the CPU, through the fp64 reference)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"rda: q, k and v must share one dtype (got {q.dtype}, {k.dtype}, {v.dtype})")


def _check_patterns(mode, segment_lengths, dilation_rates):
    """The dilated calls' mode and patterns, checked; the patterns as lists."""
    if mode not in _MODES:
        raise ValueError(f"rda: mode must be 'groups' or 'longnet' (got {mode!r})")
    seg, dil = list(segment_lengths), list(dilation_rates)
    if len(seg) != len(dil):
        raise ValueError(f"rda: segment_lengths and dilation_rates must be non-empty and of one length: "
                         f"len(segment_lengths) is {len(seg)}, len(dilation_rates) {len(dil)}")
    if not seg:
        raise ValueError("rda: at least one (segment length, dilation rate) pattern is needed")
    for x in seg + dil:
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"rda: segment lengths and dilation rates must be ints (got {x!r})")
    return seg, dil


def attention(q: Tensor, k: Tensor, v: Tensor, *, is_causal: bool = False, softmax_scale: Optional[float] = None,
              return_lse: bool = False, deterministic: bool = False):
    """Dense attention on [B, N, H, D] tensors (K and V may have fewer heads,
    H a multiple of theirs). Returns O, or (O, LSE [B, H, N] fp32).
    deterministic: the backward's gradients bit-identical from run to run
    (on CUDA: fp16/bf16 at head dim 64 or 128; other shapes raise)."""
    scale = _check_inputs(q, k, v, softmax_scale)
    o, lse = _attend(q, k, v, return_lse, _lib.DENSE, bool(is_causal), scale, [], [], bool(deterministic))
    return (o, lse) if return_lse else o


def dilated_attention(q: Tensor, k: Tensor, v: Tensor, segment_lengths: Sequence[int], dilation_rates: Sequence[int],
                      *, mode: str = "groups", is_causal: bool = False, softmax_scale: Optional[float] = None,
                      return_lse: bool = False, deterministic: bool = False):
    """Dilated attention (SPEC.md's patterns): `groups` splits the heads into
    one group per (segment, dilation) pattern and divides by their number (the
    seed project's DilatedAttention); `longnet` gives every head every pattern
    and merges by the softmax denominators (the LongNet paper). Returns O, or
    (O, LSE); deterministic as for attention."""
    scale = _check_inputs(q, k, v, softmax_scale)
    seg, dil = _check_patterns(mode, segment_lengths, dilation_rates)
    o, lse = _attend(q, k, v, return_lse, _MODES[mode], bool(is_causal), scale, seg, dil, bool(deterministic))
    return (o, lse) if return_lse else o
