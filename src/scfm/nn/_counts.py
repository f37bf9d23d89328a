"""Negative-binomial count likelihood and a decoder from a cell latent to NB parameters over genes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def feature_norm(norm: str, width: int) -> nn.Module:
    """``"layernorm"`` or ``"groupnorm"`` (4 groups, as in the reference CellPLM) over ``(n, width)`` features."""
    if norm == "layernorm":
        return nn.LayerNorm(width)
    if norm == "groupnorm":
        return nn.GroupNorm(4, width)
    raise ValueError(f"norm must be 'layernorm' or 'groupnorm', got {norm!r}")


def negative_binomial_log_likelihood(
    counts: torch.Tensor, mean: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Element-wise ``log NB(counts; mean, inverse dispersion theta)`` (the scVI parameterisation).

    ``Var = mean + mean^2 / theta``. Shapes broadcast.
    """
    log_theta_mean = torch.log(theta + mean + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mean)
        + counts * (torch.log(mean + eps) - log_theta_mean)
        + torch.lgamma(counts + theta)
        - torch.lgamma(theta)
        - torch.lgamma(counts + 1.0)
    )


class NegativeBinomialDecoder(nn.Module):
    """Latent -> NB mean proportions over ``n_genes`` and a per-gene inverse dispersion.

    ``n_layers - 1`` blocks of Linear, PReLU, dropout and LayerNorm, then a ReLU bottleneck and a linear map to
    one logit per gene. Expected counts of a cell are ``softmax(logits over its measured genes) * library``, so
    genes a dataset did not measure take no share of its library.

    Parameters
    ----------
    d_in, d_hidden, n_genes, n_layers
        Latent width, hidden width, output genes and depth (``n_layers >= 1``).
    dropout
        Dropout in the hidden blocks.
    d_bottleneck
        Width of the layer before the gene logits.
    norm
        Normalisation of the hidden blocks: ``"layernorm"`` or ``"groupnorm"`` (4 groups).
    offsets
        Add a learned constant vector after each hidden block (how converted checkpoints keep the reference's
        average covariate embedding).
    """

    def __init__(
        self,
        d_in: int,
        d_hidden: int,
        n_genes: int,
        n_layers: int = 2,
        dropout: float = 0.0,
        d_bottleneck: int = 128,
        norm: str = "layernorm",
        offsets: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d_in if i == 0 else d_hidden, d_hidden),
                nn.PReLU(),
                nn.Dropout(dropout),
                feature_norm(norm, d_hidden),
            )
            for i in range(n_layers - 1)
        )
        self.offsets = nn.Parameter(torch.zeros(n_layers - 1, d_hidden)) if offsets else None
        self.bottleneck = nn.Linear(d_hidden if n_layers > 1 else d_in, d_bottleneck)
        self.gene_logits = nn.Linear(d_bottleneck, n_genes)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor, genes: torch.Tensor | None = None) -> torch.Tensor:
        """``(n, n_genes)`` logits of the expression proportions, or ``(n, len(genes))`` for those gene indices."""
        for i, layer in enumerate(self.layers):
            z = layer(z) if self.offsets is None else layer(z) + self.offsets[i]
        z = F.relu(self.bottleneck(z))
        if genes is None:
            return self.gene_logits(z)
        return F.linear(z, self.gene_logits.weight[genes], self.gene_logits.bias[genes])

    def theta(self) -> torch.Tensor:
        """``(n_genes,)`` inverse dispersion, clamped to ``[1e-4, 1e4]``."""
        return self.log_theta.exp().clamp(1e-4, 1e4)

    @staticmethod
    def expected_counts(
        logits: torch.Tensor, library: torch.Tensor, measured: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``softmax(logits)`` over the ``measured`` genes (bool, broadcastable; others get 0) times ``library``."""
        if measured is not None:
            logits = logits.masked_fill(~measured, float("-inf"))
        return torch.softmax(logits, dim=-1) * library[..., None]
