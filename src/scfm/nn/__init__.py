"""Model-agnostic neural-network blocks (never sees AnnData)."""

from ._attention import SelfAttention
from ._count_vae import BatchConditionedCountVAE
from ._counts import NegativeBinomialDecoder, feature_norm, negative_binomial_log_likelihood
from ._domain import BatchDiscriminator, ClassifierHead, DomainBatchNorm, GeneLinearClassifier, reverse_gradient
from ._embeddings import CategoryValueEmbedding, ConditionEmbedding, ContinuousValueEmbedding, GeneEmbedding
from ._flow_attention import FlowAttention
from ._heads import CellToGeneHead, ExpressionHead
from ._losses import elastic_cell_similarity, masked_mse, masked_zero_bce
from ._masks import generative_attention_mask, padding_attention_mask
from ._mixture import GaussianMixtureLatent, MixtureLatentOutput, gaussian_log_density
from ._positional import SinusoidalPosition2D
from ._transformer import TransformerLayer, TransformerStack

__all__ = [
    "BatchConditionedCountVAE",
    "BatchDiscriminator",
    "CategoryValueEmbedding",
    "CellToGeneHead",
    "ClassifierHead",
    "ConditionEmbedding",
    "ContinuousValueEmbedding",
    "DomainBatchNorm",
    "ExpressionHead",
    "FlowAttention",
    "GaussianMixtureLatent",
    "GeneEmbedding",
    "GeneLinearClassifier",
    "MixtureLatentOutput",
    "NegativeBinomialDecoder",
    "SelfAttention",
    "SinusoidalPosition2D",
    "TransformerLayer",
    "TransformerStack",
    "elastic_cell_similarity",
    "feature_norm",
    "gaussian_log_density",
    "generative_attention_mask",
    "masked_mse",
    "masked_zero_bce",
    "negative_binomial_log_likelihood",
    "padding_attention_mask",
    "reverse_gradient",
]
