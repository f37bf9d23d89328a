"""GEPC decoders of scGPT's ``MVCDecoder`` other than the inner product, for imported fine-tuned checkpoints."""

from __future__ import annotations

import torch
from torch import nn

QUERY_WIDTH_CONCAT = 64  # scGPT's "concat query" maps each gene to a 64-wide query
HIDDEN_WIDTH = 64


class QueryMLPHead(nn.Module):
    """A gene's value from an MLP on the cell embedding and a gene query ``q_g = sigmoid(Q e_g)``.

    ``concat=True`` (scGPT's ``"concat query"``): ``fc2(prelu(fc1([c_b, q_g])))`` with 64-wide queries;
    ``concat=False`` (``"sum query"``): ``fc2(prelu(fc1(c_b + q_g)))`` with ``d_model``-wide queries. Neither has a
    zero-probability output. Same call signature and output as :class:`scfm.nn.CellToGeneHead`.
    """

    def __init__(self, d_model: int, concat: bool) -> None:
        super().__init__()
        self.concat = concat
        width = QUERY_WIDTH_CONCAT if concat else d_model
        self.gene_to_query = nn.Linear(d_model, width)
        self.fc1 = nn.Linear(d_model + width if concat else d_model, HIDDEN_WIDTH)
        self.hidden_activation = nn.PReLU()
        self.fc2 = nn.Linear(HIDDEN_WIDTH, 1)

    def forward(self, cell: torch.Tensor, gene_embeddings: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cell``: ``(batch, d_model)``; ``gene_embeddings``: ``(batch, n_genes, d_model)``."""
        query = torch.sigmoid(self.gene_to_query(gene_embeddings))
        cells = cell[:, None, :].expand(-1, query.shape[1], -1)
        joined = torch.cat([cells, query], dim=-1) if self.concat else cells + query
        return {"value": self.fc2(self.hidden_activation(self.fc1(joined))).squeeze(-1)}
