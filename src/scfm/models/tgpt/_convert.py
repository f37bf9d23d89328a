"""Import checkpoints of the reference tGPT (a Hugging Face GPT-2 causal LM with a gene-token tokenizer).

A published tGPT directory (e.g. ``transcriptome-gpt-1024-8-16-64``) holds ``config.json`` (a ``GPT2Config``),
the weights (``pytorch_model.bin`` or ``model.safetensors``, ``GPT2LMHeadModel`` tensor names), and the tokenizer:
``tokenizer.json`` (a ``tokenizers`` word-level model whose tokens are gene symbols, with ``-`` and ``.`` written
as ``_``; special tokens ``<pad>``, ``</b>`` (begin), ``</s>`` (end), ``<unk>``; a template that wraps every
sequence as ``</b> genes </s>``), plus ``special_tokens_map.json`` and ``tokenizer_config.json``.

The GPT-2 network is scfm's :class:`TGPTModule` with ``activation="gelu_tanh"`` (``gelu_new``): pre-norm blocks,
a final norm, learned positions, a head tied to the token embedding. GPT-2's ``Conv1D`` weights are stored
``(in, out)`` and are transposed into ``nn.Linear`` layout; ``c_attn`` packs ``[q; k; v]`` like scfm's ``in_proj``.
Every tensor is mapped, recognised as a causal-mask buffer of old ``transformers`` versions (``attn.bias``,
``attn.masked_bias``; not weights), or named in an error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from scfm.genes import GeneVocab

from ..base._checkpoint import CheckpointError, file_sha256, load_weights_strict, read_torch_state_dict, save_checkpoint
from ..base._pretrained import Pretrained
from ._config import TGPTConfig
from ._module import TGPTModule

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "pytorch_model.bin"
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# The reference tokenizer's special tokens (special_tokens_map.json) when the directory does not name them.
DEFAULT_SPECIALS = {"bos_token": "</b>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
_ACTIVATIONS = {**dict.fromkeys(GELU_TANH, "gelu_tanh"), "gelu": "gelu", "relu": "relu"}
_MASK_BUFFERS = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)\Z")

_LAYER = r"h\.(\d+)\."
# (reference name, scfm name, transpose: GPT-2 Conv1D weights are (in, out))
KEY_RULES: tuple[tuple[str, str, bool], ...] = (
    (r"wte\.weight", "token_embedding.weight", False),
    (r"wpe\.weight", "position_embedding.weight", False),
    (_LAYER + r"ln_1\.(weight|bias)", r"transformer.layers.\1.norm1.\2", False),
    (_LAYER + r"ln_2\.(weight|bias)", r"transformer.layers.\1.norm2.\2", False),
    (_LAYER + r"attn\.c_attn\.weight", r"transformer.layers.\1.self_attn.in_proj.weight", True),
    (_LAYER + r"attn\.c_attn\.bias", r"transformer.layers.\1.self_attn.in_proj.bias", False),
    (_LAYER + r"attn\.c_proj\.weight", r"transformer.layers.\1.self_attn.out_proj.weight", True),
    (_LAYER + r"attn\.c_proj\.bias", r"transformer.layers.\1.self_attn.out_proj.bias", False),
    (_LAYER + r"mlp\.c_fc\.weight", r"transformer.layers.\1.linear1.weight", True),
    (_LAYER + r"mlp\.c_fc\.bias", r"transformer.layers.\1.linear1.bias", False),
    (_LAYER + r"mlp\.c_proj\.weight", r"transformer.layers.\1.linear2.weight", True),
    (_LAYER + r"mlp\.c_proj\.bias", r"transformer.layers.\1.linear2.bias", False),
    (r"ln_f\.(weight|bias)", r"transformer.final_norm.\1", False),
)
_COMPILED_RULES = tuple((re.compile(pattern + r"\Z"), target, t) for pattern, target, t in KEY_RULES)

# Gene symbols in the reference vocabulary have '-' and '.' replaced by '_'. They are spelled back for matching
# var_names: a GenBank accession with a version (AC000061_1 -> AC000061.1), a clone name with a version
# (RP11_34P13_3 -> RP11-34P13.3), every other '_' -> '-' (HLA_DRA -> HLA-DRA).
_ACCESSION = re.compile(r"^([A-Z]{1,2}\d{5,6})_(\d+)$")
_CLONE = re.compile(r"^([A-Za-z0-9]+)_([A-Za-z0-9]+)_(\d+)$")


def respell_gene(token: str) -> str:
    """Return the usual spelling of a reference tGPT gene token (``-`` and ``.`` were written as ``_``)."""
    if (match := _ACCESSION.match(token)) is not None:
        return f"{match[1]}.{match[2]}"
    if (match := _CLONE.match(token)) is not None:
        return f"{match[1]}-{match[2]}.{match[3]}"
    return token.replace("_", "-")


@dataclass
class ReferenceTGPT:
    """The files of a reference tGPT directory, read and checked."""

    path: Path
    hf_config: dict[str, Any]
    tokenizer: dict[str, Any]
    specials: dict[str, str]
    model_input_names: list[str]
    state_dict: dict[str, torch.Tensor]
    weights_file: str
    sha256: dict[str, str] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{file} is not a text file ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} must hold a JSON object, found {type(data).__name__}")
    return data


def _weights_file(path: Path) -> tuple[str, list[str]]:
    """Return the weights to read (safetensors preferred) and the weight files left aside."""
    sharded = sorted(p.name for p in path.glob("*.index.json"))
    if sharded:
        raise CheckpointError(
            f"{path} holds a sharded checkpoint ({sharded[0]}); merge it into one {SAFETENSORS_FILE} or {TORCH_FILE} "
            "(GPT2LMHeadModel.from_pretrained(...).save_pretrained(dir, max_shard_size='100GB'))"
        )
    present = [name for name in (SAFETENSORS_FILE, TORCH_FILE) if (path / name).is_file()]
    if not present:
        raise CheckpointError(
            f"tGPT checkpoint directory {path} has no weights: it needs {SAFETENSORS_FILE} or {TORCH_FILE}"
        )
    others = sorted(
        p.name for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name not in present
    )
    if others:
        raise CheckpointError(
            f"{path} holds weight files besides {' and '.join(present)}: {others}. It is ambiguous which weights "
            f"belong to {CONFIG_FILE}; move the others out of the directory."
        )
    return present[0], present[1:]


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        try:
            return load_file(file)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file} is not a readable safetensors file ({err})") from err
    return read_torch_state_dict(
        file,
        f"GPT2LMHeadModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True), then remove {TORCH_FILE}",
        "GPT2LMHeadModel tensor names",
    )


def read_reference_tgpt(path: str | os.PathLike) -> ReferenceTGPT:
    """Read ``config.json``, the weights and ``tokenizer.json`` of a reference tGPT directory.

    ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``; ``model.safetensors`` is preferred when both
    are present.

    Raises
    ------
    CheckpointError
        A missing file, ambiguous or sharded weights, unreadable JSON, a pickle that ``weights_only`` refuses, or a
        configuration of another architecture.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is not a directory; a tGPT checkpoint is a directory with {CONFIG_FILE}, "
            f"{TOKENIZER_FILE} and {TORCH_FILE} or {SAFETENSORS_FILE}"
        )
    missing = [name for name in (CONFIG_FILE, TOKENIZER_FILE) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"tGPT checkpoint directory {path} is missing {', '.join(missing)}; it needs {CONFIG_FILE} (the GPT-2 "
            f"configuration), {TOKENIZER_FILE} (the gene-token vocabulary) and the weights"
        )
    hf_config = _read_json_object(path / CONFIG_FILE)
    model_type = hf_config.get("model_type")
    if model_type != "gpt2":
        raise CheckpointError(
            f"{path / CONFIG_FILE} describes a {model_type!r} model; a tGPT checkpoint is a GPT-2 causal LM "
            "(model_type 'gpt2')"
        )
    weights, ignored = _weights_file(path)
    tokenizer = _read_json_object(path / TOKENIZER_FILE)
    specials = dict(DEFAULT_SPECIALS)
    if (path / SPECIAL_TOKENS_FILE).is_file():
        named = _read_json_object(path / SPECIAL_TOKENS_FILE)
        for key in DEFAULT_SPECIALS:
            value = named.get(key)
            if isinstance(value, dict):  # {"content": ..., "lstrip": ...} form
                value = value.get("content")
            if isinstance(value, str):
                specials[key] = value
    # PreTrainedTokenizerFast returns these by default; the tokenizer config may name fewer
    input_names = ["input_ids", "token_type_ids", "attention_mask"]
    if (path / TOKENIZER_CONFIG_FILE).is_file():
        named = _read_json_object(path / TOKENIZER_CONFIG_FILE).get("model_input_names")
        if isinstance(named, list):
            input_names = [str(name) for name in named]
    state_dict = _read_weights(path / weights)
    sha = {name: file_sha256(path / name) for name in (CONFIG_FILE, TOKENIZER_FILE, weights)}
    for name in (SPECIAL_TOKENS_FILE, TOKENIZER_CONFIG_FILE):
        if (path / name).is_file():
            sha[name] = file_sha256(path / name)
    return ReferenceTGPT(path, hf_config, tokenizer, specials, input_names, state_dict, weights, sha, ignored)


