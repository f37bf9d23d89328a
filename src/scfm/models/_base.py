"""What the model families share: JSON config round trips, AnnData registration, loading weights, training runs."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from anndata import AnnData


class ConfigDict:
    """``to_dict``/``from_dict`` for a config dataclass stored as a checkpoint's ``config.json``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config.json has unknown fields {unknown}; is this a checkpoint of another model family?")
        return cls(**data)


class FoundationModelMixin:
    """Helpers shared by scvi-tools model classes built as ``cls(adata, vocab=, config=, ...)``."""

    @classmethod
    def _register_if_needed(cls, adata: AnnData, **setup_kwargs) -> None:
        try:
            registered = cls._get_most_recent_anndata_manager(adata, required=False) is not None
        except ValueError:  # a copy of a registered AnnData: register the copy itself
            registered = False
        if not registered:
            cls.setup_anndata(adata, **setup_kwargs)

    @classmethod
    def _from_loaded(
        cls, pretrained, adata: AnnData, *, min_genes: int, on_duplicate: Literal["error", "first"] = "error"
    ):
        """A model on ``adata`` (registered) holding a copy of the loaded checkpoint's weights, in eval mode."""
        model = cls(
            adata,
            vocab=pretrained.vocab,
            config=pretrained.module.config,
            min_genes=min_genes,
            on_duplicate=on_duplicate,
        )
        model.module.load_state_dict(pretrained.module.state_dict())
        model.module.eval()
        model.is_trained_ = True
        model.checkpoint_name = pretrained.name
        model.checkpoint_sha256 = pretrained.sha256
        return model

    def _run_training(
        self,
        plan,
        data_module,
        *,
        max_epochs: int,
        accelerator: str,
        devices: int | str,
        validation_size: float,
        **trainer_kwargs,
    ) -> None:
        """Fit ``plan`` on ``data_module`` with scvi-tools' ``TrainRunner``; the module ends in eval mode."""
        from scvi.train import TrainRunner

        trainer_kwargs.setdefault("check_val_every_n_epoch", 1 if validation_size > 0 else None)
        runner = TrainRunner(
            self,
            training_plan=plan,
            data_splitter=data_module,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )
        self.module.train()
        runner()
        self.module.eval()
        self.checkpoint_name = "trained in session"
