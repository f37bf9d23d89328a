"""Inference of converted public scMulan checkpoints (``layout="reference"``).

The public scMulan turns a cell into a prompt and lets the model complete it greedily:

* the prompt lists the cell's expressed genes of the reference gene set in the *reverse* of the gene set's order,
  each with a level ``1..n_levels``: ``np.digitize(v, linspace(0, max(v), n_levels + 1), right=True)`` of its
  ``normalize_total(1e4)`` + ``log1p`` value ``v`` (the maximum is per cell), then the task token ``<PCT>`` with
  level 0;
* three tokens are generated greedily; at each step every token of the sequence except its last is banned, and the
  level of the chosen token is the rounded, clamped regression output of the level head for that token;
  generation stops early at token 0;
* the coarse and fine cell types are the third- and second-last tokens of the sequence (``"Unclassified"`` when
  they are not cell-type entities), and the embedding is the final hidden state at the third-last position (the
  first generated token, when three were generated).

scfm computes the same with a key/value cache (one prompt pass and two single-token steps per cell) instead of
re-running the whole sequence at each step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment

from ..base import TokenizedBlock, l2_normalise, raise_if_no_known_genes, stream_cells
from ._module import SCMulanModule

UNCLASSIFIED = "Unclassified"
TARGET_SUM = 1e4
GENERATED = 3  # the reference generates up to prefix length + 3 tokens (coarse type, fine type, end)


def gene_positions(config, n_tokens: int) -> np.ndarray:
    """Position of every token id in the reference gene set's order (``-1``: not a gene)."""
    order = np.asarray(config.gene_order if config.gene_order is not None else np.arange(n_tokens), dtype=np.int64)
    positions = np.full(n_tokens, -1, dtype=np.int64)
    positions[order] = np.arange(order.size)
    return positions


def reference_levels(log_values: np.ndarray, n_levels: int) -> np.ndarray:
    """Levels ``1..n_levels`` of positive values: ``linspace(0, max, n_levels + 1)`` bins, right edges closed."""
    edges = np.linspace(0, np.max(log_values), n_levels + 1)
    return np.digitize(log_values, edges, right=True).astype(np.int64)


def reference_prompt(
    columns: np.ndarray,
    values: np.ndarray,
    column_token_ids: np.ndarray,
    positions: np.ndarray,
    *,
    n_levels: int,
    task_token_id: int,
    input_kind: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``(entities, levels)`` of one cell's annotation prompt: its genes in reversed gene-set order, then ``<PCT>``.

    ``log1p`` input is used as given (the reference expects ``normalize_total(1e4)`` + ``log1p`` values); other
    input is normalised to 1e4 over the cell's genes of the gene set (the reference tutorial normalises after
    restricting the data to its gene set) and ``log1p``-transformed.
    """
    ids = column_token_ids[columns]
    known = ids >= 0
    ids, values = ids[known], np.asarray(values, dtype=np.float64)[known]
    if input_kind != "log1p":
        total = values.sum()
        values = np.log1p(values * (TARGET_SUM / total)) if total > 0 else np.zeros_like(values)
    expressed = values > 0
    ids, values = ids[expressed], values[expressed]
    order = np.argsort(-positions[ids], kind="stable")
    ids, values = ids[order], values[order]
    levels = reference_levels(values, n_levels) if ids.size else np.zeros(0, dtype=np.int64)
    return np.append(ids, task_token_id).astype(np.int64), np.append(levels, 0).astype(np.int64)


@dataclass
class ReferenceCompletion:
    """What the reference's greedy completion of one prompt gives."""

    entities: np.ndarray
    levels: np.ndarray
    embedding: torch.Tensor
    fine_logits: torch.Tensor | None


