"""Import the public scMulan checkpoint (``ckpt_scMulan.pt`` + the package's ``meta_info.pt``).

The checkpoint is a dict ``{"model": state_dict, "model_args": {...}, ...}`` of a nanoGPT-style decoder:

* ``transformer.wte`` (``vocab_size x n_embd``): one flat vocabulary of genes, metadata terms and task tokens
  (``meta_info["token_set"]``; a token's id is its position there);
* ``transformer.wee`` (``expression_level + 1`` rows): the level of a word (0 for words that are not genes),
  added to the token embedding; no position embedding;
* ``transformer.h.N``: pre-norm blocks (``ln_1``, ``attn.c_attn`` packing ``[q; k; v]``, ``attn.c_proj``, ``ln_2``,
  ``mlp.c_fc``, ``mlp.c_proj``; ``nn.Linear`` layout, GELU's tanh approximation), then ``transformer.ln_f``;
* ``lm_head`` (next token, untied) and ``epx_head`` (a regression of every token's level), both without bias.

``meta_info.pt`` holds ``token_set`` (list), ``gene_set`` (list: the genes, in the order the reference reads a
cell's columns), ``cell_type`` and ``MCT`` (sets: the tokens that count as cell types). Both files are read with
``torch.load(weights_only=True)`` (plain containers, sets included; nothing else is unpickled).

The network becomes scfm's :class:`SCMulanModule` with ``layout="reference"``: the entity embedding is ``wte``
with three rows appended for scfm's ``<pad>``, ``<cls>`` and ``<eoc>`` (never used by the reference), the heads
are ``entity_head`` (``lm_head``) and ``level_head`` (``epx_head``). Inference follows the reference's own
sentence builder and greedy annotation (:mod:`scfm.models.scmulan._reference`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scfm.genes import GeneVocab

from ..base._checkpoint import CheckpointError, file_sha256, load_weights_strict, save_checkpoint
from ..base._pretrained import Pretrained
from ._config import SCMulanConfig
from ._module import SCMulanModule
from ._reference import GENERATED

CHECKPOINT_FILE = "ckpt_scMulan.pt"
META_INFO_FILE = "meta_info.pt"
TASK_TOKEN = "<PCT>"
STOP_TOKEN_ID = 0  # the reference ends generation when it produces token 0
SCFM_SPECIALS = ("<pad>", "<cls>", "<eoc>")
REQUIRED_ARGS = ("n_layer", "n_head", "n_embd", "vocab_size", "expression_level")
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP wrappers
_MASK_BUFFER = re.compile(r"transformer\.h\.\d+\.attn\.bias\Z")  # nanoGPT's causal mask without flash attention

_LAYER = r"transformer\.h\.(\d+)\."
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"transformer\.wee\.weight", "value_embedding.weight"),
    (_LAYER + r"ln_1\.(weight|bias)", r"transformer.layers.\1.norm1.\2"),
    (_LAYER + r"ln_2\.(weight|bias)", r"transformer.layers.\1.norm2.\2"),
    (_LAYER + r"attn\.c_attn\.(weight|bias)", r"transformer.layers.\1.self_attn.in_proj.\2"),
    (_LAYER + r"attn\.c_proj\.(weight|bias)", r"transformer.layers.\1.self_attn.out_proj.\2"),
    (_LAYER + r"mlp\.c_fc\.(weight|bias)", r"transformer.layers.\1.linear1.\2"),
    (_LAYER + r"mlp\.c_proj\.(weight|bias)", r"transformer.layers.\1.linear2.\2"),
    (r"transformer\.ln_f\.(weight|bias)", r"transformer.final_norm.\1"),
    (r"lm_head\.weight", "entity_head.weight"),
    (r"epx_head\.weight", "level_head.weight"),
)
_COMPILED = tuple((re.compile(pattern + r"\Z"), target) for pattern, target in KEY_RULES)


@dataclass
class ReferenceSCMulan:
    """The two files of the public scMulan, read and checked."""

    checkpoint_file: Path
    meta_info_file: Path
    model_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    token_set: list[str]
    gene_set: list[str]
    cell_types: set[str]
    other_entries: list[str] = field(default_factory=list)
    sha256: dict[str, str] = field(default_factory=dict)


def _torch_load(file: Path, what: str) -> Any:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{file} contains pickled Python objects that torch.load(weights_only=True) refuses to load "
            f"({str(err).splitlines()[0]}); scfm refuses to unpickle arbitrary code. In an environment you trust, "
            f"re-save only plain containers and tensors ({what})."
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"cannot read {file} as a PyTorch file ({err}); expected {what}") from err


def locate_files(source: str | os.PathLike, meta_info: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Return ``(checkpoint, meta_info)``: ``source`` is the checkpoint file or a directory holding both files.

    Without ``meta_info``, ``meta_info.pt`` is looked for beside the checkpoint.
    """
    source = Path(source).expanduser()
    if source.is_dir():
        candidates = sorted(
            p for p in source.iterdir() if p.is_file() and p.suffix == ".pt" and p.name != META_INFO_FILE
        )
        if (source / CHECKPOINT_FILE).is_file():
            checkpoint = source / CHECKPOINT_FILE
        elif len(candidates) == 1:
            checkpoint = candidates[0]
        else:
            found = [p.name for p in candidates] or "none"
            raise CheckpointError(
                f"{source} must hold the scMulan checkpoint ({CHECKPOINT_FILE}, or exactly one other .pt file besides "
                f"{META_INFO_FILE}); .pt files found: {found}"
            )
    elif source.is_file():
        checkpoint = source
    else:
        raise CheckpointError(
            f"{str(source)!r} does not exist; give the scMulan checkpoint ({CHECKPOINT_FILE}) or a directory "
            f"holding it and {META_INFO_FILE}"
        )
    meta = Path(meta_info).expanduser() if meta_info is not None else checkpoint.parent / META_INFO_FILE
    if not meta.is_file():
        raise CheckpointError(
            f"{meta} is missing: scMulan's token vocabulary is the package's {META_INFO_FILE} (scMulan/utils/"
            f"{META_INFO_FILE} in the scMulan repository); put it beside {checkpoint.name} or pass it explicitly "
            "(--meta-info PATH)"
        )
    return checkpoint, meta


