"""tGPT family: rank tokens, a causal next-gene decoder, mean-over-genes sample embeddings."""

from ._config import TGPTConfig
from ._embed import EmptySampleError, embed_ranked
from ._model import TGPT, PretrainedTGPT, load_pretrained_tgpt, tgpt_from_checkpoint
from ._module import TGPTModule, causal_padding_mask

__all__ = [
    "TGPT",
    "EmptySampleError",
    "PretrainedTGPT",
    "TGPTConfig",
    "TGPTModule",
    "causal_padding_mask",
    "embed_ranked",
    "load_pretrained_tgpt",
    "tgpt_from_checkpoint",
]
