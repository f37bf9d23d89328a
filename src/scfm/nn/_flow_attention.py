"""Flow attention (Wu et al., Flowformer, ICML 2022): self-attention in time and memory linear in the length."""

from __future__ import annotations

import torch
from torch import nn


class FlowAttention(nn.Module):
    """Multi-head Flowformer attention with the packed projection layout of :class:`~scfm.nn.SelfAttention`.

    Keys and queries pass through a sigmoid, so attention is a flow network: each query's incoming flow and
    each key's outgoing flow are normalised ("conservation"), queries receive a sigmoid "allocation" and keys
    compete through a softmax over the sequence. Cost is ``O(length * head_dim^2)`` instead of
    ``O(length^2 * head_dim)``, which matters for tissues of thousands of cells. Non-causal, no masks.

    Parameters
    ----------
    d_model
        Width of the token representations.
    n_heads
        Number of heads; must divide ``d_model``.
    eps
        Added to the flows before dividing (as in the paper).
    """

    def __init__(self, d_model: int, n_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.eps = eps
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        n_queries: int | None = None,
    ) -> torch.Tensor:
        """``(batch, length, d_model)`` -> same shape; ``attn_mask``/``is_causal``/``n_queries`` are not supported."""
        if attn_mask is not None or is_causal or n_queries is not None:
            raise ValueError("flow attention supports neither attention masks, causal attention nor n_queries")
        batch, length, d_model = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (batch, heads, length, head_dim)
        q, k = torch.sigmoid(q), torch.sigmoid(k)
        eps = self.eps
        incoming = 1.0 / torch.einsum("bhld,bhd->bhl", q + eps, k.sum(2) + eps)
        outgoing = 1.0 / torch.einsum("bhld,bhd->bhl", k + eps, q.sum(2) + eps)
        conserved_incoming = torch.einsum("bhld,bhd->bhl", q + eps, (k * outgoing[..., None]).sum(2) + eps)
        conserved_outgoing = torch.einsum("bhld,bhd->bhl", k + eps, (q * incoming[..., None]).sum(2) + eps)
        conserved_outgoing = conserved_outgoing.clamp(-1.0, 1.0)
        allocation = torch.sigmoid(conserved_incoming)
        competition = torch.softmax(conserved_outgoing, dim=-1) * length
        kv = torch.einsum("bhld,bhlm->bhdm", k, v * competition[..., None])
        out = torch.einsum("bhld,bhdm->bhlm", q * incoming[..., None], kv) * allocation[..., None]
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d_model))
