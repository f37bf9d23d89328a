"""Loaders for the public data files the tutorials use. Nothing downloads: each function reads a local file.

Where the files are looked for, in order:

1. the ``path`` argument of the loader (the file itself, or a folder holding it);
2. the folder in the environment variable ``SCFM_DATA_DIR``;
3. ``../shared/data`` next to a source checkout of scfm (the project's shared data folder), when it exists.

A data folder is laid out by task: ``integration/``, ``annotation/``, ``pretraining/``, ``spatial/``, ``bulk/``,
``multiomic/``, ``perturbation/``, ``grn/``; a loader also finds its file directly in the folder given. Each
loader's docstring names the file, its public source, licence and the papers to cite; :func:`available` lists
them all and whether each is present. A missing file raises :class:`DatasetNotFoundError`, whose message names
the file, where it comes from and how to point scfm at it.

The files are conversions (to h5ad / h5mu) of data shipped in public repositories and packages; most are small
subsets of the published datasets, so results on them show trends, not definitive benchmarks.
"""

from scfm.datasets._loaders import (
    available,
    breast_cancer_gse7390,
    chipatlas_bhlhe40,
    cite_pbmc,
    eccite_citefuse,
    file_path,
    merfish,
    mop_rna_atac,
    omnipath_interactions,
    osmfish,
    pancreas,
    papalexi2021,
    pbmc_3chemistries,
    pbmc_donor_a_query,
    pbmc_multiome_tiny,
    pbmc_sorted_reference,
    pretraining_corpus,
    tcga_skcm,
    tf_chip_targets,
    visium_dlpfc,
)
from scfm.datasets._paths import ENV_VAR, DatasetNotFoundError, data_dir

__all__ = [
    "ENV_VAR",
    "DatasetNotFoundError",
    "available",
    "breast_cancer_gse7390",
    "chipatlas_bhlhe40",
    "cite_pbmc",
    "data_dir",
    "eccite_citefuse",
    "file_path",
    "merfish",
    "mop_rna_atac",
    "omnipath_interactions",
    "osmfish",
    "pancreas",
    "papalexi2021",
    "pbmc_3chemistries",
    "pbmc_donor_a_query",
    "pbmc_multiome_tiny",
    "pbmc_sorted_reference",
    "pretraining_corpus",
    "tcga_skcm",
    "tf_chip_targets",
    "visium_dlpfc",
]
