"""tGPT family (work in progress): configuration and the causal next-gene network."""

from ._config import TGPTConfig
from ._module import TGPTModule, causal_padding_mask

__all__ = ["TGPTConfig", "TGPTModule", "causal_padding_mask"]
