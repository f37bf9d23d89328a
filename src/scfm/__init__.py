"""scfm: single-cell foundation models for the scverse ecosystem.

Sub-packages load on first access, so ``import scfm`` stays fast::

    import scfm
    scfm.tl.embed(adata)   # bundled default model, offline
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._settings import settings

__version__ = "0.1.0"

_SUBMODULES = ("bench", "data", "datasets", "errors", "genes", "models", "nn", "pl", "pp", "tl", "tokenize", "train")

if TYPE_CHECKING:
    from . import bench, data, datasets, errors, genes, models, nn, pl, pp, tl, tokenize, train  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'scfm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])


__all__ = ["__version__", "settings", *_SUBMODULES]
