"""``Pretrained``: a loaded checkpoint of any family, independent of any AnnData."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from scfm.genes import GeneVocab

from ._checkpoint import recorded_checkpoint

if TYPE_CHECKING:
    from ._family import Family


@dataclass
class Pretrained:
    """A family's torch module (in eval mode) with its vocabulary and where it came from.

    Attributes
    ----------
    family
        Registered family name (``"scgpt"``, ``"tgpt"``, ``"cellplm"``, ``"scmulan"``, ...).
    module
        The family's torch module; ``module.config`` is its configuration.
    vocab
        The gene vocabulary the module's token ids refer to.
    name, path, sha256
        Checkpoint name, directory (or ``"in-memory model"``) and sha256 of its weights file (``None`` for
        weights never saved).
    genes
        The genes of the AnnData a model was set up with (``var_names``) when the handle comes from a model
        instance; ``None`` otherwise. Reference mapping (``load_query_data``) aligns a query to them.
    """

    family: str
    module: torch.nn.Module
    vocab: GeneVocab
    name: str
    path: str
    sha256: str | None
    genes: tuple[str, ...] | None = None

    @property
    def config(self) -> Any:
        """The module's configuration dataclass."""
        return self.module.config

    @property
    def spec(self) -> Family:
        """The registered :class:`~scfm.models.base.Family` of this checkpoint."""
        from ._family import get_family

        return get_family(self.family)

    def provenance(self) -> dict[str, Any]:
        """Return what every tool records about the model it used."""
        return {
            "model": self.name,
            "family": self.family,
            "checkpoint": recorded_checkpoint(self.path),
            "checkpoint_sha256": self.sha256,
            "vocab_size": len(self.vocab),
            "vocab_fingerprint": self.vocab.fingerprint(),
        }
