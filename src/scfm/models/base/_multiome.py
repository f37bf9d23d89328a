"""Capability ``"integrate_modalities"``: a joint embedding of paired or mosaic multi-omic cells (MuData)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from scfm.genes import GeneRules

from ._pretrained import Pretrained

if TYPE_CHECKING:
    from mudata import MuData


@dataclass(frozen=True)
class ModalityIntegrationRequest:
    """What :func:`scfm.tl.integrate_modalities` asks of a family; the fields are the tool's arguments.

    ``modalities`` maps modality kinds (``"rna"``, ``"atac"``, ``"protein"``) to ``mdata.mod`` keys (``None``: the
    defaults that exist); ``layers`` maps kinds to layers (absent: ``X``). ``n_top_features`` maps kinds to the
    number of features to select (``None``: all). ``max_tokens`` maps kinds to the most non-zero tokens of a cell
    in that modality. ``dar_weight=None`` and ``modality_dropout=None`` let the family decide (on for mosaic data).
    """

    batch_key: str | None = None
    modalities: Mapping[str, str | None] | None = None
    layers: Mapping[str, str | None] = field(default_factory=dict)
    n_top_features: Mapping[str, int | None] = field(default_factory=dict)
    max_tokens: Mapping[str, int] = field(default_factory=dict)
    gene_tokens: str = "pretrained"
    gene_rules: GeneRules = GeneRules()
    max_epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    mask_ratio: float = 0.4
    zero_fraction: float = 0.25
    gep_weight: float = 1.0
    gepc_weight: float = 1.0
    ecs_weight: float = 0.0
    dar_weight: float | None = None
    modality_dropout: float | None = None
    modality_embeddings: bool = False
    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class ModalityIntegration:
    """Result of the capability.

    The joint embedding ``(n_obs, width)`` of every cell of the MuData, optional per-modality embeddings (``NaN`` rows
    for cells without the modality), the fine-tuned model and its provenance fields.
    """

    embedding: np.ndarray
    model: Any
    record: dict[str, Any]
    per_modality: dict[str, np.ndarray] = field(default_factory=dict)


class IntegratesModalities:
    """Capability ``"integrate_modalities"``: fine-tune on a MuData's modalities and embed its cells jointly."""

    capability: ClassVar[str] = "integrate_modalities"
    does: ClassVar[str] = "integrate modalities (MuData)"

    def integrate_modalities(
        self, pretrained: Pretrained, mdata: MuData, request: ModalityIntegrationRequest
    ) -> ModalityIntegration:
        """Fine-tune a multi-modal model started from ``pretrained`` on ``mdata`` (never modified) and embed it."""
        raise NotImplementedError
