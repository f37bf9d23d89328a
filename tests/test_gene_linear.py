"""The wide half of the annotation head: a linear term on a cell's gene tokens beside its cell embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scfm
from scfm.models import SCGPT
from scfm.nn import GeneLinearClassifier

FAST = {"max_epochs": 8, "batch_size": 16, "lr": 3e-3, "progress": False, "device": "cpu", "n_top_genes": 60}


def test_scores_only_positive_values_of_each_token():
    head = GeneLinearClassifier(n_tokens=5, n_classes=2, value_scale=4.0, gain=1.0)
    with torch.no_grad():
        head.weight.copy_(torch.arange(10, dtype=torch.float32).reshape(5, 2))
    gene_ids = torch.tensor([[0, 3, 4, 1], [0, 2, 1, 1]])
    values = torch.tensor([[-2.0, 4.0, 2.0, -1.0], [-2.0, 0.0, 8.0, -2.0]])  # <cls>/pad/mask values add nothing
    expected = torch.tensor([[6.0 + 4.0, 7.0 + 4.5], [2.0 * 2 + 2.0 * 2, 3.0 * 2 + 3.0 * 2]])
    expected[1] = torch.tensor([2.0 * 2, 3.0 * 2])  # the last token repeats gene 1 with a pad value
    torch.testing.assert_close(head(gene_ids, values), expected)
    torch.testing.assert_close(head(gene_ids[1:], values[1:]), head(gene_ids, values)[1:])
    with pytest.raises(ValueError, match="value_scale and gain"):
        GeneLinearClassifier(5, 2, value_scale=0.0)


def test_config_needs_labels():
    with pytest.raises(ValueError, match="classifier_gene_linear needs label_categories"):
        scfm.models.SCGPTConfig(n_tokens=10, pad_id=0, cls_id=1, classifier_gene_linear=True)


@pytest.fixture
def reference_and_query(batched_adata):
    return batched_adata[::2].copy(), batched_adata[1::2].copy()


def _accuracy(query) -> float:
    return float((query.obs["scfm_cell_type"].astype(str) == query.obs["cell_type"].astype(str)).mean())


def test_wide_head_learns_planted_types_the_embedding_alone_misses(tiny_checkpoint, reference_and_query, tmp_path):
    reference, query = reference_and_query
    wide_query, deep_query = query.copy(), query.copy()
    # a slow encoder (head at 10x): the random tiny model's embedding carries little of the planted types
    settings = {**FAST, "lr": 1e-4, "max_epochs": 8, "method": "finetune"}
    model = scfm.tl.annotate(wide_query, reference, "cell_type", model=tiny_checkpoint, return_model=True, **settings)
    scfm.tl.annotate(deep_query, reference, "cell_type", model=tiny_checkpoint, gene_linear=False, **settings)
    assert wide_query.uns["scfm"]["scfm_cell_type"]["gene_linear"] is True
    assert deep_query.uns["scfm"]["scfm_cell_type"]["gene_linear"] is False
    wide, deep = _accuracy(wide_query), _accuracy(deep_query)
    assert wide > 0.9 and wide > deep + 0.1, (wide, deep)
    assert model.module.gene_classifier is not None and model.module.gene_classifier.weight.abs().sum() > 0

    before = model.predict(query, max_len=61, device="cpu").to_numpy()
    registered = query.copy()
    registered.obs["label"] = registered.obs["cell_type"]  # the column name tl.annotate registers
    reloaded = SCGPT.load(model.save(tmp_path / "wide"), registered)
    assert reloaded.config.classifier_gene_linear
    np.testing.assert_allclose(reloaded.predict(query, max_len=61, device="cpu").to_numpy(), before, atol=1e-6)
