"""The perturbation part of :class:`~scfm.models.SCGPT`: ``setup_anndata(perturbation_key=..., control=...)``.

:meth:`PerturbationSetup.perturbation_fields` validates the column and the control label and returns the scvi-tools
field that registers it; :meth:`PerturbationSetup.finetune_perturbation` fine-tunes the model with perturb-GEP on
its registered AnnData (the same code as :func:`scfm.tl.predict_perturbation`).
"""

from __future__ import annotations

from anndata import AnnData

from ..base import ObsCategoryField, PerturbationRequest

#: scvi-tools registry key of the perturbation column.
PERTURBATION_KEY = "perturbation"


class PerturbationSetup:
    """Mixin of :class:`~scfm.models.SCGPT`: the perturbation column and perturb-GEP fine-tuning from the model."""

    @staticmethod
    def perturbation_fields(adata: AnnData, perturbation_key: str | None, control: str | None) -> list:
        """Return the field registering ``obs[perturbation_key]`` (none without a key) after checking it.

        Raises
        ------
        KeyError
            The column does not exist.
        ValueError
            ``control`` is missing, or no cell carries it.
        """
        if perturbation_key is None:
            if control is not None:
                raise ValueError("control= needs perturbation_key= (the obs column holding each cell's perturbation)")
            return []
        if perturbation_key not in adata.obs:
            raise KeyError(
                f"perturbation_key={perturbation_key!r} is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)})"
            )
        if control is None:
            raise ValueError("perturbation_key= needs control= (the label of the control cells, e.g. 'non-targeting')")
        labels = adata.obs[perturbation_key].astype(str)
        if not (labels == str(control)).any():
            raise ValueError(
                f"no cell of adata.obs[{perturbation_key!r}] has the control label {control!r} (labels: "
                f"{sorted(set(labels))[:8]}); pass control= with the label of the control cells"
            )
        return [ObsCategoryField(PERTURBATION_KEY, perturbation_key)]

    def finetune_perturbation(
        self,
        *,
        max_epochs: int = 5,
        batch_size: int = 32,
        lr: float = 1e-4,
        cells_per_perturbation: int | None = 200,
        target_cells: int = 1,
        control_cells: int | None = 500,
        min_cells: int = 10,
        seed: int = 0,
        device: str = "auto",
        progress: bool = False,
    ):
        """Fine-tune a copy of this model with perturb-GEP on its registered AnnData; returns an ``SCGPTPerturbation``.

        Needs ``setup_anndata(..., perturbation_key=..., control=...)`` with raw counts. The arguments are those of
        :func:`scfm.tl.predict_perturbation`; predict with ``finetuned.predict(...)`` or pass it as ``model=`` to the
        tool.
        """
        from ._perturb import finetune_perturbation

        args = self.adata_manager.registry["setup_args"]
        if args.get("perturbation_key") is None:
            raise ValueError(
                "the model's AnnData has no perturbation column; call setup_anndata(adata, perturbation_key=..., "
                "control=...) before creating the model"
            )
        request = PerturbationRequest(
            perturbation_key=args["perturbation_key"],
            control=args["control"],
            layer=args.get("layer"),
            gene_key=args.get("gene_key"),
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            cells_per_perturbation=cells_per_perturbation,
            target_cells=target_cells,
            control_cells=control_cells,
            min_cells=min_cells,
            seed=seed,
            device=device,
            progress=progress,
        )
        return finetune_perturbation(self.pretrained, self.adata, request)
