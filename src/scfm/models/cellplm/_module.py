"""CellPLM network: cells are tokens, a sample (or spatial neighbourhood) is the sentence."""

from __future__ import annotations

import torch
from scvi.module.base import BaseModuleClass, LossOutput
from torch import nn

from scfm.nn import (
    GaussianMixtureLatent,
    MixtureLatentOutput,
    NegativeBinomialDecoder,
    SinusoidalPosition2D,
    TransformerStack,
    feature_norm,
    negative_binomial_log_likelihood,
)

from ._config import CellPLMConfig

COUNTS, MEASURED, COORDINATES = "counts", "measured", "coordinates"


def relative_coordinates(coordinates: torch.Tensor) -> torch.Tensor:
    """Coordinates of one sentence centred on its centroid, in units of the median nearest-neighbour distance.

    The unit makes the encoding independent of the platform's scale (pixels, microns, spot grid).
    """
    centred = coordinates - coordinates.mean(0, keepdim=True)
    if coordinates.shape[0] < 2:
        return centred
    distances = torch.cdist(centred, centred)
    distances.fill_diagonal_(float("inf"))
    spacing = distances.min(1).values.median()
    if not torch.isfinite(spacing) or spacing <= 0:
        positive = distances[torch.isfinite(distances) & (distances > 0)]
        spacing = positive.min() if positive.numel() else torch.ones((), dtype=coordinates.dtype)
    return centred / spacing


