"""``scfm pretrain``: config validation, DDP on 2 gloo processes, kill + resume, export to SCGPT / tl.embed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_streaming import write_shard

from scfm.cli import main
from scfm.models import SCGPT
from scfm.models.scgpt import SCGPTObjectives, SCGPTPretrainRecipe
from scfm.train import (
    PretrainConfig,
    checkpoint_files,
    export_run,
    get_recipe,
    pretrain,
    register_recipe,
    registered_recipes,
    schedule_steps,
)
from scfm.train import _recipe as recipe_module
from scfm.train._pretrain import load_sources

REPO = Path(__file__).resolve().parents[1]


def recipe(shards: list[Path], output: Path, **overrides) -> dict:
    config = {
        "output": str(output),
        "data": {
            "shards": [str(p) for p in shards],
            "batch_size": 8,
            "block_size": 16,
            "buffer_blocks": 2,
            "min_genes": 10,
        },
        "model": {
            "max_len": 24,
            "architecture": {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_hidden": 32, "dropout": 0.0, "n_bins": 11},
        },
        "optimizer": {"lr": 3e-3, "warmup_steps": 5},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 5, "progress_bar": False},
        "checkpoint": {"every_n_steps": 5, "keep_last": 3},
        "trace_cells": True,
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            config[section] = {**config.get(section, {}), **values}
        else:
            config[section] = values
    return config


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("pretrain_shards")
    paths = [root / f"part{i}.h5ad" for i in range(3)]
    for i, path in enumerate(paths):
        write_shard(path, [120, 96, 80][i], 10 + i)
    return paths


def run_cli(
    config: dict, tmp_path: Path, *args: str, script: str | None = None, torchrun: int = 0
) -> subprocess.CompletedProcess:
    path = tmp_path / f"recipe_{len(list(tmp_path.glob('recipe_*')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    command = (
        [sys.executable, "-c", script, str(path)]
        if script
        else [*launcher, "-m", "scfm.cli", "pretrain", "--config", str(path), *args]
    )
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def trace(output: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p).assign(rank=int(p.stem[4:])) for p in sorted((output / "trace").glob("rank*.csv"))]
    return pd.concat(frames, ignore_index=True)


def logged(output: Path, column: str) -> np.ndarray:
    frames = [pd.read_csv(p) for p in sorted((output / "logs").glob("version_*/metrics.csv"))]
    values = pd.concat(frames)[column].dropna()
    return values.to_numpy()


# -- config ----------------------------------------------------------------------------------------------------------
def test_config_errors_name_the_problem(tmp_path, shards):
    with pytest.raises(ValueError, match="unknown config sections"):
        PretrainConfig.from_dict({"output": "x", "optimiser": {}})
    with pytest.raises(ValueError, match="unknown keys \\['batchsize'\\] in config section 'data'"):
        PretrainConfig.from_dict({"output": "x", "data": {"batchsize": 3}})
    with pytest.raises(ValueError, match="shards"):
        PretrainConfig.from_dict({"output": "x"})
    with pytest.raises(ValueError, match="strategy"):
        PretrainConfig.from_dict(recipe(shards, tmp_path, trainer={"strategy": "horovod"}))
    with pytest.raises(ValueError, match=r"'geneformer' is not supported by scfm pretrain.*registered: \[.*'scgpt'"):
        pretrain(recipe(shards, tmp_path, model={"family": "geneformer"}))
    with pytest.raises(ValueError, match="unknown keys \\['maskratio'\\] in config section 'objectives'"):
        pretrain(recipe(shards, tmp_path, objectives={"maskratio": 0.3}))
    with pytest.raises(ValueError, match=r"objectives\.mode must be"):
        pretrain(recipe(shards, tmp_path, objectives={"mode": "bert"}))
    with pytest.raises(ValueError, match=r"config's model\.family is 'tgpt'"):
        pretrain(recipe(shards, tmp_path, model={"family": "tgpt"}), recipe=SCGPTPretrainRecipe())
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        pretrain(recipe(shards, tmp_path / "empty"), resume=True)


def test_recipes_come_from_the_registry_or_entry_points(monkeypatch):
    assert isinstance(get_recipe("scgpt"), SCGPTPretrainRecipe)
    bound = PretrainConfig.from_dict({"output": "x", "data": {"shards": ["a.h5ad"]}}).bind(get_recipe("scgpt"))
    assert bound.objectives == SCGPTObjectives() and bound.to_dict()["objectives"]["mask_ratio"] == 0.4

    class Toy(SCGPTPretrainRecipe):
        family = "toy"

    class Entry:
        name = "toy"

        def load(self):
            return Toy()

    def fake_entry_points(group):
        return [Entry()] if group == "scfm.pretrain_recipes" else []

    monkeypatch.setattr(recipe_module, "entry_points", fake_entry_points)
    monkeypatch.setattr(recipe_module, "_RECIPES", dict(recipe_module._RECIPES))
    assert isinstance(get_recipe("toy"), Toy) and {"scgpt", "toy"} <= set(registered_recipes())
    assert register_recipe(Toy()) is get_recipe("toy")  # a registration replaces the family's recipe


# -- one process: train, export, load --------------------------------------------------------------------------------
def test_pretrain_exports_a_checkpoint_that_scgpt_and_embed_load(tmp_path, shards, caplog):
    output = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="scfm.train"):
        result = pretrain(recipe(shards, output))
    assert "frozen (no objective uses them): " in caplog.text  # masked-value GEP never uses the zero head
    assert result.export == output / "export"
    assert {p.name for p in result.export.iterdir()} >= {"config.json", "vocab.json", "model.safetensors"}
    losses = logged(output, "train_loss_step")
    assert losses[-3:].mean() < 0.8 * losses[:3].mean()
    assert logged(output, "tokens_per_s").min() > 0

    adata = ad.read_h5ad(shards[0])
    model = SCGPT.from_pretrained(str(result.export), adata, min_genes=10)
    latent = model.get_latent_representation()
    assert latent.shape == (adata.n_obs, 16) and np.isfinite(latent).all()
    import scfm

    scfm.tl.embed(adata, model=str(result.export), key_added="X_pre", min_genes=10)
    assert np.allclose(adata.obsm["X_pre"], latent, atol=1e-5)

    cells = trace(output)
    for _, epoch in cells.groupby("epoch"):
        assert not epoch.duplicated(["source", "row"]).any()

    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(recipe(shards, output))
    with pytest.raises(ValueError, match="cannot resume"):
        pretrain(recipe(shards, output, data={"batch_size": 4}), resume=True)
    exported = export_run(output, tmp_path / "again", checkpoint=checkpoint_files(output / "checkpoints")[0])
    assert (exported / "model_card.md").read_text().startswith("# scfm SCGPT checkpoint pretrained")
    assert main(["export", str(output), str(tmp_path / "cli_export")]) == 0
    assert SCGPT.from_pretrained(str(tmp_path / "cli_export"), adata, min_genes=10) is not None
    assert main(["export", str(tmp_path), str(tmp_path / "nothing")]) == 2

    continued = recipe(shards, tmp_path / "continued", model={"init_from": str(result.export), "architecture": {}})
    continued["trainer"] = {**continued["trainer"], "max_epochs": 1, "max_steps": 4, "log_every_n_steps": 2}
    again = pretrain(continued)
    first_loss = logged(tmp_path / "continued", "train_loss_step")[0]
    assert first_loss < 0.9 * losses[0]  # starts from the pretrained weights, not from scratch
    assert (again.export / "vocab.json").read_text() == (result.export / "vocab.json").read_text()

    last = checkpoint_files(output / "checkpoints")[-1]
    torch.save({"state_dict": {}, "payload": PickledPayload()}, last)  # a checkpoint holding a pickled object
    with pytest.raises(ValueError, match=r"not an scfm training checkpoint.*nothing was executed"):
        pretrain(recipe(shards, output), resume=True)
    assert main(["export", str(output), str(tmp_path / "pickled_export")]) == 2
    assert not PickledPayload.unpickled


class PickledPayload:
    """An object whose unpickling would be noticed."""

    unpickled = False

    def __init__(self) -> None:
        self.marker = 1

    def __setstate__(self, state) -> None:
        PickledPayload.unpickled = True


def test_gradient_accumulation_and_bf16_autocast(tmp_path, shards):
    overrides = {"accumulate_grad_batches": 3, "max_epochs": 1, "precision": "bf16-mixed"}
    config = PretrainConfig.from_dict(recipe(shards, tmp_path / "accumulate", trainer=overrides), base_dir=tmp_path)
    result = pretrain(config)
    assert np.isfinite(logged(Path(config.output), "train_loss_step")).all()
    batches = trace(Path(config.output)).groupby("batch").ngroups
    assert result.global_step == schedule_steps(config, load_sources(config), 1) == -(-batches // 3)


# -- DDP: 2 gloo processes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("launcher", "workers"), [("lightning", 0), ("torchrun", 2)])
def test_ddp_two_processes_read_disjoint_cells_and_learn(tmp_path, shards, launcher, workers):
    output = tmp_path / "ddp"
    config = recipe(
        shards, output, trainer={"devices": 2, "strategy": "ddp", "max_epochs": 3}, data={"num_workers": workers}
    )
    done = run_cli(config, tmp_path, torchrun=2 if launcher == "torchrun" else 0)
    assert done.returncode == 0, done.stderr[-3000:]
    cells = trace(output)
    assert set(cells["rank"]) == {0, 1}
    for _, epoch in cells.groupby("epoch"):
        by_rank = [set(zip(g["source"], g["row"], strict=True)) for _, g in epoch.groupby("rank")]
        assert not by_rank[0] & by_rank[1]
        assert len(epoch) == len(by_rank[0]) + len(by_rank[1])  # nothing twice within a rank either
        assert len(by_rank[0]) == len(by_rank[1])
    losses = logged(output, "train_loss_step")
    assert losses[-3:].mean() < 0.8 * losses[:3].mean()
    adata = ad.read_h5ad(shards[1])
    model = SCGPT.from_pretrained(str(output / "export"), adata, min_genes=10)
    assert np.isfinite(model.get_latent_representation()).all()


# -- kill, resume --------------------------------------------------------------------------------------------------
KILL_AT_STEP = textwrap.dedent(
    """
    import os, signal, sys
    from lightning.pytorch import Callback
    import scfm.models  # registers the families' pretraining recipes
    from scfm.train import PretrainConfig, pretrain

    class KillAfter(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 13:
                os.kill(os.getpid(), signal.SIGKILL)

    pretrain(PretrainConfig.from_yaml(sys.argv[1]), callbacks=[KillAfter()])
    """
)


def test_killed_run_resumes_where_its_checkpoint_left_off(tmp_path, shards):
    uninterrupted = tmp_path / "whole"
    assert pretrain(recipe(shards, uninterrupted)).global_step > 13
    output = tmp_path / "killed"
    config = recipe(shards, output)
    killed = run_cli(config, tmp_path, script=KILL_AT_STEP)
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = checkpoint_files(output / "checkpoints")[-1]
    assert last.name == "step-00000010.ckpt"
    assert not list((output / "checkpoints").glob(".*tmp"))
    state = torch.load(last, map_location="cpu", weights_only=True)
    position = state["StreamingDataModule"]
    assert (position["epoch"], position["batches_done"]) == (0, 10)

    first_run = trace(output)
    resumed = run_cli(config, tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(checkpoint_files(output / "checkpoints")[-1], map_location="cpu", weights_only=True)
    reference = torch.load(checkpoint_files(uninterrupted / "checkpoints")[-1], map_location="cpu", weights_only=True)
    assert final["global_step"] == reference["global_step"]
    adam = final["optimizer_states"][0]["state"]
    assert {int(s["step"]) for s in adam.values()} == {reference["global_step"]}
    for key, value in reference["state_dict"].items():
        assert torch.allclose(final["state_dict"][key], value, atol=1e-5), key

    second_run = trace(output).iloc[len(first_run) :]
    kept = first_run[first_run["batch"] < position["batches_done"]]
    trained = pd.concat([kept, second_run])[["epoch", "batch", "source", "row"]].reset_index(drop=True)
    expected = trace(uninterrupted)[["epoch", "batch", "source", "row"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(trained, expected)
    for _, epoch in trained.groupby("epoch"):
        assert not epoch.duplicated(["source", "row"]).any()
