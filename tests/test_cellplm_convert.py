"""Import of reference CellPLM checkpoints from synthetic state dicts with the reference's names and shapes.

The key table below is written from the reference source (``cellplm`` 0.1.0.post2): ``model/cellformer.py``
(``OmicsFormer``), ``embedder/omics.py``, ``layer/flowformer.py``, ``latent/autoencoders.py`` and
``decoder/zinb.py``. Values are random. Numerical parity with the reference package itself is
``benchmarks/peers/cellplm_parity.py``.
"""

from __future__ import annotations

import argparse
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scfm.cli import main as cli_main
from scfm.models import CheckpointError, load_checkpoint, load_pretrained
from scfm.models.cellplm import (
    CellPLM,
    CellPLMModule,
    convert_reference_state_dict,
    write_converted_cellplm,
)

GENES = [f"GENE{i}" for i in range(80)]
D, HEADS, LAYERS, LATENT, CLUSTERS, DEC_HID, DEC_LAYERS = 16, 4, 2, 8, 3, 12, 3


def reference_config(**changes) -> dict:
    """A released-style ``{prefix}.config.json``: OmicsFormer keyword arguments with the gene list."""
    config = {
        "enc_mod": "flowformer",
        "enc_hid": D,
        "enc_layers": LAYERS,
        "enc_head": HEADS,
        "post_latent_dim": LATENT,
        "dec_mod": "nbmlp",
        "dec_hid": DEC_HID,
        "dec_layers": DEC_LAYERS,
        "out_dim": len(GENES),
        "latent_mod": "gmvae",
        "num_clusters": CLUSTERS,
        "model_dropout": 0.2,
        "norm": "layernorm",
        "pe_type": "sin",
        "cat_pe": False,
        "head_type": None,
        "batch_num": 0,
        "dataset_num": 0,
        "platform_num": 0,
        "mask_node_rate": 0.75,
        "mask_feature_rate": 0.25,
        "gene_list": list(GENES),
    }
    config.update(changes)
    return config


def reference_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """``OmicsFormer(**config).state_dict()`` names and shapes for Flowformer / gmvae / nbmlp.

    The norm (layernorm or groupnorm) has the same tensors either way. With ``batch_num``, ``dataset_num`` or
    ``platform_num`` > 0, ``NBMLPDecoder`` holds ``covariate_layers.{i}.{cov}`` = Embedding, PReLU, norm.
    """
    d, n = config["enc_hid"], len(config["gene_list"])
    k, z, h = config["num_clusters"], config["post_latent_dim"], config["dec_hid"]
    shapes = {
        # OmicsEmbeddingLayer: norm0 (unused), extra_linear = Linear, ReLU, Dropout, LayerNorm; Sinusoidal2dPE
        "embedder.norm0.weight": (d,),
        "embedder.norm0.bias": (d,),
        "embedder.extra_linear.0.weight": (d, d),
        "embedder.extra_linear.0.bias": (d,),
        "embedder.extra_linear.3.weight": (d,),
        "embedder.extra_linear.3.bias": (d,),
        "embedder.pe_enc.missing_pe": (d,),
        "embedder.pe_enc.pe_enc.weight": (100 * 100, d),
        "embedder.feat_enc.emb": (n, d),
    }
    for i in range(config["enc_layers"]):  # FlowformerLayer: Flow_Attention, _ff_block (d -> 2d -> d), 2 norms
        p = f"encoder.layers.{i}."
        for proj in ("query", "key", "value", "out"):
            shapes[f"{p}self_attn.{proj}_projection.weight"] = (d, d)
            shapes[f"{p}self_attn.{proj}_projection.bias"] = (d,)
        shapes.update({f"{p}_ff_block.0.weight": (2 * d, d), f"{p}_ff_block.0.bias": (2 * d,)})
        shapes.update({f"{p}_ff_block.3.weight": (d, 2 * d), f"{p}_ff_block.3.bias": (d,)})
        for norm in ("norm1", "norm2"):
            shapes.update({f"{p}{norm}.weight": (d,), f"{p}{norm}.bias": (d,)})
    g = "latent.layers.1.inference."  # LatentModel: layers.0 is a placeholder; GMVAELatentLayer.InferenceNet
    for name, shape in {
        "inference_qyx.0.logits": (k, d),
        "inference_qzyx.0": (512, d + k),
        "inference_qzyx.2.mu": (z, 512),
        "inference_qzyx.2.var": (z, 512),
        "y_mu": (z, k),
        "y_var": (z, k),
    }.items():
        shapes.update({f"{g}{name}.weight": shape, f"{g}{name}.bias": shape[:1]})
    for i in range(config["dec_layers"] - 1):  # NBMLPDecoder: Linear, PReLU, Dropout, LayerNorm; NB out_layer
        p = f"decoder.layers.{i}."
        shapes.update({f"{p}0.weight": (h, z if i == 0 else h), f"{p}0.bias": (h,), f"{p}1.weight": (1,)})
        shapes.update({f"{p}3.weight": (h,), f"{p}3.bias": (h,)})
        for cov in ("batch", "dataset", "platform"):
            if config.get(f"{cov}_num", 0) > 0:
                c = f"decoder.covariate_layers.{i}.{cov}."
                shapes.update({f"{c}0.weight": (config[f"{cov}_num"], h), f"{c}1.weight": (1,)})
                shapes.update({f"{c}2.weight": (h,), f"{c}2.bias": (h,)})
    shapes.update(
        {
            "decoder.out_layer.dec_disp": (config["out_dim"],),
            "decoder.out_layer.dec_1.weight": (128, h),
            "decoder.out_layer.dec_1.bias": (128,),
            "decoder.out_layer.dec_mean.0.weight": (config["out_dim"], 128),
            "decoder.out_layer.dec_mean.0.bias": (config["out_dim"],),
            "pre_latent_norm.norm.weight": (d,),
            "pre_latent_norm.norm.bias": (d,),
        }
    )
    return shapes