class CellPLMModule(BaseModuleClass):
    """The CellPLM network.

    Expression-weighted gene embeddings per cell, a transformer over the cells of a sentence, a Gaussian-mixture
    latent and a negative-binomial decoder over the vocabulary.

    A cell's token is ``transform(x) @ gene_embedding`` (``transform`` = ``log1p`` of library-normalised or raw
    counts), plus a 2-D sinusoidal encoding of its coordinates when the sentence has them, through a
    Linear-ReLU-LayerNorm projection. The encoder is the shared pre-norm :class:`~scfm.nn.TransformerStack`
    (its final LayerNorm precedes the latent). Without coordinates the encoder is permutation-equivariant in
    the cells: a cell's embedding depends on which cells share its sentence, not on their order.
    """

    def __init__(self, config: CellPLMConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.gene_embedding = nn.Parameter(torch.randn(config.n_genes, d) * 0.005)
        if config.positional_encoding == "sin2d":
            self.position = SinusoidalPosition2D(d)
            self.no_position = nn.Parameter(torch.zeros(d))
        else:
            self.position = None
            self.no_position = None
        self.input_projection = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), feature_norm(config.norm, d)
        )
        self.encoder = TransformerStack(
            config.n_layers,
            d,
            config.n_heads,
            config.d_hidden,
            config.dropout,
            "gelu",
            norm_first=True,
            attention=config.attention,
        )
        self.latent = GaussianMixtureLatent(d, config.latent_dim, config.n_components, config.latent_hidden)
        self.decoder = NegativeBinomialDecoder(
            config.latent_dim,
            config.decoder_hidden,
            config.n_genes,
            config.decoder_layers,
            config.dropout,
            config.decoder_bottleneck,
            norm=config.norm,
            offsets=config.decoder_offsets,
        )

    # -- building blocks --------------------------------------------------------------------------
    def transform(self, counts: torch.Tensor) -> torch.Tensor:
        """``log1p`` of ``(n, n_genes)`` counts, library-normalised first when the config says so."""
        total = self.config.normalize_total
        if total is None:
            return torch.log1p(counts)
        library = counts.sum(-1, keepdim=True).clamp_min(1e-8)
        return torch.log1p(counts / library * total)

    def cell_features(self, transformed: torch.Tensor) -> torch.Tensor:
        """``(n, n_genes) @ gene_embedding``: each cell as the expression-weighted sum of its gene embeddings."""
        return transformed @ self.gene_embedding

    def encode(self, features: torch.Tensor, coordinates: torch.Tensor | None = None) -> torch.Tensor:
        """``(length, d_model)`` cell features of one sentence -> ``(length, d_model)`` contextual states."""
        if self.position is not None:
            if coordinates is None:
                features = features + self.no_position
            else:
                features = features + self.position(relative_coordinates(coordinates.to(features.dtype)))
        return self.encoder(self.input_projection(features)[None])[0]

    def latent_of(self, hidden: torch.Tensor, sample: bool | None = None) -> MixtureLatentOutput:
        return self.latent(hidden, sample)

    @torch.inference_mode()
    def embed_sentence(self, features: torch.Tensor, coordinates: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic ``(length, latent_dim)`` embedding (posterior mean of the most likely component)."""
        return self.latent_of(self.encode(features, coordinates), sample=False).mean

    # -- pretraining ------------------------------------------------------------------------------
    def masked_sentence_loss(
        self, counts: torch.Tensor, measured: torch.Tensor, coordinates: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Masked-cell, masked-gene NB reconstruction of one sentence plus the mixture KL.

        ``mask_cell_rate`` of the cells are masked; a masked cell loses ``mask_gene_rate`` of its measured genes
        from the input. The NB log-likelihood of the masked cells' measured genes (all of them, plus the hidden
        ones again) is reconstructed from what is left of the cell and from the other cells of the sentence.
        Genes a cell's dataset did not measure (``measured`` False) are neither input nor target.

        Returns
        -------
        ``loss`` (to minimise), ``reconstruction`` and ``hidden_reconstruction`` (NB negative log-likelihood per
        masked cell, summed over genes), ``kl`` (per cell), ``n_masked``.
        """
        config = self.config
        genes = measured.any(0).nonzero().squeeze(1)  # only the genes this sentence measured are computed
        counts, measured = counts[:, genes], measured[:, genes]
        n_cells = counts.shape[0]
        n_masked = max(1, round(config.mask_cell_rate * n_cells))
        masked_cells = torch.zeros(n_cells, dtype=torch.bool, device=counts.device)
        masked_cells[torch.randperm(n_cells, device=counts.device)[:n_masked]] = True
        hidden_entries = (torch.rand(counts.shape, device=counts.device) < config.mask_gene_rate) & measured
        hidden_entries &= masked_cells[:, None]
        visible = counts.masked_fill(hidden_entries, 0.0)
        hidden = self.encode(self.transform(visible) @ self.gene_embedding[genes], coordinates)
        latent = self.latent_of(hidden)
        logits = self.decoder(latent.z, genes)
        mean = self.decoder.expected_counts(logits, counts.sum(-1), measured)
        log_likelihood = negative_binomial_log_likelihood(counts, mean, self.decoder.theta()[genes]) * measured
        reconstruction = -log_likelihood.sum(-1)[masked_cells].mean()
        hidden_reconstruction = -(log_likelihood * hidden_entries).sum(-1)[masked_cells].mean()
        kl = latent.kl.mean()
        loss = reconstruction + hidden_reconstruction + config.kl_weight * kl
        return {
            "loss": loss,
            "reconstruction": reconstruction,
            "hidden_reconstruction": hidden_reconstruction,
            "kl": kl,
            "n_masked": torch.tensor(n_masked),
        }

    # -- scvi-tools module protocol (one sentence per batch) ----------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor]:
        coordinates = tensors.get(COORDINATES)
        if coordinates is not None and coordinates.numel() == 0:
            coordinates = None
        return {"counts": tensors[COUNTS], "measured": tensors[MEASURED], "coordinates": coordinates}

    def inference(self, counts, measured, coordinates=None) -> dict[str, torch.Tensor]:
        return self.masked_sentence_loss(counts, measured, coordinates)

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict:
        return {}

    def generative(self) -> dict:
        return {}

    def loss(self, tensors, inference_outputs, generative_outputs, **kwargs) -> LossOutput:
        out = inference_outputs
        return LossOutput(
            loss=out["loss"],
            reconstruction_loss={"nb": out["reconstruction"], "nb_hidden": out["hidden_reconstruction"]},
            kl_local={"gmm_kl": out["kl"]},
            n_obs_minibatch=int(out["n_masked"]),
        )