def _string_list(value: Any, file: Path, key: str) -> list[str]:
    if isinstance(value, set | frozenset):
        value = sorted(value, key=str)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise CheckpointError(f"{file}: {key!r} must be a list (or set) of non-empty strings")
    return list(value)


def read_reference_scmulan(source: str | os.PathLike, meta_info: str | os.PathLike | None = None) -> ReferenceSCMulan:
    """Read and check ``ckpt_scMulan.pt`` and ``meta_info.pt`` (both with ``torch.load(weights_only=True)``).

    Raises
    ------
    CheckpointError
        A missing file, a pickle that ``weights_only`` refuses, a missing ``model``/``model_args`` entry, a
        vocabulary that is not a list of distinct strings, genes or cell types that are not tokens.
    """
    checkpoint, meta = locate_files(source, meta_info)
    loaded = _torch_load(checkpoint, "{'model': state_dict, 'model_args': {...}}")
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model"), dict):
        raise CheckpointError(
            f"{checkpoint} is not an scMulan checkpoint: expected a dict with 'model' (the state dict) and "
            f"'model_args', found {sorted(loaded)[:8] if isinstance(loaded, dict) else type(loaded).__name__}"
        )
    args = loaded.get("model_args")
    if not isinstance(args, dict):
        raise CheckpointError(f"{checkpoint} has no 'model_args' dict (the reference's MulanConfig arguments)")
    state = loaded["model"]
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{checkpoint}: 'model' entries that are not tensors: {not_tensors[:8]}")
    info = _torch_load(meta, "{'token_set': [...], 'gene_set': [...], 'cell_type': {...}, 'MCT': {...}}")
    if not isinstance(info, dict):
        raise CheckpointError(f"{meta} must hold a dict with 'token_set', 'gene_set' and 'cell_type'")
    missing = [key for key in ("token_set", "gene_set", "cell_type") if key not in info]
    if missing:
        raise CheckpointError(f"{meta} lacks {missing}; scMulan's meta_info.pt has token_set, gene_set, cell_type, MCT")
    tokens = _string_list(info["token_set"], meta, "token_set")
    if isinstance(info["token_set"], set | frozenset):
        raise CheckpointError(f"{meta}: 'token_set' is a set; token ids are positions in an ordered list")
    duplicated = sorted({t for t in tokens if tokens.count(t) > 1}) if len(set(tokens)) != len(tokens) else []
    if duplicated:
        raise CheckpointError(f"{meta}: 'token_set' lists tokens twice: {duplicated[:5]}")
    genes = _string_list(info["gene_set"], meta, "gene_set")
    cell_types = set(_string_list(info["cell_type"], meta, "cell_type"))
    cell_types |= set(_string_list(info.get("MCT", []), meta, "MCT"))
    known = set(tokens)
    for name, values in (("gene_set", genes), ("cell_type/MCT", sorted(cell_types))):
        absent = [v for v in values if v not in known]
        if absent:
            raise CheckpointError(f"{meta}: {len(absent)} {name} entries are not in token_set, e.g. {absent[:5]}")
    if len(set(genes)) != len(genes):
        raise CheckpointError(f"{meta}: 'gene_set' lists genes twice")
    if TASK_TOKEN not in known:
        raise CheckpointError(f"{meta}: token_set lacks the annotation task token {TASK_TOKEN!r}")
    other = sorted(str(k) for k in loaded if k not in ("model", "model_args"))
    sha = {checkpoint.name: file_sha256(checkpoint), meta.name: file_sha256(meta)}
    return ReferenceSCMulan(checkpoint, meta, dict(args), dict(state), tokens, genes, cell_types, other, sha)


