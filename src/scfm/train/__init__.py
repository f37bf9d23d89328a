"""Training plans, callbacks and the streaming pretraining entry point (``scfm pretrain``)."""

from ._callbacks import AtomicCheckpointIO, CellTrace, StepCheckpoint, Throughput, checkpoint_files
from ._export import export_run
from ._plan import WarmupCosineTrainingPlan, warmup_cosine
from ._pretrain import PretrainResult, pretrain, schedule_steps, union_vocab
from ._pretrain_config import PretrainConfig

__all__ = [
    "AtomicCheckpointIO",
    "CellTrace",
    "PretrainConfig",
    "PretrainResult",
    "StepCheckpoint",
    "Throughput",
    "WarmupCosineTrainingPlan",
    "checkpoint_files",
    "export_run",
    "pretrain",
    "schedule_steps",
    "union_vocab",
    "warmup_cosine",
]
