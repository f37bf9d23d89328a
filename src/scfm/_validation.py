"""One set of argument rules for every public entry point (tools, model classes, CLI).

A rule belongs to an argument *name*: ``batch_size`` means the same thing, and is checked the same way, in every
function that takes it. :func:`checked_arguments` wraps a public function so that every argument whose name has a
rule is checked before the body runs: a wrong type raises ``TypeError`` and a value out of range raises
``ValueError``, both naming the function, the argument and what it accepts. Arguments whose default is ``None``
also accept ``None``. Functions add or replace rules for their own arguments with ``overrides``.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from anndata import AnnData

F = TypeVar("F", bound=Callable[..., Any])


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (catchable as ``TypeError`` or, like every bad argument, ``ValueError``)."""


@dataclass(frozen=True)
class Rule:
    """A check of one argument: ``check(value)`` returns an error message, or ``None`` when the value is valid."""

    accepts: str
    check: Callable[[Any], tuple[type[Exception], str] | None]


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def integer(minimum: int | None = None, maximum: int | None = None) -> Rule:
    """Return the rule: an integer (Python or numpy, not ``bool``) within ``[minimum, maximum]``."""
    bounds = _bounds_text(minimum, maximum, closed=(True, True))
    accepts = f"an integer{bounds}"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not _is_integer(value):
            return ArgumentTypeError, accepts
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            return ValueError, accepts
        return None

    return Rule(accepts, check)


def real(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    include_minimum: bool = True,
    include_maximum: bool = True,
) -> Rule:
    """Return the rule: a finite real number (not ``bool``) within the given bounds."""
    accepts = f"a finite number{_bounds_text(minimum, maximum, closed=(include_minimum, include_maximum))}"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not _is_real(value):
            return ArgumentTypeError, accepts
        number = float(value)
        if not math.isfinite(number):
            return ValueError, accepts
        if minimum is not None and (number < minimum or (not include_minimum and number == minimum)):
            return ValueError, accepts
        if maximum is not None and (number > maximum or (not include_maximum and number == maximum)):
            return ValueError, accepts
        return None

    return Rule(accepts, check)


def _bounds_text(minimum: float | None, maximum: float | None, closed: tuple[bool, bool]) -> str:
    low = ">=" if closed[0] else ">"
    high = "<=" if closed[1] else "<"
    if minimum is not None and maximum is not None:
        return f" {low} {minimum:g} and {high} {maximum:g}"
    if minimum is not None:
        return f" {low} {minimum:g}"
    if maximum is not None:
        return f" {high} {maximum:g}"
    return ""


def flag() -> Rule:
    """Return the rule: ``True`` or ``False`` (numpy booleans too)."""

    def check(value: Any) -> tuple[type[Exception], str] | None:
        return None if isinstance(value, bool | np.bool_) else (ArgumentTypeError, "True or False")

    return Rule("True or False", check)


def text(*, non_empty: bool = True) -> Rule:
    """Return the rule: a string (non-empty unless told)."""
    accepts = "a non-empty string" if non_empty else "a string"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not isinstance(value, str):
            return ArgumentTypeError, accepts
        if non_empty and not value:
            return ValueError, accepts
        return None

    return Rule(accepts, check)


def result_key() -> Rule:
    """Return the rule of a result key: a non-empty string without ``"/"`` (h5ad files cannot store it)."""
    accepts = "a non-empty string without '/'"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not isinstance(value, str):
            return ArgumentTypeError, accepts
        if not value or "/" in value:
            return ValueError, accepts
        return None

    return Rule(accepts, check)


def integer_or(word: str, minimum: int | None = None) -> Rule:
    """Return the rule: an integer within ``[minimum, ...)`` or the string ``word`` (e.g. ``"auto"``)."""
    number = integer(minimum)
    accepts = f"{number.accepts} or {word!r}"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if isinstance(value, str):
            return None if value == word else (ValueError, accepts)
        problem = number.check(value)
        return None if problem is None else (problem[0], accepts)

    return Rule(accepts, check)


def one_of(*options: str) -> Rule:
    """One of the given strings."""
    accepts = "one of " + ", ".join(repr(option) for option in options)

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not isinstance(value, str):
            return ArgumentTypeError, accepts
        return None if value in options else (ValueError, accepts)

    return Rule(accepts, check)


def strings(*, allow_single: bool = False) -> Rule:
    """Return the rule: a non-empty list of non-empty strings (a single string too when ``allow_single``)."""
    accepts = "a string or a list of strings" if allow_single else "a list of strings (not a single string)"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if isinstance(value, str):
            return None if allow_single and value else (ArgumentTypeError if not allow_single else ValueError, accepts)
        if isinstance(value, Mapping) or not isinstance(value, Iterable):
            return ArgumentTypeError, accepts
        items = list(value)
        if not all(isinstance(item, str) and item for item in items):
            return ArgumentTypeError, accepts
        return None if items else (ValueError, f"{accepts}, with at least one entry")

    return Rule(accepts, check)


