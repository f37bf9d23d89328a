"""Baselines and metric runners (evaluation needs the ``eval`` extra: scib-metrics, harmonypy, pynndescent)."""

from ._baselines import (
    harmony,
    hvg_pca,
    log_normalised,
    logistic_regression,
    random_projection,
    rank_pca,
    scvi_latent,
)
from ._metrics import knn_accuracy, label_silhouette, scib_table
from ._multiome import concatenated_pca, multivi, rna_pca, totalvi, wnn_scores, zero_padded
from ._perturbation import (
    ScreenSummary,
    perturbation_baselines,
    perturbation_benchmark,
    perturbation_metrics,
    summarise_screen,
)
from ._runners import annotation, integration, tidy_scib_table

__all__ = [
    "ScreenSummary",
    "annotation",
    "concatenated_pca",
    "harmony",
    "hvg_pca",
    "integration",
    "knn_accuracy",
    "label_silhouette",
    "log_normalised",
    "logistic_regression",
    "multivi",
    "perturbation_baselines",
    "perturbation_benchmark",
    "perturbation_metrics",
    "random_projection",
    "rank_pca",
    "rna_pca",
    "scib_table",
    "scvi_latent",
    "summarise_screen",
    "tidy_scib_table",
    "totalvi",
    "wnn_scores",
    "zero_padded",
]
