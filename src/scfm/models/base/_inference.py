"""The one streaming inference loop of the gene-token families, and what an embedding run returns.

Row blocks of the matrix are read (never the whole matrix), the family's tokenizer turns each block's cells into
token sequences, cells of similar length are batched together (no padding waste), and the family's forward pass
fills one or more ``(n_cells, width)`` outputs. A cell's tokens depend on the cell only, so the outputs do not
depend on ``batch_size``, ``block_size`` or cell order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from scfm._settings import settings
from scfm.data import ExpressionSource, iter_row_blocks, length_bucketed_batches
from scfm.genes import GeneAlignment
from scfm.tokenize import detect_input_kind

from ._device import autocast_context


class NoKnownGenesError(ValueError):
    """Cells that express none of the model's genes, where the family has no representation for them."""


class NonFiniteOutputError(ValueError):
    """A model produced NaN or infinite values (broken weights or configuration, or overflowing input)."""


def check_finite(values: np.ndarray, what: str) -> np.ndarray:
    """Return ``values`` after checking that every entry is finite.

    Raises
    ------
    NonFiniteOutputError
        Names how many cells are affected and the likely causes.
    """
    finite = np.isfinite(values)
    if not finite.all():
        bad = int((~finite.reshape(len(values), -1).all(1)).sum())
        raise NonFiniteOutputError(
            f"{bad} of {len(values)} cells got non-finite {what} (NaN or inf). The checkpoint's weights or config.json "
            "hold non-finite numbers (check them with scfm.models.load_checkpoint), training diverged (lower lr), or "
            "the input values overflow (expression values must be finite and far below 1e38)"
        )
    return values


@dataclass
class EmbeddingResult:
    """Sample embeddings plus what provenance needs to know about the run.

    ``n_subsampled_cells`` counts samples with more known expressed genes than the context holds (scGPT
    subsamples them per cell; tGPT keeps the highest-ranked ones).
    """

    embeddings: np.ndarray
    input_kind: str
    n_empty_cells: int
    n_subsampled_cells: int
    n_tokens: int


