"""``scfm.tl.predict_perturbation``: fine-tune a model on a perturbation screen and predict (unseen) perturbations."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from scfm._validation import Rule, checked_arguments, model_source
from scfm.genes import GeneRules
from scfm.models import ModelArg, resolve_model
from scfm.models.base import (
    PerturbationModel,
    PerturbationRequest,
    is_perturbation_checkpoint,
    load_perturbation_model,
    parse_perturbation,
    perturbation_name,
)

from ._provenance import check_anndata, gene_fields

KEY = "predict_perturbation"


def _model_rule() -> Rule:
    """``model=``: what every tool accepts, or a fine-tuned :class:`~scfm.models.base.PerturbationModel`."""
    base = model_source()

    def check(value):
        return None if isinstance(value, PerturbationModel) else base.check(value)

    return Rule(f"{base.accepts}, or a fine-tuned perturbation model", check)


@checked_arguments(model=_model_rule())
def predict_perturbation(
    adata: AnnData,
    perturbations: str | Sequence[str],
    *,
    model: ModelArg | PerturbationModel | str | os.PathLike = None,
    perturbation_key: str = "perturbation",
    control: str = "non-targeting",
    layer: str | None = None,
    use_raw: bool = False,
    gene_key: str | None = None,
    max_epochs: int = 5,
    batch_size: int = 32,
    lr: float = 1e-4,
    cells_per_perturbation: int | None = 200,
    target_cells: int = 1,
    control_cells: int | None = 500,
    n_control_cells: int = 300,
    min_cells: int = 10,
    min_genes: int = 50,
    gene_id_type: Literal["auto", "symbol", "ensembl"] = "auto",
    species: Literal["human", "mouse"] = "human",
    aliases: bool = False,
    seed: int = 0,
    device: str = "auto",
    return_model: bool = False,
    progress: bool = False,
) -> AnnData | tuple[AnnData, PerturbationModel]:
    """Predict the mean expression of cells after genetic perturbations (scGPT's perturb-GEP).

    Unless ``model`` is already fine-tuned for perturbations, a copy of the checkpoint is fine-tuned on the cells of
    ``adata``: every perturbed cell is paired with a random control cell (redrawn each epoch); the model sees the
    control cell's genes and binned values with a flag on the perturbed gene(s) and learns the perturbed cell's
    log-normalised expression at every gene. Prediction then runs ``n_control_cells`` control cells through the
    model with the requested flags and averages the outputs.

    Parameters
    ----------
    adata
        A perturbation screen with raw counts: ``obs[perturbation_key]`` holds each cell's perturbation (``"GENE"``
        or ``"GENE1+GENE2"``) or ``control``. It is never modified.
    perturbations
        Perturbations to predict, e.g. ``["STAT1", "IRF1+SPI1"]``; genes must be in the model's vocabulary
        (measured in ``adata`` or not). Perturbations absent from training are predicted zero-shot.
    model
        ``None`` (the bundled default, fine-tuned here), a bundled name or checkpoint directory (fine-tuned here),
        or a fine-tuned perturbation model (an object returned with ``return_model=True`` or the directory it was
        saved to): then nothing is trained.
    perturbation_key, control
        ``obs`` column of the perturbations and the label of control cells.
    layer, use_raw, gene_key
        Which count matrix and gene names to read (as in :func:`scfm.tl.embed`).
    max_epochs, batch_size, lr
        Fine-tuning length, examples per step and peak learning rate (AdamW, 10 % warm-up, cosine decay).
    cells_per_perturbation
        Training cells kept per perturbation (seeded subsample; ``None`` keeps all): the main lever of CPU time.
    target_cells
        ``1`` (the paper): each paired cell's own expression is the target. ``k > 1``: the mean of the cell and
        ``k - 1`` random cells of the same perturbation (redrawn each epoch), the same expected gradient with less
        single-cell noise, which helps the few steps a CPU affords.
    control_cells
        Control cells used in fine-tuning, as inputs and as unperturbed targets.
    n_control_cells
        Control cells averaged over to predict each perturbation.
    min_cells
        Fewest cells a perturbation (and the controls) must have to be trained on.
    min_genes, gene_id_type, species, aliases
        Gene-alignment rules of :func:`scfm.genes.align_genes`.
    seed
        Seeds the subsamples, the pairing, the shuffling and the flag initialisation.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    return_model
        Also return the fine-tuned model (``model.save(path)`` keeps it).
    progress
        Print the fine-tuning loss every 20 steps.

    Returns
    -------
    An AnnData with one row per requested perturbation and one column per predicted gene (the genes of ``adata``
    in the model's vocabulary): ``X`` the predicted mean ``log1p`` expression (counts scaled to 10,000 per cell),
    ``layers["change"]`` the predicted change from the observed control mean (``var["control_mean"]``),
    ``obs["n_genes"]`` and ``obs["seen_in_training"]``, provenance in ``uns["scfm"]["predict_perturbation"]``.
    With ``return_model``, the tuple ``(prediction, model)``.

    Examples
    --------
    >>> pred = scfm.tl.predict_perturbation(adata, ["STAT1", "IRF1"], perturbation_key="perturbation")
    >>> scfm.pl.perturbation(pred, adata, "STAT1")
    """
    check_anndata(adata)
    if adata.n_obs == 0:
        raise ValueError("the AnnData has no cells (n_obs == 0)")
    requested = _parse_requested(perturbations)
    _check_screen(adata, perturbation_key, control)
    for name, value, low in (
        ("n_control_cells", n_control_cells, 1),
        ("min_cells", min_cells, 1),
        ("target_cells", target_cells, 1),
    ):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    request = PerturbationRequest(
        perturbation_key=perturbation_key,
        control=control,
        layer=layer,
        use_raw=use_raw,
        gene_key=gene_key,
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        cells_per_perturbation=cells_per_perturbation,
        target_cells=target_cells,
        control_cells=control_cells,
        min_cells=min_cells,
        min_genes=min_genes,
        gene_rules=GeneRules(gene_id_type=gene_id_type, species=species, aliases=aliases),
        seed=seed,
        device=device,
        progress=progress,
    )
    finetuned = _finetuned_model(model)
    pretrained = finetuned.pretrained if finetuned is not None else resolve_model(model, capability=KEY)
    _check_genes(requested, set(pretrained.vocab.genes), adata, gene_key)
    if finetuned is None:
        finetuned = pretrained.spec.finetune_perturbation(pretrained, adata, request)
    result = finetuned.predict(
        adata, requested, n_control_cells=n_control_cells, seed=seed, device=device, request=request
    )
    record = dict(result.record)
    obs = pd.DataFrame(
        {
            "n_genes": [len(p) for p in requested],
            "seen_in_training": record.pop("seen_in_training"),
        },
        index=pd.Index(result.perturbations, name="perturbation"),
    )
    var = pd.DataFrame({"control_mean": result.control_mean}, index=pd.Index(result.genes))
    prediction = AnnData(np.asarray(result.predicted, dtype=np.float32), obs=obs, var=var)
    prediction.layers["change"] = (result.predicted - result.control_mean[None, :]).astype(np.float32)
    prediction.uns["scfm"] = {
        KEY: {
            "tool": KEY,
            **pretrained.provenance(),
            **(gene_fields(result.alignment) if result.alignment is not None else {}),
            "perturbation_key": perturbation_key,
            "control": control,
            "perturbations": result.perturbations,
            "n_control_cells_requested": n_control_cells,
            **record,
        }
    }
    if return_model:
        return prediction, finetuned
    return prediction


def _parse_requested(perturbations: object) -> list[tuple[str, ...]]:
    if isinstance(perturbations, str):
        perturbations = [perturbations]
    if not isinstance(perturbations, Sequence) or not len(perturbations):
        raise ValueError("perturbations must be a non-empty list of strings like 'STAT1' or 'STAT1+IRF1'")
    parsed = [parse_perturbation(p) for p in perturbations]
    names = [perturbation_name(p) for p in parsed]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"perturbations {duplicated} are requested more than once")
    return parsed


def _check_screen(adata: AnnData, perturbation_key: str, control: str) -> None:
    if perturbation_key not in adata.obs:
        raise KeyError(
            f"perturbation_key={perturbation_key!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}); name the column holding each cell's perturbed gene(s)"
        )
    labels = adata.obs[perturbation_key].astype(str)
    if not (labels == str(control)).any():
        shown = sorted(set(labels))[:8]
        raise ValueError(
            f"no cell of adata.obs[{perturbation_key!r}] has the control label {control!r} (labels: {shown}); "
            "pass control= with the label of the control cells"
        )


def _finetuned_model(model: object) -> PerturbationModel | None:
    if isinstance(model, PerturbationModel):
        return model
    if isinstance(model, str | os.PathLike) and is_perturbation_checkpoint(model):
        return load_perturbation_model(model)
    return None


def _check_genes(requested: list[tuple[str, ...]], vocabulary: set[str], adata: AnnData, gene_key: str | None) -> None:
    names = set(adata.var[gene_key].astype(str)) if gene_key is not None and gene_key in adata.var else set()
    names |= set(adata.var_names.astype(str))
    missing = sorted({g for genes in requested for g in genes if g not in vocabulary})
    if missing:
        where = [f"{g} ({'in the data' if g in names else 'not in the data either'})" for g in missing]
        raise ValueError(
            f"cannot predict perturbations of {', '.join(where)}: the gene is not in the model's vocabulary, so the "
            "model has no representation of it; predict perturbations of vocabulary genes only"
        )
