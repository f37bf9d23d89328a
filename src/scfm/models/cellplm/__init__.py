"""CellPLM family: cells as tokens, samples or spatial neighbourhoods as sentences, a Gaussian-mixture latent."""

from ..base import register_family
from ._annotation import CellPLMClassifier, classifier_probabilities, finetune_classifier
from ._config import CellPLMConfig
from ._context import sample_labels, sentences_of, spatial_coordinates
from ._convert import convert_reference_state_dict, write_converted_cellplm
from ._counts import CountsPlan, iter_expected_counts, plan_counts
from ._data import SentenceBatchSampler, SentenceCollator, SentenceDataModule, plan_sentences, sample_codes
from ._family import CellPLMFamily
from ._inference import CellFeatures, cell_features, embed_cells_as_tokens, iter_sentences, sentence_latents
from ._model import CellPLM
from ._module import CellPLMModule, relative_coordinates

register_family(CellPLMFamily())

__all__ = [
    "CellFeatures",
    "CellPLM",
    "CellPLMClassifier",
    "CellPLMConfig",
    "CellPLMFamily",
    "CellPLMModule",
    "CountsPlan",
    "SentenceBatchSampler",
    "SentenceCollator",
    "SentenceDataModule",
    "cell_features",
    "classifier_probabilities",
    "convert_reference_state_dict",
    "embed_cells_as_tokens",
    "finetune_classifier",
    "iter_expected_counts",
    "iter_sentences",
    "plan_counts",
    "plan_sentences",
    "relative_coordinates",
    "sample_codes",
    "sample_labels",
    "sentence_latents",
    "sentences_of",
    "spatial_coordinates",
    "write_converted_cellplm",
]
