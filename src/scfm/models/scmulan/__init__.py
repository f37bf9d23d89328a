"""scMulan family.

It covers c-sentences of (entity, value) words, a causal decoder with next-entity and value heads, zero-shot
annotation by generation and conditional cell generation.
"""

from ..base import register_family
from ._config import SCMulanConfig
from ._convert import convert_scmulan_checkpoint, read_reference_scmulan, write_converted_scmulan
from ._data import ENTITIES, ENTITY_TARGET, METADATA_TARGET, VALUE_TARGET, VALUES, CellWordsDataset, CSentenceCollator
from ._family import SCMulanFamily
from ._infer import AnnotationPromptTokenizer, annotation_pass
from ._model import SCMulan, is_missing_term, metadata_terms_of
from ._module import SCMulanModule, sentence_attention_mask
from ._tasks import generate_anndata, predict_terms
from ._tokenizer import (
    ANNOTATE,
    GENERATE,
    CSentence,
    CSentenceVocab,
    LevelScheme,
    annotation_sentence,
    cell_gene_words,
    generation_prompt,
    generation_sentence,
    ordered_gene_words,
    query_token,
    read_sentence,
    row_gene_words,
)

register_family(SCMulanFamily())

__all__ = [
    "ANNOTATE",
    "ENTITIES",
    "ENTITY_TARGET",
    "GENERATE",
    "METADATA_TARGET",
    "VALUES",
    "VALUE_TARGET",
    "AnnotationPromptTokenizer",
    "CSentence",
    "CSentenceCollator",
    "CSentenceVocab",
    "CellWordsDataset",
    "LevelScheme",
    "SCMulan",
    "SCMulanConfig",
    "SCMulanFamily",
    "SCMulanModule",
    "annotation_pass",
    "annotation_sentence",
    "cell_gene_words",
    "convert_scmulan_checkpoint",
    "generate_anndata",
    "generation_prompt",
    "generation_sentence",
    "is_missing_term",
    "metadata_terms_of",
    "ordered_gene_words",
    "predict_terms",
    "query_token",
    "read_reference_scmulan",
    "read_sentence",
    "row_gene_words",
    "sentence_attention_mask",
    "write_converted_scmulan",
]
