"""Multi-head self-attention on :func:`torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed query/key/value projection.

    The packed projection has the layout of :class:`torch.nn.MultiheadAttention` (``in_proj`` rows are
    ``[q; k; v]``, heads contiguous inside each block), which is also the layout of flash-attn's ``Wqkv``.

    Parameters
    ----------
    d_model
        Width of the token representations.
    n_heads
        Number of attention heads; must divide ``d_model``.
    dropout
        Dropout on attention probabilities (training only).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """Attend.

        Parameters
        ----------
        x
            ``(batch, length, d_model)``.
        attn_mask
            Boolean, ``True`` where attention is allowed, broadcastable to ``(batch, heads, length, length)``.
        is_causal
            Causal attention (decoder families); incompatible with ``attn_mask``.
        """
        batch, length, d_model = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d_model))
