"""Model families (scvi-tools ``BaseModelClass`` subclasses) and checkpoint handling."""

from ._checkpoint import Checkpoint, CheckpointError, bundled_checkpoint_names, load_checkpoint, save_checkpoint
from .scgpt import SCGPT, SCGPTConfig, SCGPTModule

__all__ = [
    "SCGPT",
    "Checkpoint",
    "CheckpointError",
    "SCGPTConfig",
    "SCGPTModule",
    "bundled_checkpoint_names",
    "load_checkpoint",
    "save_checkpoint",
]