@dataclass
class TokenizerReport:
    """How the reference tokenizer became an scfm vocabulary."""

    n_genes: int
    n_respelled: int
    n_filler: int
    template: str


def vocab_from_tokenizer(reference: ReferenceTGPT, n_tokens: int) -> tuple[GeneVocab, TokenizerReport]:
    """Build the scfm vocabulary of a reference tokenizer: same ids, ``</b>`` -> ``<cls>``, ``</s>`` -> ``<eoc>``.

    Gene tokens are respelled (:func:`respell_gene`) so that var_names match them. Rows of the token embedding
    beyond the tokenizer's vocabulary (GPT-2 configs may round ``vocab_size`` up) get ``<unused-N>`` tokens.

    Raises
    ------
    CheckpointError
        Not a word-level tokenizer, special tokens missing or not the template's, more tokens than embedding rows.
    """
    file = reference.path / TOKENIZER_FILE
    model = reference.tokenizer.get("model")
    if not isinstance(model, dict) or model.get("type") != "WordLevel" or not isinstance(model.get("vocab"), dict):
        kind = model.get("type") if isinstance(model, dict) else None
        raise CheckpointError(
            f"{file} holds a {kind!r} tokenizer model; a tGPT tokenizer is a WordLevel model whose tokens are genes"
        )
    token_to_id: dict[str, int] = dict(model["vocab"])
    for added in reference.tokenizer.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("content"), str) and isinstance(added.get("id"), int):
            token_to_id.setdefault(added["content"], added["id"])
    specials = reference.specials
    absent = [f"{role}={token!r}" for role, token in specials.items() if token not in token_to_id]
    if absent:
        raise CheckpointError(f"{file}: the special tokens {absent} are not in the vocabulary")
    template = _check_template(reference, file)
    if len(token_to_id) > n_tokens:
        raise CheckpointError(
            f"{file} has {len(token_to_id)} tokens but the token embedding (wte) of {reference.weights_file} has "
            f"{n_tokens} rows; the tokenizer and the weights come from different models"
        )
    renamed = {specials["bos_token"]: "<cls>", specials["eos_token"]: "<eoc>", specials["pad_token"]: "<pad>"}
    out: dict[str, int] = {}
    respelled = 0
    special_ids = {token_to_id[token] for token in specials.values()}
    taken = set(token_to_id)
    for token, idx in token_to_id.items():
        if token in renamed:
            name = renamed[token]
        elif idx in special_ids or re.match(r"^<.*>$", token):
            name = token
        else:
            name = respell_gene(token)
            if name != token and name in taken | set(out):
                name = token  # the respelled form is another token already: keep the reference spelling
            respelled += name != token
        out[name] = int(idx)
    clash = [name for name in ("<cls>", "<eoc>", "<pad>") if name in token_to_id and name not in renamed]
    if clash:
        raise CheckpointError(f"{file} already uses {clash} for ordinary tokens; scfm reserves these names")
    n_filler = n_tokens - len(out)
    for i in range(n_filler):
        out[f"<unused-{i}>"] = len(token_to_id) + i
    try:
        vocab = GeneVocab.from_dict(out)
    except ValueError as err:
        raise CheckpointError(f"{file} is not a usable gene vocabulary: {err}") from err
    return vocab, TokenizerReport(len(vocab.genes), respelled, n_filler, template)


