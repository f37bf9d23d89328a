"""The scvi-tools model contract of every model class: history after training, save/load with and without an AnnData."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

import scfm
from scfm.models import SCGPT, TGPT, CellPLM, CheckpointError, SCMulan

FAMILIES = {"scgpt": SCGPT, "tgpt": TGPT, "cellplm": CellPLM, "scmulan": SCMulan}
CELLPLM_TINY = {**TINY, "n_layers": 1, "latent_dim": 8, "n_components": 2, "latent_hidden": 16}
CELLPLM_TINY.update(decoder_hidden=16, decoder_bottleneck=16, context=32)
CELLPLM_TINY.pop("max_len")
CONFIGS = {"scgpt": TINY, "tgpt": TINY, "cellplm": CELLPLM_TINY, "scmulan": TINY}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, _counts_template):
    """A tiny random-weight checkpoint of every family on the synthetic data's 300 genes."""
    folder = tmp_path_factory.mktemp("contract")
    saved = {}
    for name, cls in FAMILIES.items():
        torch.manual_seed(0)
        adata = _counts_template.copy()
        cls.setup_anndata(adata)
        saved[name] = cls(adata, min_genes=10, **CONFIGS[name]).save(folder / name)
    return saved


@pytest.fixture
def cells(_counts_template):
    return _counts_template[:48].copy()


@pytest.mark.parametrize("name", FAMILIES)
def test_history_after_training_a_pretrained_model(cells, checkpoints, name):
    adata = cells.copy()
    model = FAMILIES[name].from_pretrained(checkpoints[name], adata, min_genes=10)
    assert model.history is None
    options = {"batch_size": 16} if name != "cellplm" else {}
    model.train(max_epochs=1, warmup_steps=1, enable_progress_bar=False, **options)
    assert model.history is not None and "train_loss" in model.history
    first = len(model.history["train_loss"])
    model.train(max_epochs=1, warmup_steps=1, enable_progress_bar=False, **options)
    assert len(model.history["train_loss"]) == 2 * first  # a second run appends, as in scvi-tools


@pytest.mark.parametrize("name", FAMILIES)
def test_save_and_load_with_and_without_the_anndata(cells, checkpoints, name, tmp_path):
    adata = cells.copy()
    adata.layers["counts"] = adata.X.copy()
    model = FAMILIES[name].from_pretrained(checkpoints[name], adata, min_genes=10, layer="counts")
    latent = model.get_latent_representation()

    bare = model.save(tmp_path / "bare")
    assert (bare / "setup.json").is_file() and not (bare / "adata.h5ad").exists()
    with pytest.raises(ValueError, match=r"holds no saved AnnData.*save_anndata=True"):
        FAMILIES[name].load(bare)
    fresh = cells.copy()
    fresh.layers["counts"] = fresh.X.copy()
    fresh.X = fresh.X * 0  # the saved setup (layer="counts") is applied, so X is not read
    loaded = FAMILIES[name].load(bare, fresh, accelerator="cpu", min_genes=10)
    assert loaded._setup_args["layer"] == "counts"
    np.testing.assert_allclose(loaded.get_latent_representation(), latent, atol=1e-6)
    assert next(loaded.module.parameters()).device.type == "cpu"

    full = model.save(tmp_path / "full", save_anndata=True)
    alone = FAMILIES[name].load(full, min_genes=10)
    assert alone.adata.n_obs == adata.n_obs
    np.testing.assert_allclose(alone.get_latent_representation(), latent, atol=1e-6)
    with pytest.raises(TypeError, match="save_anndata=True"):
        model.save(tmp_path / "other", compression="gzip")
    with pytest.raises(ValueError, match="accelerator"):
        FAMILIES[name].load(full, accelerator="tpu")


