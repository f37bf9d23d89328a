"""Model-agnostic neural-network blocks (never sees AnnData)."""

from ._attention import SelfAttention
from ._embeddings import CategoryValueEmbedding, ConditionEmbedding, ContinuousValueEmbedding, GeneEmbedding
from ._heads import CellToGeneHead, ExpressionHead
from ._masks import generative_attention_mask, padding_attention_mask
from ._transformer import TransformerLayer, TransformerStack

__all__ = [
    "CategoryValueEmbedding",
    "CellToGeneHead",
    "ConditionEmbedding",
    "ContinuousValueEmbedding",
    "ExpressionHead",
    "GeneEmbedding",
    "SelfAttention",
    "TransformerLayer",
    "TransformerStack",
    "generative_attention_mask",
    "padding_attention_mask",
]
