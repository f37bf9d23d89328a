"""Gene vocabularies, resolution of gene identifiers, and alignment of ``adata.var`` to a vocabulary."""

from ._align import GeneKeyError, align_genes
from ._alignment import GeneAlignment
from ._resolve import MATCH_KINDS
from ._rules import GeneRules
from ._table import GeneTable, human_gene_table
from ._vocab import SPECIAL_TOKENS, GeneVocab, vocabulary_genes

__all__ = [
    "MATCH_KINDS",
    "SPECIAL_TOKENS",
    "GeneAlignment",
    "GeneKeyError",
    "GeneRules",
    "GeneTable",
    "GeneVocab",
    "align_genes",
    "human_gene_table",
    "vocabulary_genes",
]
