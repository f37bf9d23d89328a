"""Generic AnnData -> batches.

Matrix access by row blocks, length bucketing, training data modules, streaming shards, TileDB-SOMA and the epoch
plan. Family datasets and collators live in their family's folder under ``scfm.models``.
"""

from ._collate import expressed_gene_counts, length_bucketed_batches
from ._datamodule import BucketBatchSampler, CellDataModule, split_cells
from ._finetune import (
    HEAD_LR_FACTOR,
    UNLABELLED,
    accelerator_for,
    highly_variable_subset,
    log_normalised,
    obs_categories,
    training_copy,
)
from ._matrix import ExpressionSource, expression_source, iter_row_blocks, read_rows
from ._shards import H5adShard, RowSource, expand_shard_paths, measured_masks
from ._soma import SomaExperimentSource
from ._stream_plan import Block, batches_per_slot, deal_blocks, epoch_blocks, iter_windows
from ._streaming import CellEncoder, StreamingCellDataset, StreamingDataModule
from ._teacher import expression_neighbours

__all__ = [
    "HEAD_LR_FACTOR",
    "UNLABELLED",
    "Block",
    "BucketBatchSampler",
    "CellDataModule",
    "CellEncoder",
    "ExpressionSource",
    "H5adShard",
    "RowSource",
    "SomaExperimentSource",
    "StreamingCellDataset",
    "StreamingDataModule",
    "accelerator_for",
    "batches_per_slot",
    "deal_blocks",
    "epoch_blocks",
    "expand_shard_paths",
    "expressed_gene_counts",
    "expression_neighbours",
    "expression_source",
    "highly_variable_subset",
    "iter_row_blocks",
    "iter_windows",
    "length_bucketed_batches",
    "log_normalised",
    "measured_masks",
    "obs_categories",
    "read_rows",
    "split_cells",
    "training_copy",
]
