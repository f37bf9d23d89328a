"""Tools: scanpy-style functions that resolve a model and call it."""

from ._annotate import annotate
from ._associate import associate
from ._bulk import bulk_features
from ._denoise import denoise
from ._embed import embed
from ._gene_embeddings import gene_embeddings
from ._gene_network import gene_network
from ._gene_programs import gene_programs
from ._generate import generate
from ._impute import impute
from ._integrate import integrate
from ._integrate_modalities import integrate_modalities
from ._perturbation import predict_perturbation

__all__ = [
    "annotate",
    "associate",
    "bulk_features",
    "denoise",
    "embed",
    "gene_embeddings",
    "gene_network",
    "gene_programs",
    "generate",
    "impute",
    "integrate",
    "integrate_modalities",
    "predict_perturbation",
]