def string_mapping() -> Rule:
    """Return the rule: a mapping of strings to strings (e.g. metadata key -> term)."""
    accepts = "a dict of strings to strings, e.g. {'cell_type': 'B cell'}"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not isinstance(value, Mapping):
            return ArgumentTypeError, accepts
        if not all(isinstance(key, str) and isinstance(term, str) for key, term in value.items()):
            return ArgumentTypeError, accepts
        return None

    return Rule(accepts, check)


def candidate_terms() -> Rule:
    """Return the rule: a list of terms, or a mapping of metadata keys to lists of terms (scMulan's candidates)."""
    accepts = "a list of strings, or a dict of metadata keys to lists of strings, e.g. {'cell_type': ['B cell']}"
    as_list = strings()

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if not isinstance(value, Mapping):
            problem = as_list.check(value)
            return None if problem is None else (problem[0], accepts)
        for key, terms in value.items():
            if not isinstance(key, str) or as_list.check(terms) is not None:
                return ArgumentTypeError, accepts
        return None if value else (ValueError, f"{accepts}, with at least one entry")

    return Rule(accepts, check)


def anndata(*, allow_view: bool = True) -> Rule:
    """Return the rule: an AnnData (not a view unless ``allow_view``: scvi-tools registers actual AnnData only)."""
    accepts = "an AnnData (wrap a matrix with anndata.AnnData(X, obs=..., var=...))"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        if type(value).__name__ == "MuData":
            modalities = ", ".join(repr(name) for name in getattr(value, "mod", {})) or "none"
            return ArgumentTypeError, (
                f"an AnnData; this is a MuData: pass one modality, e.g. mdata['rna'] (modalities: {modalities})"
            )
        if not isinstance(value, AnnData):
            return ArgumentTypeError, accepts
        if value.is_view and not allow_view:
            return ValueError, "an AnnData, not a view of one (pass adata[...].copy())"
        return None

    return Rule(accepts, check)


def model_source(*, count_vae: bool = False) -> Rule:
    """Return the rule of a tool's ``model=`` argument (resolved later by :func:`scfm.models.resolve_model`).

    ``count_vae=True`` also accepts a fitted :class:`~scfm.models.CountVAEModel` (``tl.integrate``'s query mapping).
    """
    accepts = "None, a bundled model name, a checkpoint directory, or an scfm model instance"
    if count_vae:
        accepts += " (or a CountVAEModel)"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        from scfm.models.base import CountVAEModel, FoundationModel, Pretrained

        if value is None:
            return None
        if isinstance(value, str):
            return None if value else (ValueError, accepts)
        if isinstance(value, os.PathLike | FoundationModel | Pretrained):
            return None
        if count_vae and isinstance(value, CountVAEModel):
            return None
        return ArgumentTypeError, accepts

    return Rule(accepts, check)


def device() -> Rule:
    """Return the rule: a device name (``"auto"``, ``"cpu"``, ``"cuda"``...) or a :class:`torch.device`."""
    accepts = "a device name such as 'auto', 'cpu', 'cuda' or 'mps'"

    def check(value: Any) -> tuple[type[Exception], str] | None:
        import torch

        if isinstance(value, torch.device):
            return None
        if not isinstance(value, str):
            return ArgumentTypeError, accepts
        return None if value else (ValueError, accepts)

    return Rule(accepts, check)


_POSITIVE = integer(1)
_COUNT = integer(0)
_WEIGHT = real(0)
_FRACTION = real(0, 1)
_NAME = text()

