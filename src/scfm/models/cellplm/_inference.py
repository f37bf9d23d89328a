"""Streaming CellPLM inference: per-cell features by row blocks, then the transformer sentence by sentence."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from scfm._settings import settings as scfm_settings
from scfm.data import ExpressionSource, iter_row_blocks
from scfm.genes import GeneAlignment
from scfm.tokenize import check_values, detect_input_kind

from ..base._device import autocast_context, warn_if_slow_bf16
from ..base._inference import EmbeddingResult, check_finite, l2_normalise
from ._module import CellPLMModule


@dataclass
class CellFeatures:
    """Stage one of inference, for the cells read (in the order read).

    Attributes
    ----------
    features
        ``(n, d_model)`` float32: ``transform(x) @ gene_embedding`` over the matched genes.
    library
        ``(n,)`` counts over the matched genes (after undoing ``log1p`` for log-normalised input).
    input_kind
        What the values looked like: ``"counts"``, ``"log1p"`` or ``"nonnegative"``.
    """

    features: np.ndarray
    library: np.ndarray
    input_kind: str

    @property
    def n_empty_cells(self) -> int:
        return int(np.count_nonzero(self.library == 0))


def matched_counts(block: sp.csr_matrix, alignment: GeneAlignment, input_kind: str) -> sp.csr_matrix:
    """Return the block's matched columns (in ``alignment.var_index`` order), back on a linear scale."""
    matched = sp.csr_matrix(block[:, alignment.var_index], dtype=np.float64)
    if input_kind == "log1p":
        matched.data = np.expm1(matched.data)
    return matched


_PRODUCT_ROWS = 256


def _dense_product(matrix: sp.csr_matrix, weights: torch.Tensor) -> np.ndarray:
    """``matrix @ weights`` in float32 through dense chunks of exactly ``_PRODUCT_ROWS`` rows (zero-padded).

    Dense GEMM is several times faster than a sparse product here, and a fixed chunk shape makes every row's
    result the same bits whatever block it was read in (the GEMM path depends on the shape, not on other rows).
    """
    out = np.empty((matrix.shape[0], weights.shape[1]), dtype=np.float32)
    chunk = np.zeros((_PRODUCT_ROWS, matrix.shape[1]), dtype=np.float32)
    for start in range(0, matrix.shape[0], _PRODUCT_ROWS):
        rows = matrix[start : start + _PRODUCT_ROWS]
        chunk[:] = 0.0
        chunk[: rows.shape[0]] = rows.toarray()
        out[start : start + rows.shape[0]] = (torch.from_numpy(chunk) @ weights)[: rows.shape[0]].numpy()
    return out


def _check_kind(input_kind: str, module: CellPLMModule, require_counts: bool, where: str, rows: str) -> None:
    if input_kind == "counts":
        return
    if require_counts:
        log_hint = ", i.e. log-normalised" if input_kind == "log1p" else ""
        raise ValueError(
            f"{where} does not hold raw counts (rows {rows} look {input_kind}{log_hint}); CellPLM predicts counts "
            "from the observed library, so pass the raw counts (e.g. layer='counts')"
        )
    if module.config.normalize_total is None:
        raise ValueError(
            f"{where} does not hold raw counts (values look {input_kind}) and this model embeds log1p of raw "
            "counts (normalize_total=None, as the reference CellPLM); pass the raw counts (e.g. layer='counts')"
        )


