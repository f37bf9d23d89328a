"""What a loaded scMulan model does without an AnnData manager: predict metadata terms and generate cells."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

from scfm.data import ExpressionSource
from scfm.genes import GeneAlignment

from ..base import Pretrained, TermPrediction, top_labels
from ._generate import generate_cells, prompt_terms
from ._infer import annotation_pass
from ._reference import UNCLASSIFIED, cell_type_names, reference_pass
from ._tokenizer import generation_prompt


def split_candidates(terms: Sequence[str], candidates: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(known, out_of_vocabulary)`` candidate labels; ``None`` means every term of the key."""
    if candidates is None:
        return list(terms), []
    wanted = list(dict.fromkeys(str(c) for c in candidates))
    known = set(terms)
    return [c for c in wanted if c in known], [c for c in wanted if c not in known]


def predict_terms(
    pretrained: Pretrained,
    source: ExpressionSource,
    alignment: GeneAlignment,
    keys: Sequence[str],
    *,
    candidates: Mapping[str, Sequence[str]] | None = None,
    top_k: int = 3,
    device: torch.device,
    batch_size: int = 64,
    block_size: int = 4096,
    progress: bool = False,
    rows: np.ndarray | None = None,
    obs_names: np.ndarray | None = None,
) -> tuple[dict[str, TermPrediction], np.ndarray]:
    """Zero-shot prediction of ``keys`` by generation, and the cells' embeddings from the same pass.

    Each key's distribution is the model's next-entity distribution after ``<predict:key>``, over the key's
    terms (or the known ``candidates[key]``), renormalised.

    Raises
    ------
    KeyError
        A key is not a metadata key of the model.
    ValueError
        ``top_k < 1``, or none of a key's candidates is a term of the model.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if pretrained.module.config.layout == "reference":
        return _predict_reference(
            pretrained,
            source,
            alignment,
            keys,
            candidates=candidates,
            top_k=top_k,
            device=device,
            batch_size=batch_size,
            block_size=block_size,
            progress=progress,
            rows=rows,
            obs_names=obs_names,
        )
    vocab = pretrained.module.config.sentence_vocab()
    chosen = {}
    for key in keys:
        vocab.query_id(key)  # raises a KeyError naming the model's keys
        known, missing = split_candidates(vocab.terms[key], (candidates or {}).get(key))
        if not known:
            raise ValueError(
                f"none of the {len(missing)} candidate labels for {key!r} is a term of the model "
                f"(e.g. {missing[:5]}); its {key!r} terms are {vocab.terms[key][:10]}"
            )
        chosen[key] = (known, missing)
    result = annotation_pass(
        pretrained.module,
        source,
        alignment,
        list(keys),
        device=device,
        batch_size=batch_size,
        block_size=block_size,
        progress=progress,
        rows=rows,
        obs_names=obs_names,
    )
    predictions = {}
    for key, (known, missing) in chosen.items():
        columns = [vocab.terms[key].index(term) for term in known]
        probabilities = result.probabilities[key][:, columns]
        probabilities = probabilities / probabilities.sum(1, keepdims=True)
        predictions[key] = TermPrediction(key, top_labels(probabilities, known, top_k), known, missing, probabilities)
    return predictions, result.embeddings


def _predict_reference(
    pretrained: Pretrained, source, alignment, keys, *, candidates, top_k, **loop
) -> tuple[dict[str, TermPrediction], np.ndarray]:
    """Greedy cell-type annotation of a converted public scMulan (:mod:`scfm.models.scmulan._reference`).

    Without ``candidates`` the labels are the cell types and ``"Unclassified"``: a cell type's probability is the
    fine step's probability of its token, ``"Unclassified"``'s that of the most likely token that is not a cell
    type, renormalised over these, so that the most likely label is the reference's greedy prediction. With
    ``candidates`` the label is the most likely known candidate of the fine step's distribution over them.
    """
    config = pretrained.module.config
    unknown = [key for key in keys if key != "cell_type"]
    if unknown:
        raise KeyError(f"{unknown} are not metadata keys of this converted scMulan (keys: ['cell_type'])")
    names = config.metadata_terms["cell_type"]
    known, missing = split_candidates(names, (candidates or {}).get("cell_type"))
    if not known:
        raise ValueError(
            f"none of the {len(missing)} candidate labels for 'cell_type' is a cell type of the model "
            f"(e.g. {missing[:5]}); its cell types include {names[:10]}"
        )
    result = reference_pass(pretrained.module, source, alignment, **loop)
    columns = [names.index(term) for term in known]
    if (candidates or {}).get("cell_type") is None:
        known, columns = [*known, UNCLASSIFIED], [*columns, len(names)]
    probabilities = result.probabilities[:, columns]
    total = probabilities.sum(1, keepdims=True)
    probabilities = np.divide(probabilities, total, out=np.zeros_like(probabilities), where=total > 0)
    table = top_labels(probabilities, known, top_k)
    table.insert(2, "coarse_label", cell_type_names(config, result.coarse_ids, names))
    return {"cell_type": TermPrediction("cell_type", table, known, missing, probabilities)}, result.embeddings


def generate_anndata(
    pretrained: Pretrained,
    n_cells: int,
    conditions: Mapping[str, str] | None = None,
    *,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    batch_size: int = 64,
    device: torch.device,
) -> AnnData:
    """Generate ``n_cells`` cells for the metadata prompt ``conditions``.

    ``X`` holds expression on the ``target_sum`` scale (like ``sc.pp.normalize_total``), ``obs`` the conditions,
    ``var`` the model's genes.

    Raises
    ------
    ValueError
        ``n_cells <= 0``, ``temperature <= 0`` or ``top_k < 1``.
    KeyError
        A condition names a key or term that the model does not know.
    """
    if isinstance(n_cells, bool) or not isinstance(n_cells, int | np.integer) or n_cells <= 0:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    if not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    config = pretrained.module.config
    if config.layout == "reference":
        raise ValueError(
            "generating cells with a converted public scMulan checkpoint is not implemented; scfm imports its "
            "zero-shot annotation and embeddings. Generate with a model trained in scfm (docs/scmulan.md)"
        )
    vocab = config.sentence_vocab()
    conditions = dict(conditions or {})
    prompt = generation_prompt(vocab, prompt_terms(vocab, conditions), begin_id=config.begin_id)
    genes = pretrained.vocab.genes
    gene_ids = pretrained.vocab.lookup(genes)
    cells = generate_cells(
        pretrained.module,
        prompt,
        gene_ids,
        n_cells=int(n_cells),
        seed=seed,
        temperature=temperature,
        top_k=top_k,
        batch_size=batch_size,
        device=device,
    )
    column_of = np.full(len(pretrained.vocab), -1, dtype=np.int64)
    column_of[gene_ids] = np.arange(len(genes))
    level_values = np.asarray(config.level_values or config.level_scheme.midpoints(), dtype=np.float64)
    indptr = np.cumsum([0] + [len(g) for g, _ in cells])
    columns = np.concatenate([column_of[g] for g, _ in cells]) if indptr[-1] else np.zeros(0, np.int64)
    data = np.expm1(level_values[np.concatenate([v for _, v in cells]) - 1]) if indptr[-1] else np.zeros(0)
    matrix = sp.csr_matrix((data.astype(np.float32), columns, indptr), shape=(n_cells, len(genes)))
    matrix.sort_indices()
    obs = pd.DataFrame(index=[f"generated_{i}" for i in range(n_cells)])
    for key in vocab.keys:
        if key in conditions:
            obs[key] = pd.Categorical([conditions[key]] * n_cells)
    obs["n_genes"] = np.diff(indptr)
    return AnnData(matrix, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name="gene")))
