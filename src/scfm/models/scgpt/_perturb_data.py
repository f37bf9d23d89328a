"""Data of scGPT's perturb-GEP: a perturbation screen as log-normalised targets, binned control inputs and flags.

A training example pairs one cell of the screen (perturbed or control) with a control cell drawn at random (the
paper's pairing, redrawn every epoch from a seeded generator): the input is the control cell's genes with their
per-cell quantile bins plus a flag per gene (1 on the perturbed genes), the target is the log-normalised
expression of the paired cell at every gene position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from scfm.data import expression_source
from scfm.genes import GeneAlignment, GeneVocab, align_genes
from scfm.tokenize import bin_expressed, check_values, detect_input_kind

from ..base import PerturbationRequest, parse_perturbation, perturbation_name

#: Library size of the log-normalised targets (``log1p(counts / total * TARGET_SUM)``).
TARGET_SUM = 1e4


@dataclass
class ScreenGenes:
    """The data columns a model reads and predicts: their positions, names and vocabulary ids."""

    columns: np.ndarray
    names: list[str]
    token_ids: np.ndarray
    alignment: GeneAlignment


def screen_genes(adata: AnnData, vocab: GeneVocab, request: PerturbationRequest) -> ScreenGenes:
    """Align the genes of ``adata`` to ``vocab`` (one column per token) and check the matrix holds counts."""
    source = expression_source(adata, layer=request.layer, use_raw=request.use_raw)
    if source.is_backed:
        raise ValueError("perturbation fine-tuning needs the matrix in memory; load the AnnData without backed mode")
    check_values(source.matrix, where=source.label)
    sample = source.matrix[: min(adata.n_obs, 2000)]
    if detect_input_kind(sample) != "counts":
        raise ValueError(
            f"{source.label} does not hold raw counts (non-integer values); perturbation prediction normalises counts "
            "itself: pass the counts layer (layer='counts') or use_raw=True"
        )
    alignment = align_genes(
        source.var,
        vocab,
        gene_key=request.gene_key,
        min_genes=request.min_genes,
        on_duplicate="first",
        **request.gene_rules.as_kwargs(),
    )
    token_ids = alignment.column_token_ids()
    columns, seen = [], set()
    for column in np.flatnonzero(token_ids >= 0):
        if int(token_ids[column]) not in seen:
            seen.add(int(token_ids[column]))
            columns.append(column)
    columns = np.asarray(columns, dtype=np.int64)
    if len(columns) < request.min_genes:
        raise ValueError(
            f"only {len(columns)} genes of the data are in the vocabulary; need min_genes={request.min_genes}"
        )
    names = [str(adata.var_names[c]) if not request.use_raw else str(adata.raw.var_names[c]) for c in columns]
    return ScreenGenes(columns, names, token_ids[columns].astype(np.int64), alignment)


def log_normalised(adata: AnnData, rows: np.ndarray, genes: ScreenGenes, request: PerturbationRequest) -> np.ndarray:
    """``log1p`` of counts scaled to :data:`TARGET_SUM` per cell (library size over all genes), dense float32.

    Only ``rows`` (cells) and the columns of ``genes`` are returned.
    """
    source = expression_source(adata, layer=request.layer, use_raw=request.use_raw)
    block = sp.csr_matrix(source.matrix[np.sort(rows)] if len(rows) else source.matrix[:0], dtype=np.float64)
    order = np.argsort(np.argsort(rows, kind="stable"), kind="stable")
    block = block[order]
    totals = np.asarray(block.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    values = block[:, genes.columns].toarray() * scale[:, None]
    return np.log1p(values).astype(np.float32)


def binned_inputs(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Per-cell quantile bins of each row's expressed values (0 stays 0), deterministic (midpoint ties)."""
    bins = np.zeros(values.shape, dtype=np.float32)
    for i, row in enumerate(values):
        expressed = np.flatnonzero(row > 0)
        if len(expressed):
            bins[i, expressed] = bin_expressed(row[expressed], n_bins, None)
    return bins


@dataclass
class ScreenLabels:
    """Each cell's perturbation (canonical name) and which cells are controls."""

    names: np.ndarray
    is_control: np.ndarray
    genes: dict[str, tuple[str, ...]]


