"""scGPT family."""

from ._config import SCGPTConfig
from ._convert import ConvertedSCGPT, convert_scgpt_checkpoint, write_converted_checkpoint
from ._embed import EmbeddingResult, embed_cells
from ._model import SCGPT, PretrainedSCGPT, load_pretrained_module, scgpt_from_checkpoint
from ._module import SCGPTModule

__all__ = [
    "SCGPT",
    "ConvertedSCGPT",
    "EmbeddingResult",
    "PretrainedSCGPT",
    "SCGPTConfig",
    "SCGPTModule",
    "convert_scgpt_checkpoint",
    "embed_cells",
    "load_pretrained_module",
    "scgpt_from_checkpoint",
    "write_converted_checkpoint",
]