def _check_template(reference: ReferenceTGPT, file: Path) -> str:
    """Require the post-processor that wraps a sequence as ``bos genes eos`` (what the reference embedding assumes)."""
    processor = reference.tokenizer.get("post_processor")
    bos, eos = reference.specials["bos_token"], reference.specials["eos_token"]
    single = processor.get("single") if isinstance(processor, dict) else None
    if not (isinstance(processor, dict) and processor.get("type") == "TemplateProcessing" and isinstance(single, list)):
        raise CheckpointError(
            f"{file} has no TemplateProcessing post-processor; the reference tGPT tokenizer wraps every sequence as "
            f"'{bos} $A {eos}', which its embedding (the mean between the two) relies on"
        )
    parts = []
    for piece in single:
        if "SpecialToken" in piece:
            parts.append(piece["SpecialToken"].get("id"))
        elif "Sequence" in piece:
            parts.append("$" + str(piece["Sequence"].get("id", "A")))
    if parts != [bos, "$A", eos]:
        raise CheckpointError(
            f"{file} wraps sequences as {' '.join(map(str, parts))!r}; scfm imports the reference layout "
            f"'{bos} $A {eos}'"
        )
    return " ".join(parts)


def config_from_reference(reference: ReferenceTGPT, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Return the :class:`TGPTConfig` fields of a GPT-2 ``config.json``, refusing options scfm does not implement.

    The special-token ids come from the vocabulary (:func:`vocab_from_tokenizer`).
    """
    hf, source = reference.hf_config, reference.path / CONFIG_FILE
    unsupported = []
    if hf.get("add_cross_attention", False):
        unsupported.append("add_cross_attention=true")
    if not hf.get("scale_attn_weights", True):
        unsupported.append("scale_attn_weights=false")
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        unsupported.append("scale_attn_by_inverse_layer_idx=true")
    if float(hf.get("layer_norm_epsilon", 1e-5)) != 1e-5:
        unsupported.append(f"layer_norm_epsilon={hf['layer_norm_epsilon']}")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        unsupported.append(f"activation_function={activation!r}")
    if unsupported:
        raise CheckpointError(f"{source}: {', '.join(unsupported)} is not implemented by scfm's tGPT module")
    try:
        d_model, n_layers, n_heads = int(hf["n_embd"]), int(hf["n_layer"]), int(hf["n_head"])
        n_positions, vocab_size = int(hf["n_positions"]), int(hf["vocab_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source} lacks a GPT-2 size field: {err}") from err
    n_inner = hf.get("n_inner")
    d_hidden = int(n_inner) if n_inner else 4 * d_model
    wte = state_dict.get("token_embedding.weight")
    if wte is None:
        raise CheckpointError(f"{reference.path / reference.weights_file} has no token embedding (transformer.wte)")
    if tuple(wte.shape) != (vocab_size, d_model):
        raise CheckpointError(
            f"{source} says vocab_size={vocab_size}, n_embd={d_model} but transformer.wte.weight in "
            f"{reference.weights_file} is {tuple(wte.shape)}; the configuration and the weights do not belong together"
        )
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    if layers != set(range(n_layers)):
        raise CheckpointError(
            f"{source} says n_layer={n_layers} but {reference.weights_file} holds blocks {sorted(layers)[:12]}"
        )
    if n_heads <= 0 or d_model % n_heads:
        raise CheckpointError(f"{source}: n_head={n_heads} does not divide n_embd={d_model}")
    if n_positions < 3:
        raise CheckpointError(f"{source}: n_positions={n_positions} leaves no room for a gene between </b> and </s>")
    return {
        "n_tokens": vocab_size,
        "d_model": d_model,
        "n_heads": n_heads,
        "n_layers": n_layers,
        "d_hidden": d_hidden,
        "dropout": 0.0,
        "max_len": n_positions,
        "activation": _ACTIVATIONS[activation],
        "end_when_cut": True,
        "tied_head": bool(hf.get("tie_word_embeddings", True)),
        # the tokenizer's token_type_ids (all 0) reach GPT-2's forward, which adds wte[0] at every position
        "token_type_id": 0 if "token_type_ids" in reference.model_input_names else None,
    }


def map_reference_state_dict(
    state_dict: dict[str, torch.Tensor], tied: bool, source: str
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename (and transpose) every GPT-2 tensor to its scfm name.

    Returns the mapped tensors and the causal-mask buffers that were left out. ``lm_head.weight`` must equal
    ``wte`` when ``tied`` (GPT-2 ties them); otherwise it becomes ``next_token_head.weight``.

    Raises
    ------
    CheckpointError
        Tensors that match no rule (listed), a head that differs from the embedding it is tied to.
    """
    mapped: dict[str, torch.Tensor] = {}
    unknown, buffers = [], []
    head = None
    for key, value in state_dict.items():
        name = key.removeprefix("transformer.")
        if key == "lm_head.weight":
            head = value
            continue
        if _MASK_BUFFERS.match(name):
            buffers.append(key)
            continue
        for pattern, target, transpose in _COMPILED_RULES:
            if pattern.match(name):
                tensor = value.detach().float()
                mapped[pattern.sub(target, name)] = tensor.T.contiguous() if transpose else tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} tensors of {source} have no counterpart in a GPT-2 causal LM: {sorted(unknown)[:12]}"
            f"{' ...' if len(unknown) > 12 else ''}; is it another architecture?"
        )
    if head is not None:
        if tied:
            wte = mapped.get("token_embedding.weight")
            if wte is None or head.shape != wte.shape or not torch.equal(head.float(), wte):
                raise CheckpointError(
                    f"{source}: lm_head.weight differs from transformer.wte.weight although config.json ties them "
                    "(tie_word_embeddings); the weights were not saved from this configuration"
                )
        else:
            mapped["next_token_head.weight"] = head.detach().float()
    elif not tied:
        raise CheckpointError(f"{source} has no lm_head.weight, which an untied GPT-2 (tie_word_embeddings=false) has")
    return mapped, sorted(buffers)


