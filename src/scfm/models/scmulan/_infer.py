"""One streaming pass of scMulan over cells: embeddings and, per metadata key, the generated term's distribution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment

from ..base import TokenizedBlock, l2_normalise, raise_if_no_known_genes, stream_cells
from ..base._device import autocast_context, warn_if_slow_bf16
from ._module import SCMulanModule
from ._tokenizer import cell_gene_words


@dataclass
class AnnotationPass:
    """Embeddings (mean last hidden state over gene words) and ``probabilities[key]`` (cells x terms of key)."""

    embeddings: np.ndarray
    probabilities: dict[str, np.ndarray]
    input_kind: str
    n_truncated_cells: int


class AnnotationPromptTokenizer:
    """``<cls> <annotate> G [<eoc>]`` followed by one isolated ``<predict:key>`` query token per key."""

    def __init__(
        self,
        module: SCMulanModule,
        alignment: GeneAlignment,
        keys: Sequence[str],
        obs_names,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        self.config = module.config
        self.precision = precision
        self.vocab = self.config.sentence_vocab()
        self.keys = list(keys)
        self.query_ids = [self.vocab.query_id(key) for key in keys]
        self.term_ids = {key: torch.as_tensor(self.vocab.term_ids(key), device=device) for key in keys}
        self.alignment = alignment
        self.column_token_ids = alignment.column_token_ids()
        self.obs_names = obs_names
        self.device = device

    def encode(self, block: sp.csr_matrix, start: int, stop: int, input_kind: str) -> TokenizedBlock:
        config = self.config
        words = cell_gene_words(
            block,
            self.column_token_ids,
            scheme=config.level_scheme,
            input_kind=input_kind,
            max_genes=config.max_gene_words,
            seed=config.tokenizer_seed,
        )
        n_genes = np.array([len(w[0]) for w in words])
        raise_if_no_known_genes(
            np.flatnonzero(n_genes == 0),
            start,
            stop,
            self.obs_names,
            self.alignment.n_matched,
            noun="cells",
            why="scMulan prompts with a cell's genes",
        )
        prefix_lengths = 2 + n_genes + np.array([int(w[2]) for w in words])
        return TokenizedBlock(words, prefix_lengths, {"n_truncated": int(sum(not w[2] for w in words))})

    def collate(self, items) -> dict[str, torch.Tensor]:
        config = self.config
        prompts = []
        for gene_ids, levels, complete in items:
            tail = [config.end_id] if complete else []
            entities = np.concatenate([[config.begin_id, self.vocab.annotate_id], gene_ids, tail, self.query_ids])
            values = np.concatenate([[0, 0], levels, np.zeros(len(tail) + len(self.query_ids))])
            prompts.append((entities.astype(np.int64), values.astype(np.int64)))
        length = max(len(p[0]) for p in prompts)
        entities = torch.full((len(prompts), length), config.pad_id, dtype=torch.long)
        values = torch.zeros((len(prompts), length), dtype=torch.long)
        isolated = torch.zeros((len(prompts), length), dtype=torch.bool)
        for i, (e, v) in enumerate(prompts):
            entities[i, : len(e)] = torch.from_numpy(e)
            values[i, : len(v)] = torch.from_numpy(v)
            isolated[i, len(e) - len(self.query_ids) : len(e)] = True
        n_genes = torch.as_tensor([len(w[0]) for w in items])
        prefix_lengths = n_genes + 2 + torch.as_tensor([int(w[2]) for w in items])
        return {
            "entities": entities,
            "values": values,
            "isolated": isolated,
            "n_genes": n_genes,
            "prefix_lengths": prefix_lengths,
        }

    def forward(self, module: SCMulanModule, batch: dict[str, torch.Tensor], positions: np.ndarray):
        entities = batch["entities"]
        with autocast_context(self.device, self.precision):
            hidden = module.hidden_states(entities, batch["values"], batch["isolated"]).float()
        genes = torch.arange(entities.shape[1], device=self.device)[None] - 2
        gene_mask = (genes >= 0) & (genes < batch["n_genes"][:, None])
        outputs = {"embedding": (hidden * gene_mask[..., None]).sum(1) / gene_mask.sum(1, keepdim=True)}
        rows_index = torch.arange(len(positions), device=self.device)
        for j, key in enumerate(self.keys):
            query_hidden = hidden[rows_index, batch["prefix_lengths"] + j]
            logits = module.entity_logits(query_hidden)[:, self.term_ids[key]]
            outputs[f"probabilities:{key}"] = torch.softmax(logits, -1)
        return outputs


def annotation_pass(
    module: SCMulanModule,
    source: ExpressionSource,
    alignment: GeneAlignment,
    keys: Sequence[str],
    *,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    normalize: bool = True,
    progress: bool = False,
    rows: np.ndarray | None = None,
    obs_names: np.ndarray | None = None,
    precision: str = "fp32",
) -> AnnotationPass:
    """Prompt every cell with ``<cls> <annotate> G [<eoc>]`` and one ``<predict:key>`` per key.

    The query tokens share the pass: each sees the genes and itself only, so each key's answer is what the
    model generates after the genes alone. A key's probabilities are the entity head's softmax restricted to
    that key's terms. Results do not depend on ``batch_size``, ``block_size`` or cell order.
    ``precision="bf16"`` runs the transformer under bf16 autocast (outputs stay float32).

    Raises
    ------
    NoKnownGenesError
        A cell expresses none of the model's genes (the message names up to five).
    """
    config = module.config
    vocab = config.sentence_vocab()
    warn_if_slow_bf16(device, precision)
    widths = {"embedding": config.d_model, **{f"probabilities:{key}": len(vocab.terms[key]) for key in keys}}
    result = stream_cells(
        module,
        source,
        AnnotationPromptTokenizer(module, alignment, keys, obs_names, device, precision),
        widths,
        device=device,
        batch_size=batch_size,
        block_size=block_size,
        rows=rows,
        progress=progress,
        desc="scfm scmulan",
        precision=precision,
    )
    embeddings = result.outputs["embedding"]
    if normalize:
        l2_normalise(embeddings)
    probabilities = {key: result.outputs[f"probabilities:{key}"] for key in keys}
    return AnnotationPass(embeddings, probabilities, result.input_kind, result.counters.get("n_truncated", 0))
