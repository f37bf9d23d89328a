"""Device selection and the autocast policy of inference (``precision``)."""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} cannot run scfm models; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='auto' or 'cpu'")
    return resolved


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN reports bf16 matrix instructions on this CPU (AVX512-BF16 or AMX).

    Without them torch emulates bf16 matrix products, which is much slower than float32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_dtype(device: torch.device, precision: str = "fp32") -> torch.dtype:
    """Return the dtype the matrix products of a forward pass run in, for ``precision`` on ``device``.

    ``"fp32"``: float32 on CPU and MPS; on CUDA bf16 when the GPU supports it (scfm's CUDA behaviour before
    ``precision`` existed, kept). ``"bf16"``: bf16 on CPU and on CUDA when supported; float32 on MPS.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16
    return torch.float32


def compute_dtype_name(device: torch.device, precision: str = "fp32") -> str:
    """:func:`compute_dtype` as a string for provenance (``"float32"`` or ``"bfloat16"``)."""
    return str(compute_dtype(device, precision)).removeprefix("torch.")


def autocast_context(device: torch.device, precision: str = "fp32") -> contextlib.AbstractContextManager:
    """bf16 autocast where :func:`compute_dtype` says bf16; full precision (no autocast) elsewhere."""
    if compute_dtype(device, precision) != torch.bfloat16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def warn_if_slow_bf16(device: torch.device, precision: str) -> None:
    """Warn when ``precision="bf16"`` runs on a CPU that emulates bf16 (slower than float32, not faster)."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "precision='bf16' on a CPU without bf16 matrix instructions (AVX512-BF16 or AMX): torch emulates bf16 "
            "here, which is several times slower than precision='fp32'",
            UserWarning,
            stacklevel=3,
        )
