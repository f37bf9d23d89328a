"""AnnData -> batches: matrix access by row blocks, collation, length bucketing, training datasets."""

from ._collate import expressed_gene_counts, length_bucketed_batches, pad_cells
from ._csentences import (
    ENTITIES,
    ENTITY_TARGET,
    METADATA_TARGET,
    VALUE_TARGET,
    VALUES,
    CellWordsDataset,
    CSentenceCollator,
)
from ._matrix import ExpressionSource, expression_source, iter_row_blocks, read_rows
from ._pretraining import BucketBatchSampler, CellDataModule, MaskedValueCollator, TokenizedCellDataset, TrainingCell
from ._ranked import TOKEN_IDS, PadTokens, RankedSampleDataset
from ._scgpt_stream import SCGPTCellEncoder
from ._sentences import SentenceBatchSampler, SentenceCollator, SentenceDataModule, plan_sentences, sample_codes
from ._shards import H5adShard, RowSource, expand_shard_paths, measured_masks
from ._soma import SomaExperimentSource
from ._stream_plan import Block, batches_per_slot, deal_blocks, epoch_blocks, iter_windows
from ._streaming import CellEncoder, StreamingCellDataset, StreamingDataModule

__all__ = [
    "ENTITIES",
    "ENTITY_TARGET",
    "METADATA_TARGET",
    "TOKEN_IDS",
    "VALUES",
    "VALUE_TARGET",
    "Block",
    "BucketBatchSampler",
    "CSentenceCollator",
    "CellDataModule",
    "CellEncoder",
    "CellWordsDataset",
    "ExpressionSource",
    "H5adShard",
    "MaskedValueCollator",
    "PadTokens",
    "RankedSampleDataset",
    "RowSource",
    "SCGPTCellEncoder",
    "SentenceBatchSampler",
    "SentenceCollator",
    "SentenceDataModule",
    "SomaExperimentSource",
    "StreamingCellDataset",
    "StreamingDataModule",
    "TokenizedCellDataset",
    "TrainingCell",
    "batches_per_slot",
    "deal_blocks",
    "epoch_blocks",
    "expand_shard_paths",
    "expressed_gene_counts",
    "expression_source",
    "iter_row_blocks",
    "iter_windows",
    "length_bucketed_batches",
    "measured_masks",
    "pad_cells",
    "plan_sentences",
    "read_rows",
    "sample_codes",
]