def random_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=generator) * 0.3 for k, shape in reference_shapes(config).items()}


def write_reference(path, config: dict, state_dict: dict) -> tuple:
    path.mkdir(parents=True, exist_ok=True)
    config_file, ckpt_file = path / "tiny.config.json", path / "tiny.best.ckpt"
    config_file.write_text(json.dumps(config))
    torch.save({"model_state_dict": state_dict}, ckpt_file)
    return config_file, ckpt_file


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    config, state = reference_config(), random_state_dict(reference_config())
    config_file, ckpt_file = write_reference(tmp_path_factory.mktemp("cellplm_ref"), config, state)
    return config, state, config_file, ckpt_file


def counts_adata(n_cells: int = 30, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n_cells, len(GENES))).astype(np.float32)
    obs = pd.DataFrame({"sample": ["s1"] * (n_cells // 2) + ["s2"] * (n_cells - n_cells // 2)})
    obs.index = [f"cell{i}" for i in range(n_cells)]
    return ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=GENES))


def test_every_tensor_lands_where_it_should(reference):
    config, state, _, _ = reference
    scfm_config, vocab, mapped = convert_reference_state_dict(config, state)
    expected = CellPLMModule(scfm_config).state_dict()
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    torch.testing.assert_close(mapped["gene_embedding"], state["embedder.feat_enc.emb"], rtol=0, atol=0)
    for i in range(LAYERS):
        ref, ours = f"encoder.layers.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            qkv = torch.cat([state[f"{ref}self_attn.{p}_projection.{kind}"] for p in ("query", "key", "value")])
            torch.testing.assert_close(mapped[f"{ours}self_attn.in_proj.{kind}"], qkv, rtol=0, atol=0)
            pairs = {
                "self_attn.out_projection": "self_attn.out_proj",
                "_ff_block.0": "linear1",
                "_ff_block.3": "linear2",
                "norm1": "norm1",
                "norm2": "norm2",
            }
            for src, dst in pairs.items():
                assert torch.equal(mapped[f"{ours}{dst}.{kind}"], state[f"{ref}{src}.{kind}"])
    g = "latent.layers.1.inference."
    pairs = {
        "embedder.extra_linear.0.weight": "input_projection.0.weight",
        "embedder.extra_linear.3.bias": "input_projection.3.bias",
        "pre_latent_norm.norm.weight": "encoder.final_norm.weight",
        f"{g}inference_qyx.0.logits.weight": "latent.component_logits.weight",
        f"{g}inference_qzyx.0.weight": "latent.posterior_hidden.weight",
        f"{g}inference_qzyx.2.mu.bias": "latent.posterior_mean.bias",
        f"{g}inference_qzyx.2.var.weight": "latent.posterior_var.weight",
        f"{g}y_mu.weight": "latent.prior_mean.weight",
        f"{g}y_var.bias": "latent.prior_var.bias",
        "decoder.layers.0.1.weight": "decoder.layers.0.1.weight",
        "decoder.layers.1.3.weight": "decoder.layers.1.3.weight",
        "decoder.out_layer.dec_1.weight": "decoder.bottleneck.weight",
        "decoder.out_layer.dec_mean.0.bias": "decoder.gene_logits.bias",
        "decoder.out_layer.dec_disp": "decoder.log_theta",
    }
    for src, dst in pairs.items():
        assert torch.equal(mapped[dst], state[src]), dst
    assert vocab.specials == ["<pad>", "<cls>"] and vocab[GENES[0]] == scfm_config.first_gene_id == 2
    assert scfm_config.extra["dropped"] == sorted(
        k for k in state if k.startswith(("embedder.pe_enc.", "embedder.norm0."))
    )


def test_config_follows_the_reference(reference):
    config, state, _, _ = reference
    c, _, _ = convert_reference_state_dict(config, state)
    assert (c.n_genes, c.first_gene_id, c.d_model, c.n_heads, c.n_layers, c.d_hidden) == (
        80,
        2,
        D,
        HEADS,
        LAYERS,
        2 * D,
    )
    assert (c.attention, c.positional_encoding, c.normalize_total, c.dropout) == ("flow", "none", None, 0.2)
    assert (c.latent_dim, c.n_components, c.latent_hidden) == (LATENT, CLUSTERS, 512)
    assert (c.decoder_hidden, c.decoder_layers, c.decoder_bottleneck) == (DEC_HID, DEC_LAYERS, 128)
    assert (c.mask_cell_rate, c.mask_gene_rate) == (0.75, 0.25)
    assert c.extra["converted_from"] == "cellplm" and "gene_list" not in c.extra["reference_config"]


def test_write_load_embed(reference, tmp_path):
    _, state, config_file, ckpt_file = reference
    out = write_converted_cellplm(config_file, ckpt_file, tmp_path / "converted")
    checkpoint = load_checkpoint(out)
    assert checkpoint.family == "cellplm" and len(checkpoint.config["extra"]["source_sha256"]) == 64
    assert "tiny.best.ckpt" in checkpoint.model_card and "embedder.pe_enc.missing_pe" in checkpoint.model_card
    pretrained = load_pretrained(out, family="cellplm")
    module = pretrained.module
    torch.testing.assert_close(module.gene_embedding.detach(), state["embedder.feat_enc.emb"], rtol=0, atol=0)
    features = module.cell_features(module.transform(torch.poisson(torch.full((12, len(GENES)), 2.0))))
    latent = module.embed_sentence(features)
    assert latent.shape == (12, LATENT) and torch.isfinite(latent).all()
    # the posterior mean of the arg-max component, from the reference tensors by hand
    hidden = module.encode(features)
    g = "latent.layers.1.inference."
    y = torch.nn.functional.one_hot(
        (hidden @ state[f"{g}inference_qyx.0.logits.weight"].T + state[f"{g}inference_qyx.0.logits.bias"]).argmax(-1),
        CLUSTERS,
    ).float()
    q = torch.relu(
        torch.cat([hidden, y], -1) @ state[f"{g}inference_qzyx.0.weight"].T + state[f"{g}inference_qzyx.0.bias"]
    )
    mean = q @ state[f"{g}inference_qzyx.2.mu.weight"].T + state[f"{g}inference_qzyx.2.mu.bias"]
    torch.testing.assert_close(latent, mean, atol=1e-5, rtol=1e-5)
    with pytest.raises(FileExistsError):
        write_converted_cellplm(config_file, ckpt_file, out)
    write_converted_cellplm(config_file, ckpt_file, out, overwrite=True)


def test_converted_checkpoint_in_the_model_class(reference, tmp_path):
    _, _, config_file, ckpt_file = reference
    out = write_converted_cellplm(config_file, ckpt_file, tmp_path / "converted")
    adata = counts_adata()
    model = CellPLM.from_pretrained(out, adata, sample_key="sample")
    latent = model.get_latent_representation()
    assert latent.shape == (adata.n_obs, LATENT) and np.isfinite(latent).all()


def test_cli_convert(reference, tmp_path, capsys):
    _, _, config_file, ckpt_file = reference
    assert cli_main(["convert", "cellplm", str(config_file), str(ckpt_file), str(tmp_path / "out")]) == 0
    assert "wrote scfm checkpoint" in capsys.readouterr().out
    assert load_pretrained(tmp_path / "out", family="cellplm").module.config.attention == "flow"
    assert cli_main(["convert", "cellplm", str(config_file), str(ckpt_file), str(tmp_path / "out")]) == 2
    assert cli_main(["convert", "cellplm", str(tmp_path / "no.json"), str(ckpt_file), str(tmp_path / "o2")]) == 2
    assert "no CellPLM config" in capsys.readouterr().err


def test_missing_and_unexpected_tensors_are_listed(reference):
    config, state, _, _ = reference
    broken = dict(state)
    del broken["encoder.layers.1.self_attn.key_projection.bias"]
    broken["latent.layers.2.something.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        convert_reference_state_dict(config, broken)
    assert "missing tensors ['encoder.layers.1.self_attn.key_projection.bias']" in str(err.value)
    assert "unexpected tensors ['latent.layers.2.something.weight']" in str(err.value)


def test_shape_mismatch_is_named(reference):
    config, state, _, _ = reference
    broken = dict(state, **{"decoder.out_layer.dec_disp": torch.zeros(79)})
    with pytest.raises(CheckpointError, match=r"decoder\.out_layer\.dec_disp \(79,\) vs \(80,\)"):
        convert_reference_state_dict(config, broken)


def test_ddp_prefix_is_stripped(reference):
    config, state, _, _ = reference
    _, _, mapped = convert_reference_state_dict(config, {f"module.{k}": v for k, v in state.items()})
    assert torch.equal(mapped["gene_embedding"], state["embedder.feat_enc.emb"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latent_mod": "vae"}, r"latent_mod='vae'"),
        ({"dec_mod": "mlp"}, r"dec_mod='mlp'"),
        ({"enc_mod": "transformer"}, r"RMSNorm"),
        ({"enc_mod": "performer"}, r"enc_mod='performer'"),
        ({"norm": "batchnorm"}, r"norm='batchnorm'"),
        ({"norm": "rmsnorm"}, r"norm='rmsnorm'"),
        ({"norm": None}, r"norm=None"),
        ({"head_type": "annotation"}, r"fine-tuned"),
        ({"dsbn": True}, r"dsbn"),
        ({"cat_pe": True}, r"cat_pe=true"),
        ({"input_covariate": True, "batch_num": 5}, r"input_covariate=true"),
        ({"batch_num": -1}, r"batch_num=-1"),
        ({"out_dim": 70}, r"out_dim=70"),
    ],
)
def test_unsupported_settings_are_refused(reference, changes, message):
    _, state, _, _ = reference
    with pytest.raises(CheckpointError, match=message):
        convert_reference_state_dict(reference_config(**changes), state)


def test_defaults_of_the_reference_apply():
    config = reference_config()
    del config["cat_pe"]  # OmicsFormer's default cat_pe=True with pe_type='sin'
    with pytest.raises(CheckpointError, match=r"cat_pe=true"):
        convert_reference_state_dict(config, random_state_dict(reference_config()))
    config = reference_config(pe_type=None)  # no positional encoder at all: its tensors are unexpected
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['embedder\.pe_enc\.missing_pe'"):
        convert_reference_state_dict(config, random_state_dict(reference_config()))


def test_head_checkpoint_is_refused(reference):
    config, state, _, _ = reference
    with pytest.raises(CheckpointError, match=r"fine-tuned task head"):
        convert_reference_state_dict(config, dict(state, **{"head.mlp.0.weight": torch.zeros(3, 8)}))


def test_duplicate_genes_are_refused(reference):
    _, state, _, _ = reference
    config = reference_config(gene_list=[*GENES[:-1], GENES[0]])
    with pytest.raises(CheckpointError, match=r"gene_list"):
        convert_reference_state_dict(config, state)


def test_pickle_refused_by_weights_only(reference, tmp_path):
    config, state, _, _ = reference
    config_file, ckpt_file = write_reference(tmp_path, config, state)
    torch.save({"model_state_dict": state, "args": argparse.Namespace(lr=1e-3)}, ckpt_file)
    with pytest.raises(CheckpointError, match=r"weights_only=True.*refuses to unpickle"):
        write_converted_cellplm(config_file, ckpt_file, tmp_path / "out")
    torch.save(state, ckpt_file)  # a bare state dict is read too
    assert write_converted_cellplm(config_file, ckpt_file, tmp_path / "out").is_dir()
    torch.save({"epoch": 3, "optimizer_state_dict": {}}, ckpt_file)
    with pytest.raises(CheckpointError, match=r"\{'model_state_dict'"):
        write_converted_cellplm(config_file, ckpt_file, tmp_path / "out2")


def test_tl_embed_accepts_the_converted_directory(reference, tmp_path):
    from scfm.tl import embed

    _, _, config_file, ckpt_file = reference
    out = write_converted_cellplm(config_file, ckpt_file, tmp_path / "converted")
    adata = counts_adata()
    embed(adata, str(out), sample_key="sample", progress=False)
    assert adata.obsm["X_scfm"].shape == (adata.n_obs, LATENT) and np.isfinite(adata.obsm["X_scfm"]).all()


def _norm(x: torch.Tensor, state: dict, prefix: str, norm: str) -> torch.Tensor:
    """The reference's ``create_norm(norm, n)`` (GroupNorm with 4 groups) with the tensors at ``prefix``."""
    weight, bias = state[f"{prefix}weight"], state[f"{prefix}bias"]
    if norm == "groupnorm":
        return torch.nn.functional.group_norm(x, 4, weight, bias, eps=1e-5)
    return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps=1e-5)


def test_groupnorm_is_mapped():
    config = reference_config(norm="groupnorm")
    state = random_state_dict(config, seed=1)
    scfm_config, _, mapped = convert_reference_state_dict(config, state)
    assert scfm_config.norm == "groupnorm" and not scfm_config.decoder_offsets
    module = CellPLMModule(scfm_config)
    module.load_state_dict(mapped, strict=True)
    module.eval()
    # where the reference's create_norm(norm) is: the input projection and the decoder blocks
    assert isinstance(module.input_projection[3], torch.nn.GroupNorm) and module.input_projection[3].num_groups == 4
    assert all(isinstance(layer[3], torch.nn.GroupNorm) for layer in module.decoder.layers)
    # the Flowformer layers and the pre-latent norm stay LayerNorms (the reference never passes norm there)
    assert isinstance(module.encoder.final_norm, torch.nn.LayerNorm)
    assert all(isinstance(m, torch.nn.LayerNorm) for layer in module.encoder.layers for m in (layer.norm1, layer.norm2))
    x = torch.randn(6, D)
    linear = torch.relu(x @ state["embedder.extra_linear.0.weight"].T + state["embedder.extra_linear.0.bias"])
    with torch.no_grad():
        torch.testing.assert_close(
            module.input_projection(x), _norm(linear, state, "embedder.extra_linear.3.", "groupnorm")
        )
    # a LayerNorm would give something else on the same tensors
    assert not torch.allclose(
        _norm(linear, state, "embedder.extra_linear.3.", "groupnorm"),
        _norm(linear, state, "embedder.extra_linear.3.", "layernorm"),
        atol=1e-3,
    )


def reference_decoder_logits(z: torch.Tensor, config: dict, state: dict) -> torch.Tensor:
    """``NBMLPDecoder.forward({"h": z})`` by hand (no covariate label given), up to the log of ``mean``."""
    norm, x = config["norm"], z
    for i in range(config["dec_layers"] - 1):
        p = f"decoder.layers.{i}."
        x = torch.nn.functional.prelu(x @ state[f"{p}0.weight"].T + state[f"{p}0.bias"], state[f"{p}1.weight"])
        x = _norm(x, state, f"{p}3.", norm)
        for cov in ("batch", "dataset", "platform"):
            if config.get(f"{cov}_num", 0) > 0:  # the SUM of the embedding rows, through PReLU and the norm
                c = f"decoder.covariate_layers.{i}.{cov}."
                summed = state[f"{c}0.weight"].sum(0, keepdim=True)
                x = x + _norm(torch.nn.functional.prelu(summed, state[f"{c}1.weight"]), state, f"{c}2.", norm)
    h = torch.relu(x @ state["decoder.out_layer.dec_1.weight"].T + state["decoder.out_layer.dec_1.bias"])
    return h @ state["decoder.out_layer.dec_mean.0.weight"].T + state["decoder.out_layer.dec_mean.0.bias"]


@pytest.mark.parametrize(
    "covariates",
    [
        {"norm": "groupnorm", "batch_num": 7, "dataset_num": 3},
        {"norm": "layernorm", "batch_num": 5, "dataset_num": 2, "platform_num": 4},
        {"norm": "groupnorm", "platform_num": 1, "dec_layers": 2},
    ],
)
def test_decoder_covariates_are_folded_into_offsets(covariates):
    config = reference_config(**covariates)
    state = random_state_dict(config, seed=2)
    assert any(k.startswith("decoder.covariate_layers.") for k in state)
    scfm_config, _, mapped = convert_reference_state_dict(config, state)
    assert scfm_config.decoder_offsets and scfm_config.norm == config["norm"]
    assert mapped["decoder.offsets"].shape == (config["dec_layers"] - 1, DEC_HID)
    assert mapped["decoder.offsets"].dtype == torch.float32
    assert not any(k.startswith("decoder.covariate_layers.") for k in mapped)
    folded = scfm_config.extra["folded_covariates"]
    expected_sizes = {c: config[f"{c}_num"] for c in ("batch", "dataset", "platform") if config.get(f"{c}_num")}
    assert folded["sizes"] == expected_sizes and "not reproduced" in folded["note"]
    module = CellPLMModule(scfm_config)
    module.load_state_dict(mapped, strict=True)
    module.eval()
    z = torch.randn(9, LATENT)
    with torch.no_grad():
        ours = torch.softmax(module.decoder(z), -1)
    reference = torch.softmax(reference_decoder_logits(z, config, state), -1)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-4)
    # without the offsets the output differs: the covariate constants matter
    without = reference_decoder_logits(z, dict(config, batch_num=0, dataset_num=0, platform_num=0), state)
    assert not torch.allclose(ours, torch.softmax(without, -1), atol=1e-4)


def test_covariate_tensors_must_match_the_config():
    config = reference_config(batch_num=7, dataset_num=3)
    state = random_state_dict(config)
    broken = {k: v for k, v in state.items() if ".dataset." not in k}
    with pytest.raises(CheckpointError, match=r"missing tensors \['decoder\.covariate_layers\.0\.dataset\.0\.weight'"):
        convert_reference_state_dict(config, broken)
    with pytest.raises(CheckpointError, match=r"decoder\.covariate_layers\.0\.batch\.0\.weight \(7, 12\) vs \(6, 12\)"):
        convert_reference_state_dict(dict(config, batch_num=6), state)
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['decoder\.covariate_layers"):
        convert_reference_state_dict(reference_config(), state)


def test_folded_checkpoint_round_trip(tmp_path):
    config = reference_config(norm="groupnorm", batch_num=7, dataset_num=3)
    state = random_state_dict(config, seed=3)
    config_file, ckpt_file = write_reference(tmp_path / "ref", config, state)
    out = write_converted_cellplm(config_file, ckpt_file, tmp_path / "converted")
    checkpoint = load_checkpoint(out)
    assert checkpoint.config["norm"] == "groupnorm" and checkpoint.config["decoder_offsets"] is True
    assert checkpoint.config["extra"]["folded_covariates"]["sizes"] == {"batch": 7, "dataset": 3}
    assert "Decoder covariates folded: batch (7 embeddings), dataset (3 embeddings)" in checkpoint.model_card
    module = load_pretrained(out, family="cellplm").module
    _, _, mapped = convert_reference_state_dict(config, state)
    torch.testing.assert_close(module.decoder.offsets.detach(), mapped["decoder.offsets"], rtol=0, atol=0)
    adata = counts_adata()
    latent = CellPLM.from_pretrained(out, adata, sample_key="sample").get_latent_representation()
    assert latent.shape == (adata.n_obs, LATENT) and np.isfinite(latent).all()
