"""Ring attention with dilated patterns: dense, `groups` (the seed project's
DilatedAttention) and `longnet` (the LongNet paper) attention, forward and
backward, on CPU and CUDA tensors of layout [B, N, H, D].

    import rda
    o = rda.dilated_attention(q, k, v, [2048, 4096], [1, 2])     # autograd works
    attn = rda.MultiheadDilatedAttention(512, 8, dilation_rates=[1, 2], segment_lengths=[2048, 4096])
"""
from . import _lib
from .modules import DilatedAttention, MultiheadDilatedAttention
from .ops import attention, dilated_attention

__version__ = _lib.lib.rda_version_string().decode()
__all__ = ["attention", "dilated_attention", "DilatedAttention", "MultiheadDilatedAttention", "cuda_available"]


def cuda_available() -> bool:
    """Whether this build of the library has its CUDA backend and sees a GPU."""
    return bool(_lib.lib.rda_cuda_available())
