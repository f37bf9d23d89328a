"""``precision="bf16"`` of ``scfm.tl.embed`` (and ``scfm embed --precision``) against the exact float32 default."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_unchanged, snapshot

import scfm
from scfm.cli import main
from scfm.errors import ArgumentTypeError
from scfm.models.base._device import autocast_context, compute_dtype, compute_dtype_name

# bf16 is emulated (slow) on CPUs without AVX512-BF16/AMX, so the bundled models see few cells here.
N_BUNDLED_CELLS = 40
MIN_COSINE = 0.99


def embed(adata, model, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16")
        scfm.tl.embed(adata, model=model, progress=False, device="cpu", **kwargs)
    return adata.obsm[kwargs.get("key_added", "X_scfm")]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine of two row-normalised matrices."""
    return (a.astype(np.float64) * b.astype(np.float64)).sum(1)


def check_bf16(adata: ad.AnnData, model, **kwargs) -> np.ndarray:
    """Embed with both precisions; check bf16 is finite, unit-norm and close to fp32; return the cosines."""
    exact = embed(adata, model, key_added="fp32", **kwargs)
    reduced = embed(adata, model, key_added="bf16", precision="bf16", **kwargs)
    assert reduced.dtype == np.float32
    assert np.isfinite(reduced).all()
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)
    cos = cosines(exact, reduced)
    assert cos.min() >= MIN_COSINE, f"min cosine bf16 vs fp32 {cos.min():.6f}"
    assert adata.uns["scfm"]["bf16"]["precision"] == "bf16"
    assert adata.uns["scfm"]["bf16"]["compute_dtype"] == "bfloat16"
    assert adata.uns["scfm"]["fp32"]["precision"] == "fp32"
    assert adata.uns["scfm"]["fp32"]["compute_dtype"] == "float32"
    return cos


def test_scgpt_bf16_close_to_fp32(counts_adata, tiny_checkpoint):
    # measured: min cosine 0.99999 on these 120 synthetic cells (tiny random-weight scGPT)
    check_bf16(counts_adata, tiny_checkpoint)


def test_tgpt_bf16_close_to_fp32(counts_adata, tiny_tgpt_checkpoint):
    check_bf16(counts_adata, tiny_tgpt_checkpoint)


@pytest.mark.parametrize("model", ["default", "tgpt", "scmulan", "cellplm"])
def test_bundled_models_bf16_close_to_fp32(pbmc_small, model):
    # measured on 200 pbmc68k_reduced cells: min cosine 0.999999 (scGPT), 0.99999 (tGPT, scMulan, CellPLM)
    check_bf16(pbmc_small[:N_BUNDLED_CELLS].copy(), model, use_raw=True)


def test_fp32_default_is_unchanged(counts_adata, tiny_checkpoint):
    default = embed(counts_adata, tiny_checkpoint, key_added="default").copy()
    explicit = embed(counts_adata, tiny_checkpoint, key_added="explicit", precision="fp32")
    np.testing.assert_array_equal(default, explicit)
    assert counts_adata.uns["scfm"]["default"]["precision"] == "fp32"


def test_bf16_does_not_depend_on_batch_size(counts_adata, tiny_checkpoint):
    # batches of other sizes pad to other lengths; in bf16 the difference stays at bf16 rounding
    # (measured: min cosine 1 - 8e-7, max abs difference 7e-4 between batch sizes 64 and 7)
    one = embed(counts_adata, tiny_checkpoint, key_added="b64", precision="bf16").copy()
    other = embed(counts_adata, tiny_checkpoint, key_added="b7", precision="bf16", batch_size=7)
    assert cosines(one, other).min() >= 1 - 1e-3
    again = embed(counts_adata, tiny_checkpoint, key_added="again", precision="bf16")
    np.testing.assert_array_equal(one, again)


@pytest.mark.parametrize(
    ("value", "exc"), [("fp16", ValueError), ("BF16", ValueError), (16, ArgumentTypeError), (None, ArgumentTypeError)]
)
def test_bad_precision_is_refused_and_anndata_unchanged(counts_adata, tiny_checkpoint, value, exc):
    before = snapshot(counts_adata)
    with pytest.raises(exc, match="precision") as info:
        scfm.tl.embed(counts_adata, model=tiny_checkpoint, progress=False, precision=value)
    assert "'fp32', 'bf16'" in str(info.value)
    assert_unchanged(counts_adata, before)


def test_compute_dtype_policy():
    cpu = torch.device("cpu")
    assert compute_dtype(cpu, "fp32") == torch.float32
    assert compute_dtype(cpu, "bf16") == torch.bfloat16
    assert compute_dtype_name(cpu, "bf16") == "bfloat16"
    assert compute_dtype(torch.device("mps"), "bf16") == torch.float32
    assert not isinstance(autocast_context(cpu, "fp32"), torch.autocast)
    assert isinstance(autocast_context(cpu, "bf16"), torch.autocast)
    with pytest.raises(ValueError, match="precision must be one of"):
        compute_dtype(cpu, "int8")


def test_cli_precision(counts_adata, tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "in.h5ad"
    counts_adata.write_h5ad(path)
    outputs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.h5ad"
        args = ["embed", str(path), str(out), "--model", str(tiny_checkpoint), "--quiet", "--precision", precision]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="precision='bf16' on a CPU without bf16")
            assert main(args) == 0
        result = ad.read_h5ad(out)
        assert result.uns["scfm"]["X_scfm"]["precision"] == precision
        outputs[precision] = result.obsm["X_scfm"]
    np.testing.assert_array_equal(outputs["fp32"], embed(counts_adata, tiny_checkpoint))
    assert cosines(outputs["fp32"], outputs["bf16"]).min() >= MIN_COSINE
    with pytest.raises(SystemExit):
        main(["embed", str(path), str(tmp_path / "x.h5ad"), "--precision", "fp16"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("native", [True, False])
def test_slow_bf16_warning_follows_the_cpu(monkeypatch, native):
    from scfm.models.base import _device

    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _device.warn_if_slow_bf16(cpu, "bf16")
        _device.warn_if_slow_bf16(cpu, "fp32")
    assert len(caught) == (0 if native else 1)
    if not native:
        assert "AVX512-BF16 or AMX" in str(caught[0].message)


class _AutocastRecorder:
    """A stand-in family tokenizer that records whether autocast is on when its forward runs (and enters none)."""

    def __init__(self) -> None:
        self.autocast = []

    def encode(self, block, start, stop, input_kind):
        from scfm.models.base import TokenizedBlock

        return TokenizedBlock(list(range(stop - start)), np.ones(stop - start, dtype=int))

    def collate(self, items):
        return {"x": torch.tensor(items, dtype=torch.float32)[:, None]}

    def forward(self, module, batch, positions):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return {"y": module(batch["x"])}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_stream_cells_runs_every_batch_in_the_precision(precision):
    # the whole loop sits in one autocast context (bf16 weights cast once per call, not per batch)
    from scfm.data import ExpressionSource
    from scfm.models.base import stream_cells

    matrix = np.ones((10, 3), dtype=np.float32)
    module = torch.nn.Linear(1, 2)
    recorder = _AutocastRecorder()
    source = ExpressionSource(matrix=matrix, var=pd.DataFrame(index=["a", "b", "c"]), label="X")
    result = stream_cells(
        module, source, recorder, {"y": 2}, device=torch.device("cpu"), batch_size=3, precision=precision
    )
    assert recorder.autocast == [precision == "bf16"] * 4
    assert result.outputs["y"].shape == (10, 2)
    assert not torch.is_autocast_enabled("cpu")
