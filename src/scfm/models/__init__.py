"""Model families (scvi-tools ``BaseModelClass`` subclasses), the family contract and checkpoint handling.

Importing this package registers the built-in families; the default model (``model=None``) is tGPT's bundled
checkpoint wherever tGPT has the capability a tool needs (embedding cells and bulk samples), otherwise scGPT's
wherever scGPT has it (see :func:`~scfm.models.base.default_model_for`).
"""

from .base import (
    AnnotationRequest,
    Checkpoint,
    CheckpointError,
    CheckpointNotFoundError,
    CountVAEModel,
    EmbedRequest,
    Family,
    FoundationModel,
    IntegrationRequest,
    IntegrationWeights,
    ModelArg,
    NoKnownGenesError,
    NonFiniteOutputError,
    Pretrained,
    bundled_checkpoint_names,
    families,
    families_with,
    get_family,
    load_checkpoint,
    load_pretrained,
    register_family,
    resolve_device,
    resolve_model,
    save_checkpoint,
)
from .cellplm import CellPLM, CellPLMConfig, CellPLMModule
from .scgpt import SCGPT, SCGPTConfig, SCGPTModule
from .scmulan import SCMulan, SCMulanConfig, SCMulanModule
from .tgpt import TGPT, TGPTConfig, TGPTModule

__all__ = [
    "SCGPT",
    "TGPT",
    "AnnotationRequest",
    "CellPLM",
    "CellPLMConfig",
    "CellPLMModule",
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CountVAEModel",
    "EmbedRequest",
    "Family",
    "FoundationModel",
    "IntegrationRequest",
    "IntegrationWeights",
    "ModelArg",
    "NoKnownGenesError",
    "NonFiniteOutputError",
    "Pretrained",
    "SCGPTConfig",
    "SCGPTModule",
    "SCMulan",
    "SCMulanConfig",
    "SCMulanModule",
    "TGPTConfig",
    "TGPTModule",
    "bundled_checkpoint_names",
    "families",
    "families_with",
    "get_family",
    "load_checkpoint",
    "load_pretrained",
    "register_family",
    "resolve_device",
    "resolve_model",
    "save_checkpoint",
]
