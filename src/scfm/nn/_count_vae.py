"""A batch-conditioned variational autoencoder of counts (the scVI model class), with optional side features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._counts import negative_binomial_log_likelihood


def _mlp(d_in: int, d_hidden: int, n_layers: int, dropout: float) -> nn.Sequential:
    blocks = []
    for i in range(n_layers):
        blocks += [nn.Linear(d_in if i == 0 else d_hidden, d_hidden), nn.BatchNorm1d(d_hidden), nn.ReLU()]
        if dropout > 0:
            blocks.append(nn.Dropout(dropout))
    return nn.Sequential(*blocks)


class BatchConditionedCountVAE(nn.Module):
    """Counts -> Gaussian cell latent -> negative-binomial counts, with the batch given to the decoder only.

    The encoder reads ``log1p(counts)`` of ``n_genes`` genes, beside ``n_side`` optional side features of each cell
    (e.g. a frozen foundation-model embedding, already scaled). The decoder reads the latent and the cell's batch
    (one-hot) and gives each gene a share of the cell's observed library; each gene has one inverse dispersion. Since
    the decoder knows the batch, the latent need not carry it (Lopez et al. 2018).

    Parameters
    ----------
    n_genes, n_side, n_batches
        Genes modelled, side features read by the encoder (0 for none), batches.
    n_latent, n_hidden, n_layers, dropout
        Latent width, hidden width, hidden layers of encoder and decoder, dropout of the encoder's hidden layers.
    """

    def __init__(
        self,
        n_genes: int,
        n_side: int,
        n_batches: int,
        *,
        n_latent: int = 30,
        n_hidden: int = 128,
        n_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if min(n_genes, n_batches, n_latent, n_hidden, n_layers) < 1 or n_side < 0:
            raise ValueError("n_genes, n_batches, n_latent, n_hidden and n_layers must be >= 1 and n_side >= 0")
        self.n_batches = n_batches
        self.encoder = _mlp(n_genes + n_side, n_hidden, n_layers, dropout)
        self.latent_mean = nn.Linear(n_hidden, n_latent)
        self.latent_log_var = nn.Linear(n_hidden, n_latent)
        self.decoder = _mlp(n_latent + n_batches, n_hidden, n_layers, 0.0)
        self.gene_logits = nn.Linear(n_hidden, n_genes)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def encode(self, counts: torch.Tensor, side: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(n, n_latent)`` of each cell's latent."""
        features = torch.log1p(counts)
        if side is not None:
            features = torch.cat([features, side], dim=1)
        hidden = self.encoder(features)
        return self.latent_mean(hidden), self.latent_log_var(hidden).clamp(-10.0, 10.0)

    def expected_counts(self, latent: torch.Tensor, batch: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """``(n, n_genes)`` NB means: the decoder's gene shares of each cell's ``library`` in its ``batch``."""
        one_hot = F.one_hot(batch, self.n_batches).to(latent.dtype)
        hidden = self.decoder(torch.cat([latent, one_hot], dim=1))
        return torch.softmax(self.gene_logits(hidden), dim=1) * library[:, None]

    def negative_elbo_terms(
        self, counts: torch.Tensor, batch: torch.Tensor, side: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell reconstruction loss (negative NB log-likelihood summed over genes) and KL to ``N(0, I)``.

        The latent is sampled with the reparameterisation trick from torch's global generator.
        """
        mean, log_var = self.encode(counts, side)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        rate = self.expected_counts(latent, batch, counts.sum(dim=1))
        theta = self.log_theta.exp().clamp(1e-4, 1e4)
        reconstruction = -negative_binomial_log_likelihood(counts, rate, theta).sum(dim=1)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=1)
        return reconstruction, kl
