"""The family contract.

The :class:`Pretrained` handle, the :class:`Family` registry with its capabilities, the :class:`FoundationModel`
base of the scvi-tools model classes, checkpoint I/O and the one streaming inference loop.

A new family implements a :class:`Family` subclass (with the capability mixins it serves) and a
:class:`FoundationModel` subclass in its own folder and calls :func:`register_family`; ``docs/architecture.md``
has the checklist.
"""

from ._arches import ArchesMixin
from ._checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointNotFoundError,
    bundled_checkpoint_names,
    decoder_vocab_problem,
    load_checkpoint,
    load_weights_strict,
    module_from_checkpoint,
    read_torch_state_dict,
    save_checkpoint,
)
from ._config import ConfigDict
from ._count_vae import CountVAEFit, default_vae_epochs, fit_count_vae, fit_new_batches
from ._count_vae_model import CountVAEModel, is_count_vae_directory
from ._device import autocast_context, resolve_device
from ._family import (
    AnnotatesWithReference,
    AnnotatesZeroShot,
    AnnotationRequest,
    AttentionRequest,
    AttentionScores,
    Embedding,
    EmbedRequest,
    EmbedsBulk,
    EmbedsCells,
    Family,
    Generates,
    InfersGeneNetworks,
    IntegratesBatches,
    Integration,
    IntegrationRequest,
    IntegrationWeights,
    PredictsCounts,
    ReferenceAnnotation,
    TermPrediction,
    families,
    families_with,
    get_family,
    register_family,
    top_labels,
)
from ._fields import ObsCategoryField
from ._inference import (
    BlockTokenizer,
    EmbeddingResult,
    NoKnownGenesError,
    NonFiniteOutputError,
    StreamResult,
    TokenizedBlock,
    bucketed,
    check_finite,
    in_order,
    l2_normalise,
    raise_if_no_known_genes,
    stream_cells,
)
from ._knn import knn_label_probabilities
from ._model import FoundationModel, checked_rows
from ._multiome import IntegratesModalities, ModalityIntegration, ModalityIntegrationRequest
from ._perturbation import (
    PERTURBATION_FILE,
    PerturbationModel,
    PerturbationPrediction,
    PerturbationRequest,
    PredictsPerturbation,
    is_perturbation_checkpoint,
    load_perturbation_model,
    parse_perturbation,
    perturbation_name,
)
from ._pretrained import Pretrained
from ._resolve import ModelArg, default_model_for, load_pretrained, resolve_model

__all__ = [
    "PERTURBATION_FILE",
    "AnnotatesWithReference",
    "AnnotatesZeroShot",
    "AnnotationRequest",
    "ArchesMixin",
    "AttentionRequest",
    "AttentionScores",
    "BlockTokenizer",
    "Checkpoint",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigDict",
    "CountVAEFit",
    "CountVAEModel",
    "EmbedRequest",
    "Embedding",
    "EmbeddingResult",
    "EmbedsBulk",
    "EmbedsCells",
    "Family",
    "FoundationModel",
    "Generates",
    "InfersGeneNetworks",
    "IntegratesBatches",
    "IntegratesModalities",
    "Integration",
    "IntegrationRequest",
    "IntegrationWeights",
    "ModalityIntegration",
    "ModalityIntegrationRequest",
    "ModelArg",
    "NoKnownGenesError",
    "NonFiniteOutputError",
    "ObsCategoryField",
    "PerturbationModel",
    "PerturbationPrediction",
    "PerturbationRequest",
    "PredictsCounts",
    "PredictsPerturbation",
    "Pretrained",
    "ReferenceAnnotation",
    "StreamResult",
    "TermPrediction",
    "TokenizedBlock",
    "autocast_context",
    "bucketed",
    "bundled_checkpoint_names",
    "check_finite",
    "checked_rows",
    "decoder_vocab_problem",
    "default_model_for",
    "default_vae_epochs",
    "families",
    "families_with",
    "fit_count_vae",
    "fit_new_batches",
    "get_family",
    "in_order",
    "is_count_vae_directory",
    "is_perturbation_checkpoint",
    "knn_label_probabilities",
    "l2_normalise",
    "load_checkpoint",
    "load_perturbation_model",
    "load_pretrained",
    "load_weights_strict",
    "module_from_checkpoint",
    "parse_perturbation",
    "perturbation_name",
    "raise_if_no_known_genes",
    "read_torch_state_dict",
    "register_family",
    "resolve_device",
    "resolve_model",
    "save_checkpoint",
    "stream_cells",
    "top_labels",
]