@torch.inference_mode()
def cell_features(
    module: CellPLMModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    *,
    block_size: int = 4096,
    rows: np.ndarray | None = None,
    require_counts: bool = False,
    on_block: Callable[[int, int, sp.csr_matrix], None] | None = None,
) -> CellFeatures:
    """Stage one: read ``block_size`` rows at a time and keep only each cell's ``d_model`` features.

    ``require_counts`` checks every block for integer counts (otherwise the first block decides the input kind);
    ``on_block(start, stop, block)`` sees every raw block as it is read, so callers need no second pass.

    Raises
    ------
    ValueError
        NaN/inf or negative values; input that is not counts when counts are needed (see ``require_counts``
        and ``normalize_total``).
    """
    config = module.config
    embedding = module.gene_embedding.detach().float().cpu()
    gene_rows = embedding[torch.as_tensor(alignment.token_ids - config.first_gene_id)].contiguous()
    n_obs = source.n_obs if rows is None else len(rows)
    features = np.zeros((n_obs, config.d_model), dtype=np.float32)
    library = np.zeros(n_obs, dtype=np.float64)
    input_kind = None
    for start, stop, block in iter_row_blocks(source.matrix, block_size, rows):
        check_values(block, where=source.label)
        if input_kind is None or require_counts:
            input_kind = detect_input_kind(block)
            _check_kind(input_kind, module, require_counts, source.label, f"{start}-{stop - 1}")
        if on_block is not None:
            on_block(start, stop, block)
        counts = matched_counts(block, alignment, input_kind)
        row_library = np.asarray(counts.sum(1)).ravel()
        library[start:stop] = row_library
        if config.normalize_total is not None:
            scale = config.normalize_total / np.maximum(row_library, 1e-8)
            counts.data *= np.repeat(scale, np.diff(counts.indptr))
        counts.data = np.log1p(counts.data)
        features[start:stop] = _dense_product(counts, gene_rows)
    return CellFeatures(features, library, input_kind or "counts")


def sentence_coordinates(coordinates: np.ndarray | None, cells: np.ndarray) -> torch.Tensor | None:
    """Coordinates of a sentence's cells, ``None`` when there are none (or the sample has only NaN)."""
    if coordinates is None or not np.isfinite(coordinates[cells]).all():
        return None
    return torch.as_tensor(coordinates[cells], dtype=torch.float32)


@torch.inference_mode()
def iter_sentences(
    module: CellPLMModule,
    features: np.ndarray,
    sentences: list[np.ndarray],
    *,
    coordinates: np.ndarray | None,
    device: torch.device,
    progress: bool = False,
    precision: str = "fp32",
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Stage two: yield ``(cells, latent mean)`` per sentence (``cells`` index ``features``).

    ``precision="bf16"`` runs the transformer under bf16 autocast; the latents yielded are float32.
    """
    module.eval()
    bar = tqdm(
        total=int(sum(len(s) for s in sentences)),
        desc="scfm (cellplm)",
        unit="cell",
        disable=not scfm_settings.show_progress(progress),
    )
    for cells in sentences:
        x = torch.from_numpy(features[cells]).to(device)
        where = sentence_coordinates(coordinates, cells)
        with autocast_context(device, precision):
            latent = module.embed_sentence(x, None if where is None else where.to(device))
        yield cells, latent.float()
        bar.update(len(cells))
    bar.close()


def sentence_latents(
    module: CellPLMModule,
    features: np.ndarray,
    sentences: list[np.ndarray],
    *,
    coordinates: np.ndarray | None,
    device: torch.device,
    progress: bool = False,
    precision: str = "fp32",
) -> np.ndarray:
    """``(n, latent_dim)`` float32 latent means of every cell of ``features``, sentence by sentence."""
    latents = np.zeros((features.shape[0], module.config.latent_dim), dtype=np.float32)
    for cells, latent in iter_sentences(
        module, features, sentences, coordinates=coordinates, device=device, progress=progress, precision=precision
    ):
        latents[cells] = latent.cpu().numpy()
    return check_finite(latents, "latent values")


def embed_cells_as_tokens(
    module: CellPLMModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    sentences: list[np.ndarray],
    *,
    coordinates: np.ndarray | None,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    normalize: bool = True,
    progress: bool = True,
    precision: str = "fp32",
) -> EmbeddingResult:
    """Return the latent means of every cell of ``source``, sentence by sentence.

    ``batch_size`` is not used: one sentence per forward pass. Cells that express none of the matched genes are
    embedded from their context alone. ``precision="bf16"`` runs the transformer (stage two) under bf16
    autocast; the per-cell features of stage one are always float32.
    """
    warn_if_slow_bf16(device, precision)
    stage_one = cell_features(module, source, alignment, block_size=block_size)
    embeddings = sentence_latents(
        module,
        stage_one.features,
        sentences,
        coordinates=coordinates,
        device=device,
        progress=progress,
        precision=precision,
    )
    if normalize:
        l2_normalise(embeddings)
    return EmbeddingResult(embeddings, stage_one.input_kind, stage_one.n_empty_cells, 0, source.n_obs)
