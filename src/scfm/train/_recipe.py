"""What a model family gives streaming pretraining: the :class:`PretrainRecipe` contract and its registry.

:func:`~scfm.train.pretrain` and :func:`~scfm.train.export_run` are family-agnostic: everything that depends on the
model (building it, turning cells into its batches, its objectives, writing its checkpoint) comes from the recipe
registered for ``config.model.family``. A family registers its recipe when its package is imported
(``scfm.train.register_recipe(MyRecipe())`` in the family folder's ``__init__.py``); ``scfm.train`` itself never
imports a family. Third-party packages can also declare one under the entry-point group ``scfm.pretrain_recipes``.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from scfm.data import CellEncoder
    from scfm.genes import GeneVocab

    from ._pretrain_config import PretrainConfig

ENTRY_POINT_GROUP = "scfm.pretrain_recipes"


class PretrainRecipe:
    """The family-specific half of ``scfm pretrain``; one instance per family, registered with :func:`register_recipe`.

    The module a recipe builds is an scvi-tools module: ``module(batch, loss_kwargs=...)`` returns
    ``(inference, generative, LossOutput)`` and ``module.config`` is its configuration dataclass, whose ``to_dict``
    is written to the run's ``model_config.json`` and whose dict has an ``extra`` provenance mapping.

    Attributes
    ----------
    family
        ``config.model.family`` of the runs it trains (the family's registry name).
    label
        Model name in the exported model card (``"SCGPT"``).
    objectives_cls
        Dataclass of the config's ``objectives`` section (unknown keys are errors; its defaults fill the run's
        ``config.yaml``).
    """

    family: ClassVar[str]
    label: ClassVar[str]
    objectives_cls: ClassVar[type]

    def check(self, config: PretrainConfig) -> list[str]:
        """Problems of ``config`` that only the family knows (objective values, ...); empty when it is fine."""
        return []

    def new_module(self, vocab: GeneVocab, config: PretrainConfig) -> torch.nn.Module:
        """Build a freshly initialised module over ``vocab``.

        It has ``config.model.architecture`` and ``config.model.max_len``; fields the family does not have raise a
        ``ValueError`` naming ``model.architecture``.
        """
        raise NotImplementedError

    def module_from_checkpoint(self, init_from: str) -> tuple[torch.nn.Module, GeneVocab]:
        """Return the module (in train mode) and vocabulary of a checkpoint directory or bundled name.

        Used to continue pretraining the checkpoint (``model.init_from``).
        """
        raise NotImplementedError

    def module_from_config(
        self, model_config: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None, *, source: str = ""
    ) -> torch.nn.Module:
        """Return the module described by a ``model_config.json`` dict, with ``state_dict`` loaded strictly if given.

        ``source`` names where the weights came from, for errors.
        """
        raise NotImplementedError

    def model_config(self, module: torch.nn.Module) -> dict[str, Any]:
        """Return what goes into the run's ``model_config.json`` (read back by :meth:`module_from_config`)."""
        return module.config.to_dict()

    def cell_encoder(self, module: torch.nn.Module, vocab: GeneVocab, config: PretrainConfig) -> CellEncoder:
        """Return the :class:`~scfm.data.CellEncoder` that turns streamed rows into the module's training batches."""
        raise NotImplementedError

    def loss_kwargs(self, objectives: Any) -> dict[str, Any]:
        """Keyword arguments of ``module.loss`` (objective weights) for an ``objectives_cls`` instance."""
        raise NotImplementedError

    def describe(self, module: torch.nn.Module) -> str:
        """One line on the architecture for the model card (width, depth, inference settings)."""
        return ""

    def save(
        self,
        destination: str | os.PathLike,
        module: torch.nn.Module,
        vocab: GeneVocab,
        *,
        model_card: str,
        overwrite: bool,
        half_precision: bool,
    ) -> Path:
        """Write ``module`` as a checkpoint directory the family's loaders read; returns it."""
        raise NotImplementedError


_RECIPES: dict[str, PretrainRecipe] = {}


def register_recipe(recipe: PretrainRecipe) -> PretrainRecipe:
    """Make ``recipe`` the pretraining recipe of ``recipe.family`` (a family package calls this on import)."""
    _RECIPES[recipe.family] = recipe
    return recipe


def registered_recipes() -> list[str]:
    """Families with a registered pretraining recipe (entry points included)."""
    _load_entry_points()
    return sorted(_RECIPES)


def _load_entry_points(family: str | None = None) -> None:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if (family is None or entry.name == family) and entry.name not in _RECIPES:
            loaded = entry.load()  # a family package registers its recipe on import; the entry may also be one
            if isinstance(loaded, PretrainRecipe) and loaded.family not in _RECIPES:
                register_recipe(loaded)


def get_recipe(family: str) -> PretrainRecipe:
    """Return the pretraining recipe registered for ``family``.

    Raises
    ------
    ValueError
        No recipe is registered for ``family``; the message names the families that have one.
    """
    if family not in _RECIPES:
        _load_entry_points(family)
    try:
        return _RECIPES[family]
    except KeyError:
        raise ValueError(
            f"model.family {family!r} is not supported by scfm pretrain: no pretraining recipe is registered for it "
            f"(registered: {registered_recipes()}). A family registers its recipe when its package is imported "
            "(`from scfm import models` registers the built-in ones), or pass recipe= to pretrain/export_run."
        ) from None


def resolve_recipe(family: str, recipe: PretrainRecipe | None) -> PretrainRecipe:
    """``recipe`` if given (it must be ``family``'s), else the one registered for ``family``."""
    if recipe is None:
        return get_recipe(family)
    if recipe.family != family:
        raise ValueError(f"the recipe trains {recipe.family!r} models but the config's model.family is {family!r}")
    return recipe
