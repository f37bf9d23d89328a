"""Hyper-parameters of a CellPLM-family model, stored as ``config.json`` in a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..base._config import ConfigDict

FAMILY = "cellplm"
ATTENTIONS = ("softmax", "flow")
POSITIONAL_ENCODINGS = ("none", "sin2d")


@dataclass
class CellPLMConfig(ConfigDict):
    """Architecture, input and pretraining settings of a CellPLM model (Wen et al., ICLR 2024).

    Parameters
    ----------
    n_genes
        Genes in the vocabulary (rows of the gene embedding, outputs of the count decoder).
    first_gene_id
        Vocabulary id of gene 0 (the number of special tokens before the genes).
    d_model, n_heads, n_layers, d_hidden
        Width, heads, depth and feed-forward width (``None``: ``2 * d_model``, as in the paper) of the
        transformer over cells.
    attention
        ``"softmax"`` (SDPA) or ``"flow"`` (Flowformer, linear in the number of cells; the reference's choice).
    dropout
        Dropout in training.
    latent_dim, n_components, latent_hidden
        Width of the latent, number of Gaussian-mixture prior components, hidden width of ``q(z|h,y)``.
    decoder_hidden, decoder_layers, decoder_bottleneck
        Negative-binomial decoder widths and depth.
    norm
        Normalisation after the input projection and in the decoder: ``"layernorm"`` or ``"groupnorm"``
        (4 groups; the released CellPLM checkpoint uses it).
    decoder_offsets
        A learned constant after each decoder block (set by the converter for reference checkpoints trained
        with batch/dataset covariates: their average covariate embedding).
    positional_encoding
        ``"sin2d"``: 2-D sinusoidal encoding of spatial coordinates (cells without coordinates get a learned
        "no position" vector); ``"none"``: no positional input at all.
    context
        Cells per sentence (chunk of a sample or spatial neighbourhood).
    normalize_total
        Library size each cell is scaled to before ``log1p`` and the gene-embedding product; ``None`` uses
        ``log1p`` of the raw counts (the reference code's input).
    mask_cell_rate, mask_gene_rate
        Pretraining masks: the fraction of a sentence's cells that are masked, and the fraction of a masked
        cell's measured genes hidden from the input.
    kl_weight
        Weight of the Gaussian-mixture KL term.
    family
        Always ``"cellplm"``.
    extra
        Free-form provenance.
    """

    n_genes: int
    first_gene_id: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_hidden: int | None = None
    attention: str = "softmax"
    dropout: float = 0.1
    latent_dim: int = 32
    n_components: int = 16
    latent_hidden: int = 512
    decoder_hidden: int = 128
    decoder_layers: int = 2
    decoder_bottleneck: int = 128
    norm: str = "layernorm"
    decoder_offsets: bool = False
    positional_encoding: str = "sin2d"
    context: int = 512
    normalize_total: float | None = 1e4
    mask_cell_rate: float = 0.75
    mask_gene_rate: float = 0.25
    kl_weight: float = 1.0
    family: str = FAMILY
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.d_hidden is None:
            self.d_hidden = 2 * self.d_model
        problems = []
        if self.n_genes < 1:
            problems.append(f"n_genes must be >= 1, got {self.n_genes}")
        if self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads})")
        if self.attention not in ATTENTIONS:
            problems.append(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.norm not in ("layernorm", "groupnorm"):
            problems.append(f"norm must be 'layernorm' or 'groupnorm', got {self.norm!r}")
        elif self.norm == "groupnorm" and (self.d_model % 4 or self.decoder_hidden % 4):
            problems.append("groupnorm (4 groups) needs d_model and decoder_hidden divisible by 4")
        if self.positional_encoding not in POSITIONAL_ENCODINGS:
            problems.append(
                f"positional_encoding must be one of {POSITIONAL_ENCODINGS}, got {self.positional_encoding!r}"
            )
        if self.positional_encoding == "sin2d" and self.d_model % 4:
            problems.append(f"a 2-D sinusoidal encoding needs d_model divisible by 4, got {self.d_model}")
        if self.context < 2:
            problems.append(f"context must be >= 2 cells, got {self.context}")
        if self.normalize_total is not None and self.normalize_total <= 0:
            problems.append(f"normalize_total must be positive or None, got {self.normalize_total}")
        for name in ("mask_cell_rate", "mask_gene_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                problems.append(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.family != FAMILY:
            problems.append(f"family is {self.family!r}, expected {FAMILY!r}")
        if problems:
            raise ValueError("invalid CellPLM config: " + "; ".join(problems))
