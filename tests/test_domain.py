"""Gradient reversal, the batch discriminator, domain-specific batch norm and the classifier head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from scfm.nn import BatchDiscriminator, ClassifierHead, DomainBatchNorm, reverse_gradient


def test_reverse_gradient_is_identity_forward_and_negated_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 2.0)
    torch.testing.assert_close(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -2.0))


def _linear_probe_accuracy(z: torch.Tensor, y: torch.Tensor) -> float:
    return float(cross_val_score(LogisticRegression(), z.detach().numpy(), y.numpy(), cv=5).mean())


def test_adversarial_training_removes_a_linear_batch_signal():
    """A linear encoder trained only against the discriminator hides the batch and keeps the biology."""
    torch.manual_seed(0)
    n = 400
    batch = torch.arange(n) % 2
    cell_type = (torch.arange(n) // 2) % 2
    x = torch.randn(n, 8)
    x[:, 0] += 3.0 * batch
    x[:, 1] += 3.0 * cell_type
    encoder = torch.nn.Linear(8, 4)
    discriminator = BatchDiscriminator(4, 2)
    before = _linear_probe_accuracy(encoder(x), batch)
    optimiser = torch.optim.Adam(
        [{"params": encoder.parameters(), "lr": 1e-3}, {"params": discriminator.parameters(), "lr": 1e-2}]
    )
    for _ in range(600):
        rows = torch.randint(0, n, (64,))
        loss = torch.nn.functional.cross_entropy(discriminator(encoder(x[rows])), batch[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _linear_probe_accuracy(encoder(x), batch)
    assert before > 0.75 and after < 0.62, (before, after)
    assert _linear_probe_accuracy(encoder(x), cell_type) > 0.75


def test_discriminator_accepts_a_single_cell_in_training():
    discriminator = BatchDiscriminator(4, 3)
    discriminator(torch.randn(8, 4))  # fills the running statistics
    assert discriminator(torch.randn(1, 4)).shape == (1, 3)


def test_classifier_head_shapes_and_errors():
    head = ClassifierHead(6, 4, n_layers=3)
    assert head(torch.randn(5, 6)).shape == (5, 4)
    with pytest.raises(ValueError, match="n_classes"):
        ClassifierHead(6, 0)


def test_domain_batchnorm_uses_each_batch_statistics_and_skips_padding():
    torch.manual_seed(0)
    norm = DomainBatchNorm(3, n_batches=2)
    x = torch.randn(4, 5, 3)
    x[2:] += 10.0
    padding = torch.zeros(4, 5, dtype=torch.bool)
    padding[:, -1] = True
    out = norm(x, torch.tensor([0, 0, 1, 1]), padding)
    for rows in (slice(0, 2), slice(2, 4)):
        tokens = out[rows][~padding[rows]]
        np.testing.assert_allclose(tokens.mean(0).detach().numpy(), 0.0, atol=1e-5)
    torch.testing.assert_close(out[:, -1], x[:, -1])  # padding untouched
    with pytest.raises(ValueError, match="batch index outside"):
        norm(x, torch.tensor([0, 0, 1, 2]), padding)
