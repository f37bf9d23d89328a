"""AnnData -> batches: matrix access by row blocks, collation, length bucketing, training datasets."""

from ._collate import expressed_gene_counts, length_bucketed_batches, pad_cells
from ._matrix import ExpressionSource, expression_source, iter_row_blocks, read_rows
from ._pretraining import BucketBatchSampler, CellDataModule, MaskedValueCollator, TokenizedCellDataset, TrainingCell
from ._ranked import TOKEN_IDS, PadTokens, RankedSampleDataset
from ._sentences import SentenceBatchSampler, SentenceCollator, SentenceDataModule, plan_sentences, sample_codes

__all__ = [
    "TOKEN_IDS",
    "BucketBatchSampler",
    "CellDataModule",
    "ExpressionSource",
    "MaskedValueCollator",
    "PadTokens",
    "RankedSampleDataset",
    "SentenceBatchSampler",
    "SentenceCollator",
    "SentenceDataModule",
    "TokenizedCellDataset",
    "TrainingCell",
    "expressed_gene_counts",
    "expression_source",
    "iter_row_blocks",
    "length_bucketed_batches",
    "pad_cells",
    "plan_sentences",
    "read_rows",
    "sample_codes",
]
