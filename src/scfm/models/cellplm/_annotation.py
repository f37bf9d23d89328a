"""Cell-type annotation with CellPLM: a classifier head on the latent, fine-tuned with the encoder."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scfm.nn import ClassifierHead

from ._inference import iter_sentences
from ._module import CellPLMModule


class CellPLMClassifier(nn.Module):
    """A copy of a pretrained :class:`CellPLMModule` with an MLP classifier on its deterministic latent mean.

    The gene embeddings stay frozen (cells enter as precomputed stage-one features, see
    :func:`~scfm.models.cellplm.cell_features`); the input projection, the transformer over cells and the
    latent encoder are fine-tuned together with the head.
    """

    def __init__(self, module: CellPLMModule, n_classes: int) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(module)
        self.backbone.gene_embedding.requires_grad_(False)
        self.head = ClassifierHead(module.config.latent_dim, n_classes, n_layers=2, standardise=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(length, d_model)`` stage-one features of one sentence -> ``(length, n_classes)`` logits."""
        hidden = self.backbone.encode(features)
        return self.head(self.backbone.latent_of(hidden, sample=False).mean)


def finetune_classifier(
    module: CellPLMModule,
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    max_epochs: int = 20,
    lr: float = 1e-4,
    head_lr_factor: float = 10.0,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: torch.device | None = None,
) -> CellPLMClassifier:
    """Cross-entropy fine-tuning on labelled cells; each epoch draws new random sentences of the reference.

    Parameters
    ----------
    module
        Pretrained module (not modified; the classifier holds a copy).
    features
        ``(n, d_model)`` stage-one features of the labelled cells.
    labels
        ``(n,)`` integer labels in ``[0, n_classes)``.
    """
    device = device or torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    classifier = CellPLMClassifier(module, n_classes).to(device)
    backbone = [p for p in classifier.backbone.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": backbone, "lr": lr},
            {"params": list(classifier.head.parameters()), "lr": lr * head_lr_factor},
        ],
        weight_decay=weight_decay,
    )
    context = module.config.context
    x_all = torch.as_tensor(features, dtype=torch.float32)
    y_all = torch.as_tensor(labels, dtype=torch.long)
    n = len(labels)
    n_sentences = -(-n // context)
    classifier.train()
    for _ in range(max_epochs):
        order = torch.randperm(n, generator=generator)
        for chunk in torch.tensor_split(order, n_sentences):
            logits = classifier(x_all[chunk].to(device))
            loss = F.cross_entropy(logits, y_all[chunk].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    classifier.eval()
    return classifier


@torch.inference_mode()
def classifier_probabilities(
    classifier: CellPLMClassifier, features: np.ndarray, sentences: list[np.ndarray], device: torch.device
) -> np.ndarray:
    """``(n, n_classes)`` class probabilities of every cell, sentence by sentence."""
    classifier.eval()
    out = None
    for cells, latent in iter_sentences(classifier.backbone, features, sentences, coordinates=None, device=device):
        probabilities = torch.softmax(classifier.head(latent), dim=-1).cpu().numpy()
        if out is None:
            out = np.zeros((features.shape[0], probabilities.shape[1]), dtype=np.float32)
        out[cells] = probabilities
    return out
