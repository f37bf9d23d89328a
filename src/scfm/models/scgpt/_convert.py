"""Import checkpoints of the reference scGPT code (``best_model.pt`` + ``args.json`` + ``vocab.json``).

Every tensor of the reference state dict is mapped to an scfm name by the rules in :data:`KEY_RULES`, or
named in an error. The flash-attn layout (``self_attn.Wqkv``) and the ``torch.nn.TransformerEncoder`` layout
(``self_attn.in_proj_weight``) hold the same packed ``[q; k; v]`` projection and map to the same tensor.

Heads of fine-tuned checkpoints import too: the cell-type classifier (``cls_decoder``, class names from
``id2type.json`` beside the weights or from ``label_names``), the batch discriminator
(``grad_reverse_discriminator``) and the ``"concat query"`` / ``"sum query"`` GEPC decoders.
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

from scfm.genes import GeneVocab

from ..base._checkpoint import CheckpointError, file_sha256, load_weights_strict, read_torch_state_dict, save_checkpoint
from ..base._pretrained import Pretrained
from ._config import SCGPTConfig
from ._module import SCGPTModule

ARGS_FILE = "args.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "best_model.pt"
LABELS_FILE = "id2type.json"
REFERENCE_FILES = (ARGS_FILE, VOCAB_FILE, WEIGHTS_FILE)
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
# Special tokens the reference appends to a vocabulary that lacks them, in this order, before building its model.
REFERENCE_APPENDED_SPECIALS = ("<pad>", "<cls>", "<eoc>")
# Prefixes of reference modules that scfm has no counterpart for; they are dropped only when the user asks.
DROPPABLE_PREFIXES = ("cls_decoder", "grad_reverse_discriminator", "flag_encoder")

_LAYER = r"transformer_encoder\.layers\.(\d+)\."
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"encoder\.embedding\.weight", "gene_embedding.embedding.weight"),
    (r"encoder\.enc_norm\.(weight|bias)", r"gene_embedding.norm.\1"),
    (r"value_encoder\.(linear1|linear2|norm)\.(weight|bias)", r"value_embedding.\1.\2"),
    (r"batch_encoder\.embedding\.weight", "batch_embedding.embedding.weight"),
    (r"batch_encoder\.enc_norm\.(weight|bias)", r"batch_embedding.norm.\1"),
    (_LAYER + r"self_attn\.in_proj_(weight|bias)", r"transformer.layers.\1.self_attn.in_proj.\2"),
    (_LAYER + r"self_attn\.Wqkv\.(weight|bias)", r"transformer.layers.\1.self_attn.in_proj.\2"),
    (_LAYER + r"self_attn\.out_proj\.(weight|bias)", r"transformer.layers.\1.self_attn.out_proj.\2"),
    (_LAYER + r"(linear1|linear2|norm1|norm2)\.(weight|bias)", r"transformer.layers.\1.\2.\3"),
    (r"decoder\.fc\.([024])\.(weight|bias)", r"expression_head.value.\1.\2"),
    (r"decoder\.zero_logit\.([024])\.(weight|bias)", r"expression_head.zero.\1.\2"),
    (r"mvc_decoder\.gene2query\.(weight|bias)", r"cell_to_gene_head.gene_to_query.\1"),
    (r"mvc_decoder\.W\.weight", "cell_to_gene_head.value_proj.weight"),
    (r"mvc_decoder\.W_zero_logit\.(weight|bias)", r"cell_to_gene_head.zero_proj.\1"),
    (r"mvc_decoder\.(fc1|fc2)\.(weight|bias)", r"cell_to_gene_head.\1.\2"),
    (r"mvc_decoder\.hidden_activation\.weight", "cell_to_gene_head.hidden_activation.weight"),
    (r"cls_decoder\._decoder\.(\d+)\.(weight|bias)", r"classifier.blocks.\1.\2"),
    (r"cls_decoder\.out_layer\.(weight|bias)", r"classifier.out.\1"),
    (r"grad_reverse_discriminator\._decoder\.(\d+)\.(weight|bias)", r"batch_discriminator.classifier.blocks.\1.\2"),
    (r"grad_reverse_discriminator\.out_layer\.(weight|bias)", r"batch_discriminator.classifier.out.\1"),
)
_COMPILED_RULES = tuple((re.compile(pattern + r"\Z"), target) for pattern, target in KEY_RULES)
_UNSUPPORTED = {
    "dsbn.": "domain-specific batch norm (DSBN)",
    "bn.": "batch norm on the input embeddings",
    "transformer_encoder.fast_transformer_encoder.": "the 'linear' fast-transformer backend",
    "value_encoder.embedding.": "categorical value embeddings (input_emb_style='category')",
}


@dataclass
class ReferenceCheckpoint:
    """The three files of a reference scGPT checkpoint directory, read and checked."""

    path: Path
    args: dict[str, Any]
    vocab: GeneVocab
    state_dict: dict[str, torch.Tensor]
    weights_sha256: str
    appended_specials: list[str] = field(default_factory=list)


@dataclass
class ConversionReport:
    """What a conversion did: tensors mapped, tensors dropped on request, the attention layout found."""

    n_mapped: int
    dropped: list[str]
    attention_layout: str
    stripped_prefix: str | None


def read_reference_checkpoint(path: str | os.PathLike) -> ReferenceCheckpoint:
    """Read ``args.json``, ``vocab.json`` and ``best_model.pt`` from a reference scGPT checkpoint directory.

    The weights are loaded with ``torch.load(..., weights_only=True)``: nothing but tensors and plain
    containers is unpickled.

    Raises
    ------
    CheckpointError
        A missing file, an ambiguous extra weights file, unreadable JSON, a pickle that ``weights_only``
        refuses, or a vocabulary whose size disagrees with the gene embedding.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is not a directory; an scGPT checkpoint is a directory with {', '.join(REFERENCE_FILES)}"
        )
    missing = [name for name in REFERENCE_FILES if not (path / name).is_file()]
    if missing:
        hint = " It looks like an scfm checkpoint already." if (path / "model.safetensors").is_file() else ""
        raise CheckpointError(
            f"scGPT checkpoint directory {str(path)!r} is missing {', '.join(missing)}; it needs "
            f"{', '.join(REFERENCE_FILES)}.{hint}"
        )
    extra_weights = sorted(
        p.name for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name != WEIGHTS_FILE
    )
    if extra_weights:
        raise CheckpointError(
            f"{str(path)!r} holds weight files besides {WEIGHTS_FILE}: {extra_weights}. It is ambiguous which "
            f"weights belong to {ARGS_FILE}; move the others out of the directory."
        )
    args = _read_json_object(path / ARGS_FILE)
    token_to_id = _read_json_object(path / VOCAB_FILE)
    vocab, appended = _reference_vocab(token_to_id, path / VOCAB_FILE)
    state_dict = read_torch_state_dict(path / WEIGHTS_FILE, "torch.save(model.state_dict(), 'best_model.pt')")
    return ReferenceCheckpoint(path, args, vocab, state_dict, file_sha256(path / WEIGHTS_FILE), appended)


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} must hold a JSON object, found {type(data).__name__}")
    return data