#: The rule of every argument name used by more than one public function, or worth checking early.
RULES: dict[str, Rule] = {
    # sizes and counts
    "batch_size": _POSITIVE,
    "block_size": _POSITIVE,
    "n_cells": _POSITIVE,
    "max_epochs": _POSITIVE,
    "n_neighbors": _POSITIVE,
    "n_top_genes": _POSITIVE,
    "max_len": integer(2),
    "context": _POSITIVE,
    "top_k": _POSITIVE,
    "n_components": _POSITIVE,
    "n_splits": integer(2),
    "min_genes": _COUNT,
    "warmup_steps": _COUNT,
    "n_zero_queries": _COUNT,
    "num_workers": _COUNT,
    "seed": integer(0, 2**32 - 1),
    # rates, weights, fractions
    "lr": real(0, include_minimum=False),
    "temperature": real(0, include_minimum=False),
    "head_lr_factor": real(0, include_minimum=False),
    "max_dense_gb": real(0, include_minimum=False),
    "mask_ratio": real(0, 1, include_maximum=False),
    "gep_weight": _WEIGHT,
    "gepc_weight": _WEIGHT,
    "ecs_weight": _WEIGHT,
    "dar_weight": _WEIGHT,
    "cls_weight": _WEIGHT,
    "metadata_weight": _WEIGHT,
    "weight_decay": _WEIGHT,
    "penalizer": _WEIGHT,
    "ecs_threshold": real(-1, 1),
    "unknown_threshold": _FRACTION,
    "annotate_fraction": _FRACTION,
    "condition_dropout": _FRACTION,
    "validation_size": real(0, 1, include_maximum=False),
    "train_size": real(0, 1, include_minimum=False),
    "early_stopping": flag(),
    "early_stopping_patience": integer(1),
    # switches
    "use_raw": flag(),
    "normalize": flag(),
    "progress": flag(),
    "copy": flag(),
    "return_model": flag(),
    "shared_genes_only": flag(),
    "gene_linear": flag(),
    "batch_embeddings": flag(),
    "domain_batchnorm": flag(),
    "overwrite": flag(),
    "half_precision": flag(),
    # names of AnnData fields to read
    "layer": _NAME,
    "reference_layer": _NAME,
    "gene_key": _NAME,
    "reference_gene_key": _NAME,
    "labels_key": _NAME,
    "batch_key": _NAME,
    "sample_key": _NAME,
    "spatial_key": _NAME,
    "metadata_key": _NAME,
    "measured_key": _NAME,
    "features_key": _NAME,
    "duration_key": _NAME,
    "event_key": _NAME,
    # where results go
    "key_added": result_key(),
    "layer_added": result_key(),
    # choices and structured values
    "on_duplicate": one_of("error", "first"),
    "gene_id_type": one_of("auto", "symbol", "ensembl"),
    "species": one_of("human", "mouse"),
    "aliases": flag(),
    "device": device(),
    "precision": one_of("fp32", "bf16"),
    "accelerator": one_of("auto", "cpu", "gpu", "cuda", "mps"),
    "model": model_source(),
    "name_or_path": model_source(),
    "conditions": string_mapping(),
    "metadata_keys": string_mapping(),
    "candidates": candidate_terms(),
    "genes": strings(allow_single=True),
    "adata": anndata(),
    "bdata": anndata(),
    "reference": anndata(),
}


def check_argument(function: str, name: str, value: Any, rule: Rule | None = None) -> None:
    """Check one argument against ``rule`` (default: the shared rule of ``name``).

    Raises
    ------
    ArgumentTypeError
        ``value`` has the wrong type (a ``TypeError`` and a ``ValueError``).
    ValueError
        ``value`` is out of range.
    """
    rule = rule if rule is not None else RULES[name]
    failure = rule.check(value)
    if failure is not None:
        error, accepts = failure
        raise error(f"{function}: {name} must be {accepts}, got {_shown(value)}")


def _shown(value: Any) -> str:
    """``5 (int)`` for a short scalar or container, the type name (``DataFrame``) for anything else."""
    kind = type(value).__name__
    if value is None or isinstance(value, str | numbers.Number | np.bool_ | list | tuple | dict | set):
        text = repr(value)
        if len(text) <= 80 and "\n" not in text:
            return f"{text} ({kind})"
    return kind


def public_name(function: Callable[..., Any], owner: type | None = None) -> str:
    """``scfm.tl.embed`` for a function of ``scfm.tl._embed``; ``SCGPT.train`` for a method of ``owner``."""
    if owner is not None:
        return f"{owner.__name__}.{function.__name__}"
    module = ".".join(part for part in function.__module__.split(".") if not part.startswith("_"))
    return f"{module}.{function.__qualname__}"


def checked_arguments(
    function: F | None = None, /, *, owner: type | None = None, **overrides: Rule
) -> F | Callable[[F], F]:
    """Decorate a public function so that its arguments are checked against :data:`RULES` before it runs.

    Use as ``@checked_arguments`` or ``@checked_arguments(name=rule, ...)`` to add or replace rules for this
    function. Arguments left at their default are not checked; ``None`` passes where the default is ``None``.
    """

    def decorate(wrapped: F) -> F:
        signature = inspect.signature(wrapped)
        rules = {
            name: overrides.get(name, RULES.get(name))
            for name in signature.parameters
            if overrides.get(name, RULES.get(name)) is not None
        }
        optional = {name for name, parameter in signature.parameters.items() if parameter.default is None}
        label = public_name(wrapped, owner)

        @functools.wraps(wrapped)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as err:
                raise TypeError(f"{label}: {err}") from None
            for name, value in bound.arguments.items():
                rule = rules.get(name)
                if rule is None or (value is None and name in optional):
                    continue
                check_argument(label, name, value, rule)
            return wrapped(*args, **kwargs)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if function is not None:
        return decorate(function)
    return decorate
