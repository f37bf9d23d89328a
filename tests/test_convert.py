"""Import of reference scGPT checkpoints from synthetic state dicts with the reference's names and shapes.

The reference side is built from PyTorch's own modules (``nn.TransformerEncoder``, which the reference code
uses when flash-attn is absent), so the comparison checks scfm's layers against an independent implementation.
The full comparison against the reference package itself is ``benchmarks/peers/scgpt_parity.py``.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from scfm.cli import main as cli_main
from scfm.models import CheckpointError, load_checkpoint, load_pretrained
from scfm.models.scgpt import SCGPT, convert_scgpt_checkpoint, write_converted_checkpoint
from scfm.models.scgpt._convert import map_reference_state_dict

D_MODEL, N_HEADS, D_HID, N_LAYERS = 32, 4, 48, 2
GENES = [f"GENE{i}" for i in range(60)]


class ReferenceLayout(nn.Module):
    """The tensors of scGPT's ``TransformerModel`` under its names, built from standard PyTorch modules."""

    def __init__(self, n_tokens: int, pad_id: int, explicit_zero: bool = False, n_batches: int = 0) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.embedding = nn.Embedding(n_tokens, D_MODEL, padding_idx=pad_id)
        self.encoder.enc_norm = nn.LayerNorm(D_MODEL)
        self.value_encoder = nn.Module()
        self.value_encoder.linear1 = nn.Linear(1, D_MODEL)
        self.value_encoder.linear2 = nn.Linear(D_MODEL, D_MODEL)
        self.value_encoder.norm = nn.LayerNorm(D_MODEL)
        layer = nn.TransformerEncoderLayer(D_MODEL, N_HEADS, D_HID, dropout=0.0, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, N_LAYERS, enable_nested_tensor=False)
        d_in = 2 * D_MODEL if n_batches else D_MODEL
        if n_batches:
            self.batch_encoder = nn.Module()
            self.batch_encoder.embedding = nn.Embedding(n_batches, D_MODEL)
            self.batch_encoder.enc_norm = nn.LayerNorm(D_MODEL)
        self.decoder = nn.Module()
        self.decoder.fc = self._mlp(d_in)
        if explicit_zero:
            self.decoder.zero_logit = self._mlp(d_in)
        self.mvc_decoder = nn.Module()
        self.mvc_decoder.gene2query = nn.Linear(D_MODEL, D_MODEL)
        self.mvc_decoder.W = nn.Linear(D_MODEL, d_in, bias=False)
        if explicit_zero:
            self.mvc_decoder.W_zero_logit = nn.Linear(D_MODEL, d_in)
        for p in self.parameters():  # move LayerNorms and biases away from their defaults
            nn.init.normal_(p, std=0.2) if p.dim() == 1 else None

    @staticmethod
    def _mlp(d_in: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(d_in, D_MODEL), nn.LeakyReLU(), nn.Linear(D_MODEL, D_MODEL), nn.LeakyReLU(), nn.Linear(D_MODEL, 1)
        )

    def gene_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.enc_norm(self.encoder.embedding(ids))

    def hidden(self, ids: torch.Tensor, values: torch.Tensor, pad_id: int) -> torch.Tensor:
        value = values.unsqueeze(-1).clamp(max=512)
        value = self.value_encoder.norm(self.value_encoder.linear2(torch.relu(self.value_encoder.linear1(value))))
        return self.transformer_encoder(self.gene_embeddings(ids) + value, src_key_padding_mask=ids == pad_id)


def _vocab_dict(specials_last: bool = True) -> dict[str, int]:
    tokens = [*GENES, "<pad>", "<cls>", "<eoc>"] if specials_last else ["<pad>", "<cls>", "<eoc>", *GENES]
    return {token: i for i, token in enumerate(tokens)}


