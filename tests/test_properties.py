"""Property-based bad-input tests (issue 18): every public entry point that takes an AnnData either raises a clean,
documented error that names the argument or field at fault, or returns a finite result; the input is never changed
on error, and on success only the documented result slots are written.

The generators take a :class:`Draw` so that ``scripts/bad_input_campaign.py`` runs exactly the same cases with a
plain random generator and many more examples. ``SCFM_HYPOTHESIS_EXAMPLES`` sets the examples per test (default 100,
derandomised, so CI is reproducible); the ``slow``-marked variants run 20x more.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import scfm
from scfm.models import SCGPT, TGPT, CellPLM, SCMulan

FAMILIES = ("scgpt", "tgpt", "cellplm", "scmulan")
CLASSES = {"scgpt": SCGPT, "tgpt": TGPT, "cellplm": CellPLM, "scmulan": SCMulan}
CHECKPOINTS = Path(scfm.__file__).parent / "checkpoints"
EXAMPLES = int(os.environ.get("SCFM_HYPOTHESIS_EXAMPLES", "100"))
#: the documented error types (scfm's own errors subclass these: CheckpointError, NoKnownGenesError,
#: NonFiniteOutputError, GeneKeyError, ArgumentTypeError)
ALLOWED = (ValueError, TypeError, KeyError)
#: modules whose frames, when they raise, make an error "raw" unless the message names the field at fault
LIBRARIES = ("numpy", "scipy", "torch", "pandas", "sklearn", "lightning", "anndata", "scvi", "h5py", "safetensors")


# ----------------------------------------------------------------------------------------------------- draws
class Draw:
    """Choices for the generators: hypothesis ``data.draw`` in the tests, ``numpy`` random in the campaign."""

    def integer(self, low: int, high: int) -> int:  # inclusive
        raise NotImplementedError

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.integer(0, len(options) - 1)]

    def flag(self, p: float = 0.5) -> bool:
        raise NotImplementedError


class HypothesisDraw(Draw):
    def __init__(self, data: st.DataObject):
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[Any]) -> Any:
        # an index, not the value: options may hold arrays and objects hypothesis should not print or compare
        return options[self.data.draw(st.integers(0, len(options) - 1))]

    def flag(self, p: float = 0.5) -> bool:
        return self.data.draw(st.booleans()) if p == 0.5 else self.data.draw(st.integers(0, 99)) < p * 100


class RandomDraw(Draw):
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def flag(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)


# ------------------------------------------------------------------------------------------------ gene pools
def _vocab(family: str) -> list[str]:
    tokens = json.loads((CHECKPOINTS / f"{family}_default" / "vocab.json").read_text())
    return [t for t in tokens if not t.startswith("<")]


_SHARED: list[str] | None = None


def shared_genes() -> list[str]:
    """Genes every bundled vocabulary knows (so a case means the same thing to every family), in vocab order."""
    global _SHARED
    if _SHARED is None:
        vocabs = [_vocab(f) for f in FAMILIES]
        common = set.intersection(*(set(v) for v in vocabs[1:]))
        _SHARED = [g for g in vocabs[0] if g in common][:400]
    return _SHARED


# ------------------------------------------------------------------------------------------------------ cases
DTYPES = ("float32", "float64", "float16", "int32", "int64", "uint16", "bool", "object")
FORMATS = ("dense", "csr", "csc", "coo_csr", "csr_duplicates", "csr_unsorted")
CORRUPTIONS = (
    "none",
    "none",
    "none",
    "nan",
    "posinf",
    "neginf",
    "negative",
    "huge",
    "zero_cell",
    "zero_gene",
    "all_zero",
    "fractional",
    "complex",
)
#: values that no tool may accept in the matrix it reads
#: (values >= 1e38 are not here: a tool may accept them if its result is finite, which is checked)
INVALID_VALUES = {"nan", "posinf", "neginf", "negative", "complex"}
ODD_KEYS = ("", "a/b", None, 3, b"x")
GOOD_KEYS = ("X_scfm", "my result", "émb_ß", "k" * 200)


@dataclass
class Case:
    """One generated AnnData plus where the tools should read it."""

    adata: ad.AnnData
    parent: ad.AnnData | None  # the AnnData a view was taken of
    kwargs: dict[str, Any]  # layer / gene_key / key_added / min_genes
    corruption: str
    matrix_format: str
    dtype: str
    description: str
    invalid_key: bool = False
    read_matrix: Any = None  # what the tools read (X or the layer), before any view is taken

    @property
    def must_fail(self) -> bool:
        return self.corruption in INVALID_VALUES or self.invalid_key


def _with_duplicate_entries(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same matrix stored non-canonically: every stored value split into two halves at the same (row, col)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    both = np.concatenate([rows, rows])
    order = np.argsort(both, kind="stable")
    data = np.concatenate([matrix.data / 2, matrix.data / 2])[order] if matrix.dtype.kind == "f" else None
    if data is None:  # integer values cannot be halved: duplicate the entry and store value, 0
        data = np.concatenate([matrix.data, np.zeros_like(matrix.data)])[order]
    indices = np.concatenate([matrix.indices, matrix.indices])[order]
    indptr = np.concatenate([[0], np.cumsum(2 * np.diff(matrix.indptr))])
    out = sp.csr_matrix((data, indices, indptr), shape=matrix.shape)
    out.has_canonical_format = False
    return out


def _with_unsorted_indices(matrix: sp.csr_matrix) -> sp.csr_matrix:
    indices = matrix.indices.copy()
    data = matrix.data.copy()
    for row in range(matrix.shape[0]):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        indices[start:stop] = indices[start:stop][::-1]
        data[start:stop] = data[start:stop][::-1]
    out = sp.csr_matrix((data, indices, matrix.indptr.copy()), shape=matrix.shape)
    out.has_sorted_indices = False
    return out


def _as_format(dense: np.ndarray, fmt: str) -> Any:
    if fmt == "dense" or dense.dtype in (np.dtype(object), np.dtype(np.float16)):  # scipy stores neither
        return dense
    if fmt == "csc":
        return sp.csc_matrix(dense)
    if fmt == "coo_csr":
        return sp.coo_matrix(dense).tocsr()
    csr = sp.csr_matrix(dense)
    if fmt == "csr_duplicates":
        return _with_duplicate_entries(csr)
    if fmt == "csr_unsorted":
        return _with_unsorted_indices(csr)
    return csr


def draw_values(draw: Draw, n_obs: int, n_vars: int, seed: int, n_known: int) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    values = rng.poisson(rng.uniform(0.3, 3.0), size=(n_obs, n_vars)).astype(np.float64)
    corruption = draw.choice(CORRUPTIONS)
    if n_obs == 0 or n_vars == 0:
        return values, "none"
    # corrupt a known gene (not the case-folded first one) so that every tool reads the bad value
    i, j = draw.integer(0, n_obs - 1), draw.integer(min(1, n_known - 1), n_known - 1) if n_known else 0
    if corruption == "nan":
        values[i, j] = np.nan
    elif corruption == "posinf":
        values[i, j] = np.inf
    elif corruption == "neginf":
        values[i, j] = -np.inf
    elif corruption == "negative":
        values[i, j] = -draw.choice((1.0, 0.5, 1e-3))
    elif corruption == "huge":
        values[i, j] = draw.choice((1e38, 3e38, 1e300))
    elif corruption == "zero_cell":
        values[i] = 0
    elif corruption == "zero_gene":
        values[:, j] = 0
    elif corruption == "all_zero":
        values[:] = 0
    elif corruption == "fractional":
        values = values * 0.37 + 0.01 * (values > 0)
    return values, corruption


def _cast(values: np.ndarray, dtype: str, corruption: str) -> tuple[np.ndarray, str]:
    """Cast, keeping the corruption meaningful (integer dtypes cannot hold NaN or a fraction: fall back to float)."""
    if corruption == "complex":
        return values.astype(np.complex64) + 0.5j, "complex64"
    if dtype in ("int32", "int64", "uint16", "bool") and corruption in (
        "nan",
        "posinf",
        "neginf",
        "huge",
        "fractional",
    ):
        dtype = "float32" if corruption != "huge" or values.max() < 3.4e38 else "float64"
    if dtype in ("uint16", "bool") and corruption == "negative":
        dtype = "int32"
    if dtype == "float16" and corruption == "huge":
        dtype = "float64"
    if dtype == "float32" and corruption == "huge" and np.nanmax(np.abs(values)) > 3.4e38:
        dtype = "float64"
    if dtype in ("int32", "int64") and corruption == "negative":
        values = np.floor(values)
    if dtype == "bool":
        return values > 0, dtype
    if dtype == "object":
        return values.astype(object), dtype
    if dtype in ("int32", "int64", "uint16"):
        return np.round(values).astype(dtype), dtype
    return values.astype(dtype), dtype


def draw_case(draw: Draw, *, max_obs: int = 40) -> Case:
    """An AnnData of odd shape, dtype, format and values, and the arguments that tell a tool where to read it."""
    genes = shared_genes()
    n_obs = draw.choice((13, 20, 0, 1, 2, 3, 5, 8, 30, max_obs))
    n_known = draw.choice((120, 60, 120, 60, 30, 30, 0, 1, 2, 5, 12))
    n_unknown = draw.choice((0, 0, 1, 3, 10))
    start = draw.integer(0, len(genes) - n_known)
    var_names = list(genes[start : start + n_known]) + [f"NOT_A_GENE_{k}" for k in range(n_unknown)]
    if n_known and draw.flag(0.15):
        var_names[0] = var_names[0].lower()  # a case-folded match
    if not var_names:
        var_names = ["NOT_A_GENE_0"]
    duplicate_genes = len(var_names) > 1 and draw.flag(0.15)
    if duplicate_genes:
        var_names[-1] = var_names[0]
    obs_names = [f"cell{k}" for k in range(n_obs)]
    duplicate_cells = n_obs > 1 and draw.flag(0.1)
    if duplicate_cells:
        obs_names[-1] = obs_names[0]

    seed = draw.integer(0, 2**16)
    values, corruption = draw_values(draw, n_obs, len(var_names), seed, n_known - int(duplicate_genes))
    values, dtype = _cast(values, draw.choice(DTYPES), corruption)
    fmt = draw.choice(FORMATS)
    matrix = _as_format(values, fmt)

    rng = np.random.default_rng(seed + 1)
    obs = pd.DataFrame(
        {
            "batch": pd.Categorical([f"b{k % 2}" for k in range(n_obs)]),
            "cell_type": pd.Categorical([("T cell", "B cell", None)[k % 3] for k in range(n_obs)]),
            "score": rng.normal(size=n_obs),
        },
        index=pd.Index(obs_names, dtype=object),
    )
    var = pd.DataFrame({"gene_symbol": list(var_names)}, index=pd.Index(var_names, dtype=object))
    kwargs: dict[str, Any] = {}
    where = draw.choice(("X", "X", "layer", "raw_like_X"))
    filler = np.ones((n_obs, len(var_names)), dtype=np.float32) * 7
    if where == "layer":
        adata = ad.AnnData(filler, obs=obs, var=var)
        adata.layers["counts"] = matrix
        kwargs["layer"] = "counts"
    else:
        adata = ad.AnnData(matrix, obs=obs, var=var)
        if draw.flag(0.3):
            adata.layers["other"] = sp.csr_matrix(filler)
    if draw.flag(0.25):  # Ensembl-like var_names, symbols in a column
        adata.var_names = [f"ENSG{k:011d}" for k in range(adata.n_vars)]
        kwargs["gene_key"] = "gene_symbol"
    # fill every slot the deep comparison must cover
    adata.obsm["X_pca"] = rng.normal(size=(n_obs, 3)).astype(np.float32)
    adata.varm["loadings"] = rng.normal(size=(adata.n_vars, 2))
    adata.obsp["distances"] = sp.csr_matrix(np.eye(n_obs, dtype=np.float32))
    adata.varp["corr"] = np.eye(adata.n_vars)
    adata.uns["note"] = {"nested": [1, 2, {"x": np.arange(3)}], "text": "keep me"}
    if draw.flag(0.15):
        adata.uns["scfm"] = draw.choice(("left by the user", [1, 2], 5, {"X_scfm": "an old record"}))
    if (draw.flag(0.15) and not isinstance(matrix, np.ndarray | type(None))) or draw.flag(0.1):
        adata.raw = adata.copy()
    invalid_key = False
    if draw.flag(0.2):
        key = draw.choice(ODD_KEYS + GOOD_KEYS)
        invalid_key = key in ODD_KEYS
        kwargs["key_added"] = key
    if isinstance(adata.uns.get("scfm"), str | list | int):
        invalid_key = True  # a non-dict uns['scfm'] must be refused before anything is written
    kwargs["min_genes"] = draw.choice((10, 5, 10, 5, 1, 50))
    read_matrix = adata.layers["counts"] if where == "layer" else adata.X
    parent = None
    if n_obs > 1 and draw.flag(0.2):
        parent = adata
        keep = np.arange(n_obs) % 2 == 0 if draw.flag() else slice(0, n_obs - 1)
        adata = adata[keep]
        if corruption in INVALID_VALUES | {"zero_cell"} and not _still_has(adata, kwargs.get("layer"), corruption):
            corruption = "none"  # the corrupted row was left out by the view
    description = (
        f"{adata.n_obs} cells x {adata.n_vars} genes ({n_known} known, {n_unknown} unknown"
        f"{', duplicate genes' if duplicate_genes else ''}{', duplicate cells' if duplicate_cells else ''}), "
        f"{dtype} {fmt}, values={corruption}, read from {where}, view={parent is not None}, kwargs={kwargs!r}, "
        f"uns['scfm']={type(adata.uns.get('scfm')).__name__}"
    )
    return Case(adata, parent, kwargs, corruption, fmt, dtype, description, invalid_key, read_matrix)


def _still_has(view: ad.AnnData, layer: str | None, corruption: str) -> bool:
    matrix = view.layers[layer] if layer else view.X
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    if dense.dtype == object:
        dense = dense.astype(np.float64)
    if corruption == "nan":
        return bool(np.isnan(dense).any())
    if corruption in ("posinf", "neginf", "huge"):
        return bool((~np.isfinite(dense.astype(np.float32))).any() | (np.abs(dense) >= 1e38).any())
    if corruption == "negative":
        return bool((dense < 0).any())
    if corruption == "zero_cell":
        return bool((dense.sum(1) == 0).any())
    return True


# --------------------------------------------------------------------------------------- deep comparison
def _freeze(value: Any) -> Any:
    """A deep, comparable copy: sparse matrices keep their stored arrays and canonical-form flags."""
    if sp.issparse(value):
        return (
            "sparse",
            value.format,
            value.dtype.str,
            value.shape,
            *(np.array(getattr(value, a), copy=True) for a in ("data", "indices", "indptr") if hasattr(value, a)),
            *((np.array(value.row), np.array(value.col)) if value.format == "coo" else ()),
            bool(getattr(value, "_has_canonical_format", None)) if value.format in ("csr", "csc") else None,
            bool(getattr(value, "_has_sorted_indices", None)) if value.format in ("csr", "csc") else None,
        )
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, np.array(value, copy=True))
    if isinstance(value, pd.DataFrame):  # column by column, so that an added result column is told apart
        return {"<index>": value.index.copy(deep=True), **{c: value[c].copy(deep=True) for c in value.columns}}
    if isinstance(value, pd.Series | pd.Index):
        return ("pandas", value.copy(deep=True))
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_freeze(v) for v in value])
    return ("value", copy.deepcopy(value))


def snapshot(adata: ad.AnnData) -> dict[str, Any]:
    """Everything a failed call must leave untouched (values, dtypes, indices, sparse flags)."""
    raw = adata.raw
    return {
        "X": _freeze(adata.X),
        "layers": {k: _freeze(v) for k, v in adata.layers.items()},
        "obs": _freeze(adata.obs),
        "var": _freeze(adata.var),
        "obs_names": list(adata.obs_names),
        "var_names": list(adata.var_names),
        "obsm": {k: _freeze(v) for k, v in adata.obsm.items()},
        "varm": {k: _freeze(v) for k, v in adata.varm.items()},
        "obsp": {k: _freeze(v) for k, v in adata.obsp.items()},
        "varp": {k: _freeze(v) for k, v in adata.varp.items()},
        "uns": _freeze(dict(adata.uns)),
        "raw": None if raw is None else (_freeze(raw.X), _freeze(raw.var), list(raw.var_names)),
        "is_view": adata.is_view,
    }


def _differences(before: Any, after: Any, where: str) -> list[str]:
    if type(before) is not type(after):
        return [f"{where}: {type(before).__name__} -> {type(after).__name__}"]
    if isinstance(before, dict):
        out = [f"{where}[{k!r}] added" for k in after.keys() - before.keys()]
        out += [f"{where}[{k!r}] removed" for k in before.keys() - after.keys()]
        for k in before.keys() & after.keys():
            out += _differences(before[k], after[k], f"{where}[{k!r}]")
        return out
    if isinstance(before, list | tuple):
        if len(before) != len(after):
            return [f"{where}: length {len(before)} -> {len(after)}"]
        return [
            d for i, (b, a) in enumerate(zip(before, after, strict=True)) for d in _differences(b, a, f"{where}.{i}")
        ]
    if isinstance(before, np.ndarray):
        if before.dtype != after.dtype or before.shape != after.shape:
            return [f"{where}: {before.dtype}{before.shape} -> {after.dtype}{after.shape}"]
        if before.dtype == object:  # NaN != NaN among Python floats: compare numeric object arrays as float
            with contextlib.suppress(TypeError, ValueError):
                before, after = before.astype(np.float64), after.astype(np.float64)
        try:
            np.testing.assert_array_equal(after, before)
        except AssertionError:
            return [f"{where}: values changed"]
        return []
    if isinstance(before, pd.DataFrame | pd.Series | pd.Index):
        try:
            if isinstance(before, pd.DataFrame):
                pd.testing.assert_frame_equal(after, before, check_exact=True)
            elif isinstance(before, pd.Series):
                pd.testing.assert_series_equal(after, before, check_exact=True)
            else:
                pd.testing.assert_index_equal(after, before, exact=True)
        except AssertionError:
            return [f"{where}: changed"]
        return []
    try:
        same = before == after
        same = bool(np.all(same)) if not isinstance(same, bool) else same
    except Exception:
        same = repr(before) == repr(after)
    return [] if same else [f"{where}: {before!r} -> {after!r}"[:200]]


def changes(
    adata: ad.AnnData, before: dict[str, Any], *, allowed: Callable[[str], bool] = lambda _: False
) -> list[str]:
    """What differs from ``before``; ``allowed(path)`` exempts the documented result slots on success."""
    found = _differences(before, snapshot(adata), "adata")
    return [d for d in found if not allowed(d)]


# --------------------------------------------------------------------------------------------- classification
@dataclass
class Outcome:
    """Result of one case: ``kind`` is ``ok`` or the class of the failure; ``detail`` says what happened."""

    kind: str
    detail: str = ""
    entry: str = ""
    case: str = ""
    error: BaseException | None = field(default=None, repr=False)


FAILURE_KINDS = (
    "unhandled",  # an exception of a type the contract does not allow
    "unclear",  # an allowed type raised inside a library with a message that names no argument or field
    "changed_on_error",  # the input was changed although the call failed
    "changed_on_success",  # a slot other than the documented results was changed
    "nonfinite",  # a result with NaN/inf
    "accepted_invalid",  # invalid input (NaN, negative, complex, a bad key...) gave a result instead of an error
    "not_invariant",  # a non-canonical/other-dtype matrix gave another result than the same values dense float32
)

#: words that say which field of an AnnData is at fault
FIELD_WORDS = (
    "adata",
    "anndata",
    "reference",
    "layer",
    "gene",
    "cell",
    "var",
    "obs",
    "uns",
    "matrix",
    "value",
    "dtype",
    "nan",
    "finite",
    "negative",
    "count",
    "key_added",
    "layer_added",
    "view",
    "x ",
    ".x",
    "'x'",
    "raw",
    "label",
    "batch",
    "min_genes",
    "vocabulary",
    "complex",
    "integer",
)


def _raised_in_library(error: BaseException) -> str | None:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    last = frames[-1].filename.replace("\\", "/")
    if "/scfm/" in last or "/tests/" in last or "/scripts/" in last:
        return None
    for library in LIBRARIES:
        if f"/{library}/" in last or f"/{library}." in last:
            return library
    return "python" if "site-packages" not in last else "a library"


def classify_error(error: BaseException, names: Sequence[str]) -> Outcome | None:
    """``None`` for a clean error; otherwise the failure (``unhandled`` or ``unclear``)."""
    text = f"{type(error).__name__}: {error}"
    if not isinstance(error, ALLOWED):
        return Outcome("unhandled", text[:400], error=error)
    message = str(error.args[0] if isinstance(error, KeyError) and error.args else error).lower()
    named = any(name.lower() in message for name in names if name)
    if not named:
        library = _raised_in_library(error)
        where = f" (raised in {library})" if library else ""
        return Outcome("unclear", f"{text[:400]}{where}; names none of {list(names)[:6]}", error=error)
    return None


def _finite(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, pd.DataFrame):
        value = value.select_dtypes("number").to_numpy()
    if sp.issparse(value):
        value = value.data
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        return True
    return bool(np.isfinite(array).all())


def run_case(
    entry: str,
    call: Callable[[], Any],
    watched: Sequence[ad.AnnData],
    *,
    names: Sequence[str] = FIELD_WORDS,
    must_fail: bool = False,
    outputs: Callable[[Any], list[Any]] = lambda _: [],
    allowed_changes: Callable[[str], bool] = lambda _: False,
    allowed_on_error: Callable[[str], bool] | None = None,
    case: str = "",
) -> Outcome:
    """Call ``call`` and classify what happened against the contract."""
    befores = [snapshot(a) for a in watched]
    try:
        result = call()
    except Exception as error:
        changed = [
            d
            for a, b in zip(watched, befores, strict=True)
            for d in changes(a, b, allowed=allowed_on_error or (lambda _: False))
        ]
        if changed:
            notes = " ".join(getattr(error, "__notes__", []))
            outcome = Outcome("changed_on_error", f"{type(error).__name__}: {error}"[:200] + f" {notes}; {changed[:4]}")
            outcome.error = error
        else:
            outcome = classify_error(error, names) or Outcome("ok", f"{type(error).__name__}: {error}"[:200])
        outcome.entry, outcome.case = entry, case
        return outcome
    changed = [d for a, b in zip(watched, befores, strict=True) for d in changes(a, b, allowed=allowed_changes)]
    if changed:
        return Outcome("changed_on_success", "; ".join(changed[:4]), entry, case)
    arrays = outputs(result)
    if not all(_finite(a) for a in arrays):
        return Outcome("nonfinite", "a result holds NaN or inf", entry, case)
    if must_fail:
        return Outcome("accepted_invalid", "the call returned a result", entry, case)
    return Outcome("ok", "finite result", entry, case)


# ---------------------------------------------------------------------------------------------- entry points
class Models:
    """Checkpoints loaded once (``model=`` takes a loaded :class:`~scfm.models.Pretrained`)."""

    def __init__(self, pretrained: dict[str, Any], reference: ad.AnnData):
        self.pretrained, self.reference = pretrained, reference

    def __repr__(self) -> str:
        return "Models(bundled checkpoints)"

    @classmethod
    def load(cls) -> Models:
        from scfm.models import load_pretrained

        genes = shared_genes()[:150]
        rng = np.random.default_rng(7)
        counts = rng.poisson(1.5, size=(24, len(genes))).astype(np.float32)
        counts[:12, :40] += 6
        reference = ad.AnnData(
            sp.csr_matrix(counts),
            obs=pd.DataFrame({"label": pd.Categorical(["A"] * 12 + ["B"] * 12)}, index=[f"r{k}" for k in range(24)]),
            var=pd.DataFrame(index=genes),
        )
        return cls({f: load_pretrained(f) for f in FAMILIES}, reference)


def _result_slots(key: str | None, *extra: str) -> Callable[[str], bool]:
    """On success a tool may add its own result slots and provenance only (and turn a view into an AnnData)."""
    keys = [k for k in (key, *extra) if isinstance(k, str)]

    def allowed(path: str) -> bool:
        if path.startswith(("adata['uns']['scfm']", "adata['is_view']", "adata['uns']: ")):
            return True
        if path == "adata['uns']['scfm'] added":
            return True
        slots = ("obsm", "layers", "obs", "var")
        return any(path.startswith(f"adata[{slot!r}][{k!r}]") for k in keys for slot in slots)

    return allowed


def _registration(path: str) -> bool:
    return "_scvi" in path or path.startswith("adata['is_view']")


def tool_calls(models: Models, case: Case, draw: Draw) -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    """``(entry, call, expectations)`` of the entry points that take ``case.adata``."""
    a, kw, p = case.adata, dict(case.kwargs), models.pretrained
    key = kw.pop("key_added", None)
    keyed = {} if "key_added" not in case.kwargs else {"key_added": key}
    out: list[tuple[str, Callable[[], Any], dict[str, Any]]] = []
    for family in FAMILIES:
        default = "X_scfm"

        def embed(family: str = family) -> Any:
            return scfm.tl.embed(a, model=p[family], progress=False, device="cpu", **kw, **keyed)

        out.append(
            (
                f"tl.embed[{family}]",
                embed,
                {"slot": key if keyed else default, "obsm": True},
            )
        )
    family = draw.choice(("scgpt", "cellplm"))

    def annotate(family: str = family) -> Any:
        return scfm.tl.annotate(
            a,
            models.reference,
            "label",
            model=p[family],
            method="knn",
            n_neighbors=3,
            progress=False,
            device="cpu",
            **kw,
            **keyed,
        )

    label_key = key if keyed else "scfm_cell_type"
    out.append((f"tl.annotate[knn,{family}]", annotate, {"slot": label_key, "obs": True, "extra": ("_top",)}))

    denoise_kw = {k: v for k, v in kw.items()}
    layer_added = {"layer_added": key} if keyed else {}

    def denoise() -> Any:
        return scfm.tl.denoise(a, model=p["cellplm"], progress=False, device="cpu", **denoise_kw, **layer_added)

    out.append(("tl.denoise", denoise, {"slot": key if keyed else "scfm_denoised", "layers": True}))
    genes = draw.choice(([shared_genes()[0]], shared_genes()[-1], shared_genes()[-2:], ["NOT_A_GENE"]))

    def impute() -> Any:
        return scfm.tl.impute(a, genes, model=p["cellplm"], progress=False, device="cpu", **kw, **keyed)

    out.append(("tl.impute", impute, {"slot": key if keyed else "scfm_imputed", "obsm": True}))

    cls_family = draw.choice(FAMILIES)

    def from_pretrained(family: str = cls_family) -> Any:
        setup = {k: v for k, v in kw.items() if k in ("layer", "gene_key")}
        model = CLASSES[family].from_pretrained(p[family], a, min_genes=kw.get("min_genes", 50), **setup)
        try:
            return model.get_latent_representation(progress=False, device="cpu")
        except Exception as error:  # from_pretrained accepted the input that the embedding then refuses
            error.add_note("(raised by get_latent_representation after from_pretrained accepted the AnnData)")
            raise

    out.append((f"{CLASSES[cls_family].__name__}.from_pretrained+get_latent_representation", from_pretrained, {}))
    return out


def run_tools(models: Models, case: Case, draw: Draw, only: Sequence[str] | None = None) -> list[Outcome]:
    outcomes = []
    watched = [case.adata] + ([case.parent] if case.parent is not None else []) + [models.reference]
    for entry, call, expect in tool_calls(models, case, draw):
        if only is not None and not any(entry.startswith(o) for o in only):
            continue
        slot = expect.get("slot")
        if expect:
            extra = (*tuple(f"{slot}{s}" for s in expect.get("extra", ())), f"{slot}_confidence", f"{slot}_matched")
            allowed = _result_slots(slot, *extra)

            def outputs(_: Any, slot: str = slot, expect: dict = expect) -> list[Any]:
                target = case.adata
                if expect.get("obsm"):
                    return [target.obsm.get(slot)]
                if expect.get("layers"):
                    return [target.layers.get(slot)]
                if expect.get("obs"):
                    return [target.obs.get(f"{slot}_confidence")]
                return []
        else:
            allowed = _registration

            def outputs(result: Any) -> list[Any]:
                return [result]

        outcome = run_case(
            entry,
            call,
            watched,
            # a model class writes no result key: only the values make its input invalid
            must_fail=case.must_fail if expect else case.corruption in INVALID_VALUES,
            outputs=outputs,
            allowed_changes=allowed,
            case=case.description,
        )
        if outcome.kind == "ok" and entry.startswith("tl.embed") and outcome.detail == "finite result":
            outcome = check_invariance(entry, case, models, slot)
        outcomes.append(outcome)
    return outcomes


def check_invariance(entry: str, case: Case, models: Models, slot: str) -> Outcome:
    """The embedding of a sparse/non-canonical/other-dtype matrix equals that of the same values, dense float32."""
    family = entry[entry.index("[") + 1 : -1]
    source = case.adata.layers[case.kwargs["layer"]] if "layer" in case.kwargs else case.adata.X
    dense = source.toarray() if sp.issparse(source) else np.asarray(source)
    if sp.issparse(source):
        dense = np.asarray(sp.csr_matrix(source).toarray())  # sums duplicates
    reference = ad.AnnData(
        dense.astype(np.float32), obs=pd.DataFrame(index=case.adata.obs_names.copy()), var=case.adata.var.copy()
    )
    kwargs = {k: v for k, v in case.kwargs.items() if k in ("gene_key", "min_genes")}
    try:
        scfm.tl.embed(reference, model=models.pretrained[family], progress=False, device="cpu", **kwargs)
    except Exception as error:
        return Outcome(
            "not_invariant", f"dense float32 copy fails ({type(error).__name__}: {error})", entry, case.description
        )
    ours = case.adata.obsm[slot]
    if not np.allclose(ours, reference.obsm["X_scfm"], atol=1e-4):
        gap = float(np.abs(ours - reference.obsm["X_scfm"]).max())
        return Outcome(
            "not_invariant", f"max |difference| {gap:.3g} vs the dense float32 copy", entry, case.description
        )
    return Outcome("ok", "finite result, invariant", entry, case.description)


# ------------------------------------------------------------------------------------------ argument fuzzing
def base_adata(n_obs: int = 16) -> ad.AnnData:
    genes = shared_genes()[:120]
    rng = np.random.default_rng(3)
    return ad.AnnData(
        sp.csr_matrix(rng.poisson(1.5, size=(n_obs, len(genes))).astype(np.float32)),
        obs=pd.DataFrame(
            {"batch": pd.Categorical([f"b{k % 2}" for k in range(n_obs)])}, index=[f"c{k}" for k in range(n_obs)]
        ),
        var=pd.DataFrame(index=genes),
    )


class _NotAModel:
    pass


def bad_arguments(tmp: Path) -> dict[str, list[Any]]:
    """Wrong types and ranges per argument name (a directory that is not a checkpoint lives under ``tmp``)."""
    not_checkpoint = tmp / "not_a_checkpoint"
    not_checkpoint.mkdir(exist_ok=True)
    (not_checkpoint / "notes.txt").write_text("hello")
    a_file = tmp / "a_file.json"
    a_file.write_text("{}")
    return {
        "batch_size": [0, -1, 1.5, "8", True, float("nan"), None],
        "seed": [-1, 2**40, 1.5, "0", None, float("inf")],
        "n_neighbors": [0, -3, 2.5, "5", None],
        "max_len": [0, 1, -5, 2.5, "100"],
        "temperature": [0, -1.0, float("inf"), float("nan"), "1", None],
        "device": ["meta", "nonsense", 5, "", "cuda:99", None],
        "model": [5, 3.0, str(tmp / "missing_dir"), str(not_checkpoint), str(a_file), "", _NotAModel(), ["scgpt"]],
        "conditions": ["B cell", {"cell_type": 5}, {"no_such_key": "x"}, {"cell_type": "not a cell type"}, ["a"]],
        "key_added": ["", None, 3, "a/b", b"x"],
        "min_genes": [-1, 1.5, "10"],
        "layer": ["missing", 3],
        "gene_key": ["missing", 5],
        "top_k": [0, -1, 1.5],
        "n_cells": [0, -1, 1.5, "3"],
        "block_size": [0, -2, 2.5],
        "adata": [None, "adata", np.zeros((3, 3)), pd.DataFrame({"a": [1.0]}), [1, 2]],
        "max_epochs": [0, -1, 1.5],
        "lr": [0, -1.0, float("nan")],
    }


#: entry point -> (function(adata, models, **override) -> Any, argument names it takes)
def argument_entries(models: Models) -> dict[str, tuple[Callable[..., Any], tuple[str, ...]]]:
    p = models.pretrained

    def embed(adata: Any, family: str, **kw: Any) -> Any:
        kw = {"model": p[family], "progress": False, "device": "cpu", "min_genes": 10} | kw
        return scfm.tl.embed(adata, **kw)

    def annotate(adata: Any, **kw: Any) -> Any:
        kw = {"model": p["scgpt"], "method": "knn", "progress": False, "device": "cpu", "min_genes": 10} | kw
        return scfm.tl.annotate(adata, models.reference, "label", **kw)

    def generate(adata: Any, **kw: Any) -> Any:
        kw = {"model": p["scmulan"], "device": "cpu"} | kw
        return scfm.tl.generate(kw.pop("model"), kw.pop("n_cells", 4), kw.pop("conditions", None), **kw)

    def impute(adata: Any, **kw: Any) -> Any:
        kw = {"model": p["cellplm"], "progress": False, "device": "cpu", "min_genes": 10} | kw
        return scfm.tl.impute(adata, [shared_genes()[-1]], **kw)

    def denoise(adata: Any, **kw: Any) -> Any:
        kw = {"model": p["cellplm"], "progress": False, "device": "cpu", "min_genes": 10} | kw
        if "key_added" in kw:
            kw["layer_added"] = kw.pop("key_added")
        return scfm.tl.denoise(adata, **kw)

    def latent(adata: Any, **kw: Any) -> Any:
        model_kw = {k: kw.pop(k) for k in ("layer", "gene_key", "min_genes") if k in kw}
        source = kw.pop("model", p["tgpt"])
        model = TGPT.from_pretrained(source, adata, **({"min_genes": 10} | model_kw))
        return model.get_latent_representation(**({"device": "cpu"} | kw))

    common = ("adata", "model", "device", "key_added", "min_genes", "layer", "gene_key", "block_size")
    entries: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
        f"tl.embed[{f}]": (
            (lambda adata, f=f, **kw: embed(adata, f, **kw)),
            (*common, "batch_size", *(("max_len",) if f == "scgpt" else ())),
        )
        for f in FAMILIES
    }
    entries["tl.annotate[knn]"] = (annotate, (*common[:-1], "n_neighbors", "batch_size", "seed"))
    entries["tl.generate"] = (generate, ("model", "device", "seed", "temperature", "top_k", "n_cells", "conditions"))
    entries["tl.impute"] = (impute, (*common, "seed"))
    entries["tl.denoise"] = (denoise, (*common, "seed"))
    entries["TGPT.from_pretrained+get_latent_representation"] = (
        latent,
        ("adata", "model", "min_genes", "layer", "gene_key", "batch_size", "device"),
    )
    return entries


def run_argument_case(models: Models, tmp: Path, draw: Draw) -> Outcome:
    entries = argument_entries(models)
    entry = draw.choice(sorted(entries))
    function, names = entries[entry]
    name = draw.choice(names)
    value = draw.choice(bad_arguments(tmp)[name])
    adata = base_adata()
    if name == "adata":
        call = lambda: function(value)  # noqa: E731
        watched: list[ad.AnnData] = [models.reference]
    else:
        call = lambda: function(adata, **{name: value})  # noqa: E731
        watched = [adata, models.reference]
    shown = value if isinstance(value, str | int | float | type(None)) else type(value).__name__
    accepted = [name] + ([str(value)] if name == "model" and isinstance(value, str) and value else [])
    accepted += ["adata", "anndata"] if name == "adata" else []
    accepted += ["layer_added"] if name == "key_added" and entry == "tl.denoise" else []
    accepted += [str(k) for k in value] if name == "conditions" and isinstance(value, dict) else []
    outcome = run_case(
        entry,
        call,
        watched,
        names=accepted,
        must_fail=True,
        outputs=lambda r: [r] if isinstance(r, np.ndarray) else [],
        allowed_changes=lambda path: True,  # must_fail already reports a success
        # a bad argument of get_latent_representation fails after from_pretrained registered the AnnData (by design)
        allowed_on_error=_registration if entry.startswith("TGPT") and name in ("batch_size", "device") else None,
        case=f"{name}={shown!r}",
    )
    return outcome


# -------------------------------------------------------------------------------------- checkpoint tampering
TAMPERINGS = (
    "drop_field",
    "wrong_type",
    "n_heads_zero",
    "negative_size",
    "huge_size",
    "nan_config",
    "nan_weights",
    "inf_weights",
    "pickle_weights",
    "truncated_weights",
    "not_json",
    "missing_vocab",
    "empty_dir",
)


def tamper_checkpoint(draw: Draw, tmp: Path) -> tuple[Path, str, str, bool]:
    """Copy a bundled checkpoint to ``tmp`` and break it. Returns (dir, family, what, pickle_marker_expected)."""
    import shutil

    family = draw.choice(FAMILIES)
    kind = draw.choice(TAMPERINGS)
    directory = tmp / f"{family}_{kind}_{draw.integer(0, 10**9)}"
    shutil.copytree(CHECKPOINTS / f"{family}_default", directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    numeric = sorted(k for k, v in config.items() if isinstance(v, int | float) and not isinstance(v, bool))
    what = kind
    if kind == "drop_field":
        field_name = draw.choice(sorted(k for k in config if k not in ("family", "extra")))
        del config[field_name]
        what = f"config without {field_name!r}"
    elif kind == "wrong_type":
        field_name = draw.choice(sorted(k for k in config if k != "extra"))
        original = config[field_name]
        optional = "None" in str(_config_fields(family).get(field_name, ""))
        wrong = ("twelve", [1], {"a": 1}, None, 1.5, True)
        bad = draw.choice([b for b in wrong if type(b) is not type(original) and not (b is None and optional)])
        config[field_name] = bad
        what = f"config {field_name}={bad!r}"
    elif kind == "n_heads_zero" and "n_heads" in config:
        config["n_heads"] = 0
    elif kind in ("negative_size", "huge_size", "nan_config"):
        # sizes that shape the weights (max_len/context of a model without positional weights may be anything)
        sizes = [k for k in numeric if re.match(r"(d_|n_|latent_dim|.*hidden|.*layers|.*bottleneck)", k)]
        floats = [k for k in numeric if isinstance(config[k], float)] or numeric
        field_name = draw.choice(floats if kind == "nan_config" else sizes)
        config[field_name] = {"negative_size": -4, "huge_size": 10**9, "nan_config": float("nan")}[kind]
        what = f"config {field_name}={config[field_name]!r}"
    config_path.write_text(json.dumps(config))
    weights = directory / "model.safetensors"
    if kind in ("nan_weights", "inf_weights"):
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        floating = sorted(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        name = draw.choice(floating)
        tensors[name] = torch.full_like(tensors[name], float("nan") if kind == "nan_weights" else float("inf"))
        save_file(tensors, str(weights))
        what = f"{kind[:3]} in {name}"
    elif kind == "pickle_weights":
        import pickle

        marker = directory / "PICKLE_EXECUTED"
        weights.write_bytes(pickle.dumps(_PickleBomb(str(marker))))
        return directory, family, "a pickle instead of safetensors", True
    elif kind == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "not_json":
        config_path.write_text("this is not json {")
    elif kind == "missing_vocab":
        (directory / "vocab.json").unlink()
    elif kind == "empty_dir":
        for child in directory.iterdir():
            child.unlink()
    return directory, family, what, False


def _config_fields(family: str) -> dict[str, Any]:
    """Annotations of the family's config dataclass (to know which fields may be ``None``)."""
    import dataclasses

    import scfm.models as models

    config_class = {"scgpt": models.SCGPTConfig, "tgpt": models.TGPTConfig}.get(family) or getattr(
        models, "CellPLMConfig" if family == "cellplm" else "SCMulanConfig"
    )
    return {f.name: f.type for f in dataclasses.fields(config_class)}


