"""scfm.models: SCGPTConfig, SCGPT (setup, train, latent, save/load) and checkpoint validation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY

from scfm.models import SCGPT, CheckpointError, SCGPTConfig, bundled_checkpoint_names, load_checkpoint, load_pretrained
from scfm.models.scgpt import TokenizedCellDataset, binning_config

TRAIN_KWARGS = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}


# -- config ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 10, "n_heads": 3}, "not divisible by n_heads"),
        ({"n_bins": 2}, "n_bins must be >= 3"),
        ({"max_len": 1}, "max_len must be >= 2"),
        ({"pad_id": 20}, "outside the vocabulary"),
        ({"cls_id": -1}, "outside the vocabulary"),
        ({"input_style": "binned"}, "input_style"),
        ({"cell_embedding": "max"}, "cell_embedding"),
        ({"family": "geneformer"}, "family"),
    ],
)
def test_config_validation(kwargs, message):
    base = {"n_tokens": 10, "pad_id": 0, "cls_id": 1}
    with pytest.raises(ValueError, match=message):
        SCGPTConfig(**{**base, **kwargs})


def test_config_reports_every_problem():
    with pytest.raises(ValueError, match="invalid SCGPT config") as info:
        SCGPTConfig(n_tokens=10, pad_id=0, cls_id=1, n_bins=1, max_len=0)
    assert "n_bins" in str(info.value)
    assert "max_len" in str(info.value)


def test_config_dict_round_trip_and_unknown_fields():
    config = SCGPTConfig(n_tokens=10, pad_id=0, cls_id=1, d_model=16, n_heads=4, extra={"note": "x"})
    assert SCGPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown fields \['n_experts'\]"):
        SCGPTConfig.from_dict({**config.to_dict(), "n_experts": 4})


# -- model construction, latent ---------------------------------------------------------------
@pytest.fixture
def tiny_model(counts_adata):
    torch.manual_seed(0)
    SCGPT.setup_anndata(counts_adata)
    return SCGPT(counts_adata, **TINY)


def test_model_builds_vocab_from_genes(tiny_model, counts_adata):
    assert len(tiny_model.vocab) == counts_adata.n_vars + 4  # four special tokens
    assert tiny_model.alignment.n_matched == counts_adata.n_vars
    assert tiny_model.config.d_model == 32
    assert tiny_model.config.max_len == 64


def test_config_vocab_size_mismatch_rejected(tiny_model, counts_adata):
    config = SCGPTConfig(**{**tiny_model.config.to_dict(), "n_tokens": tiny_model.config.n_tokens + 1})
    with pytest.raises(ValueError, match=r"config does not fit the vocabulary: config\.json says n_tokens=305"):
        SCGPT(counts_adata, vocab=tiny_model.vocab, config=config)


def test_setup_anndata_rejects_negative_values(counts_adata):
    counts_adata.X.data[0] = -1.0
    with pytest.raises(ValueError, match="negative values"):
        SCGPT.setup_anndata(counts_adata)


def test_setup_anndata_rejects_missing_keys(counts_adata):
    with pytest.raises(KeyError, match="batch_key='nope'"):
        SCGPT.setup_anndata(counts_adata, batch_key="nope")
    with pytest.raises(KeyError, match="gene_key='nope'"):
        SCGPT.setup_anndata(counts_adata, gene_key="nope")


def test_latent_representation_shape_norm_and_indices(tiny_model, counts_adata):
    full = tiny_model.get_latent_representation(device="cpu")
    assert full.shape == (counts_adata.n_obs, 32)
    assert full.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    indices = np.array([17, 3, 99, 3, 0, 119])
    part = tiny_model.get_latent_representation(indices=indices, device="cpu")
    assert part.shape == (len(indices), 32)
    np.testing.assert_allclose(part, full[indices], atol=1e-6, rtol=0)


def test_latent_representation_independent_of_batch_size(tiny_model):
    a = tiny_model.get_latent_representation(batch_size=5, device="cpu")
    b = tiny_model.get_latent_representation(batch_size=64, device="cpu")
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


# -- save / load ----------------------------------------------------------------------------------
def test_save_load_round_trip(tiny_model, _counts_template, tmp_path):
    expected = tiny_model.get_latent_representation(device="cpu")
    path = tiny_model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "model_card.md",
        "setup.json",
        "vocab.json",
    ]
    other = _counts_template.copy()  # same cells, never registered
    loaded = SCGPT.load(path, other)
    assert loaded.is_trained_
    assert loaded.checkpoint_name == "ckpt"
    assert len(loaded.checkpoint_sha256) == 64
    assert loaded.config == tiny_model.config
    np.testing.assert_array_equal(loaded.get_latent_representation(device="cpu"), expected)


def test_save_refuses_to_overwrite(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_model.save(path)
    tiny_model.save(path, overwrite=True)
    assert (path / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".ckpt*"))  # no staging or backup directory left behind


def test_save_half_precision_loads_as_float32(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "half", half_precision=True)
    checkpoint = load_checkpoint(path)
    weight = checkpoint.state_dict["gene_embedding.embedding.weight"]
    assert weight.dtype == torch.float32
    original = tiny_model.module.state_dict()["gene_embedding.embedding.weight"]
    torch.testing.assert_close(weight, original, atol=1e-2, rtol=1e-3)


def test_from_pretrained_needs_adata(tiny_checkpoint):
    with pytest.raises(ValueError, match="needs the AnnData"):
        SCGPT.from_pretrained(tiny_checkpoint)


# -- checkpoint validation ---------------------------------------------------------------------
@pytest.fixture
def ckpt_copy(tiny_checkpoint, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, target)
    return target


def test_load_checkpoint_contents(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint.family == "scgpt"
    assert checkpoint.name == tiny_checkpoint.name
    assert len(checkpoint.vocab) == checkpoint.config["n_tokens"] == 304
    assert len(checkpoint.sha256) == 64
    assert "scfm SCGPT checkpoint" in checkpoint.model_card


@pytest.mark.parametrize("missing", ["config.json", "vocab.json", "model.safetensors", "model_card.md"])
def test_load_checkpoint_missing_file(ckpt_copy, missing):
    (ckpt_copy / missing).unlink()
    with pytest.raises(CheckpointError, match=f"is missing {missing}"):
        load_checkpoint(ckpt_copy)


def test_load_checkpoint_corrupted_weights(ckpt_copy):
    (ckpt_copy / "model.safetensors").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(ckpt_copy)


def test_load_checkpoint_truncated_weights(ckpt_copy):
    data = (ckpt_copy / "model.safetensors").read_bytes()
    (ckpt_copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(ckpt_copy)


def test_load_checkpoint_invalid_json(ckpt_copy):
    (ckpt_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(ckpt_copy)


def test_load_checkpoint_json_not_an_object(ckpt_copy):
    (ckpt_copy / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        load_checkpoint(ckpt_copy)


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_config_d_model_not_matching_weights(ckpt_copy):
    _edit_config(ckpt_copy, d_model=64)
    load_checkpoint(ckpt_copy)  # the directory itself is readable ...
    with pytest.raises(CheckpointError, match="shape mismatches") as info:  # ... but the weights do not fit
        load_pretrained(ckpt_copy)
    message = str(info.value)
    assert "(file vs config)" in message
    assert "(32, 32) vs (64, 64)" in message  # a 32-wide tensor in the file where the config wants 64


def test_config_n_layers_not_matching_weights(ckpt_copy):
    _edit_config(ckpt_copy, n_layers=3)
    with pytest.raises(CheckpointError, match=r"missing tensors \['transformer.layers.2"):
        load_pretrained(ckpt_copy)


def test_config_vocab_size_not_matching_vocab(ckpt_copy):
    _edit_config(ckpt_copy, n_tokens=305)
    with pytest.raises(CheckpointError, match=r"n_tokens=305 but vocab\.json has 304 tokens"):
        load_pretrained(ckpt_copy)


def test_config_of_another_family(ckpt_copy):
    _edit_config(ckpt_copy, n_experts=2)
    with pytest.raises(CheckpointError, match="not a valid SCGPT config"):
        load_pretrained(ckpt_copy)


def test_load_checkpoint_file_instead_of_directory(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(tiny_checkpoint / "model.safetensors")


def test_load_checkpoint_nonexistent_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at") as info:
        load_checkpoint(tmp_path / "nowhere")
    for name in bundled_checkpoint_names():
        assert name in str(info.value)
    assert "default" in bundled_checkpoint_names()


def test_load_pretrained_is_eval_and_matches_files(tiny_checkpoint):
    pretrained = load_pretrained(tiny_checkpoint)
    assert not pretrained.module.training
    assert pretrained.sha256 == load_checkpoint(tiny_checkpoint).sha256
    assert pretrained.module.config.d_model == 32


# -- training --------------------------------------------------------------------------------------
def test_train_loss_decreases(tiny_model):
    before = tiny_model.get_latent_representation(device="cpu")
    tiny_model.train(max_epochs=5, lr=3e-3, batch_size=32, warmup_steps=2, seed=0, **TRAIN_KWARGS)
    history = tiny_model.history
    assert {"train_loss", "train_gep", "train_gepc", "train_gepc_zero"} <= set(history)
    loss = history["train_loss"].to_numpy(dtype=float).ravel()
    assert len(loss) == 5
    assert np.all(np.isfinite(loss))
    assert loss[-1] < loss[0]
    assert tiny_model.is_trained_
    after = tiny_model.get_latent_representation(device="cpu")
    assert not np.allclose(before, after, atol=1e-3)  # training changed the weights


def test_train_generative_mode(tiny_model):
    tiny_model.train(max_epochs=1, mode="generative", lr=3e-3, warmup_steps=1, **TRAIN_KWARGS)
    loss = tiny_model.history["train_loss"].to_numpy(dtype=float).ravel()
    assert len(loss) == 1
    assert np.isfinite(loss[0])
    assert loss[0] > 0


def test_train_rejects_bad_mode(tiny_model):
    with pytest.raises(ValueError, match="mode must be"):
        tiny_model.train(max_epochs=1, mode="causal", **TRAIN_KWARGS)


def _add_datasets(adata):
    adata.obs["dataset"] = np.where(np.arange(adata.n_obs) % 2 == 0, "a", "b")
    adata.var["measured_in:a"] = True
    adata.var["measured_in:b"] = np.arange(adata.n_vars) < adata.n_vars // 2


def test_train_with_measured_key(counts_adata):
    _add_datasets(counts_adata)
    SCGPT.setup_anndata(counts_adata)
    model = SCGPT(counts_adata, **TINY)
    model.train(max_epochs=1, measured_key="dataset", lr=3e-3, warmup_steps=1, **TRAIN_KWARGS)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()


def test_measured_sets_limit_zero_targets(counts_adata):
    _add_datasets(counts_adata)
    SCGPT.setup_anndata(counts_adata)
    model = SCGPT(counts_adata, **TINY)
    column_token_ids = model.alignment.column_token_ids()
    groups, measured = model._measured_sets("dataset", column_token_ids)
    np.testing.assert_array_equal(groups, np.arange(counts_adata.n_obs) % 2)
    assert len(measured[0]) == counts_adata.n_vars
    np.testing.assert_array_equal(np.sort(measured[1]), np.sort(column_token_ids[: counts_adata.n_vars // 2]))
    dataset = TokenizedCellDataset(
        counts_adata.X.tocsr(),
        column_token_ids,
        cls_id=model.config.cls_id,
        config=binning_config(model.config),
        rows=np.arange(counts_adata.n_obs),
        measured_groups=groups,
        measured_token_ids=measured,
    )
    allowed_b = set(measured[1].tolist())
    for row in (1, 3, 5):  # cells of dataset "b"
        cell = dataset[row]
        assert len(cell.zero_gene_ids) > 0
        assert set(cell.zero_gene_ids.tolist()) <= allowed_b
        assert not set(cell.zero_gene_ids.tolist()) & set(cell.tokens.gene_ids.tolist())


def test_measured_key_missing_mask_column(counts_adata):
    _add_datasets(counts_adata)
    del counts_adata.var["measured_in:b"]
    SCGPT.setup_anndata(counts_adata)
    model = SCGPT(counts_adata, **TINY)
    with pytest.raises(KeyError, match="measured_in:b"):
        model.train(max_epochs=1, measured_key="dataset", **TRAIN_KWARGS)


def test_measured_key_missing_obs_column(tiny_model):
    with pytest.raises(KeyError, match=r"not a column of adata\.obs"):
        tiny_model.train(max_epochs=1, measured_key="dataset", **TRAIN_KWARGS)


def test_train_after_inference_runs_in_train_mode(tiny_model, monkeypatch):
    tiny_model.get_latent_representation(device="cpu")  # leaves the module in eval mode
    modes = []
    encode = type(tiny_model.module).encode

    def spy(self, *args, **kwargs):
        modes.append(self.training)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_model.module), "encode", spy)
    tiny_model.train(max_epochs=1, lr=3e-3, warmup_steps=1, **TRAIN_KWARGS)
    assert modes
    assert all(modes)


def test_from_pretrained_on_copy_of_registered_adata(tiny_checkpoint, counts_adata):
    SCGPT.setup_anndata(counts_adata)
    copied = counts_adata.copy()
    model = SCGPT.from_pretrained(tiny_checkpoint, copied)
    assert model.adata is copied
    assert model.get_latent_representation().shape[0] == copied.n_obs
