"""``setup_mudata``: register a MuData's modalities, batch and labels with scvi-tools' MuData fields."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data._manager import AnnDataManagerValidationCheck
from scvi.data.fields import MuDataCategoricalObsField, MuDataLayerField

from scfm.data._mudata import check_mudata, parse_peak_names, read_modalities, resolve_modalities

MODALITY_REGISTRY_KEYS = {
    "rna": REGISTRY_KEYS.X_KEY,
    "atac": REGISTRY_KEYS.ATAC_X_KEY,
    "protein": REGISTRY_KEYS.PROTEIN_EXP_KEY,
}


class MuDataSetupMixin:
    """``setup_mudata`` for paired and mosaic MuData, as MULTIVI and TOTALVI register theirs.

    Unlike MULTIVI (which takes a fully paired MuData and treats an all-zero cell as missing), a cell missing a
    modality is declared by the MuData itself: it is absent from that modality (an outer join of ``obs``,
    ``mdata.obsmap == 0``). scvi-tools' fully-paired check is therefore switched off for this registration.
    """

    @classmethod
    def setup_anndata(cls, adata, *args, **kwargs) -> None:
        """Raise: this model reads a MuData (use :meth:`setup_mudata`; ``scfm.models.SCGPT`` takes an AnnData)."""
        raise TypeError(
            f"{cls.__name__} integrates the modalities of a MuData: call {cls.__name__}.setup_mudata(mdata, ...); "
            "for one modality use scfm.models.SCGPT.setup_anndata"
        )

    @classmethod
    def setup_mudata(
        cls,
        mdata,
        rna_layer: str | None = None,
        atac_layer: str | None = None,
        protein_layer: str | None = None,
        batch_key: str | None = None,
        labels_key: str | None = None,
        modalities: Mapping[str, str | None] | None = None,
        **kwargs,
    ) -> None:
        """Register the count layers of each modality, the batch and the label column of ``mdata.obs``.

        Parameters
        ----------
        mdata
            MuData with ``rna`` plus ``atac`` and/or ``protein`` modalities holding raw counts. Cells may lack a
            modality (mosaic data: ``obs`` is the outer join of the modalities' cells).
        rna_layer, atac_layer, protein_layer
            Layer of each modality holding its counts (``None``: ``X``).
        batch_key, labels_key
            Columns of ``mdata.obs`` (not of a modality: ``mdata.pull_obs()`` copies those as ``"rna:batch"``).
            Labels are only recorded (for scoring); the integration does not use them.
        modalities
            Modality kind -> ``mdata.mod`` key, e.g. ``{"rna": "rna", "atac": "atac", "protein": "prot"}``. ``None``
            uses those defaults that exist; each key named here must exist.

        Raises
        ------
        KeyError
            A named modality, layer or ``obs`` column is missing.
        ValueError
            ``obs`` out of sync with the modalities, non-count values, no shared cells, bad peak names, missing
            batch values.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_mudata(mdata)
        chosen = resolve_modalities(mdata, modalities)
        setup_method_args["setup_args"]["modalities"] = dict(chosen)
        layers = {"rna": rna_layer, "atac": atac_layer, "protein": protein_layer}
        for key, name in ((batch_key, "batch_key"), (labels_key, "labels_key")):
            if key is not None and key not in mdata.obs:
                in_mods = [f"{m}:{key}" for m, mod in mdata.mod.items() if key in mod.obs]
                hint = f"; modality columns {in_mods} become mdata.obs columns with mdata.pull_obs()" if in_mods else ""
                raise KeyError(f"{name}={key!r} is not a column of mdata.obs ({list(mdata.obs.columns)}){hint}")
        if batch_key is not None and mdata.obs[batch_key].isna().any():
            n = int(mdata.obs[batch_key].isna().sum())
            raise ValueError(f"mdata.obs[{batch_key!r}] is missing for {n} cells; every cell needs a batch")
        if "atac" in chosen:
            parse_peak_names(mdata.mod[chosen["atac"]].var_names)
        modality_data = read_modalities(mdata, chosen, {k: v for k, v in layers.items() if k in chosen})
        in_none = ~np.any([m.present for m in modality_data.values()], axis=0)
        if in_none.any():
            raise ValueError(
                f"{int(in_none.sum())} cells of mdata are in none of the modalities {list(chosen.values())}; subset "
                "the MuData to cells measured in at least one of them"
            )
        fields = [
            MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=None),
            MuDataCategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key, mod_key=None),
        ]
        for kind, key in chosen.items():
            fields.append(
                MuDataLayerField(
                    MODALITY_REGISTRY_KEYS[kind], layers[kind], mod_key=key, is_count_data=True, mod_required=True
                )
            )
        checks = AnnDataManagerValidationCheck(check_fully_paired_mudata=False)
        manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args, validation_checks=checks)
        manager.register_fields(mdata, **kwargs)
        cls.register_manager(manager)
