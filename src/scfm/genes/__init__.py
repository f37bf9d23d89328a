"""Gene vocabularies and alignment of ``adata.var`` to a vocabulary."""

from ._align import GeneAlignment, GeneKeyError, align_genes
from ._vocab import SPECIAL_TOKENS, GeneVocab, vocabulary_genes

__all__ = ["SPECIAL_TOKENS", "GeneAlignment", "GeneKeyError", "GeneVocab", "align_genes", "vocabulary_genes"]
