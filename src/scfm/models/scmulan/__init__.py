"""scMulan family: c-sentences of (entity, value) words, a causal decoder with next-entity and value heads,
zero-shot annotation by generation and conditional cell generation."""

from ._config import SCMulanConfig
from ._infer import NoKnownGenesError
from ._model import SCMulan, load_pretrained_scmulan, scmulan_from_checkpoint
from ._module import SCMulanModule, sentence_attention_mask
from ._tasks import PretrainedSCMulan, TermPrediction, generate_anndata, predict_terms

__all__ = [
    "NoKnownGenesError",
    "PretrainedSCMulan",
    "SCMulan",
    "SCMulanConfig",
    "SCMulanModule",
    "TermPrediction",
    "generate_anndata",
    "load_pretrained_scmulan",
    "predict_terms",
    "scmulan_from_checkpoint",
    "sentence_attention_mask",
]