def l2_normalise(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm in place (all-zero rows stay zero)."""
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    return embeddings


@dataclass
class TokenizedBlock:
    """A family tokenizer's view of one row block.

    Attributes
    ----------
    items
        One entry per cell of the block, whatever :meth:`BlockTokenizer.collate` takes.
    lengths
        Tokens per cell; batches group cells of similar length.
    counters
        Counts summed over blocks into :attr:`StreamResult.counters` (cells cut to the context, empty cells, ...).
    """

    items: Sequence[Any]
    lengths: np.ndarray
    counters: dict[str, int] = field(default_factory=dict)


class BlockTokenizer(Protocol):
    """What a gene-token family gives :func:`stream_cells`."""

    def encode(self, block: sp.csr_matrix, start: int, stop: int, input_kind: str) -> TokenizedBlock:
        """Tokenise the cells of rows ``start:stop`` (positions in the streamed order)."""

    def collate(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Pad the items of one batch into CPU tensors."""

    def forward(
        self, module: torch.nn.Module, batch: dict[str, torch.Tensor], positions: np.ndarray
    ) -> dict[str, torch.Tensor]:
        """Return the outputs of one batch, each ``(n, width)``.

        ``positions`` holds the cells' positions in the streamed order.
        """


@dataclass
class StreamResult:
    """Outputs by name (``(n_cells, width)`` float32), the input kind of the first block, and summed counters."""

    outputs: dict[str, np.ndarray]
    input_kind: str
    counters: dict[str, int]


def bucketed(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of cells of similar length (the default of :func:`stream_cells`)."""
    return length_bucketed_batches(lengths, batch_size)


def in_order(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of consecutive cells, whatever their lengths (the naive scheme, kept for benchmarks)."""
    return [np.arange(i, min(i + batch_size, len(lengths))) for i in range(0, len(lengths), batch_size)]


@torch.inference_mode()
def stream_cells(
    module: torch.nn.Module,
    source: ExpressionSource,
    tokenizer: BlockTokenizer,
    widths: dict[str, int],
    *,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    rows: np.ndarray | None = None,
    batching=bucketed,
    progress: bool = False,
    desc: str = "scfm",
    precision: str = "fp32",
) -> StreamResult:
    """Run ``module`` over every cell of ``source`` (or ``rows`` of it), ``block_size`` rows at a time.

    Parameters
    ----------
    module
        The family's torch module (put in eval mode).
    source
        The expression matrix (dense, CSR, CSC or backed).
    tokenizer
        The family's :class:`BlockTokenizer`.
    widths
        Name and width of every output that ``tokenizer.forward`` returns.
    device, batch_size, block_size, rows, progress, desc
        Where to run, cells per batch, rows per block, which rows (default all), progress bar and its label.
    batching
        ``batching(lengths, batch_size)`` lists the batches of a block (:func:`bucketed` or :func:`in_order`).
    precision
        The whole loop runs in :func:`~scfm.models.base._device.autocast_context` of ``device`` and ``precision``
        (the family's ``forward`` may enter it again), so that under bf16 autocast each weight is cast once per call
        (autocast's cast cache lives while its outermost context is open) instead of once per batch.
    """
    n_obs = source.n_obs if rows is None else len(rows)
    outputs = {name: np.zeros((n_obs, width), dtype=np.float32) for name, width in widths.items()}
    counters: dict[str, int] = {}
    input_kind = None
    module.eval()
    bar = tqdm(total=n_obs, desc=desc, unit="cell", disable=not settings.show_progress(progress))
    with autocast_context(device, precision):
        for start, stop, block in iter_row_blocks(source.matrix, block_size, rows):
            if input_kind is None:
                input_kind = detect_input_kind(block)
            tokenized = tokenizer.encode(block, start, stop, input_kind)
            for name, count in tokenized.counters.items():
                counters[name] = counters.get(name, 0) + int(count)
            for batch in batching(tokenized.lengths, batch_size):
                collated = tokenizer.collate([tokenized.items[i] for i in batch])
                collated = {name: tensor.to(device) for name, tensor in collated.items()}
                positions = start + batch
                for name, result in tokenizer.forward(module, collated, positions).items():
                    outputs[name][positions] = result.float().cpu().numpy()
            bar.update(stop - start)
    bar.close()
    for name, values in outputs.items():
        check_finite(values, name)
    return StreamResult(outputs, input_kind or "counts", counters)


def raise_if_no_known_genes(
    empty: np.ndarray,
    start: int,
    stop: int,
    obs_names: np.ndarray | None,
    n_matched: int,
    *,
    noun: str,
    why: str,
) -> None:
    """Raise :class:`NoKnownGenesError` naming up to five of the ``empty`` cells of block ``start:stop``."""
    if not empty.size:
        return
    positions = start + empty
    names = positions if obs_names is None else np.asarray(obs_names)[positions]
    raise NoKnownGenesError(
        f"{empty.size} {noun} in rows {start}-{stop} express none of the model's {n_matched} matched genes (e.g. "
        f"{[str(n) for n in names[:5]]}); {why}, so remove them first (e.g. sc.pp.filter_cells(adata, min_genes=1) "
        "after subsetting to the matched genes)"
    )


def check_cells_express_known_genes(
    source: ExpressionSource,
    alignment: GeneAlignment,
    obs_names: np.ndarray | None,
    *,
    noun: str,
    why: str,
    block_size: int = 4096,
) -> None:
    """Raise :class:`NoKnownGenesError` before any work when a cell has no positive value in a matched gene.

    Reads the matrix by row blocks of ``block_size`` (never densified).
    """
    columns = np.asarray(alignment.var_index, dtype=np.int64)
    for start, stop, block in iter_row_blocks(source.matrix, block_size):
        matched = block[:, columns]
        positive = np.asarray((matched > 0).sum(axis=1)).ravel()
        raise_if_no_known_genes(
            np.flatnonzero(positive == 0), start, stop, obs_names, alignment.n_matched, noun=noun, why=why
        )
