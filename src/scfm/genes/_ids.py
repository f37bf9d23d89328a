"""Cleaning of gene-name columns and detection of the gene identifier type."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

IdType = Literal["symbol", "ensembl"]

ENSEMBL_PATTERN = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?(_PAR_Y)?$", re.IGNORECASE)
HUMAN_ENSEMBL_PATTERN = re.compile(r"^ENSG\d{11}", re.IGNORECASE)


def is_ensembl(name: str) -> bool:
    """Whether ``name`` looks like an Ensembl gene id (``ENSG00000141510``, ``ENSMUSG00000059552.3``, ...)."""
    return ENSEMBL_PATTERN.match(name) is not None


def strip_version(ensembl_id: str) -> str:
    """Upper-cased Ensembl gene id without its version suffix (``ENSG00000141510.17`` -> ``ENSG00000141510``).

    GENCODE's ``_PAR_Y`` suffix (the copy of a pseudo-autosomal gene on chromosome Y) is dropped too.
    """
    return ensembl_id.upper().split(".", 1)[0].removesuffix("_PAR_Y")


def clean_names(values: Iterable[object]) -> np.ndarray:
    """Return an object array of names with ``None`` wherever a name is unusable.

    Unusable means missing (``NaN``, ``None``, ``pd.NA``), empty, or not a string.
    """
    arr = np.asarray(values, dtype=object)
    out = np.empty(arr.shape[0], dtype=object)
    out[:] = [v if isinstance(v, str) and v else None for v in arr]
    return out


def detect_id_type(names: np.ndarray) -> IdType:
    """Classify cleaned names as Ensembl gene ids or gene symbols.

    Names are ``"ensembl"`` when more than half of the usable (non-``None``) names look like
    Ensembl gene ids (e.g. ``ENSG00000141510`` or ``ENSMUSG00000059552.3``); otherwise ``"symbol"``.
    """
    present = [n for n in names if n is not None]
    if not present:
        return "symbol"
    n_ensembl = sum(1 for n in present if ENSEMBL_PATTERN.match(n))
    return "ensembl" if n_ensembl > len(present) / 2 else "symbol"


def is_string_column(series: pd.Series) -> bool:
    """Whether a ``var`` column holds strings (object, string or categorical-of-strings dtype)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        values = series.cat.categories
    else:
        values = series
    if len(values) == 0:
        return False
    return pd.api.types.infer_dtype(values, skipna=True) == "string"
