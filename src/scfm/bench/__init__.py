"""Baselines and metric runners (evaluation needs the ``eval`` extra: scib-metrics, pynndescent)."""

from ._baselines import hvg_pca
from ._metrics import knn_accuracy, label_silhouette, scib_table

__all__ = ["hvg_pca", "knn_accuracy", "label_silhouette", "scib_table"]
