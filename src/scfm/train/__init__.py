"""Training plans, callbacks and the family-agnostic streaming pretraining entry point (``scfm pretrain``).

Generic code only: a model family contributes to pretraining through a :class:`PretrainRecipe` that it registers
with :func:`register_recipe` when its package is imported; nothing here imports a family.
"""

from ._callbacks import AtomicCheckpointIO, CellTrace, StepCheckpoint, Throughput, checkpoint_files
from ._export import export_run
from ._plan import WarmupCosineTrainingPlan, warmup_cosine
from ._pretrain import PretrainResult, pretrain, schedule_steps, union_vocab
from ._pretrain_config import PretrainConfig
from ._recipe import PretrainRecipe, get_recipe, register_recipe, registered_recipes

__all__ = [
    "AtomicCheckpointIO",
    "CellTrace",
    "PretrainConfig",
    "PretrainRecipe",
    "PretrainResult",
    "StepCheckpoint",
    "Throughput",
    "WarmupCosineTrainingPlan",
    "checkpoint_files",
    "export_run",
    "get_recipe",
    "pretrain",
    "register_recipe",
    "registered_recipes",
    "schedule_steps",
    "union_vocab",
    "warmup_cosine",
]
