"""scGPT family."""

from ._config import SCGPTConfig
from ._embed import EmbeddingResult, embed_cells
from ._model import SCGPT, PretrainedSCGPT, load_pretrained_module
from ._module import SCGPTModule

__all__ = [
    "SCGPT",
    "EmbeddingResult",
    "PretrainedSCGPT",
    "SCGPTConfig",
    "SCGPTModule",
    "embed_cells",
    "load_pretrained_module",
]
