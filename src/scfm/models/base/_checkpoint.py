"""Checkpoint directories: ``config.json``, ``vocab.json``, ``model.safetensors``, ``model_card.md``.

Nothing here unpickles: weights are safetensors, metadata is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scfm.genes import GeneVocab

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.md"
SETUP_FILE = "setup.json"
ANNDATA_FILE = "adata.h5ad"
REQUIRED_FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, CARD_FILE)

BUNDLED = {
    "default": "tgpt_default",  # the best zero-shot embedding of the four (docs/benchmarks.md, zero-shot protocol)
    "scgpt": "scgpt_default",
    "scgpt-default": "scgpt_default",
    "tgpt": "tgpt_default",
    "tgpt-default": "tgpt_default",
    "cellplm": "cellplm_default",
    "cellplm-default": "cellplm_default",
    "scmulan": "scmulan_default",
    "scmulan-default": "scmulan_default",
}


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, corrupted, or inconsistent with its config."""


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """No checkpoint at the given path (a ``FileNotFoundError``, and like every bad argument a ``ValueError``)."""


@dataclass
class Checkpoint:
    """The parsed contents of a checkpoint directory."""

    path: Path
    config: dict[str, Any]
    vocab: GeneVocab
    state_dict: dict[str, torch.Tensor]
    model_card: str
    sha256: str

    @property
    def family(self) -> str:
        return str(self.config.get("family", "unknown"))

    @property
    def name(self) -> str:
        return self.path.name


def bundled_checkpoint_names() -> list[str]:
    """Names accepted by :func:`resolve_checkpoint_path` for the checkpoints shipped inside the package."""
    return sorted(BUNDLED)


def recorded_checkpoint(path: str | os.PathLike) -> str:
    """How provenance names a checkpoint: a bundled one by its name (``"scgpt-default"``), others by their path.

    A bundled checkpoint's absolute path says only where the package was installed on one machine; its name loads it
    anywhere (``scfm.models.load_checkpoint(name)``).
    """
    candidate = Path(path)
    bundled_root = Path(str(resources.files("scfm") / "checkpoints"))
    if candidate.parent == bundled_root:
        names = [name for name, folder in BUNDLED.items() if folder == candidate.name and "-" in name]
        if names:
            return names[0]
    return str(path)


def resolve_checkpoint_path(name_or_path: str | os.PathLike | None) -> Path:
    """Map ``None``/a bundled name/a directory to the checkpoint directory (no network access, ever)."""
    if name_or_path is None:
        name_or_path = "default"
    key = str(name_or_path)
    if key.lower() in BUNDLED:
        return Path(str(resources.files("scfm") / "checkpoints" / BUNDLED[key.lower()]))
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(
            f"no checkpoint at {str(path)!r}; pass a checkpoint directory or one of the bundled names "
            f"{bundled_checkpoint_names()} (scfm never downloads weights)"
        )
    if not path.is_dir():
        raise CheckpointError(
            f"{str(path)!r} is a file; a checkpoint is a directory with {', '.join(REQUIRED_FILES)}. "
            "For a checkpoint of the reference scGPT code pass its directory (best_model.pt, args.json, vocab.json), "
            "or convert it once with `scfm convert scgpt SRC DEST`."
        )
    return path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(name_or_path: str | os.PathLike | None) -> Checkpoint:
    """Read and validate a checkpoint directory.

    Raises
    ------
    CheckpointError
        Missing files, unreadable JSON, or a corrupted weights file.
    """
    path = resolve_checkpoint_path(name_or_path)
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"checkpoint directory {str(path)!r} is missing {', '.join(missing)}; a checkpoint needs "
            f"{', '.join(REQUIRED_FILES)}"
        )
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path / CONFIG_FILE} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / CONFIG_FILE} must hold a JSON object")
    try:
        vocab = GeneVocab.load(path / VOCAB_FILE)
    except (ValueError, OSError) as err:
        raise CheckpointError(f"cannot read {path / VOCAB_FILE}: {err}") from err
    try:
        state_dict = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path / WEIGHTS_FILE} is not a readable safetensors file ({err})") from err
    state_dict = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    return Checkpoint(
        path=path,
        config=config,
        vocab=vocab,
        state_dict=state_dict,
        model_card=(path / CARD_FILE).read_text(),
        sha256=file_sha256(path / WEIGHTS_FILE),
    )


