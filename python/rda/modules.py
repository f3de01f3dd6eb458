"""Drop-in modules with the constructor arguments and shapes of the seed
project's DilatedAttention and MultiheadDilatedAttention (fkodom's
dilated-attention-pytorch): switching is an import line."""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .ops import dilated_attention


class DilatedAttention(nn.Module):
    """Dilated scaled dot-product attention over [B, N, H, D] query, key and
    value; head group i uses (segment_lengths[i], dilation_rates[i]), the
    outputs are divided by the number of groups (`groups` mode)."""

    def __init__(self, segment_lengths: Sequence[int], dilation_rates: Sequence[int],
                 softmax_scale: Optional[float] = None, attention_dropout: float = 0.0, op=None):
        super().__init__()
        if len(segment_lengths) != len(dilation_rates):
            raise ValueError(f"len(segment_lengths) ({len(segment_lengths)}) must be equal to "
                             f"len(dilation_rates) ({len(dilation_rates)})")
        if attention_dropout != 0.0:
            raise ValueError(f"rda: attention dropout is not implemented (got attention_dropout={attention_dropout}); "
                             "use 0.0")
        if op is not None:
            raise ValueError("rda: `op` picks an xformers kernel; this module has its own (leave op=None)")
        self.segment_lengths = list(segment_lengths)
        self.dilation_rates = list(dilation_rates)
        self.softmax_scale = softmax_scale
        self.dropout_p = attention_dropout

    def forward(self, query: Tensor, key: Tensor, value: Tensor, is_causal: bool = False,
                causal: Optional[bool] = None) -> Tensor:
        if causal is not None:  # the seed's keyword
            is_causal = causal
        return dilated_attention(query, key, value, self.segment_lengths, self.dilation_rates, mode="groups",
                                 is_causal=is_causal, softmax_scale=self.softmax_scale)


class MultiheadDilatedAttention(nn.Module):
    """Projections around DilatedAttention, with the MAGNETO layer norm
    before the output projection; [B, N, embed_dim] in, (output, None) out."""

    def __init__(self, embed_dim: int, num_heads: int, dilation_rates: Sequence[int], segment_lengths: Sequence[int],
                 dropout: float = 0.0, bias: bool = True, layer_norm: bool = True, layer_norm_eps: float = 1e-5,
                 gamma_init: float = 1.0, device: Optional[Union[torch.device, str]] = None,
                 dtype: Optional[torch.dtype] = None, op=None):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if len(dilation_rates) != len(segment_lengths):
            raise ValueError(f"len(dilation_rates) ({len(dilation_rates)}) must be equal to "
                             f"len(segment_lengths) ({len(segment_lengths)})")
        self.num_heads = num_heads
        self.layer_norm = layer_norm
        self.gamma_init = gamma_init
        kw = dict(bias=bias, device=device, dtype=dtype)
        self.q_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self.k_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self.v_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self.attention = DilatedAttention(segment_lengths, dilation_rates, attention_dropout=dropout, op=op)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, device=device, dtype=dtype) if layer_norm else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, **kw)
        self._reset_parameters()

    def _reset_parameters(self):
        # MAGNETO's initialisation (arXiv 2210.06423): gain gamma_init on the
        # value and output projections
        for lin, gain in ((self.q_proj, 1.0), (self.k_proj, 1.0), (self.v_proj, self.gamma_init),
                          (self.out_proj, self.gamma_init)):
            nn.init.xavier_normal_(lin.weight, gain=gain)
            if lin.bias is not None:
                nn.init.constant_(lin.bias, 0)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, is_causal: bool = False) -> Tuple[Tensor, None]:
        b, n, _ = query.shape
        q = self.q_proj(query).unflatten(-1, (self.num_heads, -1))
        k = self.k_proj(key).unflatten(-1, (self.num_heads, -1))
        v = self.v_proj(value).unflatten(-1, (self.num_heads, -1))
        x = self.attention(q, k, v, is_causal=is_causal).flatten(-2)
        if self.norm is not None:
            x = self.norm(x)
        return self.out_proj(x), None
