"""Model families (scvi-tools ``BaseModelClass`` subclasses) and checkpoint handling."""

from ._checkpoint import Checkpoint, CheckpointError, bundled_checkpoint_names, load_checkpoint, save_checkpoint
from .cellplm import CellPLM, CellPLMConfig, CellPLMModule
from .scgpt import SCGPT, SCGPTConfig, SCGPTModule
from .tgpt import TGPT, TGPTConfig, TGPTModule

__all__ = [
    "SCGPT",
    "TGPT",
    "CellPLM",
    "CellPLMConfig",
    "CellPLMModule",
    "Checkpoint",
    "CheckpointError",
    "SCGPTConfig",
    "SCGPTModule",
    "TGPTConfig",
    "TGPTModule",
    "bundled_checkpoint_names",
    "load_checkpoint",
    "save_checkpoint",
]
