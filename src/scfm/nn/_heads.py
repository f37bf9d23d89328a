"""Output heads: masked-value regression (GEP), value from cell embedding (GEPC), zero probability."""

from __future__ import annotations

import torch
from torch import nn


class ExpressionHead(nn.Module):
    """GEP head: predicts each token's value from its hidden state, optionally with a zero-probability logit.

    Each output is an MLP ``d_in -> d_hidden -> d_hidden -> 1`` with leaky ReLUs (``d_hidden`` defaults to
    ``d_in``). Returns a dict with ``"value"`` ``(batch, length)`` and, when ``predict_zero``, ``"zero_logit"``.
    """

    def __init__(self, d_in: int, predict_zero: bool = False, d_hidden: int | None = None) -> None:
        super().__init__()
        d_hidden = d_hidden or d_in
        self.value = self._mlp(d_in, d_hidden)
        self.zero = self._mlp(d_in, d_hidden) if predict_zero else None

    @staticmethod
    def _mlp(d_in: int, d_hidden: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(d_in, d_hidden),
            nn.LeakyReLU(),
            nn.Linear(d_hidden, d_hidden),
            nn.LeakyReLU(),
            nn.Linear(d_hidden, 1),
        )

    def forward(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"value": self.value(hidden).squeeze(-1)}
        if self.zero is not None:
            out["zero_logit"] = self.zero(hidden).squeeze(-1)
        return out


class CellToGeneHead(nn.Module):
    """GEPC head: a gene's value predicted from the cell embedding through a query made from the gene's embedding.

    ``value[b, g] = <W q_g, c_b>`` with ``q_g = sigmoid(Q e_g)``; the zero-probability logit uses its own ``W``
    (with a bias when ``zero_bias``, as in scGPT's released code).
    """

    def __init__(self, d_gene: int, d_cell: int, predict_zero: bool = False, zero_bias: bool = False) -> None:
        super().__init__()
        self.gene_to_query = nn.Linear(d_gene, d_gene)
        self.value_proj = nn.Linear(d_gene, d_cell, bias=False)
        self.zero_proj = nn.Linear(d_gene, d_cell, bias=zero_bias) if predict_zero else None

    def forward(self, cell: torch.Tensor, gene_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cell``: ``(batch, d_cell)``; ``gene_embeddings``: ``(batch, n_genes, d_gene)``."""
        query = torch.sigmoid(self.gene_to_query(gene_embeddings))
        out = {"value": torch.einsum("bgd,bd->bg", self.value_proj(query), cell)}
        if self.zero_proj is not None:
            out["zero_logit"] = torch.einsum("bgd,bd->bg", self.zero_proj(query), cell)
        return out