def test_loaded_setup_does_not_override_an_explicit_one(cells, checkpoints, tmp_path):
    adata = cells.copy()
    adata.layers["counts"] = adata.X.copy()
    saved = SCGPT.from_pretrained(checkpoints["scgpt"], adata, min_genes=10, layer="counts").save(tmp_path / "m")
    other = cells.copy()
    model = SCGPT.load(saved, other, layer=None, min_genes=10)
    assert model._setup_args["layer"] is None
    with pytest.raises(KeyError, match="layer 'counts' not found"):  # the saved setup applies when none is given
        scfm.models.SCGPT.load(saved, cells.copy(), min_genes=10)


def test_a_mudata_is_refused_with_what_to_pass(cells):
    import mudata as md

    mdata = md.MuData({"rna": cells, "prot": cells[:, :10].copy()})
    with pytest.raises(TypeError, match=r"this is a MuData: pass one modality, e\.g\. mdata\['rna'\].*'rna', 'prot'"):
        scfm.tl.embed(mdata)


def test_command_line_version(capsys):
    from scfm.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"scfm {scfm.__version__}"


def test_embedding_comparison_writes_nothing_into_the_anndata(cells, tmp_path):
    adata = cells.copy()
    rng = np.random.default_rng(0)
    adata.obsm["X_a"] = rng.normal(size=(adata.n_obs, 5)).astype(np.float32)
    adata.obsm["X_b"] = rng.normal(size=(adata.n_obs, 5)).astype(np.float32)
    adata.obs["group"] = np.where(np.arange(adata.n_obs) % 2, "x", "y")
    keys = (sorted(adata.obsm.keys()), sorted(adata.uns.keys()), sorted(adata.obsp.keys()))
    axes = scfm.pl.embedding_comparison(adata, ["X_a", "X_b"], color="group", save=tmp_path / "umap.png", show=False)
    assert len(axes) == 2 and (tmp_path / "umap.png").stat().st_size > 0
    assert (sorted(adata.obsm.keys()), sorted(adata.uns.keys()), sorted(adata.obsp.keys())) == keys