def _reference_vocab(token_to_id: dict[str, Any], file: Path) -> tuple[GeneVocab, list[str]]:
    """Return the vocabulary the reference builds from ``vocab.json`` (it appends missing specials at the end)."""
    appended = [token for token in REFERENCE_APPENDED_SPECIALS if token not in token_to_id]
    full = dict(token_to_id)
    for token in appended:
        full[token] = len(full)
    try:
        return GeneVocab.from_dict(full), appended
    except ValueError as err:
        raise CheckpointError(f"{file} is not a usable gene vocabulary: {err}") from err


def map_reference_state_dict(
    state_dict: dict[str, torch.Tensor], drop: tuple[str, ...] | list[str] = ()
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename every reference tensor to its scfm name.

    Parameters
    ----------
    state_dict
        The reference ``TransformerModel`` state dict (``module.`` prefixes of DDP are stripped).
    drop
        Prefixes of reference modules to leave out on purpose (from :data:`DROPPABLE_PREFIXES`).

    Raises
    ------
    CheckpointError
        Tensors that match no rule (listed), or modules scfm does not implement.
    """
    bad_drop = sorted(set(drop) - set(DROPPABLE_PREFIXES))
    if bad_drop:
        raise CheckpointError(f"cannot drop {bad_drop}: only {list(DROPPABLE_PREFIXES)} may be dropped")
    stripped = None
    if state_dict and all(key.startswith("module.") for key in state_dict):
        stripped = "module."
        state_dict = {key[len(stripped) :]: value for key, value in state_dict.items()}

    unsupported = sorted(
        {what for key in state_dict for prefix, what in _UNSUPPORTED.items() if key.startswith(prefix)}
    )
    if unsupported:
        raise CheckpointError(f"the checkpoint uses {', '.join(unsupported)}, which scfm cannot import yet")

    mapped: dict[str, torch.Tensor] = {}
    dropped, unknown, layouts = [], [], set()
    for key, value in state_dict.items():
        if any(key == prefix or key.startswith(prefix + ".") for prefix in drop):
            dropped.append(key)
            continue
        target = _map_key(key)
        if target is None:
            unknown.append(key)
            continue
        if ".self_attn.Wqkv." in key:
            layouts.add("flash-attn (Wqkv)")
        elif ".self_attn.in_proj_" in key:
            layouts.add("torch.nn.TransformerEncoder (in_proj)")
        if target in mapped:
            raise CheckpointError(f"two reference tensors map to {target!r}; the state dict mixes attention layouts")
        mapped[target] = value.detach().float() if value.is_floating_point() else value.detach()
    if unknown:
        droppable = sorted({k.split(".")[0] for k in unknown if k.split(".")[0] in DROPPABLE_PREFIXES})
        hint = (
            f" To leave out {droppable} on purpose, pass drop={droppable} (CLI: --drop {' --drop '.join(droppable)})."
            if droppable
            else ""
        )
        raise CheckpointError(
            f"{len(unknown)} tensors of the scGPT state dict have no scfm counterpart: {sorted(unknown)[:12]}"
            f"{' ...' if len(unknown) > 12 else ''}.{hint}"
        )
    layout = " + ".join(sorted(layouts)) or "none"
    return mapped, ConversionReport(len(mapped), sorted(dropped), layout, stripped)


def _map_key(key: str) -> str | None:
    for pattern, target in _COMPILED_RULES:
        if pattern.match(key):
            return pattern.sub(target, key)
    return None


def config_from_reference(
    args: dict[str, Any],
    vocab: GeneVocab,
    mapped: dict[str, torch.Tensor],
    source: str,
    label_names: list[str] | None = None,
) -> SCGPTConfig:
    """Build the :class:`SCGPTConfig` from ``args.json`` and the tensor shapes, checking that they agree.

    ``label_names`` are the class names of an imported ``cls_decoder``, in output order.
    """
    if args.get("input_emb_style", "continuous") != "continuous":
        raise CheckpointError(
            f"{source}: input_emb_style={args['input_emb_style']!r} is not supported (continuous only)"
        )
    if args.get("pre_norm", False):
        raise CheckpointError(f"{source}: pre_norm=true checkpoints use a norm layout scfm does not implement")
    if "gene_embedding.embedding.weight" not in mapped:
        raise CheckpointError(f"{source}: the state dict has no gene embedding (encoder.embedding.weight)")
    n_tokens, d_model = mapped["gene_embedding.embedding.weight"].shape
    if n_tokens != len(vocab):
        raise CheckpointError(
            f"{source}: vocab.json has {len(vocab)} tokens (special tokens the reference appends included) but "
            f"encoder.embedding.weight has {n_tokens} rows; the vocabulary and the weights come from different models"
        )
    layers = sorted({int(m.group(1)) for k in mapped if (m := re.match(r"transformer\.layers\.(\d+)\.", k))})
    checks = {
        "embsize": (args.get("embsize", d_model), d_model, "encoder.embedding.weight columns"),
        "nlayers": (args.get("nlayers", len(layers)), len(layers), "transformer layers in the state dict"),
    }
    if layers:
        d_hidden = mapped["transformer.layers.0.linear1.weight"].shape[0]
        checks["d_hid"] = (args.get("d_hid", d_hidden), d_hidden, "linear1 rows")
    else:
        raise CheckpointError(f"{source}: the state dict has no transformer layers")
    mismatched = [f"{name}={said} but {found} {what}" for name, (said, found, what) in checks.items() if said != found]
    if mismatched:
        raise CheckpointError(f"{source}: args.json disagrees with the weights: " + "; ".join(mismatched))
    n_heads = int(args.get("nheads", 0))
    if n_heads <= 0 or d_model % n_heads:
        raise CheckpointError(f"{source}: args.json must give nheads dividing embsize ({d_model}); got {n_heads}")
    n_batches = (
        mapped["batch_embedding.embedding.weight"].shape[0] if "batch_embedding.embedding.weight" in mapped else 0
    )
    heads = _head_settings(mapped, int(n_batches), d_model, label_names, source)
    try:
        return SCGPTConfig(
            n_tokens=n_tokens,
            pad_id=vocab[args.get("pad_token", "<pad>")],
            cls_id=vocab.cls_id,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=len(layers),
            d_hidden=d_hidden,
            dropout=float(args.get("dropout", 0.0)),
            n_bins=int(args.get("n_bins", 51)),
            max_len=int(args.get("max_seq_len", 1200)),
            pad_value=float(args.get("pad_value", -2)),
            mask_value=float(args.get("mask_value", -1)),
            input_style="continuous",
            cell_embedding="cls",
            norm_first=False,
            activation="relu",
            predict_zero="expression_head.zero.0.weight" in mapped,
            gepc_zero_bias=True,
            **heads,
        )
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{source}: cannot build an SCGPT config from args.json: {err}") from err


def _head_settings(
    mapped: dict[str, torch.Tensor], n_batches: int, d_model: int, label_names: list[str] | None, source: str
) -> dict[str, Any]:
    """Config fields of the imported task heads: classifier, batch discriminator, GEPC style, batch count."""
    settings: dict[str, Any] = {"n_batches": n_batches}
    classifier_linears = {int(k.split(".")[2]) for k in mapped if k.startswith("classifier.blocks.")}
    discriminator = "batch_discriminator.classifier.out.weight" in mapped
    if "classifier.out.weight" in mapped:
        n_classes = mapped["classifier.out.weight"].shape[0]
        if label_names is None:
            raise CheckpointError(
                f"{source}: the checkpoint has a cell-type classifier (cls_decoder, {n_classes} classes) but no class "
                f'names: put {LABELS_FILE} ({{"0": "B cell", ...}}, the id2type mapping of the fine-tuning run) '
                "beside best_model.pt or pass label_names (CLI: --labels FILE); or drop it (--drop cls_decoder)"
            )
        if n_classes < 2:
            raise CheckpointError(
                f"{source}: cls_decoder has {n_classes} output; a one-class head is the untrained head of a "
                "pretraining run: drop it (drop=['cls_decoder'], CLI --drop cls_decoder)"
            )
        if len(label_names) != n_classes:
            raise CheckpointError(
                f"{source}: {len(label_names)} class names for a cls_decoder with {n_classes} outputs; the label "
                "mapping belongs to another fine-tuning run"
            )
        settings["label_categories"] = [str(name) for name in label_names]
    elif label_names is not None:
        raise CheckpointError(f"{source}: class names were given but the checkpoint has no cls_decoder")
    # (Linear, activation, LayerNorm) blocks: the Linear of block b is entry 3b; the output layer adds one
    layers = {len({i for i in classifier_linears if i % 3 == 0}) + 1} if "classifier.out.weight" in mapped else set()
    if discriminator:
        disc_blocks = {int(k.split(".")[3]) for k in mapped if k.startswith("batch_discriminator.classifier.blocks.")}
        layers.add(len({i for i in disc_blocks if i % 3 == 0}) + 1)
        n_disc = mapped["batch_discriminator.classifier.out.weight"].shape[0]
        if n_batches and n_disc != n_batches:
            raise CheckpointError(
                f"{source}: grad_reverse_discriminator predicts {n_disc} batches but batch_encoder has {n_batches}"
            )
        settings.update(batch_discriminator=True, n_batches=n_disc, batch_embedding=bool(n_batches))
    if len(layers) > 1:
        raise CheckpointError(f"{source}: cls_decoder and grad_reverse_discriminator differ in depth ({layers})")
    if layers:
        settings.update(classifier_layers=layers.pop(), classifier_standardise=False)
    if "cell_to_gene_head.fc1.weight" in mapped:
        query_width = mapped["cell_to_gene_head.gene_to_query.weight"].shape[0]
        fc1_in = mapped["cell_to_gene_head.fc1.weight"].shape[1]
        if fc1_in == d_model + query_width:
            settings["gepc_style"] = "concat query"
        elif fc1_in == d_model == query_width:
            settings["gepc_style"] = "sum query"
        else:
            raise CheckpointError(
                f"{source}: mvc_decoder.fc1 takes {fc1_in} inputs, neither a 'concat query' nor a 'sum query' decoder"
            )
    return settings


def read_label_names(source: str | os.PathLike | list[str] | None, directory: Path) -> list[str] | None:
    """Class names of a ``cls_decoder``: a list, a JSON file (list or ``{"0": name}``), or ``id2type.json``."""
    if source is not None and not isinstance(source, str | os.PathLike):
        return [str(name) for name in source]
    file = Path(source).expanduser() if source is not None else directory / LABELS_FILE
    if not file.is_file():
        if source is not None:
            raise CheckpointError(f"label names file {str(file)!r} does not exist")
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file} is not valid JSON ({err})") from err
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return data
    if isinstance(data, dict):
        try:
            ids = sorted(int(key) for key in data)
        except ValueError:
            ids = []
        if ids == list(range(len(data))) and all(isinstance(v, str) for v in data.values()):
            return [data[str(i)] if str(i) in data else data[i] for i in ids]
    raise CheckpointError(
        f'{file} must hold the class names as a JSON list or as {{"0": name, "1": name, ...}} (ids 0..n-1)'
    )


@dataclass
class ConvertedSCGPT:
    """A reference checkpoint converted in memory: module in eval mode, vocabulary, provenance."""

    module: SCGPTModule
    vocab: GeneVocab
    reference: ReferenceCheckpoint
    report: ConversionReport

    @property
    def model_card(self) -> str:
        return _model_card(self)


def convert_scgpt_checkpoint(
    source: str | os.PathLike,
    drop: tuple[str, ...] | list[str] = (),
    label_names: str | os.PathLike | list[str] | None = None,
) -> ConvertedSCGPT:
    """Convert a reference scGPT checkpoint directory into an :class:`SCGPTModule`, in memory.

    Parameters
    ----------
    source
        Directory with ``args.json``, ``vocab.json`` and ``best_model.pt``.
    drop
        Reference modules to leave out on purpose (``"cls_decoder"``, ``"grad_reverse_discriminator"``,
        ``"flag_encoder"``). Anything else unmapped is an error.
    label_names
        Class names of a fine-tuned ``cls_decoder`` in output order: a list, or a JSON file holding a list or
        ``{"0": name, ...}``. ``None``: ``id2type.json`` in ``source`` if present.
    """
    reference = read_reference_checkpoint(source)
    weights = str(reference.path / WEIGHTS_FILE)
    mapped, report = map_reference_state_dict(reference.state_dict, drop)
    names = None if "cls_decoder" in drop else read_label_names(label_names, reference.path)
    config = config_from_reference(reference.args, reference.vocab, mapped, str(reference.path), names)
    config.extra = {
        "converted_from": "scgpt",
        "source": str(reference.path.resolve()),
        "source_sha256": reference.weights_sha256,
        "attention_layout": report.attention_layout,
        "dropped": report.dropped,
    }
    if "cell_to_gene_head.gene_to_query.weight" not in mapped:
        raise CheckpointError(
            f"{weights} has no GEPC decoder (mvc_decoder.*): scfm models always carry one; "
            "only checkpoints trained with MVC=true (all published pretrained models) can be imported"
        )
    module = SCGPTModule(config)
    load_weights_strict(module, mapped, weights, config_file=ARGS_FILE)
    module.eval()
    return ConvertedSCGPT(module, reference.vocab, reference, report)


def write_converted_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    drop: tuple[str, ...] | list[str] = (),
    label_names: str | os.PathLike | list[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a reference scGPT checkpoint directory and write it as an scfm checkpoint directory (atomically).

    ``drop`` and ``label_names`` as in :func:`convert_scgpt_checkpoint`.
    """
    converted = convert_scgpt_checkpoint(source, drop, label_names)
    return save_checkpoint(
        destination,
        config=converted.module.config.to_dict(),
        vocab=converted.vocab,
        state_dict=converted.module.state_dict(),
        model_card=converted.model_card,
        overwrite=overwrite,
    )


def is_reference_checkpoint_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a reference scGPT checkpoint directory (has ``best_model.pt`` and ``args.json``)."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / WEIGHTS_FILE).is_file() and (path / ARGS_FILE).is_file()


def _heads_line(config: SCGPTConfig) -> str:
    heads = [f"GEPC ({config.gepc_style})"]
    if config.label_categories:
        heads.append(f"cell-type classifier over {len(config.label_categories)} classes ({config.label_categories})")
    if config.batch_discriminator:
        heads.append(f"batch discriminator over {config.n_batches} batches")
    return "; ".join(heads)


def _model_card(converted: ConvertedSCGPT) -> str:
    reference, config = converted.reference, converted.module.config
    n_params = sum(p.numel() for p in converted.module.parameters())
    args = json.dumps(reference.args, indent=2, sort_keys=True, default=str)
    appended = ", ".join(reference.appended_specials) or "none"
    dropped = ", ".join(converted.report.dropped) or "none"
    return f"""# scGPT checkpoint converted by scfm

- source directory: `{reference.path.resolve()}`
- source weights: `{WEIGHTS_FILE}`, sha256 `{reference.weights_sha256}`
- converted: {dt.date.today().isoformat()} with `scfm convert scgpt`
- parameters: {n_params:,}; {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads,
  feed-forward {config.d_hidden}; vocabulary {config.n_tokens} tokens
- special tokens appended to vocab.json as the reference does: {appended}
- attention weights found in the {converted.report.attention_layout} layout
- tensors mapped: {converted.report.n_mapped}; dropped on request: {dropped}
- task heads imported: {_heads_line(config)}
- cell embedding: `<cls>` hidden state, L2-normalised by `scfm.tl.embed` (as scGPT's `embed_data`)

## Preprocessing

Values are binned per cell into {config.n_bins} quantile bins exactly as the reference does (same edges, same
rule for values tied to an edge). Two deliberate differences: the random numbers for ties, and the choice of
genes when a cell expresses more than {config.max_len - 1} genes, come from a generator seeded by the cell's own
content (the reference uses the global NumPy/PyTorch random state), and the kept genes stay in column order
(the reference shuffles them; attention without positions is order-invariant).

## Reference args.json

```json
{args}
```
"""


__all__ = [
    "ConversionReport",
    "ConvertedSCGPT",
    "ReferenceCheckpoint",
    "config_from_reference",
    "convert_scgpt_checkpoint",
    "is_reference_checkpoint_dir",
    "map_reference_state_dict",
    "read_reference_checkpoint",
    "write_converted_checkpoint",
]


def pretrained_from_reference(
    path: str | os.PathLike,
    drop: tuple[str, ...] | list[str] = (),
    label_names: str | os.PathLike | list[str] | None = None,
) -> Pretrained:
    """Convert a reference scGPT checkpoint directory in memory, returning a :class:`~scfm.models.Pretrained`."""
    converted = convert_scgpt_checkpoint(path, drop, label_names)
    reference = converted.reference
    return Pretrained(
        "scgpt", converted.module, converted.vocab, reference.path.name, str(reference.path), reference.weights_sha256
    )
