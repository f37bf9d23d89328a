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

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        n_queries: int | None = None,
    ) -> torch.Tensor:
        """Attend.

        Parameters
        ----------
        x
            ``(batch, length, d_model)``.
        attn_mask
            Boolean, ``True`` where attention is allowed, broadcastable to ``(batch, heads, queries, length)``.
        is_causal
            Causal attention (decoder families); incompatible with ``attn_mask``.
        n_queries
            Compute the output of the first ``n_queries`` positions only (every position is still a key);
            used when only ``<cls>`` is needed from the last layer.

        Returns
        -------
        ``(batch, n_queries or length, d_model)``.
        """
        batch, length, d_model = x.shape
        if n_queries is None:
            qkv = self.in_proj(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            weight, bias = self.in_proj.weight, self.in_proj.bias
            q = F.linear(x[:, :n_queries], weight[:d_model], None if bias is None else bias[:d_model])
            q = q.view(batch, n_queries, self.n_heads, self.head_dim).transpose(1, 2)
            kv = F.linear(x, weight[d_model:], None if bias is None else bias[d_model:])
            k, v = kv.view(batch, length, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, q.shape[2], d_model))

    def forward_incremental(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal attention of new positions ``x`` to themselves and to the cached keys/values of earlier ones.

        Parameters
        ----------
        x
            ``(batch, n_new, d_model)``: the positions after those in ``past``.
        past
            ``(keys, values)`` of shape ``(batch, heads, n_past, head_dim)`` from earlier calls, or ``None``.

        Returns
        -------
        The output of the new positions and the keys/values of all positions so far.
        """
        batch, n_new, d_model = x.shape
        qkv = self.in_proj(x).view(batch, n_new, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        n_past = k.shape[2] - n_new
        mask = None
        if n_new > 1:
            key_positions = torch.arange(k.shape[2], device=x.device)
            query_positions = n_past + torch.arange(n_new, device=x.device)
            mask = key_positions[None, :] <= query_positions[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, n_new, d_model)), (k, v)