def _write_reference(path, vocab: dict[str, int], model: ReferenceLayout, *, flash: bool = False, **args) -> None:
    path.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if flash:
        state = {k.replace("self_attn.in_proj_", "self_attn.Wqkv."): v for k, v in state.items()}
    torch.save(state, path / "best_model.pt")
    config = {
        "embsize": D_MODEL,
        "nheads": N_HEADS,
        "d_hid": D_HID,
        "nlayers": N_LAYERS,
        "n_layers_cls": 3,
        "dropout": 0.2,
        "pad_token": "<pad>",
        "pad_value": -2,
        "mask_value": -1,
        "n_bins": 51,
        "max_seq_len": 1200,
        "input_emb_style": "continuous",
        "MVC": True,
    }
    config.update(args)
    (path / "args.json").write_text(json.dumps(config))
    (path / "vocab.json").write_text(json.dumps(vocab))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    torch.manual_seed(0)
    vocab = _vocab_dict()
    model = ReferenceLayout(len(vocab), pad_id=vocab["<pad>"], explicit_zero=True).eval()
    path = tmp_path_factory.mktemp("ref") / "scgpt_tiny"
    _write_reference(path, vocab, model)
    return path, vocab, model


def _tokens(vocab: dict[str, int], n_cells: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = torch.full((n_cells, 25), vocab["<pad>"], dtype=torch.long)
    values = torch.full((n_cells, 25), -2.0)
    for i in range(n_cells):
        n = rng.integers(5, 24)
        ids[i, 0] = vocab["<cls>"]
        ids[i, 1 : n + 1] = torch.as_tensor(rng.choice(len(GENES), n, replace=False))
        values[i, 1 : n + 1] = torch.as_tensor(rng.integers(1, 51, n), dtype=torch.float32)
    return ids, values


@pytest.mark.parametrize("flash", [False, True])
def test_converted_model_matches_reference_layout(reference, tmp_path, flash):
    path, vocab, model = reference
    if flash:
        path = tmp_path / "flash"
        _write_reference(path, vocab, model, flash=True)
    converted = convert_scgpt_checkpoint(path)
    expected_layout = "flash-attn (Wqkv)" if flash else "torch.nn.TransformerEncoder (in_proj)"
    assert converted.report.attention_layout == expected_layout
    module = converted.module
    ids, values = _tokens(vocab)
    with torch.no_grad():
        ref_hidden = model.hidden(ids, values, vocab["<pad>"])
        out = module.encode(ids, values)
        gep = module.generative(out["hidden"], out["cell_embedding"], query_gene_ids=ids)
        ref_gep = model.decoder.fc(ref_hidden).squeeze(-1)
        ref_zero = model.decoder.zero_logit(ref_hidden).squeeze(-1)
        query = torch.sigmoid(model.mvc_decoder.gene2query(model.gene_embeddings(ids)))
        ref_gepc = torch.bmm(model.mvc_decoder.W(query), ref_hidden[:, 0].unsqueeze(2)).squeeze(2)
        ref_gepc_zero = torch.bmm(model.mvc_decoder.W_zero_logit(query), ref_hidden[:, 0].unsqueeze(2)).squeeze(2)
    real = ids != vocab["<pad>"]
    torch.testing.assert_close(out["cell_embedding"], ref_hidden[:, 0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(module.embed(ids, values), ref_hidden[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["hidden"][real], ref_hidden[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gep["gep"]["value"][real], ref_gep[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gep["gep"]["zero_logit"][real], ref_zero[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gep["gepc"]["value"], ref_gepc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gep["gepc"]["zero_logit"], ref_gepc_zero, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.gene_embedding(ids), model.gene_embeddings(ids))


def test_config_follows_args_and_vocab(reference):
    path, vocab, _ = reference
    config = convert_scgpt_checkpoint(path).module.config
    assert (config.d_model, config.n_heads, config.n_layers, config.d_hidden) == (D_MODEL, N_HEADS, N_LAYERS, D_HID)
    assert (config.pad_id, config.cls_id, config.n_tokens) == (vocab["<pad>"], vocab["<cls>"], len(vocab))
    assert config.cell_embedding == "cls" and config.predict_zero and config.gepc_zero_bias
    assert config.extra["converted_from"] == "scgpt" and len(config.extra["source_sha256"]) == 64


def test_batch_label_checkpoint_converts(tmp_path):
    torch.manual_seed(1)
    vocab = _vocab_dict(specials_last=False)
    model = ReferenceLayout(len(vocab), pad_id=vocab["<pad>"], n_batches=3).eval()
    _write_reference(tmp_path / "ref", vocab, model)
    module = convert_scgpt_checkpoint(tmp_path / "ref").module
    assert module.config.n_batches == 3 and not module.config.predict_zero
    ids, values = _tokens(vocab)
    batch = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        hidden = model.hidden(ids, values, vocab["<pad>"])
        emb = model.batch_encoder.enc_norm(model.batch_encoder.embedding(batch))
        ref = model.decoder.fc(torch.cat([hidden, emb[:, None].expand_as(hidden)], -1)).squeeze(-1)
        out = module.encode(ids, values)
        ours = module.generative(out["hidden"], out["cell_embedding"], batch_index=batch)["gep"]["value"]
    real = ids != vocab["<pad>"]
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)


def test_missing_specials_are_appended_like_the_reference(tmp_path):
    torch.manual_seed(2)
    vocab = {token: i for i, token in enumerate([*GENES, "<pad>"])}
    model = ReferenceLayout(len(vocab) + 2, pad_id=vocab["<pad>"])  # the reference appends <cls>, <eoc>
    _write_reference(tmp_path / "ref", vocab, model)
    converted = convert_scgpt_checkpoint(tmp_path / "ref")
    assert converted.reference.appended_specials == ["<cls>", "<eoc>"]
    assert converted.vocab.cls_id == len(GENES) + 1


def test_write_and_load_converted_checkpoint(reference, tmp_path):
    path, _, _ = reference
    out = write_converted_checkpoint(path, tmp_path / "converted")
    checkpoint = load_checkpoint(out)
    sha = convert_scgpt_checkpoint(path).reference.weights_sha256
    assert sha in checkpoint.model_card and str(path.resolve()) in checkpoint.model_card
    loaded = load_pretrained(out)
    direct = load_pretrained(path)  # the reference directory itself, converted in memory
    for key, value in loaded.module.state_dict().items():
        torch.testing.assert_close(value, direct.module.state_dict()[key])
    with pytest.raises(FileExistsError):
        write_converted_checkpoint(path, out)


def test_cli_convert(reference, tmp_path, capsys):
    path, _, _ = reference
    assert cli_main(["convert", "scgpt", str(path), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert cli_main(["convert", "scgpt", str(tmp_path / "nowhere"), str(tmp_path / "out2")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_from_scgpt_checkpoint_embeds_like_tl_embed(reference):
    import anndata as ad
    import scipy.sparse as sp

    from scfm.tl import embed

    path, _, _ = reference
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(0.8, size=(20, len(GENES))).astype(np.float32))
    adata = ad.AnnData(counts, var={"symbol": GENES})
    adata.var_names = GENES
    model = SCGPT.from_scgpt_checkpoint(path, adata.copy(), min_genes=10)
    latent = model.get_latent_representation()
    embed(adata, str(path), min_genes=10, progress=False)
    np.testing.assert_allclose(adata.obsm["X_scfm"], latent / np.linalg.norm(latent, axis=1, keepdims=True), atol=1e-5)
    assert adata.uns["scfm"]["X_scfm"]["checkpoint_sha256"] == convert_scgpt_checkpoint(path).reference.weights_sha256


# -- bad input -------------------------------------------------------------------------------------


def test_missing_file_is_named(reference, tmp_path):
    _, vocab, model = reference
    _write_reference(tmp_path / "ref", vocab, model)
    (tmp_path / "ref" / "args.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing args\.json"):
        convert_scgpt_checkpoint(tmp_path / "ref")


def test_extra_weights_file_is_an_error(reference, tmp_path):
    _, vocab, model = reference
    _write_reference(tmp_path / "ref", vocab, model)
    torch.save(model.state_dict(), tmp_path / "ref" / "model_e3.pt")
    with pytest.raises(CheckpointError, match=r"model_e3\.pt"):
        convert_scgpt_checkpoint(tmp_path / "ref")


def test_vocab_disagreeing_with_embedding(reference, tmp_path):
    _, vocab, model = reference
    smaller = {token: i for i, token in enumerate(list(vocab)[5:])}
    _write_reference(tmp_path / "ref", smaller, model)
    with pytest.raises(CheckpointError, match=r"vocab\.json has \d+ tokens .* but encoder\.embedding\.weight has"):
        convert_scgpt_checkpoint(tmp_path / "ref")


def test_pickle_refused_by_weights_only(reference, tmp_path):
    _, vocab, model = reference
    _write_reference(tmp_path / "ref", vocab, model)
    torch.save({"model": model}, tmp_path / "ref" / "best_model.pt")  # a whole module, not a state dict
    with pytest.raises(CheckpointError, match=r"weights_only=True"):
        convert_scgpt_checkpoint(tmp_path / "ref")
    (tmp_path / "ref" / "best_model.pt").write_bytes(pickle.dumps({"a": 1}) + b"garbage")
    with pytest.raises(CheckpointError, match=r"best_model\.pt"):
        convert_scgpt_checkpoint(tmp_path / "ref")


def test_other_architecture_lists_unknown_tensors(reference, tmp_path):
    _, vocab, model = reference
    _write_reference(tmp_path / "ref", vocab, model)
    state = torch.load(tmp_path / "ref" / "best_model.pt", weights_only=True)
    state["cls_decoder.out_layer.weight"] = torch.zeros(4, D_MODEL)
    state["perturbation_head.weight"] = torch.zeros(2, 2)
    state["flag_encoder.weight"] = torch.zeros(2, D_MODEL)
    torch.save(state, tmp_path / "ref" / "best_model.pt")
    with pytest.raises(CheckpointError, match=r"perturbation_head\.weight") as err:
        convert_scgpt_checkpoint(tmp_path / "ref")
    assert "drop=['flag_encoder']" in str(err.value)
    del state["perturbation_head.weight"], state["flag_encoder.weight"]
    torch.save(state, tmp_path / "ref" / "best_model.pt")
    with pytest.raises(CheckpointError, match="no class names"):  # a head without its label mapping
        convert_scgpt_checkpoint(tmp_path / "ref")
    converted = convert_scgpt_checkpoint(tmp_path / "ref", drop=["cls_decoder"])
    assert converted.report.dropped == ["cls_decoder.out_layer.weight"]
    assert "cls_decoder.out_layer.weight" in converted.model_card


def test_a_model_of_another_family_is_rejected(tmp_path):
    (tmp_path / "ref").mkdir()
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, tmp_path / "ref" / "best_model.pt")
    (tmp_path / "ref" / "args.json").write_text("{}")
    (tmp_path / "ref" / "vocab.json").write_text(json.dumps(_vocab_dict()))
    with pytest.raises(CheckpointError, match="no scfm counterpart"):
        convert_scgpt_checkpoint(tmp_path / "ref")


def test_args_disagreeing_with_weights(reference, tmp_path):
    _, vocab, model = reference
    _write_reference(tmp_path / "ref", vocab, model, nlayers=12)
    with pytest.raises(CheckpointError, match="nlayers=12 but 2"):
        convert_scgpt_checkpoint(tmp_path / "ref")


def test_unsupported_modules_are_named():
    with pytest.raises(CheckpointError, match="domain-specific batch norm"):
        map_reference_state_dict({"dsbn.bns.0.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="only"):
        map_reference_state_dict({}, drop=["encoder"])


def test_ddp_prefix_is_stripped(reference):
    _, _, model = reference
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    mapped, report = map_reference_state_dict(state)
    assert report.stripped_prefix == "module." and "gene_embedding.embedding.weight" in mapped


# -- fine-tuned heads --------------------------------------------------------------------------------------

CLASSES = ["B cell", "T cell", "NK cell", "monocyte"]


def _reference_mlp(n_out: int, activation) -> nn.Module:
    """scGPT's ClsDecoder / AdversarialDiscriminator layout: ``_decoder`` (Linear, act, LayerNorm) x 2 + out_layer."""
    head = nn.Module()
    head._decoder = nn.ModuleList(
        [nn.Linear(D_MODEL, D_MODEL), activation(), nn.LayerNorm(D_MODEL)] * 1
        + [nn.Linear(D_MODEL, D_MODEL), activation(), nn.LayerNorm(D_MODEL)]
    )
    head.out_layer = nn.Linear(D_MODEL, n_out)
    for p in head.parameters():
        nn.init.normal_(p, std=0.3)
    return head


def _run_mlp(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for layer in head._decoder:
        x = layer(x)
    return head.out_layer(x)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A fine-tuned annotation checkpoint: cls_decoder (4 classes), batch discriminator, id2type.json."""
    torch.manual_seed(3)
    vocab = _vocab_dict()
    model = ReferenceLayout(len(vocab), pad_id=vocab["<pad>"], explicit_zero=True).eval()
    model.cls_decoder = _reference_mlp(len(CLASSES), nn.ReLU)
    model.grad_reverse_discriminator = _reference_mlp(3, nn.LeakyReLU)
    path = tmp_path_factory.mktemp("finetuned") / "scgpt_annotation"
    _write_reference(path, vocab, model.eval())
    (path / "id2type.json").write_text(json.dumps(dict(enumerate(CLASSES))))
    return path, vocab, model


def test_finetuned_heads_match_reference(finetuned):
    path, vocab, model = finetuned
    converted = convert_scgpt_checkpoint(path)
    module, config = converted.module, converted.module.config
    assert config.label_categories == CLASSES and config.batch_discriminator and config.n_batches == 3
    assert not config.batch_embedding and not config.classifier_standardise and config.classifier_layers == 3
    ids, values = _tokens(vocab)
    with torch.no_grad():
        cell = model.hidden(ids, values, vocab["<pad>"])[:, 0]
        out = module.encode(ids, values)
        heads = module.generative(out["hidden"], out["cell_embedding"])
        torch.testing.assert_close(
            module.classify(ids, values), _run_mlp(model.cls_decoder, cell), atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(heads["cls"], _run_mlp(model.cls_decoder, cell), atol=1e-5, rtol=1e-5)
        ref_dar = _run_mlp(model.grad_reverse_discriminator, cell)
        torch.testing.assert_close(heads["dar"], ref_dar, atol=1e-5, rtol=1e-5)
    assert "cell-type classifier over 4 classes" in converted.model_card


def test_converted_annotation_checkpoint_predicts(finetuned, tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    path, vocab, model = finetuned
    out = write_converted_checkpoint(path, tmp_path / "annotation")
    rng = np.random.default_rng(1)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(0.8, size=(12, len(GENES))).astype(np.float32)))
    adata.var_names = GENES
    predicted = SCGPT.from_pretrained(str(out), adata.copy(), min_genes=10).predict(adata)
    assert list(predicted.columns) == CLASSES and np.allclose(predicted.to_numpy().sum(1), 1, atol=1e-5)
    direct = SCGPT.from_scgpt_checkpoint(path, adata.copy(), min_genes=10).predict(adata)
    np.testing.assert_allclose(predicted.to_numpy(), direct.to_numpy(), atol=1e-6)
    # the same probabilities as the reference head on scfm's tokens of the cells
    from scfm.genes import align_genes
    from scfm.models.scgpt import BinningConfig, pad_cells, tokenize_csr

    config = load_pretrained(out).module.config
    alignment = align_genes(adata.var, load_pretrained(out).vocab, min_genes=10)
    cells = tokenize_csr(adata.X, alignment.column_token_ids(), cls_id=config.cls_id, config=BinningConfig())
    ids, values = pad_cells(cells, pad_id=config.pad_id, pad_value=config.pad_value)
    with torch.no_grad():
        ref = torch.softmax(_run_mlp(model.cls_decoder, model.hidden(ids, values, vocab["<pad>"])[:, 0]), 1)
    np.testing.assert_allclose(predicted.to_numpy(), ref.numpy(), atol=1e-5)
    assert (predicted.to_numpy().argmax(1) == ref.numpy().argmax(1)).all()


def test_label_names_supplied_by_the_user(finetuned, tmp_path):
    path, _, _ = finetuned
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("args.json", "vocab.json", "best_model.pt"):
        (bare / name).write_bytes((path / name).read_bytes())
    with pytest.raises(CheckpointError, match=r"id2type\.json"):
        convert_scgpt_checkpoint(bare)
    names = ["b", "t", "nk", "mono"]
    assert convert_scgpt_checkpoint(bare, label_names=names).module.config.label_categories == names
    (tmp_path / "labels.json").write_text(json.dumps(names))
    assert convert_scgpt_checkpoint(bare, label_names=tmp_path / "labels.json").module.config.label_categories == names
    with pytest.raises(CheckpointError, match="3 class names"):
        convert_scgpt_checkpoint(bare, label_names=names[:3])
    (tmp_path / "bad.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match=r"bad\.json"):
        convert_scgpt_checkpoint(bare, label_names=tmp_path / "bad.json")
    assert (
        cli_main(["convert", "scgpt", str(bare), str(tmp_path / "cli"), "--labels", str(tmp_path / "labels.json")]) == 0
    )
    assert load_checkpoint(tmp_path / "cli").config["label_categories"] == names
    converted = convert_scgpt_checkpoint(bare, drop=["cls_decoder", "grad_reverse_discriminator"])
    assert not converted.module.config.label_categories and not converted.module.config.batch_discriminator


@pytest.mark.parametrize("style", ["concat query", "sum query"])
def test_gepc_query_mlp_variants(tmp_path, style):
    torch.manual_seed(4)
    vocab = _vocab_dict()
    model = ReferenceLayout(len(vocab), pad_id=vocab["<pad>"]).eval()
    width = 64 if style == "concat query" else D_MODEL
    mvc = nn.Module()
    mvc.gene2query = nn.Linear(D_MODEL, width)
    mvc.fc1 = nn.Linear(D_MODEL + width if style == "concat query" else D_MODEL, 64)
    mvc.hidden_activation = nn.PReLU()
    mvc.fc2 = nn.Linear(64, 1)
    with torch.no_grad():
        mvc.hidden_activation.weight.fill_(0.1)
    model.mvc_decoder = mvc
    _write_reference(tmp_path / "ref", vocab, model)
    module = convert_scgpt_checkpoint(tmp_path / "ref").module
    assert module.config.gepc_style == style
    ids, values = _tokens(vocab)
    with torch.no_grad():
        cell = model.hidden(ids, values, vocab["<pad>"])[:, 0]
        query = torch.sigmoid(mvc.gene2query(model.gene_embeddings(ids)))
        cells = cell[:, None].expand(-1, ids.shape[1], -1)
        joined = torch.cat([cells, query], 2) if style == "concat query" else cells + query
        ref = mvc.fc2(mvc.hidden_activation(mvc.fc1(joined))).squeeze(2)
        out = module.encode(ids, values)
        ours = module.generative(out["hidden"], out["cell_embedding"], query_gene_ids=ids)["gepc"]["value"]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_heads_of_wrong_shape_or_depth(finetuned, tmp_path):
    path, _, _ = finetuned
    state = torch.load(path / "best_model.pt", weights_only=True)
    state["cls_decoder.out_layer.weight"] = torch.zeros(4, D_MODEL + 1)
    torch.save(state, tmp_path / "best_model.pt")
    for name in ("args.json", "vocab.json", "id2type.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    with pytest.raises(CheckpointError, match=r"classifier\.out\.weight"):
        convert_scgpt_checkpoint(tmp_path)
    state = torch.load(path / "best_model.pt", weights_only=True)
    for key in [k for k in state if k.startswith("grad_reverse_discriminator._decoder.3")]:
        del state[key]
    torch.save(state, tmp_path / "best_model.pt")
    with pytest.raises(CheckpointError):
        convert_scgpt_checkpoint(tmp_path)


def test_bundled_scgpt_config_unchanged():
    config = load_pretrained("scgpt").module.config
    assert config.gepc_style == "inner product" and config.classifier_standardise and config.classifier_layers == 3
