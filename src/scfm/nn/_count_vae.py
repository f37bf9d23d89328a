"""A batch-conditioned variational autoencoder of counts (the scVI model class), with optional side features."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ._counts import negative_binomial_log_likelihood

NORMS = ("batch", "layer", "layer_affine")
Norm = Literal["batch", "layer", "layer_affine"]
DEEP_INJECTION = False  # the batch joins every hidden layer's input (scVI's deeply_inject_covariates), not the first


class _BatchInjectedMLP(nn.Module):
    """Linear -> norm -> ReLU (-> dropout) layers; the batch one-hot joins the input of the first or of every layer."""

    def __init__(
        self, d_in: int, d_hidden: int, n_layers: int, dropout: float, norm: str, n_batches: int, deep: bool
    ) -> None:
        super().__init__()
        self.n_batches, self.deep = n_batches, deep
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        for i in range(n_layers):
            width_in = (d_in if i == 0 else d_hidden) + (n_batches if i == 0 or deep else 0)
            self.linears.append(nn.Linear(width_in, d_hidden))
            if norm == "batch":
                self.norms.append(nn.BatchNorm1d(d_hidden))
            else:
                self.norms.append(nn.LayerNorm(d_hidden, elementwise_affine=norm == "layer_affine"))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def injected(self) -> list[nn.Linear]:
        """Return the linear layers whose last ``n_batches`` input columns read the batch."""
        if self.n_batches == 0:
            return []
        return list(self.linears) if self.deep else [self.linears[0]]

    def forward(self, features: torch.Tensor, one_hot: torch.Tensor | None) -> torch.Tensor:
        hidden = features
        for i, (linear, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            if one_hot is not None and (i == 0 or self.deep):
                hidden = torch.cat([hidden, one_hot], dim=1)
            hidden = self.dropout(torch.relu(norm(linear(hidden))))
        return hidden


class BatchConditionedCountVAE(nn.Module):
    """Counts -> Gaussian cell latent -> negative-binomial counts, with the batch given to the decoder.

    The encoder reads ``log1p(counts)`` of ``n_genes`` genes, beside ``n_side`` optional side features of each cell
    (e.g. a frozen foundation-model embedding, already scaled) and, with ``encode_batch``, the batch (one-hot). The
    decoder reads the latent and the cell's batch (one-hot) and gives each gene a share of the cell's observed
    library; each gene has one inverse dispersion. Since the decoder knows the batch, the latent need not carry it
    (Lopez et al. 2018). Reading the batch in the encoder too, with layer norm instead of batch norm, is the
    setting scArches (Lotfollahi et al. 2022) recommends for a reference that queries will be mapped onto:
    :meth:`with_new_batches` then adds batches whose own columns can be trained alone.

    Parameters
    ----------
    n_genes, n_side, n_batches
        Genes modelled, side features read by the encoder (0 for none), batches.
    n_latent, n_hidden, n_layers, dropout
        Latent width, hidden width, hidden layers of encoder and decoder, dropout of the encoder's hidden layers.
    encode_batch
        Whether the encoder reads the batch as well.
    norm
        ``"batch"`` (batch norm, scVI's default), ``"layer"`` (layer norm without affine parameters, scArches') or
        ``"layer_affine"`` (layer norm with a learnt per-unit scale and shift); one for both encoder and decoder, or
        an ``(encoder, decoder)`` pair.
    deep_injection
        The batch joins the input of every hidden layer (scVI's ``deeply_inject_covariates``), not only the first.
        Off by default: ``tl.integrate`` was benchmarked with the batch in the first layer.
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
        encode_batch: bool = False,
        norm: Norm | tuple[Norm, Norm] = "batch",
        deep_injection: bool = DEEP_INJECTION,
    ) -> None:
        super().__init__()
        if min(n_genes, n_batches, n_latent, n_hidden, n_layers) < 1 or n_side < 0:
            raise ValueError("n_genes, n_batches, n_latent, n_hidden and n_layers must be >= 1 and n_side >= 0")
        encoder_norm, decoder_norm = (norm, norm) if isinstance(norm, str) else tuple(norm)
        for side_norm in (encoder_norm, decoder_norm):
            if side_norm not in NORMS:
                raise ValueError(f"norm must be one of {NORMS} or an (encoder, decoder) pair of them, got {norm!r}")
        self.n_genes, self.n_side, self.n_batches = n_genes, n_side, n_batches
        self.encode_batch, self.dropout, self.deep_injection = encode_batch, dropout, deep_injection
        self.norm = (encoder_norm, decoder_norm)
        encoder_batches = n_batches if encode_batch else 0
        self.encoder = _BatchInjectedMLP(
            n_genes + n_side, n_hidden, n_layers, dropout, encoder_norm, encoder_batches, deep_injection
        )
        self.latent_mean = nn.Linear(n_hidden, n_latent)
        self.latent_log_var = nn.Linear(n_hidden, n_latent)
        self.decoder = _BatchInjectedMLP(n_latent, n_hidden, n_layers, 0.0, decoder_norm, n_batches, deep_injection)
        self.gene_logits = nn.Linear(n_hidden, n_genes)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def encode(
        self, counts: torch.Tensor, side: torch.Tensor | None = None, batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(n, n_latent)`` of each cell's latent (``batch`` is needed with ``encode_batch``)."""
        features = torch.log1p(counts)
        if side is not None:
            features = torch.cat([features, side], dim=1)
        one_hot = None
        if self.encode_batch:
            if batch is None:
                raise ValueError("this VAE's encoder reads the batch; pass batch=")
            one_hot = F.one_hot(batch, self.n_batches).to(counts.dtype)
        hidden = self.encoder(features, one_hot)
        return self.latent_mean(hidden), self.latent_log_var(hidden).clamp(-10.0, 10.0)

    def expected_counts(self, latent: torch.Tensor, batch: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """``(n, n_genes)`` NB means: the decoder's gene shares of each cell's ``library`` in its ``batch``."""
        hidden = self.decoder(latent, F.one_hot(batch, self.n_batches).to(latent.dtype))
        return torch.softmax(self.gene_logits(hidden), dim=1) * library[:, None]

    def negative_elbo_terms(
        self, counts: torch.Tensor, batch: torch.Tensor, side: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell reconstruction loss (negative NB log-likelihood summed over genes) and KL to ``N(0, I)``.

        The latent is sampled with the reparameterisation trick from torch's global generator.
        """
        mean, log_var = self.encode(counts, side, batch)
        latent = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        rate = self.expected_counts(latent, batch, counts.sum(dim=1))
        theta = self.log_theta.exp().clamp(1e-4, 1e4)
        reconstruction = -negative_binomial_log_likelihood(counts, rate, theta).sum(dim=1)
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(dim=1)
        return reconstruction, kl

    def batch_input_layers(self) -> list[nn.Linear]:
        """Return the linear layers that read the one-hot batch in their last ``n_batches`` input columns."""
        return self.encoder.injected() + self.decoder.injected()

    def with_new_batches(self, n_new: int) -> BatchConditionedCountVAE:
        """Return a copy with ``n_new`` more batches, whose input columns start at the existing batches' mean.

        Every other weight is copied, so cells of the existing batches are encoded and decoded as before.
        """
        if n_new < 1:
            raise ValueError(f"n_new must be >= 1, got {n_new}")
        extended = BatchConditionedCountVAE(
            self.n_genes,
            self.n_side,
            self.n_batches + n_new,
            n_latent=self.latent_mean.out_features,
            n_hidden=self.latent_mean.in_features,
            n_layers=len(self.encoder.linears),
            dropout=self.dropout,
            encode_batch=self.encode_batch,
            norm=self.norm,
            deep_injection=self.deep_injection,
        )
        state = self.state_dict()
        names = {id(module): name for name, module in self.named_modules()}
        with torch.no_grad():
            for layer in self.batch_input_layers():
                weight = layer.weight.detach()
                new_columns = weight[:, -self.n_batches :].mean(dim=1, keepdim=True).expand(-1, n_new)
                state[f"{names[id(layer)]}.weight"] = torch.cat([weight, new_columns], dim=1)
        extended.load_state_dict(state, strict=True)
        return extended