@dataclass
class ConvertedTGPT:
    """A reference tGPT converted in memory: module in eval mode, vocabulary, provenance."""

    module: TGPTModule
    vocab: GeneVocab
    reference: ReferenceTGPT
    tokenizer_report: TokenizerReport
    buffers: list[str]

    @property
    def model_card(self) -> str:
        return _model_card(self)


def convert_tgpt_checkpoint(source: str | os.PathLike) -> ConvertedTGPT:
    """Convert a reference tGPT directory (GPT-2 config, weights, ``tokenizer.json``) into a :class:`TGPTModule`."""
    reference = read_reference_tgpt(source)
    weights = str(reference.path / reference.weights_file)
    tied = bool(reference.hf_config.get("tie_word_embeddings", True))
    mapped, buffers = map_reference_state_dict(reference.state_dict, tied, weights)
    fields = config_from_reference(reference, mapped)
    vocab, report = vocab_from_tokenizer(reference, fields["n_tokens"])
    extra = {
        "converted_from": "tgpt",
        "source": str(reference.path.resolve()),
        "source_sha256": reference.sha256,
        "tokenizer_template": report.template,
    }
    config = TGPTConfig(pad_id=vocab.pad_id, begin_id=vocab.cls_id, end_id=vocab.eoc_id, extra=extra, **fields)
    module = TGPTModule(config)
    load_weights_strict(module, mapped, weights, config_file=CONFIG_FILE)
    module.eval()
    return ConvertedTGPT(module, vocab, reference, report, buffers)


