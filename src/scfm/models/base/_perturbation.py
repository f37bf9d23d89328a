"""Capability ``"predict_perturbation"``: expression after a genetic perturbation (scGPT's perturb-GEP).

A tool builds a :class:`PerturbationRequest`, asks a family with the capability to fine-tune
(:meth:`PredictsPerturbation.finetune_perturbation`) and then asks the fine-tuned model
(:class:`PerturbationModel`) for one prediction per requested perturbation (:class:`PerturbationPrediction`).
Perturbations are written ``"GENE"`` or ``"GENE1+GENE2"``; :func:`parse_perturbation` reads them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from anndata import AnnData

from scfm.genes import GeneAlignment, GeneRules

from ._pretrained import Pretrained

#: File that marks a checkpoint directory as a fine-tuned perturbation model.
PERTURBATION_FILE = "perturbation.json"

_GENE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


def parse_perturbation(text: object) -> tuple[str, ...]:
    """Return the genes of one perturbation written ``"GENE"`` or ``"GENE1+GENE2"`` (sorted, distinct).

    Raises
    ------
    ValueError
        Not a string, an empty part (``"A+"``, ``"+B"``, ``"A++B"``), a gene named twice, or a character that
        cannot be part of a gene symbol (spaces, commas...).
    """
    if not isinstance(text, str):
        raise TypeError(f"a perturbation is a string like 'STAT1' or 'STAT1+IRF1', got {type(text).__name__}")
    parts = [part.strip() for part in text.split("+")]
    bad = [part for part in parts if not _GENE.match(part)]
    if bad:
        raise ValueError(
            f"cannot read perturbation {text!r}: write one gene ('STAT1') or genes joined by '+' ('STAT1+IRF1'), "
            f"without spaces or other separators (offending part: {bad[0]!r})"
        )
    if len(set(parts)) != len(parts):
        raise ValueError(f"perturbation {text!r} names a gene twice")
    return tuple(sorted(parts))


def perturbation_name(genes: tuple[str, ...]) -> str:
    """Return the canonical name of a perturbation: its genes sorted and joined by ``"+"``."""
    return "+".join(sorted(genes))


def is_perturbation_checkpoint(path: object) -> bool:
    """Whether ``path`` is a directory written by a fine-tuned :class:`PerturbationModel`."""
    return isinstance(path, str | os.PathLike) and (Path(path).expanduser() / PERTURBATION_FILE).is_file()


@dataclass(frozen=True)
class PerturbationRequest:
    """What :func:`scfm.tl.predict_perturbation` asks of a family when it fine-tunes.

    ``perturbation_key`` names the ``obs`` column of each cell's perturbation (``"GENE"`` or ``"A+B"``), ``control``
    its label for control cells. ``cells_per_perturbation`` caps the training cells of each perturbation (a
    seeded subsample; ``None`` keeps all); ``control_cells`` caps the control cells used as inputs;
    ``target_cells`` > 1 averages each target over that many cells of its perturbation. The other
    fields are the tool's arguments of the same names.
    """

    perturbation_key: str
    control: str
    layer: str | None = None
    use_raw: bool = False
    gene_key: str | None = None
    max_epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    cells_per_perturbation: int | None = 200
    target_cells: int = 1
    control_cells: int | None = 500
    min_cells: int = 10
    min_genes: int = 50
    gene_rules: GeneRules = GeneRules()
    seed: int = 0
    device: str = "auto"
    progress: bool = True


@dataclass
class PerturbationPrediction:
    """Predicted mean log-normalised expression, one row per perturbation, one column per gene.

    ``genes`` are the data's gene names (``var_names``) of the columns the model predicts, ``control_mean`` the
    observed mean of the control cells on the same scale (``log1p`` of counts scaled to ``target_sum``),
    ``record`` the family's provenance fields.
    """

    perturbations: list[str]
    genes: list[str]
    predicted: np.ndarray
    control_mean: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)
    alignment: GeneAlignment | None = None


class PerturbationModel:
    """A model fine-tuned to predict perturbation effects; the family subclasses it.

    Subclasses implement :meth:`predict`, :meth:`save` and the classmethod :meth:`load`, and set
    ``pretrained`` (the fine-tuned checkpoint handle) and ``perturbations`` (the perturbations seen in training).
    """

    pretrained: Pretrained
    perturbations: list[str]

    def known_genes(self) -> set[str]:
        """Genes a perturbation may name (the model's vocabulary)."""
        return set(self.pretrained.vocab.genes)

    def predict(
        self,
        adata: AnnData,
        perturbations: list[tuple[str, ...]],
        *,
        n_control_cells: int,
        seed: int,
        device: str,
        request: PerturbationRequest,
    ) -> PerturbationPrediction:
        """Predict the mean expression after each perturbation, starting from the control cells of ``adata``.

        ``request`` says how ``adata`` is read (``perturbation_key``, ``control``, ``layer``, gene rules).
        """
        raise NotImplementedError

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the fine-tuned model as a checkpoint directory (with ``perturbation.json``)."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | os.PathLike) -> PerturbationModel:
        """Read a directory written by :meth:`save`."""
        raise NotImplementedError


class PredictsPerturbation:
    """Capability ``"predict_perturbation"``: fine-tune on a perturbation screen, predict unseen perturbations."""

    capability: ClassVar[str] = "predict_perturbation"
    does: ClassVar[str] = "predict genetic perturbation effects"

    def finetune_perturbation(
        self, pretrained: Pretrained, adata: AnnData, request: PerturbationRequest
    ) -> PerturbationModel:
        """Fine-tune a copy of ``pretrained`` on the perturbed and control cells of ``adata`` (never modified)."""
        raise NotImplementedError

    def load_perturbation_model(self, path: str | os.PathLike) -> PerturbationModel:
        """Load a fine-tuned perturbation model saved by :meth:`PerturbationModel.save`."""
        raise NotImplementedError


def load_perturbation_model(path: str | os.PathLike) -> PerturbationModel:
    """Load a fine-tuned perturbation model from its directory, through the family named in ``perturbation.json``.

    Raises
    ------
    CheckpointError
        The directory has no readable ``perturbation.json`` or names a family without the capability.
    """
    import json

    from ._checkpoint import CheckpointError
    from ._family import get_family

    file = Path(path).expanduser() / PERTURBATION_FILE
    try:
        family_name = json.loads(file.read_text())["family"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{str(file)!r} is not a readable perturbation-model file ({err})") from err
    family = get_family(family_name)
    if not isinstance(family, PredictsPerturbation):
        raise CheckpointError(f"{str(file)!r} names family {family_name!r}, which does not predict perturbations")
    return family.load_perturbation_model(path)
