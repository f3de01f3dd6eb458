"""Ring attention with dilated patterns: dense, `groups` (the seed project's
DilatedAttention) and `longnet` (the LongNet paper) attention, forward and
backward, on CPU and CUDA tensors of layout [B, N, H, D].

    import rda
    o = rda.dilated_attention(q, k, v, [2048, 4096], [1, 2])     # autograd works
    attn = rda.MultiheadDilatedAttention(512, 8, dilation_rates=[1, 2], segment_lengths=[2048, 4096])
    o = rda.ring_attention(q_local, k_local, v_local, is_causal=True, layout="zigzag")   # torch.distributed ranks
"""
import torch  # noqa: F401  (first: PyTorch's CUDA libraries load before this package's library)

from . import _lib
from .modules import DilatedAttention, MultiheadDilatedAttention
from .ops import attention, dilated_attention
from .ring import ring_attention, ring_dilated_attention

__version__ = _lib.lib.rda_version_string().decode()
__all__ = ["attention", "dilated_attention", "DilatedAttention", "MultiheadDilatedAttention", "cuda_available",
           "ring_attention", "ring_dilated_attention", "ring_partition"]
_LAYOUTS = {"contiguous": 0, "zigzag": 1}


def cuda_available() -> bool:
    """Whether this build of the library has its CUDA backend and sees a GPU."""
    return bool(_lib.lib.rda_cuda_available())


def ring_partition(N: int, world: int, layout: str = "contiguous", rank: int = 0):
    """The sequence positions rank `rank` of a ring of `world` ranks owns, as
    a list of (start, count) ranges held in this order in its local
    tensors: one chunk (contiguous), or chunks rank and 2*world-1-rank
    (zigzag, balancing causal work)."""
    if layout not in _LAYOUTS:
        raise ValueError(f"rda: layout must be 'contiguous' or 'zigzag' (got {layout!r})")
    for name, x in (("N", N), ("world", world), ("rank", rank)):
        if isinstance(x, bool) or not isinstance(x, int):
            raise TypeError(f"rda: {name} must be an int (got {x!r})")
    starts, counts, n = (_lib.ctypes.c_int64 * 2)(), (_lib.ctypes.c_int64 * 2)(), _lib.ctypes.c_int32()
    _lib.check(_lib.lib.rda_ring_partition(N, world, _LAYOUTS[layout], rank, starts, counts, _lib.ctypes.byref(n)),
               None)
    return [(starts[i], counts[i]) for i in range(n.value)]
