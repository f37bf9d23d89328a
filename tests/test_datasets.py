"""scfm.datasets: where files are looked for, the error when one is missing, and the real files (shared_data)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scfm import datasets
from scfm.datasets._files import FILES

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = [pytest.mark.shared_data, pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not present")]


def _tiny(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(path)
    return path


def test_missing_file_error_names_file_source_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.pancreas()
    message = str(info.value)
    assert "integration/pancreas_3batches_cepo_small.h5ad" in message
    assert "PYangLab/Cepo" in message and "MIT" in message  # where it comes from, under which licence
    assert "SCFM_DATA_DIR" in message and "path=" in message  # how to point scfm at it
    assert str(tmp_path) in message  # where it looked
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_missing_file_error_with_explicit_folder(tmp_path):
    with pytest.raises(datasets.DatasetNotFoundError, match="osmfish_codeluppi2018"):
        datasets.osmfish(tmp_path / "nowhere")


def test_lookup_order_argument_then_environment(tmp_path, monkeypatch):
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    relpath = FILES["tcga_skcm"].relpath
    _tiny(env_root / relpath)
    _tiny(arg_root / relpath)
    monkeypatch.setenv(datasets.ENV_VAR, str(env_root))
    assert datasets.file_path("tcga_skcm") == env_root / relpath
    assert datasets.file_path("tcga_skcm", arg_root) == arg_root / relpath
    assert datasets.data_dir() == env_root and datasets.data_dir(arg_root) == arg_root


def test_file_given_directly_or_flat_in_folder(tmp_path):
    flat = _tiny(tmp_path / FILES["merfish"].name)  # no spatial/ sub-folder
    assert datasets.file_path("merfish", tmp_path) == flat
    assert datasets.file_path("merfish", flat) == flat
    assert datasets.merfish(flat).shape == (3, 2)


def test_unknown_names_and_options_are_rejected(tmp_path):
    with pytest.raises(KeyError, match="known"):
        datasets.file_path("pancreas_big", tmp_path)
    with pytest.raises(ValueError, match="'main'"):
        datasets.pretraining_corpus("huge", tmp_path)
    with pytest.raises(ValueError, match="151673"):
        datasets.visium_dlpfc("12", tmp_path)
    with pytest.raises(ValueError, match="10k"):
        datasets.cite_pbmc("3k", tmp_path)


def test_available_lists_every_file_with_provenance(tmp_path):
    _tiny(tmp_path / FILES["pancreas"].relpath)
    table = datasets.available(tmp_path)
    assert set(table.index) == set(FILES)
    assert table.loc["pancreas", "present"] and not table.loc["osmfish", "present"]
    assert (table[["source", "licence", "citation"]].map(len) > 2).all().all()


def test_every_loader_docstring_names_source_licence_and_file():
    loaders = [getattr(datasets, n) for n in datasets.__all__ if callable(getattr(datasets, n))]
    for loader in loaders:
        if loader in (datasets.available, datasets.file_path, datasets.data_dir, datasets.DatasetNotFoundError):
            continue
        doc = loader.__doc__
        assert "Source" in doc and "Licence" in doc and "Cite" in doc, loader.__name__
        assert "File:" in doc or "Files:" in doc, loader.__name__


def test_every_known_file_has_a_loader_or_is_reachable_by_name():
    documented = "\n".join(getattr(datasets, n).__doc__ or "" for n in datasets.__all__)
    undocumented = [k for k, f in FILES.items() if f.relpath not in documented]
    assert undocumented == ["pbmc_10x_seqwell"]  # a test fixture only, reachable through file_path


@pytest.mark.parametrize(
    ("loader", "shape", "column"),
    [
        (datasets.pancreas, (528, 1403), "cell_type"),
        (datasets.pbmc_sorted_reference, (2140, 8863), "cell_type"),
        (datasets.osmfish, (6471, 33), "region"),
        (datasets.merfish, (750, 134), "cell_class"),
        (datasets.tcga_skcm, (472, 2454), "event"),
        (datasets.papalexi2021, (20729, 299), "perturbation"),
    ],
)
@needs_data[0]
@needs_data[1]
def test_real_files_match_their_docstrings(loader, shape, column):
    adata = loader()
    assert adata.shape == shape
    assert column in adata.obs


@needs_data[0]
@needs_data[1]
def test_real_multiomic_spatial_and_grn_files():
    mop = datasets.pbmc_multiome_tiny()
    assert set(mop.mod) == {"rna", "atac"} and mop.n_obs == 1000
    assert datasets.visium_dlpfc("151673").shape == (3639, 500)
    corpus = datasets.pretraining_corpus("extra", backed=True)
    assert corpus.isbacked and corpus.n_obs == 5705
    corpus.file.close()
    edges = datasets.omnipath_interactions(columns=["source", "target", "type"])
    assert isinstance(edges, pd.DataFrame) and (edges["type"] == "transcriptional").sum() == 128218
    assert len(datasets.tf_chip_targets()) == 166
    assert "BHLHE40|Average" in datasets.chipatlas_bhlhe40().columns