def test_embedding_over_another_familys_result_warns(cells, checkpoints):
    adata = cells.copy()
    scfm.tl.embed(adata, model=checkpoints["scgpt"], min_genes=10, progress=False)
    replaced = r"held a scgpt embedding; it is replaced by this tgpt one.*key_added='X_tgpt'"
    with pytest.warns(UserWarning, match=replaced):
        scfm.tl.embed(adata, model=checkpoints["tgpt"], min_genes=10, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scfm.tl.embed(adata, model=checkpoints["tgpt"], min_genes=10, progress=False)  # same family: no warning
    assert not [w for w in caught if "it is replaced by" in str(w.message)]


@pytest.mark.parametrize("name", FAMILIES)
def test_train_takes_scvi_arguments(cells, checkpoints, name):
    adata = cells.copy()
    model = FAMILIES[name].from_pretrained(checkpoints[name], adata, min_genes=10)
    options = {"batch_size": 16} if name != "cellplm" else {}
    model.train(
        max_epochs=3,
        train_size=0.75,
        early_stopping=True,
        early_stopping_patience=1,
        plan_kwargs={"lr": 1e-4, "warmup_steps": 1},
        datasplitter_kwargs={"num_workers": 0},
        enable_progress_bar=False,
        **options,
    )
    assert "validation_loss" in model.history and len(model.history["validation_loss"]) >= 1
    with pytest.raises(ValueError, match=r"early_stopping monitors validation_loss.*validation_size=0\.1"):
        model.train(max_epochs=1, early_stopping=True, enable_progress_bar=False, **options)
    with pytest.raises(ValueError, match="plan_kwargs has the unknown setting 'n_hidden'"):
        model.train(max_epochs=1, plan_kwargs={"n_hidden": 3}, **options)
    with pytest.raises(ValueError, match="datasplitter_kwargs supports only 'num_workers'"):
        model.train(max_epochs=1, datasplitter_kwargs={"pin_memory": True}, **options)
    with pytest.raises(ValueError, match="train_size"):
        model.train(max_epochs=1, train_size=1.5, **options)
    with pytest.raises(ValueError, match="not both"):
        model.train(max_epochs=1, train_size=0.8, validation_size=0.2, **options)


def test_gene_embeddings_go_to_varm_with_nan_rows_for_unknown_genes(cells, checkpoints):
    adata = cells.copy()
    adata.var_names = ["NOT_A_GENE", *adata.var_names[1:]]
    before = adata.copy()
    result = scfm.tl.gene_embeddings(adata, checkpoints["scgpt"], min_genes=10, copy=True)
    assert "scfm_gene_embedding" not in adata.varm  # copy=True leaves the input alone
    vectors = result.varm["scfm_gene_embedding"]
    assert vectors.shape == (adata.n_vars, TINY["d_model"]) and vectors.dtype == np.float32
    assert np.isnan(vectors[0]).all() and np.isfinite(vectors[1:]).all()
    assert result.uns["scfm"]["scfm_gene_embedding"]["n_genes_out_of_vocabulary"] == 1
    scfm.tl.gene_network(result, checkpoints["scgpt"], min_genes=10, top_k=3)  # the same vectors it ranks
    network = result.varp["scfm_gene_network"].tocoo()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    i, j = network.row[0], network.col[0]
    assert float(unit[i] @ unit[j]) == pytest.approx(network.data[0], abs=1e-5)
    with pytest.raises(CheckpointError, match="cannot infer gene networks; models that can: scGPT"):
        scfm.tl.gene_embeddings(adata, checkpoints["tgpt"], min_genes=10)
    with pytest.raises(ValueError, match="key_added"):
        scfm.tl.gene_embeddings(adata, checkpoints["scgpt"], min_genes=10, key_added="a/b")
    assert not adata.varm and adata.uns.keys() == before.uns.keys()


def test_cellplm_get_normalized_expression_is_what_denoise_writes(cells, checkpoints):
    adata = cells.copy()
    model = CellPLM.from_pretrained(checkpoints["cellplm"], adata, min_genes=10)
    expression = model.get_normalized_expression()
    assert list(expression.index) == list(adata.obs_names) and expression.shape[1] == model.alignment.n_matched
    denoised = cells.copy()
    scfm.tl.denoise(denoised, checkpoints["cellplm"], min_genes=10, progress=False)
    layer = denoised.to_df(layer="scfm_denoised")[expression.columns]
    np.testing.assert_allclose(expression.to_numpy(), layer.to_numpy(), rtol=1e-5, atol=1e-6)
    genes = list(expression.columns[:3])
    scaled = model.get_normalized_expression(gene_list=genes, library_size=1e4, return_numpy=True)
    assert scaled.shape == (adata.n_obs, 3)
    full = model.get_normalized_expression(library_size=1e4, return_numpy=True)
    np.testing.assert_allclose(full.sum(1), 1e4, rtol=1e-4)
    with pytest.raises(ValueError, match="did not match"):
        model.get_normalized_expression(gene_list=["NOT_A_GENE"])
    with pytest.raises(ValueError, match="library_size"):
        model.get_normalized_expression(library_size=0)


SETUP = {
    "scgpt": ({"batch_key": "batch", "labels_key": "cell_type"}, {"batch": "batch", "labels": "cell_type"}),
    "tgpt": ({}, {}),
    "cellplm": ({"batch_key": "batch", "spatial_key": "xy"}, {"batch": "batch", "sample": "batch"}),
    "scmulan": ({"metadata_keys": {"cell_type": "cell_type"}}, {"metadata_cell_type": "cell_type"}),
}


def _annotated(cells):
    adata = cells.copy()
    adata.obs["batch"] = np.where(np.arange(adata.n_obs) % 2, "b1", "b2")
    adata.obs["cell_type"] = pd.Series(np.where(np.arange(adata.n_obs) % 3, "T", "B"), index=adata.obs_names)
    adata.obs.iloc[0, adata.obs.columns.get_loc("cell_type")] = None  # a missing label is allowed
    adata.obsm["xy"] = np.random.default_rng(0).normal(size=(adata.n_obs, 2))
    return adata


@pytest.mark.parametrize("name", FAMILIES)
def test_setup_registers_every_key_as_a_field_and_transfers_it(cells, name, tmp_path):
    cls = FAMILIES[name]
    setup, categorical = SETUP[name]
    adata = _annotated(cells)
    cls.setup_anndata(adata, **setup)
    torch.manual_seed(0)
    model = cls(adata, min_genes=10, **CONFIGS[name])
    registry = model.adata_manager.registry
    arguments = set(inspect.signature(cls.setup_anndata).parameters) - {"adata", "kwargs"}
    assert set(registry["setup_args"]) == arguments  # the arguments only, no local variables
    fields = registry["field_registries"]
    assert set(fields) == {"X", *categorical, *(["spatial"] if "spatial_key" in setup else [])}
    for key, column in categorical.items():
        state = fields[key]["state_registry"]
        assert state["original_key"] == column
        expected = sorted(adata.obs[column].dropna().unique())
        assert list(state["categorical_mapping"]) == expected
        codes = np.asarray(adata.obs[f"_scvi_{key}"])
        assert (codes[adata.obs[column].isna().to_numpy()] == -1).all()
    saved = model.save(tmp_path / "m")

    query = _annotated(cells[:24])
    query.obs["batch"] = np.where(np.arange(query.n_obs) % 2, "b2", "new")
    query.obs["cell_type"] = "NK"
    loaded = cls.load(saved, query, min_genes=10)
    for key, column in categorical.items():  # registered categories keep their codes, new ones come after
        mapping = list(loaded.adata_manager.registry["field_registries"][key]["state_registry"]["categorical_mapping"])
        known = list(fields[key]["state_registry"]["categorical_mapping"])
        assert mapping[: len(known)] == known and set(mapping[len(known) :]) == set(query.obs[column]) - set(known)
        codes = np.asarray(query.obs[f"_scvi_{key}"])
        np.testing.assert_array_equal(np.asarray(mapping, dtype=object)[codes], query.obs[column].to_numpy())
    if categorical:
        missing = _annotated(cells[:24]).copy()
        del missing.obs[next(iter(categorical.values()))]
        with pytest.raises(KeyError, match=r"not a column of adata\.obs|obs columns that do not exist"):
            cls.load(saved, missing, min_genes=10)
    explicit = cls.load(saved, _annotated(cells[:24]), min_genes=10, layer=None, **setup)  # same args: transfer
    assert explicit._setup_args["layer"] is None


def _scores() -> pd.DataFrame:
    rows = [("a", "Total", 0.6), ("b", "Total", 0.4), ("a", "Bio conservation", 0.7), ("b", "Bio conservation", 0.5)]
    return pd.DataFrame(rows, columns=["method", "metric", "value"])


@pytest.mark.parametrize("plot", ["benchmark", "embedding_comparison"])
def test_plots_follow_scanpys_ax_show_save_contract(cells, plot, tmp_path, monkeypatch, request):
    import matplotlib.pyplot as plt
    import scanpy as sc

    adata = cells.copy()
    adata.obsm["X_a"] = np.random.default_rng(0).normal(size=(adata.n_obs, 4)).astype(np.float32)
    adata.obs["group"] = np.where(np.arange(adata.n_obs) % 2, "x", "y")
    before = adata.copy()
    if plot == "benchmark":
        draw = lambda **kw: scfm.pl.benchmark(_scores(), **kw)  # noqa: E731
    else:
        draw = lambda **kw: scfm.pl.embedding_comparison(adata, ["X_a"], color="group", n_neighbors=5, **kw)  # noqa: E731
    fig, ax = plt.subplots()
    returned = draw(ax=ax if plot == "benchmark" else [ax], show=False)
    drawn = returned if plot == "benchmark" else returned[0]
    assert drawn is ax and plt.fignum_exists(fig.number)  # the caller's Axes, its figure left open
    figdir, autoshow = sc.settings.figdir, sc.settings.autoshow
    request.addfinalizer(lambda: setattr(sc.settings, "figdir", figdir))
    request.addfinalizer(lambda: setattr(sc.settings, "autoshow", autoshow))
    sc.settings.figdir = tmp_path / "figures"
    assert draw(save="_suffix.pdf", show=False) is not None
    assert (tmp_path / "figures" / f"{plot}_suffix.pdf").stat().st_size > 0
    draw(save=True, show=False)
    assert (tmp_path / "figures" / f"{plot}.{sc.settings.file_format_figs}").is_file()
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    assert draw(show=True) is None and shown  # scanpy: a shown plot returns None
    sc.settings.autoshow = False
    assert draw() is not None and len(shown) == 1  # show=None follows sc.settings.autoshow
    with pytest.warns(FutureWarning, match="save=pathlib.Path"):
        draw(path=tmp_path / "old.png", show=False)
    assert (tmp_path / "old.png").is_file()
    assert list(adata.obsm) == list(before.obsm) and list(adata.uns) == list(before.uns) and not adata.obsp
    plt.close("all")


@pytest.fixture
def restored_settings():
    import scanpy as sc

    saved = (scfm.settings._verbosity, scfm.settings._progress_bar, sc.settings.verbosity)
    yield scfm.settings
    scfm.settings.verbosity, scfm.settings.progress_bar, sc.settings.verbosity = saved


def test_settings_follow_scanpys_verbosity_and_switch_progress_bars(cells, checkpoints, restored_settings, capfd):
    import logging

    import scanpy as sc

    settings = restored_settings
    sc.settings.verbosity = 2
    assert settings.verbosity == 2 and settings.show_progress() and not settings.show_progress(False)
    assert logging.getLogger("scfm.tl").getEffectiveLevel() == logging.INFO
    sc.settings.verbosity = 0  # errors only: no progress bars, no info messages
    assert not settings.show_progress() and logging.getLogger("scfm.tl").getEffectiveLevel() == logging.ERROR
    settings.verbosity = "hint"
    assert settings.verbosity == 3 and settings.show_progress()
    with pytest.raises(ValueError, match="verbosity must be"):
        settings.verbosity = "loud"
    with pytest.raises(ValueError, match="progress_bar must be"):
        settings.progress_bar = "yes"
    settings.verbosity = None
    sc.settings.verbosity = 1

    adata = cells.copy()
    settings.progress_bar = False
    capfd.readouterr()
    scfm.tl.embed(adata, model=checkpoints["tgpt"], min_genes=10)  # progress=True by default
    assert "scfm embed" not in capfd.readouterr().err
    settings.progress_bar = None
    scfm.tl.embed(adata, model=checkpoints["tgpt"], min_genes=10)
    assert "scfm embed" in capfd.readouterr().err

    model = TGPT.from_pretrained(checkpoints["tgpt"], adata, min_genes=10)
    settings.progress_bar = False
    model.train(max_epochs=1, batch_size=24, warmup_steps=1)
    err = capfd.readouterr().err
    assert "GPU available" not in err and "Epoch 1/1" not in err  # no Lightning banner, no bar


def test_provenance_stores_none_as_missing(cells):
    adata = cells.copy()
    TGPT.setup_anndata(adata)
    torch.manual_seed(0)
    untrained = TGPT(adata, min_genes=10, **TINY)  # never saved: no weights file, no hash
    target = cells.copy()
    scfm.tl.embed(target, model=untrained, min_genes=10, progress=False)
    record = target.uns["scfm"]["X_scfm"]
    assert "checkpoint_sha256" not in record and "none" not in {str(v).lower() for v in record.values()}
    from scfm.tl._provenance import write_provenance

    write_provenance(target, "k", {"a": None, "b": {"c": None, "d": 1}})
    assert target.uns["scfm"]["k"]["b"] == {"d": 1} and "a" not in target.uns["scfm"]["k"]


def _clusters(n_reference: int, n_query: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference cells with their cluster codes, and query cells of the same four clusters."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    codes = rng.integers(0, 4, size=n_reference + n_query)
    cells = (centres[codes] + 0.6 * rng.normal(size=(codes.size, 16))).astype(np.float32)
    return cells[:n_reference], codes[:n_reference], cells[n_reference:]


def test_exact_knn_votes_are_sklearns():
    from sklearn.neighbors import KNeighborsClassifier

    from scfm.models.base import knn_label_probabilities

    reference, codes, query = _clusters(300, 80)
    ours = knn_label_probabilities(reference, codes, query, 5, n_neighbors=7, approximate=False)
    sklearn = KNeighborsClassifier(n_neighbors=7, metric="cosine").fit(reference, codes).predict_proba(query)
    np.testing.assert_allclose(ours[:, :4], sklearn, atol=1e-6)
    assert (ours[:, 4] == 0).all() and np.allclose(ours.sum(1), 1)
    small = knn_label_probabilities(reference[:3], codes[:3], query, 4, n_neighbors=15)  # k capped at 3 cells
    assert np.allclose(small.sum(1), 1)


@pytest.mark.slow  # pynndescent is compiled by numba on first use (~30 s idle, minutes on a loaded machine)
def test_approximate_knn_agrees_with_exact_and_is_deterministic():
    from scfm.models.base import knn_label_probabilities

    reference, codes, query = _clusters(3000, 400)
    exact = knn_label_probabilities(reference, codes, query, 4, n_neighbors=15, approximate=False)
    approximate = knn_label_probabilities(reference, codes, query, 4, n_neighbors=15, approximate=True, seed=3)
    again = knn_label_probabilities(reference, codes, query, 4, n_neighbors=15, approximate=True, seed=3)
    np.testing.assert_array_equal(approximate, again)
    assert (approximate.argmax(1) == exact.argmax(1)).mean() > 0.98
    assert np.abs(approximate - exact).mean() < 0.02


def test_recipe_paths_are_relative_to_the_recipe_file_or_given_on_the_command_line(tmp_path, monkeypatch):
    from pathlib import Path

    from scfm.train import PretrainConfig

    folder = tmp_path / "recipes"
    folder.mkdir()
    recipe = folder / "r.yaml"
    text = "output: ../runs/r\ndata: {shards: [../data/*.h5ad], vocab: vocab.json}\nmodel: {family: scgpt}\n"
    recipe.write_text(text)
    monkeypatch.chdir(tmp_path / "recipes")  # any working directory: the recipe decides
    config = PretrainConfig.from_yaml(recipe)
    assert Path(config.output) == (tmp_path / "runs" / "r").resolve()
    assert [Path(s).resolve() for s in config.data.shards] == [(tmp_path / "data" / "*.h5ad").resolve()]
    assert Path(config.data.vocab).resolve() == (folder / "vocab.json").resolve()
    monkeypatch.chdir(tmp_path)
    config = PretrainConfig.from_yaml("recipes/r.yaml", shards=["corpus/a.h5ad"], output="elsewhere")
    assert config.data.shards == [str(tmp_path / "corpus" / "a.h5ad")]
    assert Path(config.output) == (tmp_path / "elsewhere").resolve()
    example = PretrainConfig.from_yaml(Path(__file__).parents[1] / "configs" / "pretrain_example.yaml")
    assert Path(example.data.vocab).is_file()  # the bundled vocabulary, found from the recipe's folder


def test_pretrain_command_line_takes_shards_and_output():
    from scfm.cli import build_parser

    argv = ["pretrain", "--config", "r.yaml", "--shards", "a.h5ad", "b.h5ad", "--output", "o"]
    args = build_parser().parse_args(argv)
    assert args.shards == ["a.h5ad", "b.h5ad"] and args.output == "o"
