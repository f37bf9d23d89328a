"""tGPT family: rank tokens, a causal next-gene decoder, mean-over-genes sample embeddings."""

from ..base import register_family
from ._config import TGPTConfig
from ._convert import convert_tgpt_checkpoint, is_reference_tgpt_dir, respell_gene, write_converted_tgpt
from ._data import TOKEN_IDS, PadTokens, RankedSampleDataset
from ._embed import RankBlockTokenizer, embed_ranked
from ._family import TGPTFamily
from ._model import TGPT
from ._module import TGPTModule, causal_padding_mask
from ._tokenizer import rank_genes, rank_tokenize_csr, rank_tokens

register_family(TGPTFamily())

__all__ = [
    "TGPT",
    "TOKEN_IDS",
    "PadTokens",
    "RankBlockTokenizer",
    "RankedSampleDataset",
    "TGPTConfig",
    "TGPTFamily",
    "TGPTModule",
    "causal_padding_mask",
    "convert_tgpt_checkpoint",
    "embed_ranked",
    "is_reference_tgpt_dir",
    "rank_genes",
    "rank_tokenize_csr",
    "rank_tokens",
    "respell_gene",
    "write_converted_tgpt",
]
