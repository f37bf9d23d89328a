"""Import of reference tGPT checkpoints (Hugging Face GPT-2 causal LM + word-level gene tokenizer).

The reference directories are built here from GPT-2's tensor names and shapes (``Conv1D`` weights stored
``(in, out)``) and a ``tokenizer.json`` with the published special tokens and template; no download, no
``transformers``. scfm's outputs are compared with an independent float64 GPT-2 forward pass written from those
tensor names, and with the reference's embedding rule (mean of the last hidden states between ``</b>`` and
``</s>``). The comparison against ``transformers`` itself is ``benchmarks/peers/tgpt_parity.py``.
"""

from __future__ import annotations

import json
import math
import pickle

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import save_file

import scfm
from scfm.cli import main as cli_main
from scfm.models import CheckpointError, load_checkpoint, load_pretrained
from scfm.models.tgpt import TGPT, convert_tgpt_checkpoint, respell_gene, write_converted_tgpt

D, HEADS, LAYERS, POSITIONS = 32, 4, 2, 12
GENES = [f"GENE{i}" for i in range(40)] + ["HLA-DRA", "AC000061.1", "RP11-34P13.3"]
SPECIALS = ["<pad>", "</b>", "</s>", "<unk>"]


def reference_tokens() -> list[str]:
    return SPECIALS + [g.replace("-", "_").replace(".", "_") for g in GENES]


def gpt2_state_dict(n_tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under GPT2LMHeadModel's names; LayerNorms and biases away from 1/0 so a wrong map shows."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    sd = {"transformer.wte.weight": rand(n_tokens, D), "transformer.wpe.weight": rand(POSITIONS, D)}
    for i in range(LAYERS):
        p = f"transformer.h.{i}."
        sd |= {
            p + "ln_1.weight": 1 + rand(D),
            p + "ln_1.bias": rand(D),
            p + "attn.c_attn.weight": rand(D, 3 * D),
            p + "attn.c_attn.bias": rand(3 * D),
            p + "attn.c_proj.weight": rand(D, D),
            p + "attn.c_proj.bias": rand(D),
            p + "ln_2.weight": 1 + rand(D),
            p + "ln_2.bias": rand(D),
            p + "mlp.c_fc.weight": rand(D, 4 * D),
            p + "mlp.c_fc.bias": rand(4 * D),
            p + "mlp.c_proj.weight": rand(4 * D, D),
            p + "mlp.c_proj.bias": rand(D),
        }
    sd |= {"transformer.ln_f.weight": 1 + rand(D), "transformer.ln_f.bias": rand(D)}
    return sd


def hf_config(n_tokens: int) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_embd": D,
        "n_head": HEADS,
        "n_layer": LAYERS,
        "n_positions": POSITIONS,
        "n_ctx": POSITIONS,
        "n_inner": None,
        "vocab_size": n_tokens,
        "layer_norm_epsilon": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
    }


def tokenizer_json(tokens: list[str]) -> dict:
    return {
        "version": "1.0",
        "added_tokens": [{"id": i, "content": t, "special": True} for i, t in enumerate(SPECIALS)],
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "</b>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "pair": [],
            "special_tokens": {},
        },
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(tokens)}, "unk_token": "<unk>"},
    }


def write_reference(path, *, layout: str = "bin", n_tokens: int | None = None, seed: int = 0):
    """A directory laid out like the published tGPT (``bin``: 2022 transformers, with mask buffers and lm_head)."""
    tokens = reference_tokens()
    n_tokens = n_tokens or len(tokens)
    path.mkdir(parents=True, exist_ok=True)
    sd = gpt2_state_dict(n_tokens, seed)
    (path / "config.json").write_text(json.dumps(hf_config(n_tokens)))
    (path / "tokenizer.json").write_text(json.dumps(tokenizer_json(tokens)))
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "</b>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    )
    if layout == "bin":
        mask = torch.tril(torch.ones(POSITIONS, POSITIONS, dtype=torch.uint8))[None, None]
        for i in range(LAYERS):
            sd[f"transformer.h.{i}.attn.bias"] = mask
            sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        sd["lm_head.weight"] = sd["transformer.wte.weight"].clone()
        torch.save(sd, path / "pytorch_model.bin")
    else:  # save_pretrained(safe_serialization=True) drops the tied lm_head
        save_file(sd, str(path / "model.safetensors"))
    return path