@torch.inference_mode()
def complete_prompt(module: SCMulanModule, entities: np.ndarray, levels: np.ndarray) -> ReferenceCompletion:
    """Greedy completion of one prompt as the reference computes it (see the module docstring).

    ``fine_logits`` are the entity logits (bans applied) of the step that produced the second-last token, the
    fine cell type when three tokens were generated (``None`` when generation stopped at the first token).
    Ties in the greedy choice go to the lowest id (the reference draws one of the tied tokens at random).
    """
    config = module.config
    device = module.entity_embedding.weight.device
    sequence = [int(e) for e in entities]
    sequence_levels = [int(v) for v in levels]
    prefix = len(sequence)
    ids = torch.as_tensor(entities, device=device)[None]
    hidden, cache = module.transformer.forward_incremental(
        module.embed_words(ids, torch.as_tensor(levels, device=device)[None])
    )
    hiddens, step_logits = [hidden[0]], []
    while True:
        last = hidden[0, -1]
        logits = module.entity_head(last).float()
        banned = torch.as_tensor(sequence[:-1], dtype=torch.long, device=device)
        logits = logits.index_fill(0, banned, float("-inf"))
        step_logits.append(logits)
        chosen = int(torch.argmax(logits))
        level = int(module.reference_levels(last, torch.tensor(chosen, device=device)))
        sequence.append(chosen)
        sequence_levels.append(level)
        if chosen == config.stop_token_id or len(sequence) >= prefix + GENERATED:
            break
        word = module.embed_words(torch.tensor([[chosen]], device=device), torch.tensor([[level]], device=device))
        hidden, cache = module.transformer.forward_incremental(word, cache)
        hiddens.append(hidden[0])
    states = torch.cat(hiddens)  # positions 0 .. len(sequence) - 2
    generated = len(sequence) - prefix
    fine_logits = step_logits[generated - 2] if generated >= 2 else None
    return ReferenceCompletion(
        np.asarray(sequence, dtype=np.int64),
        np.asarray(sequence_levels, dtype=np.int64),
        states[len(sequence) - 3].float(),
        fine_logits,
    )


@dataclass
class ReferencePass:
    """Per-cell results of :func:`reference_pass`.

    Embedding, coarse and fine token ids (``-1``: not a cell type), and the fine step's probabilities of every
    cell type followed by that of the most likely other token (see
    :meth:`ReferencePromptTokenizer.fine_probabilities`).
    """

    embeddings: np.ndarray
    coarse_ids: np.ndarray
    fine_ids: np.ndarray
    probabilities: np.ndarray
    input_kind: str
    n_tokens: int


