"""End to end: the bundled default model on pbmc68k_reduced, and the demo."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

import scfm
from scfm._demo import run_demo

BUNDLED = Path(str(resources.files("scfm") / "checkpoints" / "scgpt_default"))
bundled_exists = (BUNDLED / "model.safetensors").is_file()
needs_bundled = pytest.mark.skipif(not bundled_exists, reason=f"bundled checkpoint {BUNDLED} not present yet")

# Label silhouette (scib, rescaled to 0..1) of bulk_labels on pbmc68k_reduced, measured while writing this test:
# random Gaussian vectors 0.484; random-weight SCGPT, tiny (d 32) 0.484, default size (d 128, 4 layers) 0.495-0.502;
# HVG + PCA baseline 0.547. A model that learned anything about cell identity must clear 0.52.
SILHOUETTE_THRESHOLD = 0.52


def record_d_model(record) -> int:
    return scfm.models.load_checkpoint(record["checkpoint"]).config["d_model"]


@needs_bundled
def test_bundled_model_on_pbmc68k_reduced(pbmc_small):
    scfm.tl.embed(pbmc_small, use_raw=True, progress=False)
    emb = pbmc_small.obsm["X_scfm"]
    record = pbmc_small.uns["scfm"]["X_scfm"]
    assert emb.shape == (700, record_d_model(record))
    assert np.isfinite(emb).all()
    assert record["model"] == "scgpt_default"
    assert record["genes_total"] == 765
    assert record["genes_matched"] > 700
    assert record["input_kind"] == "log1p"
    assert record["n_empty_cells"] == 0
    score = scfm.bench.label_silhouette(pbmc_small, "X_scfm", "bulk_labels")
    assert score > SILHOUETTE_THRESHOLD


def test_random_weight_model_stays_below_threshold(pbmc_small, tiny_checkpoint):
    # guards the threshold above: an untrained model must not pass it
    scfm.tl.embed(pbmc_small, model=tiny_checkpoint, use_raw=True, progress=False)
    assert scfm.bench.label_silhouette(pbmc_small, "X_scfm", "bulk_labels") < SILHOUETTE_THRESHOLD


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
