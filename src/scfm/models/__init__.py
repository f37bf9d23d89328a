"""Model families (scvi-tools ``BaseModelClass`` subclasses) and checkpoint handling."""

from ._checkpoint import Checkpoint, CheckpointError, bundled_checkpoint_names, load_checkpoint, save_checkpoint
from .cellplm import CellPLM, CellPLMConfig, CellPLMModule
from .scgpt import SCGPT, SCGPTConfig, SCGPTModule
from .scmulan import PretrainedSCMulan, SCMulan, SCMulanConfig, SCMulanModule
from .tgpt import TGPT, TGPTConfig, TGPTModule

__all__ = [
    "SCGPT",
    "TGPT",
    "CellPLM",
    "CellPLMConfig",
    "CellPLMModule",
    "Checkpoint",
    "CheckpointError",
    "PretrainedSCMulan",
    "SCGPTConfig",
    "SCGPTModule",
    "SCMulan",
    "SCMulanConfig",
    "SCMulanModule",
    "TGPTConfig",
    "TGPTModule",
    "bundled_checkpoint_names",
    "load_checkpoint",
    "save_checkpoint",
]
