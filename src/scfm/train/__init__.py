"""Objectives and training plans."""

from ._objectives import elastic_cell_similarity, masked_mse, masked_zero_bce
from ._plan import WarmupCosineTrainingPlan, warmup_cosine

__all__ = ["WarmupCosineTrainingPlan", "elastic_cell_similarity", "masked_mse", "masked_zero_bce", "warmup_cosine"]