class ReferencePromptTokenizer:
    """Annotation prompts of the public scMulan, completed cell by cell (see :func:`complete_prompt`)."""

    def __init__(self, module: SCMulanModule, alignment: GeneAlignment, obs_names, device: torch.device) -> None:
        self.config = module.config
        self.alignment = alignment
        self.column_token_ids = alignment.column_token_ids()
        self.positions = gene_positions(self.config, self.config.n_reference_tokens)
        self.obs_names = obs_names
        self.device = device
        self.cell_types = torch.as_tensor(self.config.cell_type_ids, device=device)
        self.is_cell_type = np.zeros(self.config.n_reference_tokens, dtype=bool)
        self.is_cell_type[self.config.cell_type_ids] = True

    def fine_probabilities(self, logits: torch.Tensor | None) -> torch.Tensor:
        """Return the fine step's probability of every cell type, then that of the most likely other token.

        The greedy choice of the reference is the argmax of these (``"Unclassified"`` for the last column); a cell
        whose generation ended before a fine step gets ``[0, ..., 0, 1]``.
        """
        out = torch.zeros(len(self.cell_types) + 1, device=self.device)
        if logits is None:
            out[-1] = 1.0
            return out
        probabilities = torch.softmax(logits, -1)
        out[:-1] = probabilities[self.cell_types]
        others = probabilities.index_fill(0, self.cell_types, 0.0)
        out[-1] = others.max()
        return out

    def encode(self, block: sp.csr_matrix, start: int, stop: int, input_kind: str) -> TokenizedBlock:
        csr = block if sp.isspmatrix_csr(block) else sp.csr_matrix(block)
        prompts = []
        for row in range(csr.shape[0]):
            a, b = csr.indptr[row], csr.indptr[row + 1]
            prompts.append(
                reference_prompt(
                    csr.indices[a:b],
                    csr.data[a:b],
                    self.column_token_ids,
                    self.positions,
                    n_levels=self.config.n_levels,
                    task_token_id=self.config.task_token_id,
                    input_kind=input_kind,
                )
            )
        lengths = np.array([len(p[0]) for p in prompts])
        raise_if_no_known_genes(
            np.flatnonzero(lengths == 1),
            start,
            stop,
            self.obs_names,
            self.alignment.n_matched,
            noun="cells",
            why="scMulan prompts with a cell's genes",
        )
        return TokenizedBlock(prompts, lengths, {"n_tokens": int(lengths.sum())})

    def collate(self, items) -> dict[str, torch.Tensor]:
        length = max(len(entities) for entities, _ in items)
        entities = torch.full((len(items), length), self.config.pad_id, dtype=torch.long)
        levels = torch.zeros((len(items), length), dtype=torch.long)
        for i, (e, v) in enumerate(items):
            entities[i, : len(e)] = torch.from_numpy(e)
            levels[i, : len(v)] = torch.from_numpy(v)
        return {"entities": entities, "levels": levels, "lengths": torch.as_tensor([len(e) for e, _ in items])}

    def forward(self, module: SCMulanModule, batch, positions: np.ndarray) -> dict[str, torch.Tensor]:
        embeddings, coarse, fine, probabilities = [], [], [], []
        for row, n in enumerate(batch["lengths"].tolist()):  # one cell at a time: each has its own cache
            entities, levels = batch["entities"][row, :n].cpu().numpy(), batch["levels"][row, :n].cpu().numpy()
            done = complete_prompt(module, entities, levels)
            embeddings.append(done.embedding)
            tail = done.entities[-3:-1]
            ids = [int(t) if self.is_cell_type[t] else -1 for t in tail]
            coarse.append(ids[0])
            fine.append(ids[1])
            probabilities.append(self.fine_probabilities(done.fine_logits))
        return {
            "embedding": torch.stack(embeddings),
            "coarse": torch.tensor(coarse, dtype=torch.float64)[:, None],
            "fine": torch.tensor(fine, dtype=torch.float64)[:, None],
            "probabilities": torch.nan_to_num(torch.stack(probabilities)),
        }


def reference_pass(
    module: SCMulanModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    *,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    normalize: bool = True,
    progress: bool = False,
    rows: np.ndarray | None = None,
    obs_names: np.ndarray | None = None,
    precision: str = "fp32",
) -> ReferencePass:
    """Embeddings and greedy cell-type annotations of a converted public scMulan (``layout="reference"``).

    ``precision`` must be ``"fp32"``: greedy choices and rounded levels are compared with the reference in float32.
    """
    if precision != "fp32":
        raise ValueError(f"a converted reference scMulan runs in fp32 only, got precision={precision!r}")
    config = module.config
    widths = {"embedding": config.d_model, "coarse": 1, "fine": 1, "probabilities": len(config.cell_type_ids) + 1}
    result = stream_cells(
        module,
        source,
        ReferencePromptTokenizer(module, alignment, obs_names, device),
        widths,
        device=device,
        batch_size=batch_size,
        block_size=block_size,
        rows=rows,
        progress=progress,
        desc="scfm scmulan (reference)",
    )
    embeddings = result.outputs["embedding"]
    if normalize:
        l2_normalise(embeddings)
    return ReferencePass(
        embeddings,
        result.outputs["coarse"][:, 0].astype(np.int64),
        result.outputs["fine"][:, 0].astype(np.int64),
        result.outputs["probabilities"],
        result.input_kind,
        result.counters.get("n_tokens", 0),
    )


def cell_type_names(config, ids: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Names of predicted cell-type token ids (``-1``: ``"Unclassified"``)."""
    lookup = dict(zip(config.cell_type_ids, names, strict=True))
    return np.array([lookup.get(int(i), UNCLASSIFIED) for i in ids], dtype=object)
