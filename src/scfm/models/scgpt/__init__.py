"""scGPT family: gene tokens with per-cell binned values, a ``<cls>`` cell token, a transformer encoder."""

from scfm.train import register_recipe

from ..base import register_family
from ._config import SCGPTConfig
from ._convert import (
    ConvertedSCGPT,
    convert_scgpt_checkpoint,
    is_reference_checkpoint_dir,
    pretrained_from_reference,
    write_converted_checkpoint,
)
from ._data import MaskedValueCollator, TokenizedCellDataset, TrainingCell, pad_cells, unexpressed_measured_ids
from ._embed import SCGPTBlockTokenizer, binning_config, embed_cells
from ._family import SCGPTFamily
from ._model import SCGPT
from ._module import SCGPTModule
from ._multiome_model import SCGPTMultiome
from ._multiome_module import SCGPTMultiomeConfig, SCGPTMultiomeModule
from ._perturb import PerturbationModule, SCGPTPerturbation, finetune_perturbation
from ._pretrain import SCGPTObjectives, SCGPTPretrainRecipe
from ._stream import SCGPTCellEncoder
from ._tokenizer import BinningConfig, CellTokens, tokenize_cell, tokenize_csr

register_family(SCGPTFamily())
register_recipe(SCGPTPretrainRecipe())

__all__ = [
    "SCGPT",
    "BinningConfig",
    "CellTokens",
    "ConvertedSCGPT",
    "MaskedValueCollator",
    "PerturbationModule",
    "SCGPTBlockTokenizer",
    "SCGPTCellEncoder",
    "SCGPTConfig",
    "SCGPTFamily",
    "SCGPTModule",
    "SCGPTMultiome",
    "SCGPTMultiomeConfig",
    "SCGPTMultiomeModule",
    "SCGPTObjectives",
    "SCGPTPerturbation",
    "SCGPTPretrainRecipe",
    "TokenizedCellDataset",
    "TrainingCell",
    "binning_config",
    "convert_scgpt_checkpoint",
    "embed_cells",
    "finetune_perturbation",
    "is_reference_checkpoint_dir",
    "pad_cells",
    "pretrained_from_reference",
    "tokenize_cell",
    "tokenize_csr",
    "unexpressed_measured_ids",
    "write_converted_checkpoint",
]
