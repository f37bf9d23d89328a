"""A fitted count VAE of ``tl.integrate(method="vae")``: its genes, batches and weights, saved and reloaded.

``tl.integrate(reference, ..., return_model=True)`` returns a :class:`CountVAEModel`; passing it (or the directory
:meth:`CountVAEModel.save` wrote) as ``model=`` to ``tl.integrate(query, ...)`` maps the query into the reference's
latent space with the frozen encoder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from scfm.nn import BatchConditionedCountVAE

from ._checkpoint import CheckpointError, write_directory_atomically
from ._device import resolve_device

#: File that marks a directory as a saved :class:`CountVAEModel`.
COUNT_VAE_FILE = "count_vae.json"
COUNT_VAE_WEIGHTS = "count_vae.safetensors"
COUNT_VAE_FORMAT = 1
ENCODE_BLOCK = 4096  # cells encoded at once (eval mode: the result does not depend on it)


def encode_counts(
    module: BatchConditionedCountVAE,
    counts: sp.csr_matrix,
    side: np.ndarray | None,
    batches: np.ndarray,
    device: torch.device,
) -> np.ndarray:
    """Posterior means ``(n_obs, n_latent)`` float32 of the cells' latents, ``module`` in eval mode.

    ``batches`` (integer codes) are read only by a module whose encoder reads the batch.
    """
    module.eval()
    latent = np.empty((counts.shape[0], module.latent_mean.out_features), dtype=np.float32)
    with torch.inference_mode():
        for begin in range(0, counts.shape[0], ENCODE_BLOCK):
            end = min(begin + ENCODE_BLOCK, counts.shape[0])
            block = torch.as_tensor(counts[begin:end].toarray(), dtype=torch.float32, device=device)
            side_block = None if side is None else torch.as_tensor(side[begin:end], device=device)
            batch_block = torch.as_tensor(np.asarray(batches[begin:end], dtype=np.int64), device=device)
            mean, _ = module.encode(block, side_block, batch_block)
            latent[begin:end] = mean.float().cpu().numpy()
    return latent


@dataclass
class CountVAEModel:
    """A count VAE fitted by ``tl.integrate(method="vae")`` on a reference.

    Attributes
    ----------
    module
        The trained :class:`~scfm.nn.BatchConditionedCountVAE` (on the CPU, eval mode).
    genes
        The genes its encoder reads, in order (the reference's most variable genes, by name).
    batches
        The reference's batches, in the order of the decoder's one-hot columns.
    record
        How it was fitted (epochs, seed, learning rate, final loss...), as written to the reference's provenance.
    """

    module: BatchConditionedCountVAE
    genes: tuple[str, ...]
    batches: tuple[str, ...]
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.module.n_genes != len(self.genes) or self.module.n_side:
            raise ValueError(
                f"the module models {self.module.n_genes} genes and reads {self.module.n_side} side features, but "
                f"{len(self.genes)} genes were given; a count VAE that reads a cell embedding cannot map queries"
            )
        if self.module.n_batches != len(self.batches):
            raise ValueError(f"the module knows {self.module.n_batches} batches, but {len(self.batches)} were named")
        self.module.cpu().eval()

    @property
    def n_latent(self) -> int:
        """Width of the latent space."""
        return self.module.latent_mean.out_features

    @property
    def encodes_batch(self) -> bool:
        """Whether the encoder reads the batch (scArches' reference setting): a new batch then needs training."""
        return self.module.encode_batch

    def encode(
        self, counts: sp.spmatrix | np.ndarray, batches: np.ndarray | None = None, *, device: str = "cpu"
    ) -> np.ndarray:
        """Latent posterior means ``(n_obs, n_latent)`` of cells whose counts are given in the order of ``genes``.

        ``batches``: each cell's index into :attr:`batches`, needed when the encoder reads the batch.
        """
        counts = sp.csr_matrix(counts, dtype=np.float32)
        if counts.shape[1] != len(self.genes):
            raise ValueError(f"counts must have one column per model gene ({len(self.genes)}), got {counts.shape[1]}")
        if batches is None:
            if self.encodes_batch:
                raise ValueError("this VAE's encoder reads the batch; pass each cell's batch index (batches=)")
            batches = np.zeros(counts.shape[0], dtype=np.int64)
        torch_device = resolve_device(device)
        try:
            return encode_counts(self.module.to(torch_device), counts, None, np.asarray(batches), torch_device)
        finally:
            self.module.cpu()

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``count_vae.json`` (genes, batches, shape, record) and ``count_vae.safetensors`` atomically."""
        module = self.module
        meta = {
            "format": COUNT_VAE_FORMAT,
            "genes": list(self.genes),
            "batches": list(self.batches),
            "shape": {
                "n_genes": len(self.genes),
                "n_batches": len(self.batches),
                "n_latent": self.n_latent,
                "n_hidden": module.latent_mean.in_features,
                "n_layers": len(module.encoder.linears),
                "dropout": module.dropout,
                "encode_batch": module.encode_batch,
                "norm": module.norm,
                "deep_injection": module.deep_injection,
            },
            "record": self.record,
        }
        tensors = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}

        def write(staging: Path) -> None:
            save_file(tensors, str(staging / COUNT_VAE_WEIGHTS), metadata={"format": "pt"})
            (staging / COUNT_VAE_FILE).write_text(json.dumps(meta, indent=2) + "\n")

        return write_directory_atomically(directory, write, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CountVAEModel:
        """Read a directory written by :meth:`save` (every tensor must match the recorded shape)."""
        path = Path(directory).expanduser()
        try:
            meta = json.loads((path / COUNT_VAE_FILE).read_text())
            if meta.get("format") != COUNT_VAE_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}; this scfm reads format {COUNT_VAE_FORMAT}")
            tensors = load_file(str(path / COUNT_VAE_WEIGHTS))
            shape = meta["shape"]
            module = BatchConditionedCountVAE(
                shape["n_genes"],
                0,
                shape["n_batches"],
                n_latent=shape["n_latent"],
                n_hidden=shape["n_hidden"],
                n_layers=shape["n_layers"],
                dropout=shape["dropout"],
                encode_batch=shape["encode_batch"],
                norm=shape["norm"],
                deep_injection=shape["deep_injection"],
            )
            module.load_state_dict(tensors, strict=True)
            return cls(module, tuple(meta["genes"]), tuple(meta["batches"]), meta.get("record", {}))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
            raise CheckpointError(f"{str(path)!r} is not a readable count-VAE directory ({err})") from err


def is_count_vae_directory(path: object) -> bool:
    """Whether ``path`` is a directory written by :meth:`CountVAEModel.save`."""
    return isinstance(path, str | os.PathLike) and (Path(path).expanduser() / COUNT_VAE_FILE).is_file()
