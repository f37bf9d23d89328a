"""End to end: the bundled default model on pbmc68k_reduced, and the demo."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scfm
from scfm._demo import run_demo
from scfm.models import load_pretrained
from scfm.models.scgpt import (
    MaskedValueCollator,
    SCGPTModule,
    TokenizedCellDataset,
    binning_config,
)

BUNDLED = Path(str(resources.files("scfm") / "checkpoints" / "tgpt_default"))
BUNDLED_SCGPT = Path(str(resources.files("scfm") / "checkpoints" / "scgpt_default"))
bundled_exists = (BUNDLED / "model.safetensors").is_file()
needs_bundled = pytest.mark.skipif(not bundled_exists, reason=f"bundled checkpoint {BUNDLED} not present yet")

# 5-fold 15-NN accuracy of bulk_labels on pbmc68k_reduced (adata.raw), measured for this threshold:
# chance (largest class) 0.34; bundled default (tGPT) 0.777; HVG+PCA 0.80; the bundled scGPT 0.536; random-weight
# tGPT of the default config 0.759 (its model card). So this checks "far above chance and above the previous
# default", not that pretraining helped; that the scGPT weights learned is checked by the masked-value test below.
KNN_THRESHOLD = 0.7


def record_d_model(record) -> int:
    return scfm.models.load_checkpoint(record["checkpoint"]).config["d_model"]


@needs_bundled
def test_bundled_model_on_pbmc68k_reduced(pbmc_small):
    scfm.tl.embed(pbmc_small, use_raw=True, progress=False)
    emb = pbmc_small.obsm["X_scfm"]
    record = pbmc_small.uns["scfm"]["X_scfm"]
    assert emb.shape == (700, record_d_model(record))
    assert np.isfinite(emb).all()
    assert record["model"] == "tgpt_default"
    assert record["genes_total"] == 765
    assert record["genes_matched"] > 700
    assert record["input_kind"] == "log1p"
    assert record["family"] == "tgpt"
    assert scfm.bench.knn_accuracy(pbmc_small, "X_scfm", "bulk_labels") > KNN_THRESHOLD


def test_demo_writes_plot_and_report(tmp_path, tiny_checkpoint):
    # the bundled model when present (the real demo), otherwise the tiny checkpoint (same code path)
    model = None if bundled_exists else tiny_checkpoint
    report = run_demo(tmp_path / "demo", model=model, device="cpu")
    out = tmp_path / "demo"
    png = (out / "umap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    text = (out / "report.txt").read_text()
    assert "label silhouette of bulk_labels" in text
    assert f"genes matched: {report['genes_matched']} of 765" in text
    assert report["cells"] == 700
    assert 0.0 <= report["silhouette_scfm"] <= 1.0
    assert 0.0 <= report["silhouette_pca"] <= 1.0
    assert np.load(out / "X_scfm.npy").shape[0] == 700


def _masked_value_loss(module: SCGPTModule, adata, vocab) -> float:
    """GEP loss (MSE of masked bins) on the cells of ``adata.raw`` with fixed masks."""
    alignment = scfm.genes.align_genes(adata.raw.var, vocab)
    dataset = TokenizedCellDataset(
        sp.csr_matrix(adata.raw.X),
        alignment.column_token_ids(),
        cls_id=module.config.cls_id,
        config=binning_config(module.config),
        rows=np.arange(200),
    )
    collator = MaskedValueCollator(
        pad_id=module.config.pad_id, pad_value=module.config.pad_value, mask_value=module.config.mask_value
    )
    torch.manual_seed(0)
    batch = collator([dataset[i] for i in range(len(dataset))])
    module.eval()
    with torch.inference_mode():
        _, _, loss = module(batch)
    return float(loss.reconstruction_loss["gep"].mean())


@pytest.mark.skipif(not (BUNDLED_SCGPT / "model.safetensors").is_file(), reason="bundled scGPT checkpoint absent")
def test_bundled_model_is_trained(pbmc_small):
    # the shipped weights must predict held-out (masked) expression bins far better than the same architecture
    # with random weights; pbmc68k_reduced was not part of the pretraining corpus
    pretrained = load_pretrained("scgpt")
    trained = _masked_value_loss(pretrained.module, pbmc_small, pretrained.vocab)
    torch.manual_seed(0)
    untrained = _masked_value_loss(SCGPTModule(pretrained.module.config), pbmc_small, pretrained.vocab)
    assert trained < 0.5 * untrained  # measured: 0.20 (164 vs 834)
