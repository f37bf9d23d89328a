"""Baselines and metric runners (evaluation needs the ``eval`` extra: scib-metrics, harmonypy, pynndescent)."""

from ._baselines import harmony, hvg_pca, log_normalised, logistic_regression, scvi_latent
from ._metrics import knn_accuracy, label_silhouette, scib_table
from ._runners import annotation, integration, tidy_scib_table

__all__ = [
    "annotation",
    "harmony",
    "hvg_pca",
    "integration",
    "knn_accuracy",
    "label_silhouette",
    "log_normalised",
    "logistic_regression",
    "scib_table",
    "scvi_latent",
    "tidy_scib_table",
]