def write_converted_tgpt(source: str | os.PathLike, destination: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Convert a reference tGPT directory and write it as an scfm checkpoint directory (atomically)."""
    converted = convert_tgpt_checkpoint(source)
    return save_checkpoint(
        destination,
        config=converted.module.config.to_dict(),
        vocab=converted.vocab,
        state_dict=converted.module.state_dict(),
        model_card=converted.model_card,
        overwrite=overwrite,
    )


def is_reference_tgpt_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Hugging Face GPT-2 directory (``config.json`` with ``model_type`` ``"gpt2"``)."""
    path = Path(path).expanduser()
    file = path / CONFIG_FILE
    if not (path.is_dir() and file.is_file()):
        return False
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "gpt2" and "family" not in config


def pretrained_from_reference(path: str | os.PathLike) -> Pretrained:
    """Convert a reference tGPT directory in memory, returning a :class:`~scfm.models.Pretrained`."""
    converted = convert_tgpt_checkpoint(path)
    reference = converted.reference
    return Pretrained(
        "tgpt",
        converted.module,
        converted.vocab,
        reference.path.name,
        str(reference.path),
        reference.sha256[reference.weights_file],
    )


def _token_type_line(config: TGPTConfig) -> str:
    if config.token_type_id is None:
        return "none (tokenizer_config.json's model_input_names has no token_type_ids)"
    return (
        "the tokenizer returns token_type_ids (all 0), which the reference feature extraction passes to GPT-2; "
        "the embedding of token 0 is added at every position, as there"
    )


def _model_card(converted: ConvertedTGPT) -> str:
    reference, config, report = converted.reference, converted.module.config, converted.tokenizer_report
    n_params = sum(p.numel() for p in converted.module.parameters())
    files = "\n".join(f"  - `{name}`: sha256 `{digest}`" for name, digest in sorted(reference.sha256.items()))
    ignored = ", ".join(reference.ignored_files) or "none"
    hf = json.dumps(reference.hf_config, indent=2, sort_keys=True, default=str)
    return f"""# tGPT checkpoint converted by scfm

- source directory: `{reference.path.resolve()}`
- source files:
{files}
- weights read: `{reference.weights_file}` (other weight files ignored: {ignored})
- converted: {dt.date.today().isoformat()} with `scfm convert tgpt`
- parameters: {n_params:,}; {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads,
  feed-forward {config.d_hidden}, {config.max_len} positions, activation {config.activation}; vocabulary
  {config.n_tokens} tokens ({report.n_genes} genes, {report.n_filler} unused embedding rows)
- tokenizer template `{report.template}`: `</b>` became `<cls>`, `</s>` became `<eoc>`; every sample ends with
  `<eoc>`, so at most {config.max_len - 2} genes fit
- gene tokens respelled for matching var_names ('_' back to '-' or '.'): {report.n_respelled}
- causal-mask buffers of old `transformers` versions left out: {len(converted.buffers)}
- token type embedding: {_token_type_line(config)}
- cell embedding: mean of the last hidden states over the gene tokens (between `</b>` and `</s>`), as the
  reference README computes it; L2-normalised by `scfm.tl.embed`

## Preprocessing

A sample is its expressed genes ranked by value, highest first (ties by vocabulary id). Genes outside the
vocabulary are dropped before ranking (the reference tokenizer would put `<unk>` in their place).

## Reference config.json

```json
{hf}
```
"""


__all__ = [
    "ConvertedTGPT",
    "ReferenceTGPT",
    "TokenizerReport",
    "config_from_reference",
    "convert_tgpt_checkpoint",
    "is_reference_tgpt_dir",
    "map_reference_state_dict",
    "pretrained_from_reference",
    "read_reference_tgpt",
    "respell_gene",
    "vocab_from_tokenizer",
    "write_converted_tgpt",
]
