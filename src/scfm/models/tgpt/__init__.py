"""tGPT family (work in progress): configuration and the causal next-gene network."""

from ._config import TGPTConfig
from ._model import TGPT
from ._module import TGPTModule, causal_padding_mask

__all__ = ["TGPT", "TGPTConfig", "TGPTModule", "causal_padding_mask"]
