"""Model-agnostic neural-network blocks (never sees AnnData)."""

from ._attention import SelfAttention
from ._domain import BatchDiscriminator, ClassifierHead, DomainBatchNorm, reverse_gradient
from ._embeddings import CategoryValueEmbedding, ConditionEmbedding, ContinuousValueEmbedding, GeneEmbedding
from ._heads import CellToGeneHead, ExpressionHead
from ._masks import generative_attention_mask, padding_attention_mask
from ._transformer import TransformerLayer, TransformerStack

__all__ = [
    "BatchDiscriminator",
    "CategoryValueEmbedding",
    "CellToGeneHead",
    "ClassifierHead",
    "ConditionEmbedding",
    "ContinuousValueEmbedding",
    "DomainBatchNorm",
    "ExpressionHead",
    "GeneEmbedding",
    "SelfAttention",
    "TransformerLayer",
    "TransformerStack",
    "generative_attention_mask",
    "padding_attention_mask",
    "reverse_gradient",
]