def screen_labels(adata: AnnData, request: PerturbationRequest) -> ScreenLabels:
    """Read ``obs[perturbation_key]``: control label, ``"GENE"`` or ``"A+B"`` per cell.

    Raises
    ------
    KeyError
        ``perturbation_key`` is not a column of ``obs``.
    ValueError
        Missing labels, no cell carries the control label, or a label that is not a perturbation.
    """
    key, control = request.perturbation_key, request.control
    if key not in adata.obs:
        raise KeyError(
            f"perturbation_key={key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)}); name the "
            "column holding each cell's perturbed gene(s)"
        )
    values = adata.obs[key]
    if values.isna().any():
        raise ValueError(f"adata.obs[{key!r}] has {int(values.isna().sum())} missing values; label every cell")
    strings = values.astype(str).to_numpy()
    is_control = strings == str(control)
    if not is_control.any():
        shown = sorted(set(strings))[:8]
        raise ValueError(
            f"no cell of adata.obs[{key!r}] has the control label {control!r} (labels: {shown}"
            f"{' ...' if len(set(strings)) > 8 else ''}); pass control= with the label of the control cells"
        )
    genes, names = {}, strings.copy()
    for label in sorted(set(strings[~is_control])):
        try:
            parsed = parse_perturbation(label)
        except ValueError as err:
            raise ValueError(f"adata.obs[{key!r}] holds {label!r}, which is not a perturbation: {err}") from None
        canonical = perturbation_name(parsed)
        genes[canonical] = parsed
        names[strings == label] = canonical
    return ScreenLabels(names, is_control, genes)


def subsample(rows: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``cap`` of ``rows`` (a seeded draw, kept in ascending order); all of them when ``cap`` is ``None``."""
    if cap is None or len(rows) <= cap:
        return rows
    return np.sort(rng.choice(rows, size=cap, replace=False))


def cell_counts(labels: ScreenLabels) -> pd.Series:
    """Cells per perturbation (controls excluded)."""
    return pd.Series(labels.names[~labels.is_control]).value_counts()


@dataclass
class PairedExamples:
    """Tensors of the paired examples of one batch: inputs (ids, bins, flags) and the paired cells' targets."""

    gene_ids: torch.Tensor
    values: torch.Tensor
    flags: torch.Tensor
    targets: torch.Tensor | None


def pair_batch(
    control_bins: np.ndarray,
    gene_token_ids: np.ndarray,
    extra_token_ids: list[list[int]],
    flagged: list[np.ndarray],
    *,
    cls_id: int,
    pad_id: int,
    pad_value: float,
    targets: np.ndarray | None = None,
) -> PairedExamples:
    """Build one batch: ``<cls>``, every model gene (the control cell's bins), then perturbed genes not measured.

    Parameters
    ----------
    control_bins
        ``(batch, n_genes)`` binned values of the control partners.
    gene_token_ids
        ``(n_genes,)`` token ids of the measured genes, in column order.
    extra_token_ids
        Per example, token ids of perturbed genes that are not among the measured genes (value 0, flag 1).
    flagged
        Per example, positions (in ``0 .. n_genes-1``) of perturbed measured genes.
    targets
        ``(batch, n_genes)`` log-normalised expression of the paired cells, or ``None`` for prediction.
    """
    n, n_genes = control_bins.shape
    n_extra = max((len(e) for e in extra_token_ids), default=0)
    length = 1 + n_genes + n_extra
    ids = np.full((n, length), pad_id, dtype=np.int64)
    vals = np.full((n, length), pad_value, dtype=np.float32)
    flags = np.zeros((n, length), dtype=np.int64)
    ids[:, 0] = cls_id
    ids[:, 1 : 1 + n_genes] = gene_token_ids
    vals[:, 1 : 1 + n_genes] = control_bins
    for i in range(n):
        flags[i, 1 + np.asarray(flagged[i], dtype=np.int64)] = 1
        extra = extra_token_ids[i]
        ids[i, 1 + n_genes : 1 + n_genes + len(extra)] = extra
        vals[i, 1 + n_genes : 1 + n_genes + len(extra)] = 0.0
        flags[i, 1 + n_genes : 1 + n_genes + len(extra)] = 1
    return PairedExamples(
        torch.from_numpy(ids),
        torch.from_numpy(vals),
        torch.from_numpy(flags),
        None if targets is None else torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)),
    )
