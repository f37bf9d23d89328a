"""The scGPT-family torch module (an scvi-tools ``BaseModuleClass``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi.module.base import BaseModuleClass, LossOutput

from scfm.nn import (
    BatchDiscriminator,
    CategoryValueEmbedding,
    CellToGeneHead,
    ClassifierHead,
    ConditionEmbedding,
    ContinuousValueEmbedding,
    DomainBatchNorm,
    ExpressionHead,
    GeneEmbedding,
    GeneLinearClassifier,
    TransformerStack,
    generative_attention_mask,
    padding_attention_mask,
)
from scfm.nn._losses import elastic_cell_similarity, masked_mse, masked_zero_bce, paired_view_contrastive

from ._config import SCGPTConfig
from ._gepc_heads import QueryMLPHead

GENE_IDS = "gene_ids"
VALUES = "values"
TARGET_VALUES = "target_values"
MASKED = "masked"
KNOWN = "known"
QUERY_GENE_IDS = "query_gene_ids"
QUERY_VALUES = "query_values"
BATCH_INDEX = "batch_index"
LABELS = "labels"
VIEW_GENE_IDS = "view_gene_ids"
VIEW_VALUES = "view_values"


class SCGPTModule(BaseModuleClass):
    """Gene tokens + binned values -> transformer -> cell embedding and expression heads.

    A cell is ``<cls>`` followed by its expressed genes; each token is the sum of a gene embedding and a
    value embedding. Batch embeddings (``config.n_batches > 0``) are concatenated to the transformer
    output before the heads, never fed into attention.

    Objectives (weights set in :meth:`loss`): GEP, masked-value regression on the masked gene tokens;
    GEPC, values of the cell's genes (and of measured-but-zero genes) predicted from the cell embedding
    through gene queries; ECS, elastic cosine similarity between cells of a batch; DAR, cross-entropy of a
    batch discriminator behind gradient reversal (``config.batch_discriminator``); CLS, cross-entropy of a
    cell-type classifier on the cell embedding (``config.label_categories``); contrastive, InfoNCE between the
    cell embeddings of two augmented views of each cell (through a projection head when ``config.contrastive_dim``).

    With ``config.domain_batchnorm`` the token embeddings are normalised per batch before the transformer,
    so the batch index is needed to encode a cell.
    """

    def __init__(self, config: SCGPTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.gene_embedding = GeneEmbedding(config.n_tokens, d, padding_idx=config.pad_id)
        if config.input_style == "continuous":
            self.value_embedding = ContinuousValueEmbedding(d, config.dropout)
        else:
            self.value_embedding = CategoryValueEmbedding(config.n_bins, d)
        self.transformer = TransformerStack(
            config.n_layers, d, config.n_heads, config.d_hidden, config.dropout, config.activation, config.norm_first
        )
        with_batch = config.n_batches > 0 and config.batch_embedding
        self.batch_embedding = ConditionEmbedding(config.n_batches, d) if with_batch else None
        d_out = 2 * d if self.batch_embedding is not None else d
        self.domain_batchnorm = DomainBatchNorm(d, config.n_batches) if config.domain_batchnorm else None
        self.batch_discriminator = (
            BatchDiscriminator(d, config.n_batches, config.classifier_layers) if config.batch_discriminator else None
        )
        if self.batch_discriminator is not None and not config.classifier_standardise:
            self.batch_discriminator.classifier.standardise = None  # scGPT's AdversarialDiscriminator has none
        n_labels = len(config.label_categories)
        self.classifier = (
            ClassifierHead(d, n_labels, config.classifier_layers, standardise=config.classifier_standardise)
            if n_labels
            else None
        )
        self.gene_classifier = (
            GeneLinearClassifier(config.n_tokens, n_labels, value_scale=config.n_bins - 1)
            if n_labels and config.classifier_gene_linear
            else None
        )
        self.projection = (
            torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.ReLU(), torch.nn.Linear(d, config.contrastive_dim))
            if config.contrastive_dim
            else None
        )
        self.expression_head = ExpressionHead(d_out, predict_zero=config.predict_zero, d_hidden=d)
        if config.gepc_style == "inner product":
            self.cell_to_gene_head = CellToGeneHead(
                d, d_out, predict_zero=config.predict_zero, zero_bias=config.gepc_zero_bias
            )
        else:
            self.cell_to_gene_head = QueryMLPHead(d, concat=config.gepc_style == "concat query")

    # -- encoder ---------------------------------------------------------------------------------
    def encode(
        self,
        gene_ids: torch.Tensor,
        values: torch.Tensor,
        known: torch.Tensor | None = None,
        batch_index: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the transformer.

        Parameters
        ----------
        gene_ids, values
            ``(batch, length)`` token ids (``<cls>`` first) and binned values (pad/mask values where relevant).
        known
            Optional ``(batch, length)`` boolean for generative attention: unknown tokens see only known ones.
        batch_index
            ``(batch,)`` batch codes; required when the model has domain-specific batch norm.

        Returns
        -------
        ``hidden`` ``(batch, length, d_model)``, ``padding`` and ``cell_embedding`` ``(batch, d_model)``.
        """
        padding = gene_ids == self.config.pad_id
        x = self._input_embeddings(gene_ids, values, padding, batch_index)
        if known is None:
            mask = padding_attention_mask(padding)
        else:
            mask = generative_attention_mask(known, padding)
        hidden = self.transformer(x, mask)
        return {"hidden": hidden, "padding": padding, "cell_embedding": self.pool(hidden, padding)}

    def _input_embeddings(self, gene_ids, values, padding, batch_index) -> torch.Tensor:
        x = self.gene_embedding(gene_ids) + self.value_embedding(values)
        if self.domain_batchnorm is not None:
            if batch_index is None:
                raise ValueError("this model normalises per batch (domain_batchnorm); batch_index is required")
            x = self.domain_batchnorm(x, batch_index, padding)
        return x

    def embed(
        self, gene_ids: torch.Tensor, values: torch.Tensor, batch_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cell embeddings only, ``(batch, d_model)``; same values as ``encode(...)["cell_embedding"]``.

        With ``<cls>`` pooling the last layer is computed for the ``<cls>`` position alone.
        """
        if self.config.cell_embedding != "cls":
            return self.encode(gene_ids, values, batch_index=batch_index)["cell_embedding"]
        padding = gene_ids == self.config.pad_id
        x = self._input_embeddings(gene_ids, values, padding, batch_index)
        hidden = self.transformer(x, padding_attention_mask(padding), last_layer_queries=1)
        return hidden[:, 0]

    def classify(
        self, gene_ids: torch.Tensor, values: torch.Tensor, batch_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cell-type logits ``(batch, n_labels)`` from the classification head."""
        if self.classifier is None:
            raise ValueError("this model has no classification head (config.label_categories is empty)")
        return self._class_logits(self.embed(gene_ids, values, batch_index), gene_ids, values)

    def _class_logits(self, cell_embedding: torch.Tensor, gene_ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(cell_embedding)
        if self.gene_classifier is not None:
            logits = logits + self.gene_classifier(gene_ids, values)
        return logits

    def pool(self, hidden: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Cell embedding from hidden states: the ``<cls>`` state, or the mean over gene tokens."""
        if self.config.cell_embedding == "cls":
            return hidden[:, 0]
        weight = (~padding[:, 1:]).to(hidden.dtype).unsqueeze(-1)
        return (hidden[:, 1:] * weight).sum(1) / weight.sum(1).clamp(min=1.0)

    def _with_batch(self, x: torch.Tensor, batch_index: torch.Tensor | None) -> torch.Tensor:
        if self.batch_embedding is None:
            return x
        if batch_index is None:
            raise ValueError("this model was built with batch embeddings; batch_index is required")
        batch = self.batch_embedding(batch_index.reshape(-1).long())
        if x.dim() == 3:
            batch = batch[:, None, :].expand(-1, x.shape[1], -1)
        return torch.cat([x, batch], dim=-1)

    # -- scvi-tools module protocol --------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict[str, torch.Tensor | None]:
        return {
            "gene_ids": tensors[GENE_IDS],
            "values": tensors[VALUES],
            "known": tensors.get(KNOWN),
            "batch_index": tensors.get(BATCH_INDEX),
        }

    def inference(self, gene_ids, values, known=None, batch_index=None) -> dict[str, torch.Tensor]:
        return self.encode(gene_ids, values, known, batch_index)

    def _get_generative_input(self, tensors, inference_outputs, **kwargs) -> dict[str, torch.Tensor | None]:
        return {
            "hidden": inference_outputs["hidden"],
            "cell_embedding": inference_outputs["cell_embedding"],
            "query_gene_ids": tensors.get(QUERY_GENE_IDS),
            "batch_index": tensors.get(BATCH_INDEX),
            "gene_ids": tensors[GENE_IDS],
            "values": tensors[VALUES],
        }

    def generative(
        self, hidden, cell_embedding, query_gene_ids=None, batch_index=None, gene_ids=None, values=None
    ) -> dict[str, dict]:
        out = {"gep": self.expression_head(self._with_batch(hidden, batch_index))}
        if query_gene_ids is not None:
            genes = self.gene_embedding(query_gene_ids)
            out["gepc"] = self.cell_to_gene_head(self._with_batch(cell_embedding, batch_index), genes)
        if self.batch_discriminator is not None:
            out["dar"] = self.batch_discriminator(cell_embedding)
        if self.classifier is not None:
            if self.gene_classifier is not None and gene_ids is None:
                raise ValueError("a classifier with a gene-linear term needs the gene tokens (gene_ids, values)")
            out["cls"] = self._class_logits(cell_embedding, gene_ids, values)
        return out

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor],
        generative_outputs: dict[str, dict],
        gep_weight: float = 1.0,
        gepc_weight: float = 1.0,
        ecs_weight: float = 0.0,
        ecs_threshold: float = 0.6,
        dar_weight: float = 0.0,
        cls_weight: float = 0.0,
        contrastive_weight: float = 0.0,
        contrastive_temperature: float = 0.1,
    ) -> LossOutput:
        masked = tensors[MASKED]
        gep = generative_outputs["gep"]
        terms = {}
        if gep_weight > 0:
            terms["gep"] = masked_mse(gep["value"], tensors[TARGET_VALUES], masked)
        if "gepc" in generative_outputs and gepc_weight > 0:
            gepc = generative_outputs["gepc"]
            query_valid = tensors[QUERY_GENE_IDS] != self.config.pad_id
            terms["gepc"] = masked_mse(gepc["value"], tensors[QUERY_VALUES], query_valid)
            if "zero_logit" in gepc:
                terms["gepc_zero"] = masked_zero_bce(gepc["zero_logit"], tensors[QUERY_VALUES], query_valid)
        if ecs_weight > 0:
            terms["ecs"] = elastic_cell_similarity(inference_outputs["cell_embedding"], ecs_threshold)
        if dar_weight > 0:
            if "dar" not in generative_outputs:
                raise ValueError("dar_weight > 0 needs a model with a batch discriminator (batch_discriminator=True)")
            terms["dar"] = F.cross_entropy(generative_outputs["dar"], tensors[BATCH_INDEX].reshape(-1).long())
        if cls_weight > 0:
            if "cls" not in generative_outputs:
                raise ValueError("cls_weight > 0 needs a model with a classification head (label_categories)")
            labels = tensors[LABELS].reshape(-1).long()
            terms["cls"] = (
                F.cross_entropy(generative_outputs["cls"], labels, ignore_index=-1)
                if (labels >= 0).any()
                else generative_outputs["cls"].sum() * 0.0
            )
        if contrastive_weight > 0:
            terms["contrastive"] = self._contrastive(tensors, inference_outputs, contrastive_temperature)
        if not terms:
            raise ValueError("every objective weight is zero; nothing to train")
        weights = {
            "gep": gep_weight,
            "gepc": gepc_weight,
            "gepc_zero": gepc_weight,
            "ecs": ecs_weight,
            "dar": dar_weight,
            "cls": cls_weight,
            "contrastive": contrastive_weight,
        }
        return weighted_loss(terms, weights, masked.shape[0])

    def _contrastive(self, tensors: dict[str, torch.Tensor], inference_outputs: dict, temperature: float):
        if VIEW_GENE_IDS not in tensors:
            raise ValueError("contrastive_weight > 0 needs two views per cell (train with contrastive_weight > 0)")
        view = self.encode(tensors[VIEW_GENE_IDS], tensors[VIEW_VALUES], batch_index=tensors.get(BATCH_INDEX))
        first, second = inference_outputs["cell_embedding"], view["cell_embedding"]
        if self.projection is not None:
            first, second = self.projection(first), self.projection(second)
        return paired_view_contrastive(first, second, temperature)

    @torch.inference_mode()
    def sample(self, *args, **kwargs):
        """Raise: generation from gene or cell prompts is not implemented yet for this family."""
        raise NotImplementedError("SCGPT generation is not implemented yet; see the project issues")


def weighted_loss(terms: dict[str, torch.Tensor], weights: dict[str, float], n_cells: int) -> LossOutput:
    """Sum the objective ``terms`` with their ``weights``; each term is also logged per cell of the minibatch."""
    return LossOutput(
        loss=sum(weights[name] * value for name, value in terms.items()),
        reconstruction_loss={name: value.detach().expand(n_cells) for name, value in terms.items()},
        n_obs_minibatch=n_cells,
    )