def check_weight_shapes(
    module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str, config_file: str = CONFIG_FILE
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected and mis-shaped tensor of ``state_dict``.

    ``module`` may live on the ``meta`` device (only its shapes are read); ``config_file`` names the file the
    module's architecture was read from, for the error message.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if mismatched:
            parts.append(f"shape mismatches (file vs config) {mismatched[:8]}")
        raise CheckpointError(f"weights in {source} do not match its {config_file}: " + "; ".join(parts))


def load_weights_strict(
    module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str, config_file: str = CONFIG_FILE
) -> None:
    """Load ``state_dict`` into ``module`` after :func:`check_weight_shapes`."""
    check_weight_shapes(module, state_dict, source, config_file)
    module.load_state_dict(state_dict, strict=True)


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    config: dict[str, Any],
    vocab: GeneVocab,
    state_dict: dict[str, torch.Tensor],
    model_card: str,
    overwrite: bool = False,
    half_precision: bool = False,
    extra_files: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (a temporary sibling directory renamed into place).

    Parameters
    ----------
    half_precision
        Store floating-point tensors as float16 (halves the size; they are loaded back as float32).
    extra_files
        File name -> function writing that file to the path it is given (inside the staging directory).
    """
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu().contiguous()
        if half_precision and value.is_floating_point():
            value = value.half()
        tensors[key] = value

    def write(staging: Path) -> None:
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt", "family": str(config.get("family"))})
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        vocab.save(staging / VOCAB_FILE)
        (staging / CARD_FILE).write_text(model_card)
        for name, write_extra in (extra_files or {}).items():
            write_extra(staging / name)

    return write_directory_atomically(directory, write, overwrite=overwrite)


def write_directory_atomically(
    directory: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Fill a temporary sibling of ``directory`` with ``write(staging)``, then rename it into place.

    A failure leaves any existing ``directory`` as it was and removes the staging directory.

    Raises
    ------
    FileExistsError
        ``directory`` exists and ``overwrite`` is False.
    """
    target = Path(directory).expanduser()
    if target.exists() and not overwrite:
        raise FileExistsError(f"{str(target)!r} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(staging)
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_torch_state_dict(
    file: Path, resave_hint: str, layout: str = "a mapping of parameter names to tensors"
) -> dict[str, torch.Tensor]:
    """Read a state dict from a PyTorch file of another code base with ``torch.load(weights_only=True)``.

    Nothing but tensors and plain containers is unpickled: a file that needs more is refused, with
    ``resave_hint`` (how to re-save only the tensors) in the message. A dict nesting the weights under
    ``model_state_dict``, ``state_dict`` or ``model`` is unwrapped; otherwise the error names ``layout``.
    """
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{file} contains pickled Python objects that torch.load(weights_only=True) refuses to load "
            f"({str(err).splitlines()[0]}); scfm refuses to unpickle arbitrary code. In an environment you trust, "
            f"re-save only the tensors: {resave_hint}."
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"cannot read {file} as a PyTorch state dict ({err})") from err
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
            break
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{file} does not hold a state dict: expected {layout}")
    not_tensors = sorted(k for k, v in loaded.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{file}: entries that are not tensors: {not_tensors[:8]}; expected {layout}")
    return dict(loaded)


def module_from_checkpoint(
    checkpoint: Checkpoint,
    *,
    family: str,
    label: str,
    config_cls,
    module_cls,
    vocab_problem: Callable[[Any, GeneVocab], str | None],
):
    """Return the eval-mode module of an already read checkpoint of ``family`` (``label``: "a tGPT", "an scGPT", ...).

    ``vocab_problem(config, vocab)`` returns what disagrees between ``config.json`` and ``vocab.json``, or ``None``.
    """
    if checkpoint.family != family:
        raise CheckpointError(f"{checkpoint.path} holds a {checkpoint.family!r} model, not {label} one")
    name = config_cls.__name__.removesuffix("Config")
    config_file = checkpoint.path / CONFIG_FILE
    try:
        config = config_cls.from_checkpoint_dict(checkpoint.config)
    except (TypeError, ValueError, ArithmeticError) as err:
        raise CheckpointError(f"{config_file} is not a valid {name} config: {err}") from err
    problem = vocab_problem(config, checkpoint.vocab)
    if problem:
        raise CheckpointError(f"{problem} in {str(checkpoint.path)!r}")
    weights = str(checkpoint.path / WEIGHTS_FILE)
    n_tensors = len(checkpoint.state_dict)
    too_deep = {
        key: value
        for key, value in config.to_dict().items()
        if key.endswith("layers") and isinstance(value, int) and not 0 <= value <= n_tensors
    }
    if too_deep:  # every layer holds at least one tensor: this bound refuses absurd depths before building anything
        raise CheckpointError(
            f"{config_file} asks for {too_deep} layers, but {weights} holds only {n_tensors} tensors; the config "
            "does not belong to these weights"
        )
    try:  # the architecture on the meta device first: no memory is allocated for sizes the weights do not have
        with torch.device("meta"):
            skeleton = module_cls(config)
    except (TypeError, ValueError, ArithmeticError, RuntimeError, AssertionError) as err:
        raise CheckpointError(f"{config_file} does not describe a valid {name} model: {err}") from err
    check_weight_shapes(skeleton, checkpoint.state_dict, weights)
    module = module_cls(config)
    load_weights_strict(module, checkpoint.state_dict, weights)
    module.eval()
    return module


def decoder_vocab_problem(size_field: str) -> Callable[[Any, GeneVocab], str | None]:
    """Return the ``vocab_problem`` of decoder families.

    It requires ``config.<size_field>`` to be the vocabulary size and the pad, begin and end ids to be the vocabulary's
    ``<pad>``, ``<cls>`` and ``<eoc>``.
    """

    def problem(config, vocab: GeneVocab) -> str | None:
        size = getattr(config, size_field)
        if size != len(vocab):
            return f"config.json says {size_field}={size} but vocab.json has {len(vocab)} tokens"
        if (config.pad_id, config.begin_id, config.end_id) != (vocab.pad_id, vocab.cls_id, vocab.eoc_id):
            return "pad/begin/end ids in config.json and vocab.json disagree"
        return None

    return problem
