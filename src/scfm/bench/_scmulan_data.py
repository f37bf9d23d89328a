"""The data of the bundled scMulan model: pretraining corpora, labelled reference sets and an evaluation split.

Both pretraining corpora carry tissue, technology and cell-type terms; the documented split holds labelled cells
out for evaluation.

Split (seeded, stratified by label):

* ``pbmc_sorted``: 30% of each FACS-sorted PBMC population (Zheng 2017 sorted reference) is held out;
* ``extra_labelled``: 20% of each cell-type label with at least 5 cells in the extra corpus is held out;
* ``pancreas_xin``: the Xin 2016 pancreas cells (batch 5 of the pancreas set; never in a corpus) are held out
  whole, a study the model never saw.

The ECCITE-seq cells (500, genes named ``hg19_<symbol>``) are left out.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

SORTED_PBMC_NAMES = {
    "nk": "NK cell",
    "bcells": "B cell",
    "memoryt": "memory T cell",
    "regulatoryt": "regulatory T cell",
    "thelper": "T helper cell",
    "cytotoxict": "cytotoxic T cell",
    "monocytes": "monocyte",
    "naivet": "naive T cell",
    "naivecytotoxic": "naive cytotoxic T cell",
}
PANCREAS_NAMES = {"beta": "beta cell", "ductal": "ductal cell"}
LEFT_OUT_DATASETS = ("eccite_citefuse_rna_500",)
METADATA_KEYS = {"cell_type": "cell_type", "tissue": "tissue", "technology": "technology"}
UNKNOWN = "unknown"


def held_out_mask(labels: pd.Series, fraction: float, seed: int, min_cells: int = 1) -> np.ndarray:
    """Hold out ``round(fraction * n)`` cells of each label with at least ``min_cells`` cells (seeded)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    values = labels.astype(str).to_numpy()
    for label in sorted(set(values) - {UNKNOWN}):
        positions = np.flatnonzero(values == label)
        if len(positions) >= min_cells:
            mask[rng.choice(positions, round(fraction * len(positions)), replace=False)] = True
    return mask


def _read(path: Path) -> ad.AnnData:
    adata = ad.read_h5ad(path)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def scmulan_corpus(data_dir: str | Path, seed: int = 0) -> tuple[ad.AnnData, dict[str, ad.AnnData]]:
    """Return the training cells (both corpora plus labels) and the held-out evaluation sets.

    Each has ``obs`` columns ``cell_type``, ``tissue`` and ``technology`` (``"unknown"`` where a source has no label).
    """
    data_dir = Path(data_dir)
    main = _read(data_dir / "pretraining" / "human_raw_counts_corpus.h5ad")
    extra = _read(data_dir / "pretraining" / "human_extra_corpus.h5ad")
    sorted_ref = ad.read_h5ad(data_dir / "annotation" / "pbmc_zheng2017_sorted_reference.h5ad")
    pancreas = _read(data_dir / "integration" / "pancreas_3batches_cepo_small.h5ad")

    labels = pd.Series(UNKNOWN, index=main.obs_names, dtype=object)
    sorted_names = "zheng2017_sorted_reference:" + sorted_ref.obs_names
    labels[sorted_names] = sorted_ref.obs["cell_type"].astype(str).map(SORTED_PBMC_NAMES).to_numpy()
    pancreas_labels = pancreas.obs["cell_type"].astype(str).map(PANCREAS_NAMES)
    for dataset in main.obs["dataset"].unique():
        if str(dataset).startswith("pancreas_"):
            rows = main.obs_names[main.obs["dataset"] == dataset]
            original = rows.str.split(":", n=1).str[1]
            labels[rows] = pancreas_labels.reindex(original).fillna(UNKNOWN).to_numpy()
    main.obs["cell_type"] = labels.to_numpy()
    main = main[~main.obs["dataset"].isin(LEFT_OUT_DATASETS)]

    sorted_held = held_out_mask(
        main.obs["cell_type"].where(main.obs["dataset"] == "zheng2017_sorted_reference", UNKNOWN), 0.3, seed
    )
    extra_held = held_out_mask(extra.obs["cell_type"], 0.2, seed, min_cells=5)

    columns = ["dataset", *METADATA_KEYS.values()]
    train = ad.concat(
        [main[~sorted_held], extra[~extra_held]], join="outer", merge=None, fill_value=0, index_unique=None
    )
    train.obs = train.obs[columns].astype(str)
    xin = pancreas[pancreas.obs["batch"].astype(str) == "batch 5"].copy()
    xin.obs = pd.DataFrame(
        {
            "dataset": "pancreas_batch5_Xin",
            "cell_type": pancreas_labels[xin.obs_names].to_numpy(),
            "tissue": "pancreas",
            "technology": "SMARTer (Xin 2016)",
        },
        index=xin.obs_names,
    )
    held = {
        "pbmc_sorted": _with_columns(main[sorted_held].copy(), columns),
        "extra_labelled": _with_columns(extra[extra_held].copy(), columns),
        "pancreas_xin": xin,
    }
    return train, held


def _with_columns(adata: ad.AnnData, columns: list[str]) -> ad.AnnData:
    adata.obs = adata.obs[columns].astype(str)
    adata.var = pd.DataFrame(index=adata.var_names)
    return adata
