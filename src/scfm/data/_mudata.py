"""Generic MuData handling: named modalities, cells present per modality (outer-joined obs), peaks, feature selection.

Nothing here knows a model family. A multi-modal model reads each modality once with :func:`read_modalities`, which
returns one :class:`Modality` per kind with its rows aligned to ``mdata.obs`` (cells that lack the modality have an
empty row and ``present == False``: missing is declared by the MuData's ``obsmap``, never guessed from zeros).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

MODALITY_KINDS = ("rna", "atac", "protein")
"""The kinds of modality a multi-modal model understands, in token order."""

DEFAULT_MODALITIES = {"rna": "rna", "atac": "atac", "protein": "prot"}
"""Modality kind -> ``mdata.mod`` key used when the caller names none (a missing default is skipped)."""

_PEAK = re.compile(r"^([^:_\s]+)[:_](\d+)[-_](\d+)$")


@dataclass
class Modality:
    """One modality of a MuData, aligned to ``mdata.obs``.

    Attributes
    ----------
    kind
        ``"rna"``, ``"atac"`` or ``"protein"``.
    key
        Its key in ``mdata.mod``.
    matrix
        ``(mdata.n_obs, n_features)`` float32 CSR counts; the rows of cells without this modality are empty.
    present
        ``(mdata.n_obs,)`` bool: the cell was measured in this modality (from ``mdata.obsmap``).
    features
        Feature names (``var_names`` of the modality).
    """

    kind: str
    key: str
    matrix: sp.csr_matrix
    present: np.ndarray
    features: pd.Index

    def subset(self, columns: np.ndarray) -> Modality:
        """Return the same modality restricted to ``columns`` (positions of features)."""
        columns = np.asarray(columns, dtype=np.int64)
        return Modality(self.kind, self.key, self.matrix[:, columns].tocsr(), self.present, self.features[columns])


def check_mudata(mdata) -> None:
    """Raise unless ``mdata`` is a MuData whose ``obs`` agrees with its modalities.

    A modality replaced or subset after the MuData was built leaves ``mdata.obs``/``obsmap`` stale; the fix is
    ``mdata.update()``.
    """
    from mudata import MuData

    if not isinstance(mdata, MuData):
        raise TypeError(f"expected a MuData, got {type(mdata).__name__}; build one with mudata.MuData({{...}})")
    if mdata.n_obs == 0:
        raise ValueError("the MuData has no cells (n_obs == 0)")
    if len(mdata.obs_names) != len(mdata.obs) or not mdata.obs_names.is_unique:
        raise ValueError("mdata.obs_names are not unique; call mdata.obs_names_make_unique()")
    for key, mod in mdata.mod.items():
        where = np.asarray(mdata.obsmap.get(key, np.zeros(0)), dtype=np.int64).ravel()
        stale = where.shape[0] != mdata.n_obs or int((where > 0).sum()) != mod.n_obs
        if not stale:
            rows = where[where > 0] - 1
            stale = not np.array_equal(np.asarray(mod.obs_names[rows]), np.asarray(mdata.obs_names[where > 0]))
        if stale:
            raise ValueError(
                f"mdata.obs is out of sync with modality {key!r} ({mod.n_obs} cells; mdata has {mdata.n_obs}): a "
                "modality was changed after the MuData was built; call mdata.update() first"
            )


def resolve_modalities(mdata, modalities: Mapping[str, str | None] | None) -> dict[str, str]:
    """Map modality kinds to ``mdata.mod`` keys.

    ``None`` uses :data:`DEFAULT_MODALITIES`, skipping the keys the MuData does not hold. A mapping names the
    modalities to use (a kind mapped to ``None`` is left out); each named one must exist.

    Raises
    ------
    KeyError
        A named modality is not in ``mdata.mod``.
    ValueError
        An unknown kind, or fewer than two modalities found.
    """
    available = list(mdata.mod)
    if modalities is None:
        chosen = {kind: key for kind, key in DEFAULT_MODALITIES.items() if key in mdata.mod}
    else:
        unknown = sorted(set(modalities) - set(MODALITY_KINDS))
        if unknown:
            raise ValueError(f"unknown modality kinds {unknown}; modalities maps {list(MODALITY_KINDS)} to mod keys")
        chosen = {kind: key for kind, key in modalities.items() if key is not None}
        missing = {kind: key for kind, key in chosen.items() if key not in mdata.mod}
        if missing:
            raise KeyError(
                f"modality {', '.join(repr(k) for k in missing.values())} (for {', '.join(missing)}) is not in "
                f"mdata.mod (it holds {available}); pass modalities={{kind: key}} with the right keys"
            )
    if len(chosen) < 2:
        raise ValueError(
            f"multi-omic integration needs at least two modalities; found {chosen} in mdata.mod {available}; "
            "pass modalities={'rna': ..., 'atac': ..., 'protein': ...}"
        )
    return {kind: chosen[kind] for kind in MODALITY_KINDS if kind in chosen}


def read_modalities(
    mdata, modalities: Mapping[str, str], layers: Mapping[str, str | None] | None = None
) -> dict[str, Modality]:
    """Read the count matrix of each modality, rows aligned to ``mdata.obs`` (see :class:`Modality`).

    Raises
    ------
    KeyError
        A layer is missing.
    ValueError
        Values that are not counts (negative, non-integer, NaN/inf), or no cell measured in two modalities.
    """
    check_mudata(mdata)
    layers = dict(layers or {})
    out = {}
    for kind, key in modalities.items():
        mod = mdata.mod[key]
        layer = layers.get(kind)
        if layer is not None and layer not in mod.layers:
            raise KeyError(f"{kind}_layer={layer!r} is not a layer of mdata.mod[{key!r}] (layers: {list(mod.layers)})")
        where = f"mdata.mod[{key!r}]" + (f".layers[{layer!r}]" if layer is not None else ".X")
        block = mod.layers[layer] if layer is not None else mod.X
        if block is None:
            raise ValueError(f"{where} is empty")
        matrix = sp.csr_matrix(block, dtype=np.float32)
        check_counts(matrix, where, f"{kind}_layer")
        position = np.asarray(mdata.obsmap[key], dtype=np.int64).ravel()
        present = position > 0
        expand = sp.csr_matrix(
            (np.ones(int(present.sum()), dtype=np.float32), (np.flatnonzero(present), position[present] - 1)),
            shape=(mdata.n_obs, mod.n_obs),
        )
        aligned = (expand @ matrix).tocsr()
        aligned.eliminate_zeros()
        aligned.sort_indices()
        out[kind] = Modality(kind, key, aligned, present, pd.Index(mod.var_names.astype(str)))
    shared = np.sum([m.present for m in out.values()], axis=0) >= 2
    if not shared.any():
        raise ValueError(
            f"no cell is measured in two of the modalities {list(modalities.values())}; the modalities share no "
            "cells, so nothing links them (mosaic data need some cells with several modalities)"
        )
    return out


def check_counts(matrix: sp.csr_matrix, where: str, argument: str) -> None:
    """Raise unless ``matrix`` holds finite, non-negative integers (the error names ``argument`` as the fix)."""
    data = matrix.data
    if data.size == 0:
        return
    bad = ~np.isfinite(data) | (data < 0) | (data != np.round(data))
    if bad.any():
        example = data[np.flatnonzero(bad)[:3]].tolist()
        raise ValueError(
            f"{where} holds values that are not counts (e.g. {example}); integration needs raw counts: pass "
            f"{argument}= the layer that holds them"
        )


def parse_peak_names(names) -> pd.DataFrame:
    """Parse ATAC peak names ``chr:start-end`` or ``chr_start_end`` into ``chrom``, ``start``, ``end`` columns.

    Raises
    ------
    ValueError
        A name in another form, or a peak whose end is not after its start.
    """
    names = [str(name) for name in names]
    parts = [_PEAK.match(name) for name in names]
    bad = [name for name, part in zip(names, parts, strict=True) if part is None]
    if bad:
        raise ValueError(
            f"{len(bad)} of {len(names)} ATAC feature names are not peaks in 'chr:start-end' or 'chr_start_end' form "
            f"(e.g. {bad[:3]}); is the right modality mapped to 'atac'? Rename var_names to peak coordinates"
        )
    frame = pd.DataFrame(
        [(p.group(1), int(p.group(2)), int(p.group(3))) for p in parts], columns=["chrom", "start", "end"], index=names
    )
    backwards = frame.index[frame["end"] <= frame["start"]]
    if len(backwards):
        raise ValueError(f"peaks whose end is not after their start: {list(backwards[:3])}")
    return frame


def measured_by_group(modality: Modality, groups: np.ndarray) -> np.ndarray:
    """``(n_groups, n_features)`` bool: a feature is measured in a group if any present cell of it has a count.

    This is totalVI's rule for protein panels that differ by batch (a protein with no count in a whole batch was
    not in its panel). ``groups`` holds integer codes ``0 .. n_groups - 1`` per cell.
    """
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    out = np.zeros((n_groups, modality.matrix.shape[1]), dtype=bool)
    for group in range(n_groups):
        rows = np.flatnonzero((groups == group) & modality.present)
        if len(rows):
            out[group] = np.asarray((modality.matrix[rows] > 0).sum(axis=0)).ravel() > 0
    return out


def select_features(modality: Modality, n_top: int | None, batches: np.ndarray | None = None) -> np.ndarray:
    """Positions of the features to keep, sorted.

    - ``rna``: scanpy's Seurat-flavour highly variable genes on ``log1p(normalize_total)`` counts, ranked within
      each batch and combined (cells measured in RNA only).
    - ``atac``: peaks are binarised (accessible or not), TF-IDF-transformed (muon's ``atac.pp.tfidf`` with
      ``log_tf=False, log_idf=False, log_tfidf=True``) and ranked by the same Seurat-flavour dispersion; peaks open
      in fewer than 5 cells are dropped first.
    - ``protein``: every protein (panels are small).

    ``n_top=None`` keeps every feature (``protein`` always). Raises ``ValueError`` when no feature is left.
    """
    import scanpy as sc
    from anndata import AnnData

    n_features = modality.matrix.shape[1]
    keep = np.arange(n_features)
    rows = np.flatnonzero(modality.present)
    if modality.kind != "protein" and n_top is not None:
        if n_top < 1:
            raise ValueError(f"the number of {modality.kind} features to select must be positive, got {n_top}")
        matrix = modality.matrix[rows]
        if modality.kind == "atac":
            matrix = matrix.copy()
            matrix.data[:] = 1.0
            open_in = np.asarray(matrix.sum(axis=0)).ravel()
            keep = np.flatnonzero(open_in >= min(5, max(len(rows) // 100, 1)))
            matrix = _tfidf(matrix[:, keep])
        else:
            totals = np.asarray(matrix.sum(axis=0)).ravel()
            keep = np.flatnonzero(totals > 0)
            matrix = matrix[:, keep]
        if 0 < n_top < len(keep):
            work = AnnData(matrix)
            batch_key = None
            if modality.kind == "rna":
                sc.pp.normalize_total(work, target_sum=1e4)
                sc.pp.log1p(work)
                if batches is not None and len(np.unique(batches[rows])) > 1:
                    work.obs["batch"] = pd.Categorical(np.asarray(batches)[rows].astype(str))
                    batch_key = "batch"
            sc.pp.highly_variable_genes(work, n_top_genes=n_top, flavor="seurat", batch_key=batch_key)
            keep = keep[work.var["highly_variable"].to_numpy()]
    if len(keep) == 0:
        raise ValueError(
            f"modality {modality.key!r} ({modality.kind}) has no features left after selection (all-zero features "
            "are dropped); check that it holds counts for the selected cells"
        )
    return np.sort(keep)


def _tfidf(binary: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p(1e4 * tf * idf)`` of a binarised peak matrix (term frequency per cell, inverse frequency per peak)."""
    per_cell = np.asarray(binary.sum(axis=1)).ravel()
    per_peak = np.asarray(binary.sum(axis=0)).ravel()
    tf = sp.diags(1.0 / np.maximum(per_cell, 1.0)) @ binary
    idf = binary.shape[0] / np.maximum(per_peak, 1.0)
    out = (tf @ sp.diags(idf)).tocsr()
    out.data = np.log1p(out.data * 1e4)
    return out.astype(np.float32)


def availability(modalities: Mapping[str, Modality], obs_names) -> pd.DataFrame:
    """Boolean frame, one column per modality kind: was the cell measured in it."""
    return pd.DataFrame({kind: m.present for kind, m in modalities.items()}, index=pd.Index(obs_names))
