"""Turn the ``model=`` argument of the tools into a loaded checkpoint of an accepted family."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._checkpoint import CheckpointError, load_checkpoint
from .cellplm import CellPLM, PretrainedCellPLM, cellplm_from_checkpoint
from .scgpt import SCGPT, PretrainedSCGPT, load_pretrained_module, scgpt_from_checkpoint
from .scgpt._convert import is_reference_checkpoint_dir
from .scmulan import PretrainedSCMulan, SCMulan, scmulan_from_checkpoint
from .tgpt import TGPT, PretrainedTGPT, tgpt_from_checkpoint

Pretrained = PretrainedSCGPT | PretrainedTGPT | PretrainedCellPLM | PretrainedSCMulan
ModelArg = str | os.PathLike | SCGPT | TGPT | CellPLM | SCMulan | Pretrained | None

_FROM_CHECKPOINT = {
    "scgpt": scgpt_from_checkpoint,
    "tgpt": tgpt_from_checkpoint,
    "cellplm": cellplm_from_checkpoint,
    "scmulan": scmulan_from_checkpoint,
}
_LOADED = {SCGPT: PretrainedSCGPT, TGPT: PretrainedTGPT, CellPLM: PretrainedCellPLM, SCMulan: PretrainedSCMulan}
_FAMILY = {PretrainedTGPT: "tgpt", PretrainedCellPLM: "cellplm", PretrainedSCMulan: "scmulan"}


def family_of(pretrained: Pretrained) -> str:
    return _FAMILY.get(type(pretrained), "scgpt")


def resolve_model(model: ModelArg, families: Sequence[str] = ("scgpt",)) -> Pretrained:
    """A loaded checkpoint from ``None`` (bundled default), a bundled name, a directory, or a model instance.

    Raises
    ------
    CheckpointError
        The checkpoint's family is not one of ``families`` (the tool cannot use it).
    """
    if isinstance(model, Pretrained):
        pretrained = model
    elif isinstance(model, SCGPT | TGPT | CellPLM | SCMulan):
        loaded = next(cls for kind, cls in _LOADED.items() if isinstance(model, kind))
        pretrained = loaded(
            model.module, model.vocab, model.checkpoint_name, "in-memory model", model.checkpoint_sha256 or "none"
        )
    elif model is not None and is_reference_checkpoint_dir(model):
        pretrained = load_pretrained_module(model)
    else:
        checkpoint = load_checkpoint(model)
        if checkpoint.family not in families:
            raise CheckpointError(_wrong_family(checkpoint.family, families, str(checkpoint.path)))
        pretrained = _FROM_CHECKPOINT[checkpoint.family](checkpoint)
    family = family_of(pretrained)
    if family not in families:
        raise CheckpointError(_wrong_family(family, families, pretrained.name))
    return pretrained


def _wrong_family(family: str, families: Sequence[str], where: str) -> str:
    return (
        f"{where} is a {family!r} model; this tool accepts {' or '.join(repr(f) for f in families)} models "
        f"(bundled: 'default'/'scgpt' for scGPT, 'tgpt' for tGPT, 'cellplm' for CellPLM, 'scmulan' for scMulan)"
    )
