"""Turn the ``model=`` argument of the tools into a loaded checkpoint whose family has the capability a tool needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ._checkpoint import BUNDLED, CheckpointError, load_checkpoint
from ._family import Family, describe_capability, families, families_with, get_family
from ._pretrained import Pretrained

if TYPE_CHECKING:
    from ._model import FoundationModel

ModelArg = Union[str, os.PathLike, "FoundationModel", Pretrained, None]


def load_pretrained(name_or_path: str | os.PathLike | None = None, family: str | None = None) -> Pretrained:
    """Load a checkpoint without an AnnData.

    The source is a bundled name, an scfm checkpoint directory, or a directory of a family's reference code base
    (converted in memory). Nothing is downloaded.

    Parameters
    ----------
    name_or_path
        ``None`` (the bundled default), a bundled name (``"default"``, ``"scgpt"``, ``"tgpt"``, ``"cellplm"``,
        ``"scmulan"``) or a directory.
    family
        The family the checkpoint must belong to (``None``: any). With a family, ``"default"`` names that family's
        bundled checkpoint (``SCGPT.from_pretrained("default", adata)`` loads the bundled scGPT model).

    Raises
    ------
    CheckpointError
        Missing or corrupted files, or a checkpoint of another family than ``family``.
    """
    if family is not None and str(name_or_path).lower() == "default":
        name_or_path = None
    if name_or_path is not None:
        for candidate in families():
            if candidate.recognises(name_or_path):
                pretrained = candidate.from_reference(name_or_path)
                break
        else:
            pretrained = _from_scfm_checkpoint(name_or_path, family)
    else:
        pretrained = _from_scfm_checkpoint(get_family(family).bundled if family else None, family)
    if family is not None and pretrained.family != family:
        raise CheckpointError(
            f"{pretrained.path} holds a {pretrained.family!r} model, not {get_family(family).a_label} one"
        )
    return pretrained


def _from_scfm_checkpoint(name_or_path: str | os.PathLike | None, family: str | None) -> Pretrained:
    checkpoint = load_checkpoint(name_or_path)
    try:
        spec = get_family(checkpoint.family)
    except KeyError:
        wanted = get_family(family).a_label if family else "an scfm"
        raise CheckpointError(
            f"{checkpoint.path} holds a {checkpoint.family!r} model, not {wanted} one (config.json's 'family' must "
            f"be one of {[f.name for f in families()]})"
        ) from None
    if family is not None and spec.name != family:
        raise CheckpointError(
            f"{checkpoint.path} holds a {checkpoint.family!r} model, not {get_family(family).a_label} one"
        )
    return spec.from_checkpoint(checkpoint)


def default_model_for(capability: str) -> str:
    """Return the bundled checkpoint a tool uses when ``model=None``.

    It is the package default (``"default"``) if its family has ``capability``, otherwise the bundled checkpoint of
    the first registered family that has it.
    """
    able = families_with(capability)
    if not able:
        raise CheckpointError(f"no registered model family can {describe_capability(capability)}")
    default = [family for family in able if BUNDLED.get(family.bundled) == BUNDLED["default"]]
    return "default" if default else able[0].bundled


def resolve_model(model: ModelArg = None, capability: str | None = None) -> Pretrained:
    """Resolve ``model`` to a loaded checkpoint.

    ``model`` is ``None`` (the bundled default for ``capability``), a bundled name, a directory, a model instance or a
    :class:`Pretrained`.

    Raises
    ------
    CheckpointError
        The checkpoint's family does not serve ``capability`` (the message names the families that do).
    """
    from ._model import FoundationModel

    if isinstance(model, Pretrained):
        pretrained = model
    elif isinstance(model, FoundationModel):
        pretrained = model.pretrained
    else:
        if model is None and capability is not None:
            model = default_model_for(capability)
        pretrained = load_pretrained(model)
    if capability is not None and capability not in pretrained.spec.capabilities:
        raise CheckpointError(_lacks(pretrained, capability))
    return pretrained


def _lacks(pretrained: Pretrained, capability: str) -> str:
    able: list[Family] = families_with(capability)
    where = pretrained.name if pretrained.path == "in-memory model" else str(Path(pretrained.path))
    names = " or ".join(f"{f.label} (bundled: {f.bundled!r})" for f in able) or "none"
    what = describe_capability(capability)
    return f"{where} is {pretrained.spec.a_label} model, which cannot {what}; models that can: {names}"
