"""The exception classes scfm raises, in one place (see ``docs/errors.md``).

Every error that a bad argument, a bad AnnData or a bad checkpoint causes is a ``ValueError`` (some are also a
``TypeError``, ``KeyError`` or ``FileNotFoundError``, so that either ``except`` clause catches them); the classes
below say more precisely what went wrong. The AnnData passed in is unchanged whenever one of them is raised.
"""

from __future__ import annotations

from scfm._validation import ArgumentTypeError
from scfm.genes import GeneKeyError
from scfm.models.base import CheckpointError, CheckpointNotFoundError, NoKnownGenesError, NonFiniteOutputError

__all__ = [
    "ArgumentTypeError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "GeneKeyError",
    "NoKnownGenesError",
    "NonFiniteOutputError",
]