def kind_of(what: str) -> str:
    return "weights" if what.startswith(("nan in", "inf in")) else what


class _PickleBomb:
    """Unpickling it creates a marker file (harmless): proof that a pickle was executed."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def run_checkpoint_case(models: Models, tmp: Path, draw: Draw) -> Outcome:
    directory, family, what, pickled = tamper_checkpoint(draw, tmp)
    adata = base_adata(12)
    use_class = draw.flag(0.3)
    names = ["config", "checkpoint", str(directory), directory.name, "weights", "safetensors", "vocab", "tensor"]

    def call() -> Any:
        if use_class:
            model = CLASSES[family].from_pretrained(str(directory), adata, min_genes=10)
            return model.get_latent_representation(device="cpu")
        scfm.tl.embed(adata, model=str(directory), progress=False, device="cpu", min_genes=10)
        return adata.obsm["X_scfm"]

    outcome = run_case(
        f"{'from_pretrained' if use_class else 'tl.embed'}(tampered {family})",
        call,
        [adata],
        names=names,
        # every tampering makes the checkpoint invalid and must be refused; non-finite weights only where they
        # reach the output (a NaN in a head the embedding does not use gives a finite, correct result)
        must_fail=kind_of(what) != "weights",
        outputs=lambda r: [r],
        allowed_changes=lambda path: True,
        # non-finite weights show in the first forward pass, after from_pretrained registered the AnnData
        allowed_on_error=_registration if use_class and "weights" in kind_of(what) else None,
        case=what,
    )
    if pickled and (directory / "PICKLE_EXECUTED").exists():
        outcome = Outcome("unhandled", "A PICKLE WAS EXECUTED", outcome.entry, what)
    return outcome


# ---------------------------------------------------------------------------------------------------- tests
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking: each example runs models (seconds)
)
SLOW = settings(PROFILE, max_examples=EXAMPLES * 20)


@pytest.fixture(scope="module")
def models() -> Models:
    return Models.load()


@pytest.fixture(autouse=True)
def _one_thread():
    from conftest import one_thread

    with one_thread():
        yield


def _assert_ok(outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if o.kind != "ok"]
    assert not failed, "\n".join(f"{o.entry}: {o.kind}: {o.detail}\n    case: {o.case}" for o in failed)


def _tools_property(models: Models, data: st.DataObject, only: Sequence[str] | None = None) -> None:
    draw = HypothesisDraw(data)
    case = draw_case(draw, max_obs=40)
    _assert_ok(run_tools(models, case, draw, only=only))


@PROFILE
@given(data=st.data())
def test_embed_every_family_contract(models, data):
    _tools_property(models, data, only=["tl.embed"])


@PROFILE
@given(data=st.data())
def test_annotate_denoise_impute_and_model_classes_contract(models, data):
    _tools_property(models, data, only=["tl.annotate", "tl.denoise", "tl.impute", "SCGPT", "TGPT", "CellPLM", "SCM"])


@PROFILE
@given(data=st.data())
def test_bad_arguments_are_refused_by_name(models, data, tmp_path_factory):
    draw = HypothesisDraw(data)
    _assert_ok([run_argument_case(models, tmp_path_factory.mktemp("args"), draw)])


@settings(PROFILE, max_examples=max(EXAMPLES // 2, 3))
@given(data=st.data())
def test_tampered_checkpoints_are_refused(models, data, tmp_path_factory):
    draw = HypothesisDraw(data)
    _assert_ok([run_checkpoint_case(models, tmp_path_factory.mktemp("ckpt"), draw)])


def test_integrate_and_generate_contract(models):
    """Integration fine-tunes (seconds per call): a few fixed odd inputs instead of generated ones."""
    p = models.pretrained
    outcomes = []
    for seed in range(3):
        case = draw_case(RandomDraw(seed), max_obs=20)
        kwargs = {k: v for k, v in case.kwargs.items() if k != "min_genes"}
        outcomes.append(
            run_case(
                "tl.integrate",
                lambda case=case, kwargs=kwargs: scfm.tl.integrate(
                    case.adata,
                    "batch",
                    method="finetune",
                    model=p["scgpt"],
                    max_epochs=1,
                    batch_size=4,
                    n_top_genes=None,
                    min_genes=5,
                    progress=False,
                    device="cpu",
                    **kwargs,
                ),
                [case.adata] + ([case.parent] if case.parent is not None else []),
                must_fail=case.must_fail,
                outputs=lambda _, case=case: [case.adata.obsm.get(case.kwargs.get("key_added", "X_scfm_integrated"))],
                allowed_changes=_result_slots(case.kwargs.get("key_added", "X_scfm_integrated")),
                case=case.description,
            )
        )
    generated = scfm.tl.generate(p["scmulan"], 3, {"cell_type": "B cell"}, device="cpu", seed=1)
    assert _finite(generated.X)
    _assert_ok(outcomes)


def test_the_checks_catch_a_broken_tool(models):
    """The classification is not vacuous: a tool that writes before failing, or returns NaN, is caught."""
    adata = base_adata()

    def writes_then_fails() -> None:
        adata.obsm["X_scfm"] = np.zeros((adata.n_obs, 2))
        raise ValueError("adata: failed after writing")

    assert run_case("broken", writes_then_fails, [adata]).kind == "changed_on_error"
    adata = base_adata()

    def canonicalises_in_place() -> None:
        adata.X = _with_duplicate_entries(adata.X)

    assert run_case("broken", canonicalises_in_place, [adata]).kind == "changed_on_success"
    assert run_case("broken", lambda: np.full(3, np.nan), [], outputs=lambda r: [r]).kind == "nonfinite"
    assert run_case("broken", lambda: [][1], []).kind == "unhandled"
    assert run_case("broken", lambda: np.zeros(2).reshape(5), []).kind == "unclear"
    assert run_case("broken", lambda: None, [], must_fail=True).kind == "accepted_invalid"
    assert (
        run_case(
            "ok", lambda: (_ for _ in ()).throw(ValueError("batch_size must be >= 1")), [], names=["batch_size"]
        ).kind
        == "ok"
    )
    dup = base_adata()
    dup.X = _with_duplicate_entries(dup.X)
    before = snapshot(dup)
    dup.X.sum_duplicates()
    assert changes(dup, before)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_every_tool_contract_many_examples(models, data):
    _tools_property(models, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_bad_arguments_many_examples(models, data, tmp_path_factory):
    draw = HypothesisDraw(data)
    _assert_ok([run_argument_case(models, tmp_path_factory.mktemp("args"), draw)])
