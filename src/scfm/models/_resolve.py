"""Turn the ``model=`` argument of the tools into a loaded checkpoint."""

from __future__ import annotations

import os

from .scgpt import SCGPT, PretrainedSCGPT, load_pretrained_module

ModelArg = str | os.PathLike | SCGPT | PretrainedSCGPT | None


def resolve_model(model: ModelArg) -> PretrainedSCGPT:
    """A loaded checkpoint from ``None`` (bundled default), a bundled name, a directory, or an SCGPT model."""
    if isinstance(model, PretrainedSCGPT):
        return model
    if isinstance(model, SCGPT):
        return PretrainedSCGPT(
            model.module, model.vocab, model.checkpoint_name, "in-memory model", model.checkpoint_sha256 or "none"
        )
    return load_pretrained_module(model)