def gpt2_forward(
    sd: dict[str, torch.Tensor], ids: list[int], token_types: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Independent float64 GPT-2 forward of one sequence: last hidden states and next-token logits.

    ``token_types``: the tokenizer's ``token_type_ids`` (all 0) are passed too, as the reference README does with
    ``model(**batch)``; GPT-2 embeds them with ``wte``.
    """
    w = {k.removeprefix("transformer."): v.double() for k, v in sd.items() if v.is_floating_point()}
    ids_t = torch.tensor(ids)
    x = w["wte.weight"][ids_t] + w["wpe.weight"][: len(ids)]
    if token_types:
        x = x + w["wte.weight"][0]

    def norm(h, name):
        return torch.nn.functional.layer_norm(h, (D,), w[name + ".weight"], w[name + ".bias"], 1e-5)

    n, hd = len(ids), D // HEADS
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for i in range(LAYERS):
        p = f"h.{i}."
        qkv = norm(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (t.view(n, HEADS, hd).transpose(0, 1) for t in qkv.split(D, dim=1))
        scores = (q @ k.transpose(1, 2)) / math.sqrt(hd)
        att = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1) @ v
        x = x + att.transpose(0, 1).reshape(n, D) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = norm(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = norm(x, "ln_f")
    return x.numpy(), (x @ w["wte.weight"].T).numpy()


def reference_ids(row: np.ndarray) -> list[int]:
    """The reference input ids: </b>, genes ranked by value (ties by token id), truncated, </s>."""
    vocab = {t: i for i, t in enumerate(reference_tokens())}
    ids = np.array([vocab[g.replace("-", "_").replace(".", "_")] for g in GENES])
    keep = row > 0
    ranked = ids[keep][np.lexsort((ids[keep], -row[keep]))][: POSITIONS - 2]
    return [1, *ranked.tolist(), 2]


def reference_embedding(sd, row) -> np.ndarray:
    ids = reference_ids(row)
    hidden, _ = gpt2_forward(sd, ids)
    return hidden[1 : len(ids) - 1].mean(0)


@pytest.fixture(scope="module")
def counts() -> ad.AnnData:
    rng = np.random.default_rng(0)
    x = rng.poisson(rng.gamma(0.6, 2.0, size=len(GENES)), size=(24, len(GENES))).astype(np.float32)
    x[0, :] = 0
    x[0, [3, 7, 40]] = [5, 2, 2]  # a short cell with a tie and the respelled HLA-DRA
    x[1, :] = np.arange(len(GENES), 0, -1)  # more genes than fit: the ranking is cut
    return ad.AnnData(sp.csr_matrix(x), var=pd.DataFrame(index=GENES))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return write_reference(tmp_path_factory.mktemp("tgpt") / "transcriptome-gpt")


def test_respell_gene():
    assert respell_gene("HLA_DRA") == "HLA-DRA"
    assert respell_gene("AC000061_1") == "AC000061.1"
    assert respell_gene("RP11_34P13_3") == "RP11-34P13.3"
    assert respell_gene("ACTB") == "ACTB"


@pytest.mark.parametrize("layout", ["bin", "safetensors"])
def test_embedding_and_logits_match_independent_gpt2(tmp_path, counts, layout):
    ref = write_reference(tmp_path / "ref", layout=layout)
    sd = gpt2_state_dict(len(reference_tokens()))
    converted = convert_tgpt_checkpoint(ref)
    module, vocab = converted.module, converted.vocab
    assert converted.vocab.genes == GENES and module.config.end_when_cut
    assert module.config.activation == "gelu_tanh" and module.config.max_len == POSITIONS
    assert len(converted.buffers) == (2 * LAYERS if layout == "bin" else 0)
    x = counts.X.toarray()
    for row in x[:6]:
        ids = reference_ids(row)
        hidden, logits = gpt2_forward(sd, ids)
        with torch.no_grad():
            ours = module.hidden_states(torch.tensor([ids]))
            our_logits = module.next_token_logits(ours)[0].double().numpy()
            our_embedding = module.embed(torch.tensor([ids]))[0].double().numpy()
        assert np.abs(our_logits - logits).max() < 1e-4
        np.testing.assert_allclose(our_embedding, hidden[1:-1].mean(0), atol=1e-5)
    assert vocab["<cls>"] == 1 and vocab["<eoc>"] == 2 and vocab["HLA-DRA"] == 4 + 40


def test_tl_embed_on_reference_directory(reference, counts):
    sd = gpt2_state_dict(len(reference_tokens()))
    adata = counts.copy()
    scfm.tl.embed(adata, model=str(reference), min_genes=10, progress=False, batch_size=5)
    expected = np.stack([reference_embedding(sd, row) for row in counts.X.toarray()])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    cos = (adata.obsm["X_scfm"] * expected).sum(1)
    assert cos.min() > 0.999999
    record = adata.uns["scfm"]["X_scfm"]
    n_cut = int((np.asarray((counts.X > 0).sum(1)).ravel() > POSITIONS - 2).sum())
    assert record["family"] == "tgpt" and record["n_truncated_cells"] == n_cut and 0 < n_cut < counts.n_obs


def test_from_pretrained_reference_directory(reference, counts):
    adata = counts.copy()
    model = TGPT.from_pretrained(str(reference), adata, min_genes=10)
    latent = model.get_latent_representation(adata, batch_size=7)
    tool = counts.copy()
    scfm.tl.embed(tool, model=str(reference), min_genes=10, progress=False)
    np.testing.assert_allclose(latent, tool.obsm["X_scfm"], atol=1e-6)


def test_write_and_load_converted(reference, counts, tmp_path):
    dest = write_converted_tgpt(reference, tmp_path / "scfm-tgpt")
    checkpoint = load_checkpoint(dest)
    assert checkpoint.family == "tgpt" and checkpoint.config["end_when_cut"] is True
    card = checkpoint.model_card
    for name in ("pytorch_model.bin", "tokenizer.json", "config.json"):
        assert name in card
    assert convert_tgpt_checkpoint(reference).reference.sha256["pytorch_model.bin"] in card
    a, b = counts.copy(), counts.copy()
    scfm.tl.embed(a, model=str(dest), min_genes=10, progress=False)
    scfm.tl.embed(b, model=str(reference), min_genes=10, progress=False)
    np.testing.assert_array_equal(a.obsm["X_scfm"], b.obsm["X_scfm"])
    with pytest.raises(FileExistsError):
        write_converted_tgpt(reference, dest)


def test_cli_convert_tgpt(reference, tmp_path, capsys):
    assert cli_main(["convert", "tgpt", str(reference), str(tmp_path / "out")]) == 0
    assert "wrote scfm checkpoint" in capsys.readouterr().out
    assert load_pretrained(tmp_path / "out").family == "tgpt"


def test_untied_head_and_filler_rows(tmp_path):
    ref = write_reference(tmp_path / "ref", layout="safetensors", n_tokens=len(reference_tokens()) + 3)
    config = json.loads((ref / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (ref / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file

    sd = load_file(ref / "model.safetensors")
    sd["lm_head.weight"] = torch.randn(config["vocab_size"], D)
    save_file(sd, str(ref / "model.safetensors"))
    converted = convert_tgpt_checkpoint(ref)
    assert not converted.module.config.tied_head
    assert converted.vocab.tokens[-3:] == ["<unused-0>", "<unused-1>", "<unused-2>"]
    hidden = torch.randn(1, 2, D)
    torch.testing.assert_close(converted.module.next_token_logits(hidden), hidden @ sd["lm_head.weight"].T)


def test_bundled_tgpt_still_loads_unchanged():
    pretrained = load_pretrained("tgpt")
    config = pretrained.module.config
    assert not config.end_when_cut and config.tied_head and config.activation == "gelu"
    assert config.token_type_id is None


def test_tokenizer_without_token_type_ids(tmp_path, counts):
    ref = write_reference(tmp_path / "ref")
    (ref / "tokenizer_config.json").write_text(json.dumps({"model_input_names": ["input_ids", "attention_mask"]}))
    converted = convert_tgpt_checkpoint(ref)
    assert converted.module.config.token_type_id is None and "tokenizer_config.json" in converted.model_card
    sd = gpt2_state_dict(len(reference_tokens()))
    ids = reference_ids(counts.X.toarray()[2])
    _, logits = gpt2_forward(sd, ids, token_types=False)
    with torch.no_grad():
        ours = converted.module.next_token_logits(converted.module.hidden_states(torch.tensor([ids])))[0]
    assert np.abs(ours.double().numpy() - logits).max() < 1e-4


# -- bad input ---------------------------------------------------------------------------------------------


def _edit_json(path, name, **changes):
    data = json.loads((path / name).read_text())
    data.update(changes)
    (path / name).write_text(json.dumps(data))


@pytest.mark.parametrize("missing", ["tokenizer.json", "pytorch_model.bin"])
def test_missing_file_is_named(tmp_path, missing):
    ref = write_reference(tmp_path / "ref")
    (ref / missing).unlink()
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        convert_tgpt_checkpoint(ref)


def test_extra_or_sharded_weights_are_refused(tmp_path):
    ref = write_reference(tmp_path / "ref")
    (ref / "other.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"other\.pt"):
        convert_tgpt_checkpoint(ref)
    (ref / "other.pt").unlink()
    (ref / "pytorch_model.bin.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="sharded"):
        convert_tgpt_checkpoint(ref)


def test_wrong_shape_is_named(tmp_path):
    ref = write_reference(tmp_path / "ref", layout="safetensors")
    from safetensors.torch import load_file

    sd = load_file(ref / "model.safetensors")
    sd["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(D, 3 * D)
    save_file(sd, str(ref / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"linear1\.weight"):
        convert_tgpt_checkpoint(ref)


def test_config_disagreeing_with_weights(tmp_path):
    ref = write_reference(tmp_path / "ref")
    _edit_json(ref, "config.json", n_embd=64)
    with pytest.raises(CheckpointError, match="n_embd=64"):
        convert_tgpt_checkpoint(ref)
    _edit_json(ref, "config.json", n_embd=D, n_layer=3)
    with pytest.raises(CheckpointError, match="n_layer=3"):
        convert_tgpt_checkpoint(ref)


def test_foreign_architecture(tmp_path):
    ref = write_reference(tmp_path / "ref")
    _edit_json(ref, "config.json", model_type="bert")
    with pytest.raises(CheckpointError, match="'bert'"):
        convert_tgpt_checkpoint(ref)
    ref = write_reference(tmp_path / "ref2", layout="safetensors")
    from safetensors.torch import load_file

    sd = load_file(ref / "model.safetensors")
    sd["transformer.h.0.crossattention.c_attn.weight"] = torch.zeros(D, 3 * D)
    save_file(sd, str(ref / "model.safetensors"))
    with pytest.raises(CheckpointError, match="crossattention"):
        convert_tgpt_checkpoint(ref)
    ref = write_reference(tmp_path / "ref3")
    _edit_json(ref, "config.json", scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        convert_tgpt_checkpoint(ref)


def test_vocabulary_mismatch(tmp_path):
    ref = write_reference(tmp_path / "ref")
    tokens = [*reference_tokens(), "EXTRA1", "EXTRA2"]
    (ref / "tokenizer.json").write_text(json.dumps(tokenizer_json(tokens)))
    with pytest.raises(CheckpointError, match="different models"):
        convert_tgpt_checkpoint(ref)


def test_foreign_tokenizer_and_template(tmp_path):
    ref = write_reference(tmp_path / "ref")
    tok = tokenizer_json(reference_tokens())
    tok["model"]["type"] = "BPE"
    (ref / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match="'BPE'"):
        convert_tgpt_checkpoint(ref)
    tok = tokenizer_json(reference_tokens())
    tok["post_processor"]["single"] = tok["post_processor"]["single"][:2]
    (ref / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match="wraps sequences"):
        convert_tgpt_checkpoint(ref)
    _edit_json(ref, "special_tokens_map.json", bos_token="<s>")
    with pytest.raises(CheckpointError, match="bos_token='<s>'"):
        convert_tgpt_checkpoint(ref)


def test_untied_head_differing_from_embedding_is_refused(tmp_path):
    ref = write_reference(tmp_path / "ref")
    sd = torch.load(ref / "pytorch_model.bin", weights_only=True)
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    torch.save(sd, ref / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="ties them"):
        convert_tgpt_checkpoint(ref)


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_pickle_refused(tmp_path):
    ref = write_reference(tmp_path / "ref")
    with open(ref / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"transformer.wte.weight": _Payload()}, handle)
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_tgpt_checkpoint(ref)


def test_scfm_checkpoint_is_not_taken_for_a_reference(tmp_path, reference):
    dest = write_converted_tgpt(reference, tmp_path / "scfm")
    from scfm.models.tgpt import is_reference_tgpt_dir

    assert is_reference_tgpt_dir(reference) and not is_reference_tgpt_dir(dest)
    assert not is_reference_tgpt_dir(tmp_path / "absent")
