"""Transformer encoder layers shared by every family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._attention import SelfAttention
from ._flow_attention import FlowAttention

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class TransformerLayer(nn.Module):
    """Self-attention + feed-forward block with residuals.

    Parameters
    ----------
    d_model, n_heads, d_hidden
        Width, heads, and feed-forward width.
    dropout
        Residual and feed-forward dropout.
    activation
        ``"relu"`` or ``"gelu"``.
    norm_first
        Pre-norm (``True``) or post-norm (``False``, the layout of the original transformer and of scGPT).
    attention_dropout
        Dropout on attention probabilities. Off by default: on CPU it forces SDPA's slow math path,
        which materialises a random mask of size ``batch x heads x length^2``.
    attention
        ``"softmax"`` (:class:`SelfAttention`, SDPA) or ``"flow"`` (:class:`FlowAttention`, linear in the length;
        no masks).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_hidden: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        attention_dropout: float = 0.0,
        attention: str = "softmax",
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if attention == "softmax":
            self.self_attn = SelfAttention(d_model, n_heads, attention_dropout)
        elif attention == "flow":
            self.self_attn = FlowAttention(d_model, n_heads)
        else:
            raise ValueError(f"attention must be 'softmax' or 'flow', got {attention!r}")
        self.linear1 = nn.Linear(d_model, d_hidden)
        self.linear2 = nn.Linear(d_hidden, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation]
        self.norm_first = norm_first

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        n_queries: int | None = None,
    ) -> torch.Tensor:
        """``(batch, length, d_model)`` -> same shape, or ``(batch, n_queries, d_model)`` (first positions only)."""
        residual = x if n_queries is None else x[:, :n_queries]
        if self.norm_first:
            x = residual + self.dropout(self.self_attn(self.norm1(x), attn_mask, is_causal, n_queries))
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(residual + self.dropout(self.self_attn(x, attn_mask, is_causal, n_queries)))
        return self.norm2(x + self._feed_forward(x))

    def forward_incremental(self, x: torch.Tensor, past=None):
        """Causal decoding step (softmax attention): new positions ``x`` and the layer's cached keys/values."""
        if not isinstance(self.self_attn, SelfAttention):
            raise ValueError("incremental decoding needs softmax attention")
        if self.norm_first:
            attended, cache = self.self_attn.forward_incremental(self.norm1(x), past)
            x = x + self.dropout(attended)
            return x + self._feed_forward(self.norm2(x)), cache
        attended, cache = self.self_attn.forward_incremental(x, past)
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self._feed_forward(x)), cache


class TransformerStack(nn.Module):
    """``n_layers`` :class:`TransformerLayer` blocks (plus a final norm when pre-norm); ``attention`` as there."""

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_hidden: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        attention: str = "softmax",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, n_heads, d_hidden, dropout, activation, norm_first, attention=attention)
            for _ in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        last_layer_queries: int | None = None,
    ) -> torch.Tensor:
        """Run every layer; with ``last_layer_queries=n`` the last layer computes only the first ``n`` positions."""
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x = layer(x, attn_mask, is_causal, last_layer_queries if last else None)
        return self.final_norm(x)

    def forward_incremental(self, x: torch.Tensor, cache: list | None = None) -> tuple[torch.Tensor, list]:
        """Decode causally with a key/value cache.

        Returns the output of the new positions ``x`` (which follow those already in ``cache``; ``None`` for the first
        call) and the cache extended by them.

        Equal, up to rounding, to running :meth:`forward` with ``is_causal=True`` on the whole sequence.
        """
        cache = cache or [None] * len(self.layers)
        new_cache = []
        for layer, past in zip(self.layers, cache, strict=True):
            x, layer_cache = layer.forward_incremental(x, past)
            new_cache.append(layer_cache)
        return self.final_norm(x), new_cache