def map_reference_state_dict(
    state_dict: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Rename every tensor to its scfm name; return the mapped tensors, ``wte`` and the mask buffers left out.

    Raises
    ------
    CheckpointError
        Tensors that match no rule (listed): another architecture; no ``transformer.wte.weight``.
    """
    mapped, unknown, buffers = {}, [], []
    wte = None
    for key, value in state_dict.items():
        name = key
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        if name == "transformer.wte.weight":
            wte = value.detach().float()
            continue
        if _MASK_BUFFER.match(name):
            buffers.append(key)
            continue
        for pattern, target in _COMPILED:
            if pattern.match(name):
                mapped[pattern.sub(target, name)] = value.detach().float()
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} tensors of {source} have no counterpart in the scMulan decoder: {sorted(unknown)[:12]}"
            f"{' ...' if len(unknown) > 12 else ''}; is it another architecture?"
        )
    if wte is None:
        raise CheckpointError(f"{source} has no token embedding transformer.wte.weight; is it an scMulan checkpoint?")
    return mapped, wte, sorted(buffers)


def _config_fields(reference: ReferenceSCMulan, mapped: dict[str, torch.Tensor], wte: torch.Tensor) -> dict:
    args, source = reference.model_args, f"{reference.checkpoint_file} (model_args)"
    absent = [key for key in REQUIRED_ARGS if key not in args]
    if absent:
        raise CheckpointError(f"{source} lacks {absent}; the reference builds its MulanConfig from them")
    try:
        n_layers, n_heads, d = int(args["n_layer"]), int(args["n_head"]), int(args["n_embd"])
        vocab_size, n_levels = int(args["vocab_size"]), int(args["expression_level"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: a size is not an integer ({err})") from err
    problems = []
    if int(args.get("ele", 0)) != 1:
        problems.append(f"ele={args.get('ele', 0)!r} (the reference model asserts ele == 1)")
    if not args.get("bias", True):
        problems.append("bias=False (scfm's layers have biases; the public checkpoint has them)")
    if n_heads <= 0 or d % n_heads:
        problems.append(f"n_head={n_heads} does not divide n_embd={d}")
    if n_levels < 1:
        problems.append(f"expression_level={n_levels}")
    if problems:
        raise CheckpointError(f"{source}: {'; '.join(problems)} is not supported")
    if vocab_size != len(reference.token_set):
        raise CheckpointError(
            f"{source} says vocab_size={vocab_size} but {reference.meta_info_file} has {len(reference.token_set)} "
            "tokens in token_set; the vocabulary and the weights come from different models"
        )
    expected = {
        "transformer.wte.weight": (tuple(wte.shape), (vocab_size, d)),
        "lm_head.weight": (_shape(mapped, "entity_head.weight"), (vocab_size, d)),
        "epx_head.weight": (_shape(mapped, "level_head.weight"), (vocab_size, d)),
        "transformer.wee.weight": (_shape(mapped, "value_embedding.weight"), (n_levels + 1, d)),
    }
    wrong = [f"{name} is {got} (expected {want})" for name, (got, want) in expected.items() if got != want]
    if wrong:
        raise CheckpointError(f"{reference.checkpoint_file}: {'; '.join(wrong)} for {source}")
    layers = {int(m.group(1)) for k in mapped if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
    if layers != set(range(n_layers)):
        raise CheckpointError(f"{source} says n_layer={n_layers} but the state dict holds blocks {sorted(layers)[:12]}")
    return {"n_layers": n_layers, "n_heads": n_heads, "d_model": d, "n_levels": n_levels, "vocab_size": vocab_size}


def _shape(mapped: dict[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    return tuple(mapped[key].shape) if key in mapped else None


def vocab_from_tokens(reference: ReferenceSCMulan) -> GeneVocab:
    """Build the scfm vocabulary with the reference ids: genes by name, other tokens as specials, then scfm's specials.

    Tokens that are not genes and not of the form ``<...>`` (metadata terms such as ``"T cell"``) are written
    ``<meta:NAME>`` so that they never match a gene name.
    """
    genes = set(reference.gene_set)
    clash = [t for t in reference.token_set if t in SCFM_SPECIALS]
    if clash:
        raise CheckpointError(f"{reference.meta_info_file}: token_set uses {clash}, which scfm reserves")
    bad = [g for g in reference.gene_set if re.match(r"^<.*>$", g)]
    if bad:
        raise CheckpointError(f"{reference.meta_info_file}: gene_set names that look like special tokens: {bad[:5]}")
    names = {}
    for i, token in enumerate(reference.token_set):
        names[token if token in genes or re.match(r"^<.*>$", token) else f"<meta:{token}>"] = i
    if len(names) != len(reference.token_set):
        raise CheckpointError(f"{reference.meta_info_file}: token_set has tokens that collide once renamed")
    n = len(reference.token_set)
    names.update({special: n + i for i, special in enumerate(SCFM_SPECIALS)})
    return GeneVocab.from_dict(names)


@dataclass
class ConvertedSCMulan:
    """A public scMulan converted in memory: module in eval mode, vocabulary, provenance."""

    module: SCMulanModule
    vocab: GeneVocab
    reference: ReferenceSCMulan
    buffers: list[str]

    @property
    def model_card(self) -> str:
        return _model_card(self)


def convert_scmulan_checkpoint(
    source: str | os.PathLike, meta_info: str | os.PathLike | None = None
) -> ConvertedSCMulan:
    """Convert ``ckpt_scMulan.pt`` (+ ``meta_info.pt``) into an :class:`SCMulanModule` with ``layout="reference"``."""
    reference = read_reference_scmulan(source, meta_info)
    source_name = str(reference.checkpoint_file)
    mapped, wte, buffers = map_reference_state_dict(reference.state_dict, source_name)
    sizes = _config_fields(reference, mapped, wte)
    vocab = vocab_from_tokens(reference)
    tokens = reference.token_set
    index = {t: i for i, t in enumerate(tokens)}
    cell_type_ids = sorted(index[t] for t in reference.cell_types)
    gene_order = [index[g] for g in reference.gene_set]
    n = sizes["vocab_size"]
    config = SCMulanConfig(
        n_gene_tokens=n + len(SCFM_SPECIALS),
        metadata_terms={"cell_type": [tokens[i] for i in cell_type_ids]},
        pad_id=n,
        begin_id=n + 1,
        end_id=n + 2,
        n_levels=sizes["n_levels"],
        d_model=sizes["d_model"],
        n_heads=sizes["n_heads"],
        n_layers=sizes["n_layers"],
        d_hidden=4 * sizes["d_model"],
        dropout=0.0,
        max_len=len(reference.gene_set) + 1 + GENERATED + 2,
        activation="gelu_tanh",
        layout="reference",
        n_reference_tokens=n,
        task_token_id=index[TASK_TOKEN],
        stop_token_id=STOP_TOKEN_ID,
        cell_type_ids=cell_type_ids,
        gene_order=None if gene_order == sorted(gene_order) else gene_order,
        extra={
            "converted_from": "scmulan",
            "source": str(reference.checkpoint_file.resolve()),
            "meta_info": str(reference.meta_info_file.resolve()),
            "source_sha256": reference.sha256,
            "model_args": {k: v for k, v in reference.model_args.items() if isinstance(v, int | float | str | bool)},
        },
    )
    mapped["entity_embedding.weight"] = torch.cat([wte, torch.zeros(len(SCFM_SPECIALS), wte.shape[1])])
    module = SCMulanModule(config)
    load_weights_strict(module, mapped, source_name, config_file=f"{reference.checkpoint_file.name} (model_args)")
    module.eval()
    return ConvertedSCMulan(module, vocab, reference, buffers)


def write_converted_scmulan(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    meta_info: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the public scMulan and write it as an scfm checkpoint directory (atomically)."""
    converted = convert_scmulan_checkpoint(source, meta_info)
    return save_checkpoint(
        destination,
        config=converted.module.config.to_dict(),
        vocab=converted.vocab,
        state_dict=converted.module.state_dict(),
        model_card=converted.model_card,
        overwrite=overwrite,
    )


def is_reference_scmulan_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory with ``meta_info.pt`` and the scMulan checkpoint (and no scfm config)."""
    path = Path(path).expanduser()
    if not path.is_dir() or (path / "config.json").exists() or not (path / META_INFO_FILE).is_file():
        return False
    return (path / CHECKPOINT_FILE).is_file()


def pretrained_from_reference(path: str | os.PathLike) -> Pretrained:
    """Convert a directory holding ``ckpt_scMulan.pt`` and ``meta_info.pt`` in memory."""
    converted = convert_scmulan_checkpoint(path)
    reference = converted.reference
    return Pretrained(
        "scmulan",
        converted.module,
        converted.vocab,
        reference.checkpoint_file.parent.name,
        str(reference.checkpoint_file.parent),
        reference.sha256[reference.checkpoint_file.name],
    )


def _model_card(converted: ConvertedSCMulan) -> str:
    reference, config = converted.reference, converted.module.config
    n_params = sum(p.numel() for p in converted.module.parameters()) - len(SCFM_SPECIALS) * config.d_model
    files = "\n".join(f"  - `{name}`: sha256 `{digest}`" for name, digest in sorted(reference.sha256.items()))
    args = json.dumps(reference.model_args, indent=2, sort_keys=True, default=str)
    order = "token-id order" if config.gene_order is None else "meta_info's gene_set order (not token-id order)"
    n_types, stop = len(config.cell_type_ids or []), reference.token_set[STOP_TOKEN_ID]
    return f"""# scMulan checkpoint converted by scfm

- source files:
{files}
- converted: {dt.date.today().isoformat()} with `scfm convert scmulan`
- parameters: {n_params:,} (the reference's count; scfm adds zero embedding rows for `<pad>`, `<cls>`, `<eoc>`)
- shape: {config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, feed-forward {config.d_hidden},
  GELU (tanh approximation), {config.n_levels} expression levels
- vocabulary: {config.n_reference_tokens} reference tokens, {len(reference.gene_set)} of them genes and {n_types}
  cell-type entities (`cell_type` and `MCT`); metadata terms are written `<meta:NAME>` in vocab.json
- task token `{TASK_TOKEN}` (id {config.task_token_id}); generation stops at token {config.stop_token_id} (`{stop}`)
- mapped: `transformer.wte` -> `entity_embedding`, `transformer.wee` -> `value_embedding`, blocks ->
  `transformer.layers`, `ln_f` -> `transformer.final_norm`, `lm_head` -> `entity_head`, `epx_head` -> `level_head`
- left out: {len(converted.buffers)} causal-mask buffers; checkpoint entries that are not weights:
  {", ".join(reference.other_entries) or "none"}

## Inference (as the reference's `model_inference` computes it)

A cell's prompt is its expressed genes of the gene set in the reverse of {order}, each with the level
`np.digitize(v, linspace(0, max v, {config.n_levels + 1}), right=True)` of its `normalize_total(1e4)` + `log1p`
value, then `{TASK_TOKEN}`. Three tokens are generated greedily, banning every earlier token of the sequence but the
last; the coarse and fine cell types are the first two (`Unclassified` when not cell-type entities); the embedding
is the final hidden state at the first generated token. Ties in the greedy choice go to the lowest id (the
reference draws among tied tokens at random). Generation of cells is not imported.

## Reference model_args

```json
{args}
```
"""


__all__ = [
    "ConvertedSCMulan",
    "ReferenceSCMulan",
    "convert_scmulan_checkpoint",
    "is_reference_scmulan_dir",
    "locate_files",
    "map_reference_state_dict",
    "pretrained_from_reference",
    "read_reference_scmulan",
    "vocab_from_tokens",
    "write_converted_scmulan",
]
