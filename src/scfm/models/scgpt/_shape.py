"""Fields shared by the scGPT-family configs: vocabulary ids, transformer shape, value input, batches."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

from ..base._config import ConfigDict


@dataclass
class SCGPTShape(ConfigDict):
    """Settings common to :class:`~scfm.models.SCGPTConfig` and :class:`~scfm.models.scgpt.SCGPTMultiomeConfig`.

    Each field is documented in :class:`~scfm.models.SCGPTConfig`; the JSON names and meanings are the same in both
    configs. Past ``n_tokens, pad_id, cls_id`` every field is keyword-only. A subclass sets ``family``'s default,
    lists its own ``added_later`` fields, and calls :meth:`shape_problems` from its ``__post_init__``.
    """

    n_tokens: int
    pad_id: int
    cls_id: int
    _: KW_ONLY
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    d_hidden: int = 256
    dropout: float = 0.1
    n_bins: int = 51
    pad_value: float = -2.0
    mask_value: float = -1.0
    input_style: Literal["continuous", "category"] = "continuous"
    cell_embedding: Literal["cls", "mean"] = "cls"
    norm_first: bool = False
    activation: Literal["relu", "gelu"] = "relu"
    predict_zero: bool = True
    n_batches: int = 0
    batch_categories: list[str] = field(default_factory=list)
    batch_discriminator: bool = False
    tokenizer_seed: int = 0
    family: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def shape_problems(self) -> list[str]:
        """Return what is wrong with the shared fields (empty when nothing is); ``family`` is the subclass's check."""
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads})")
        if self.n_bins < 3:
            problems.append(f"n_bins must be >= 3, got {self.n_bins}")
        if not 0 <= self.pad_id < self.n_tokens or not 0 <= self.cls_id < self.n_tokens:
            problems.append(f"pad_id/cls_id ({self.pad_id}/{self.cls_id}) outside the vocabulary of {self.n_tokens}")
        if self.input_style not in ("continuous", "category"):
            problems.append(f"input_style must be 'continuous' or 'category', got {self.input_style!r}")
        if self.cell_embedding not in ("cls", "mean"):
            problems.append(f"cell_embedding must be 'cls' or 'mean', got {self.cell_embedding!r}")
        if self.batch_discriminator and self.n_batches < 2:
            problems.append("batch_discriminator needs n_batches >= 2")
        if self.batch_categories and len(self.batch_categories) != self.n_batches:
            problems.append(f"{len(self.batch_categories)} batch_categories for n_batches={self.n_batches}")
        return problems


def raise_if_invalid(name: str, problems: list[str]) -> None:
    """Raise ``ValueError("invalid <name> config: ...")`` listing every problem, if there are any."""
    if problems:
        raise ValueError(f"invalid {name} config: " + "; ".join(problems))
