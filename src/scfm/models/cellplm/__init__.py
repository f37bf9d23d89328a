"""CellPLM family: cells as tokens, samples or spatial neighbourhoods as sentences, a Gaussian-mixture latent."""

from ._annotation import CellPLMClassifier, classifier_probabilities, finetune_classifier
from ._config import CellPLMConfig
from ._context import sample_labels, sentences_of, spatial_coordinates
from ._convert import convert_reference_state_dict, write_converted_cellplm
from ._inference import CellFeatures, cell_features, embed_cells_as_tokens, iter_sentences, sentence_latents
from ._model import CellPLM, PretrainedCellPLM, cellplm_from_checkpoint, load_pretrained_cellplm
from ._module import CellPLMModule, relative_coordinates

__all__ = [
    "CellFeatures",
    "CellPLM",
    "CellPLMClassifier",
    "CellPLMConfig",
    "CellPLMModule",
    "PretrainedCellPLM",
    "cell_features",
    "cellplm_from_checkpoint",
    "classifier_probabilities",
    "convert_reference_state_dict",
    "embed_cells_as_tokens",
    "finetune_classifier",
    "iter_sentences",
    "load_pretrained_cellplm",
    "relative_coordinates",
    "sample_labels",
    "sentence_latents",
    "sentences_of",
    "spatial_coordinates",
    "write_converted_cellplm",
]
