"""Output heads: masked-value regression (GEP), value from cell embedding (GEPC), zero probability."""

from __future__ import annotations

import torch
from torch import nn


class ExpressionHead(nn.Module):
    """GEP head: predicts each token's value from its hidden state, optionally with a zero-probability logit.

    Returns a dict with ``"value"`` ``(batch, length)`` and, when ``predict_zero``, ``"zero_logit"``.
    """

    def __init__(self, d_in: int, predict_zero: bool = False) -> None:
        super().__init__()
        self.value = self._mlp(d_in)
        self.zero = self._mlp(d_in) if predict_zero else None

    @staticmethod
    def _mlp(d_in: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(d_in, d_in), nn.LeakyReLU(), nn.Linear(d_in, d_in), nn.LeakyReLU(), nn.Linear(d_in, 1)
        )

    def forward(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"value": self.value(hidden).squeeze(-1)}
        if self.zero is not None:
            out["zero_logit"] = self.zero(hidden).squeeze(-1)
        return out


class CellToGeneHead(nn.Module):
    """GEPC head: a gene's value predicted from the cell embedding through a query made from the gene's embedding.

    ``value[b, g] = <W q_g, c_b>`` with ``q_g = sigmoid(Q e_g)``; the zero-probability logit uses its own ``W``.
    """

    def __init__(self, d_gene: int, d_cell: int, predict_zero: bool = False) -> None:
        super().__init__()
        self.gene_to_query = nn.Linear(d_gene, d_gene)
        self.value_proj = nn.Linear(d_gene, d_cell, bias=False)
        self.zero_proj = nn.Linear(d_gene, d_cell, bias=False) if predict_zero else None

    def forward(self, cell: torch.Tensor, gene_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cell``: ``(batch, d_cell)``; ``gene_embeddings``: ``(batch, n_genes, d_gene)``."""
        query = torch.sigmoid(self.gene_to_query(gene_embeddings))
        out = {"value": torch.einsum("bgd,bd->bg", self.value_proj(query), cell)}
        if self.zero_proj is not None:
            out["zero_logit"] = torch.einsum("bgd,bd->bg", self.zero_proj(query), cell)
        return out
