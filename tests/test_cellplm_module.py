"""CellPLM network and building blocks: cell-order equivariance, spatial encoding, mixture KL, NB likelihood,
flow attention, sentence planning/sampling/collation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from scfm.models.cellplm import (
    CellPLMConfig,
    CellPLMModule,
    SentenceBatchSampler,
    SentenceCollator,
    plan_sentences,
    relative_coordinates,
    spatial_coordinates,
)
from scfm.nn import FlowAttention, GaussianMixtureLatent, NegativeBinomialDecoder, negative_binomial_log_likelihood

SMALL = {
    "n_genes": 40,
    "d_model": 16,
    "n_heads": 2,
    "n_layers": 2,
    "latent_dim": 8,
    "n_components": 4,
    "latent_hidden": 16,
    "decoder_hidden": 16,
    "decoder_bottleneck": 16,
    "context": 16,
    "dropout": 0.0,
}


pytestmark = pytest.mark.usefixtures("single_thread")


def small_module(**changes) -> CellPLMModule:
    torch.manual_seed(0)
    module = CellPLMModule(CellPLMConfig(**{**SMALL, **changes})).eval()
    if module.no_position is not None:  # a trained "no position" vector is not zero
        with torch.no_grad():
            module.no_position.normal_()
    return module


# -- the transformer over cells ------------------------------------------------------------------------
@pytest.mark.parametrize("attention", ["softmax", "flow"])
def test_cell_order_permutes_outputs_without_positions(attention):
    module = small_module(attention=attention, positional_encoding="none")
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(12, 16, generator=generator)
    perm = torch.randperm(12, generator=generator)
    with torch.no_grad():
        hidden = module.encode(features)
        latent = module.embed_sentence(features)
        torch.testing.assert_close(module.encode(features[perm]), hidden[perm], atol=1e-5, rtol=0)
        torch.testing.assert_close(module.embed_sentence(features[perm]), latent[perm], atol=1e-5, rtol=0)
        # a cell's state depends on which cells share its sentence (else the equivariance above is vacuous)
        other = module.encode(torch.cat([features[:6], torch.randn(6, 16, generator=generator)]))
    assert not torch.allclose(other[:6], hidden[:6], atol=1e-4)
    assert latent.shape == (12, 8)


@pytest.mark.parametrize("attention", ["softmax", "flow"])
def test_spatial_encoding_sees_positions_but_not_their_origin_or_unit(attention):
    module = small_module(attention=attention, positional_encoding="sin2d").double()
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(10, 16, generator=generator, dtype=torch.float64)
    coordinates = torch.rand(10, 2, generator=generator, dtype=torch.float64) * 50.0
    perm = torch.randperm(10, generator=generator)
    with torch.no_grad():
        base = module.encode(features, coordinates)
        # cells and their positions permuted together: outputs permute
        torch.testing.assert_close(module.encode(features[perm], coordinates[perm]), base[perm], atol=1e-8, rtol=0)
        # the same cells at other positions: outputs change
        shuffled = module.encode(features, coordinates[perm])
        assert (shuffled - base).abs().max() > 1e-2
        # coordinates are centred and measured in nearest-neighbour spacings
        torch.testing.assert_close(module.encode(features, coordinates + torch.tensor([1e3, -7.5])), base)
        torch.testing.assert_close(module.encode(features, coordinates * 37.0), base)
        torch.testing.assert_close(module.encode(features, coordinates * 0.01 - 3.0), base)
        # no coordinates: the learned "no position" vector, not the same as positions
        assert (module.encode(features) - base).abs().max() > 1e-2


def test_relative_coordinates_are_centred_in_spacing_units():
    grid = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]) + 5.0
    torch.testing.assert_close(
        relative_coordinates(grid), torch.tensor([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    )
    # duplicated positions (median spacing 0) fall back to the smallest positive distance, never divide by 0
    stacked = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [4.0, 0.0]])
    out = relative_coordinates(stacked)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], torch.tensor([-0.25, -0.25, -0.25, 0.75]))
    torch.testing.assert_close(relative_coordinates(torch.tensor([[3.0, 4.0]])), torch.zeros(1, 2))


# -- Gaussian-mixture latent ---------------------------------------------------------------------------
def test_mixture_kl_is_finite_per_cell_and_decreases_when_minimised():
    torch.manual_seed(0)
    h = torch.randn(64, 16)
    latent = GaussianMixtureLatent(16, 4, 5, d_hidden=32).train()
    out = latent(h)
    assert out.kl.shape == (64,)
    assert out.z.shape == out.mean.shape == out.var.shape == (64, 4)
    assert out.component_logits.shape == (64, 5)
    assert (out.var > 0).all()
    optimizer = torch.optim.Adam(latent.parameters(), lr=1e-2)
    values = []
    for _ in range(150):
        kl = latent(h).kl.mean()
        optimizer.zero_grad()
        kl.backward()
        optimizer.step()
        values.append(kl.item())
    values = np.asarray(values)
    assert np.isfinite(values).all()
    # seed 0: ~0.42 over the first 10 steps, ~0.02 over the last 10 (a one-sample estimate may dip just below 0)
    assert values[-10:].mean() < 0.25 * values[:10].mean(), values
    assert values[-10:].mean() > -0.1


def test_mixture_kl_matches_the_closed_form_with_one_component():
    """With K = 1 the component term vanishes and the expected KL is that of two diagonal Gaussians (>= 0)."""
    torch.manual_seed(0)
    latent = GaussianMixtureLatent(16, 4, 1, d_hidden=32).double()
    h = torch.randn(3, 16, dtype=torch.float64)
    with torch.no_grad():
        monte_carlo = latent(h.repeat_interleave(20000, 0), sample=True).kl.view(3, -1).mean(1)
        point = latent(h, sample=False)
        y = torch.ones(3, 1, dtype=torch.float64)
        prior_mean, prior_var = latent.prior_mean(y), F.softplus(latent.prior_var(y))
    closed = 0.5 * (torch.log(prior_var / point.var) + (point.var + (point.mean - prior_mean) ** 2) / prior_var - 1)
    closed = closed.sum(-1)
    assert (closed > 0).all()
    torch.testing.assert_close(monte_carlo, closed, rtol=0.05, atol=0.02)


def test_mixture_component_kl_is_zero_for_uniform_and_positive_for_confident_assignments():
    latent = GaussianMixtureLatent(8, 4, 5, d_hidden=16)
    h = torch.randn(6, 8)
    with torch.no_grad():
        latent.component_logits.weight.zero_()
        latent.component_logits.bias.zero_()
        uniform = latent(h, sample=False)
        latent.component_logits.bias.copy_(torch.tensor([8.0, 0, 0, 0, 0]))
        confident = latent(h, sample=False)
    # eval: z is the posterior mean, so the z term is log q(mean) - log p(mean); the y term moves by KL(q(y)||U)
    q = torch.softmax(torch.tensor([8.0, 0, 0, 0, 0]), 0)
    kl_y = float((q * torch.log(q * 5)).sum())
    assert kl_y > 1.0
    torch.testing.assert_close(confident.kl - uniform.kl, torch.full((6,), kl_y), atol=1e-4, rtol=0)
    # eval mode is deterministic
    torch.testing.assert_close(latent(h, sample=False).mean, latent(h, sample=False).mean, atol=0, rtol=0)


# -- negative binomial -----------------------------------------------------------------------------------
def test_nb_log_likelihood_matches_scvi_and_scipy():
    from scipy.stats import nbinom
    from scvi.distributions import NegativeBinomial

    rng = np.random.default_rng(0)
    counts = np.concatenate([np.zeros(20), rng.integers(1, 50, 40), [1e3, 1e4, 12345, 50000]])
    n = len(counts)
    mean = np.exp(rng.uniform(np.log(1e-3), np.log(2e4), n))
    theta = np.exp(rng.uniform(np.log(1e-2), np.log(1e3), n))
    ours = negative_binomial_log_likelihood(*(torch.as_tensor(v, dtype=torch.float64) for v in (counts, mean, theta)))
    scvi = NegativeBinomial(mu=torch.as_tensor(mean), theta=torch.as_tensor(theta), validate_args=False).log_prob(
        torch.as_tensor(counts)
    )
    torch.testing.assert_close(ours, scvi, rtol=1e-9, atol=1e-9)
    exact = nbinom.logpmf(counts, theta, theta / (theta + mean))
    np.testing.assert_allclose(ours.numpy(), exact, rtol=1e-5, atol=1e-5)
    # float32 broadcasting (genes x cells) and a proper distribution over counts
    k = torch.arange(0, 400, dtype=torch.float32)[:, None]
    pmf = negative_binomial_log_likelihood(k, torch.tensor([0.5, 5.0, 30.0]), torch.tensor([0.7, 2.0, 50.0])).exp()
    torch.testing.assert_close(pmf.sum(0), torch.ones(3), atol=1e-4, rtol=0)


def test_expected_counts_keep_the_library_on_measured_genes():
    torch.manual_seed(0)
    logits = torch.randn(5, 12)
    library = torch.tensor([10.0, 0.0, 3.5, 1e4, 1.0])
    measured = torch.rand(5, 12) > 0.4
    measured[:, 0] = True
    out = NegativeBinomialDecoder.expected_counts(logits, library, measured)
    torch.testing.assert_close(out.sum(-1), library)
    assert (out[~measured] == 0).all()
    assert (out[measured & (library[:, None] > 0)] > 0).all()
    # proportions among measured genes follow exp(logits)
    ratio = out[0, measured[0]] / logits[0, measured[0]].exp()
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio))
    # one gene mask for every cell broadcasts; no mask is the plain softmax
    gene_mask = torch.arange(12) < 7
    torch.testing.assert_close(
        NegativeBinomialDecoder.expected_counts(logits, library, gene_mask)[:, 7:], torch.zeros(5, 5)
    )
    torch.testing.assert_close(
        NegativeBinomialDecoder.expected_counts(logits, library), torch.softmax(logits, -1) * library[:, None]
    )


def test_decoder_shapes_and_theta_range():
    decoder = NegativeBinomialDecoder(8, 16, 30, n_layers=3, d_bottleneck=12, offsets=True)
    assert decoder(torch.randn(4, 8)).shape == (4, 30)
    with torch.no_grad():
        decoder.log_theta[:2] = torch.tensor([100.0, -100.0])
    theta = decoder.theta()
    assert theta.shape == (30,)
    assert theta[0].item() == pytest.approx(1e4) and theta[1].item() == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="n_layers"):
        NegativeBinomialDecoder(8, 16, 30, n_layers=0)


# -- masked pretraining loss -------------------------------------------------------------------------------
def test_unmeasured_genes_carry_no_loss_gradient():
    module = small_module(positional_encoding="none").train()
    generator = torch.Generator().manual_seed(3)
    counts = torch.poisson(torch.rand(10, 40, generator=generator) * 5, generator=generator)
    measured = torch.ones(10, 40, dtype=torch.bool)
    measured[:, 30:] = False  # this dataset did not measure genes 30-39: they hold zeros
    counts[:, 30:] = 0.0
    torch.manual_seed(0)
    out = module.masked_sentence_loss(counts, measured)
    assert torch.isfinite(out["loss"])
    assert int(out["n_masked"]) == round(0.75 * 10)
    assert out["hidden_reconstruction"] > 0 and out["reconstruction"] > out["hidden_reconstruction"]
    out["loss"].backward()
    for grad in (module.decoder.log_theta.grad, module.decoder.gene_logits.bias.grad):
        assert (grad[30:] == 0).all()
        assert (grad[:30] != 0).all()


def test_masked_loss_is_reproducible_and_finite_with_coordinates():
    module = small_module().train()
    counts = torch.poisson(torch.full((9, 40), 2.0), generator=torch.Generator().manual_seed(4))
    measured = torch.ones(9, 40, dtype=torch.bool)
    coordinates = torch.rand(9, 2) * 100
    losses = []
    for _ in range(2):
        torch.manual_seed(5)
        losses.append(module.masked_sentence_loss(counts, measured, coordinates)["loss"])
    assert torch.isfinite(losses[0])
    torch.testing.assert_close(losses[0], losses[1])


# -- flow attention ---------------------------------------------------------------------------------------
def test_flow_attention_shape_and_refusals():
    attention = FlowAttention(16, 4)
    x = torch.randn(2, 7, 16)
    out = attention(x)
    assert out.shape == (2, 7, 16)
    assert torch.isfinite(out).all()
    # the two sequences of the batch do not mix
    torch.testing.assert_close(attention(x[1:]), out[1:])
    with pytest.raises(ValueError, match="masks"):
        attention(x, attn_mask=torch.ones(7, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="causal"):
        attention(x, is_causal=True)
    with pytest.raises(ValueError, match="n_queries"):
        attention(x, n_queries=2)
    with pytest.raises(ValueError, match="divisible"):
        FlowAttention(10, 4)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="attention"):
        CellPLMConfig(n_genes=10, attention="linear")
    with pytest.raises(ValueError, match="divisible by 4"):
        CellPLMConfig(n_genes=10, d_model=18, n_heads=2)
    with pytest.raises(ValueError, match="context"):
        CellPLMConfig(n_genes=10, context=1)
    with pytest.raises(ValueError, match="mask_cell_rate"):
        CellPLMConfig(n_genes=10, mask_cell_rate=1.0)
    with pytest.raises(ValueError, match="normalize_total"):
        CellPLMConfig(n_genes=10, normalize_total=0)
    assert CellPLMConfig(n_genes=10, d_model=16, n_heads=2).d_hidden == 32


# -- sentences ------------------------------------------------------------------------------------------------
def _names(n: int) -> np.ndarray:
    return np.array([f"cell{i}" for i in range(n)])


def _groups(sentences, names) -> set[frozenset]:
    return {frozenset(names[s]) for s in sentences}


def _check_partition(sentences, n: int, context: int) -> None:
    every = np.concatenate(sentences)
    np.testing.assert_array_equal(np.sort(every), np.arange(n))
    for s in sentences:
        assert 1 <= len(s) <= context
        assert np.all(np.diff(s) > 0)


def test_plan_covers_every_cell_once_in_balanced_sentences():
    names = _names(103)
    sentences = plan_sentences(names, context=20)
    _check_partition(sentences, 103, 20)
    sizes = [len(s) for s in sentences]
    assert len(sentences) == 6 and max(sizes) - min(sizes) <= 1
    # a hash, not the AnnData order: the first sentence is not the first rows
    assert not np.array_equal(sentences[0], np.arange(len(sentences[0])))
    assert _groups(plan_sentences(names, context=20, seed=1), names) != _groups(sentences, names)
    assert [len(s) for s in plan_sentences(names, context=200)] == [103]


def test_plan_does_not_depend_on_row_order_and_never_mixes_samples():
    rng = np.random.default_rng(0)
    n = 150
    names = _names(n)
    samples = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    coordinates = rng.uniform(0, 100, (n, 2))
    coordinates[samples == "c"] = np.nan  # a dissociated sample beside spatial ones
    perm = rng.permutation(n)
    for coords in (None, coordinates):
        plan = plan_sentences(names, context=16, samples=samples, coordinates=coords)
        _check_partition(plan, n, 16)
        for s in plan:
            assert len(set(samples[s])) == 1
        permuted = plan_sentences(
            names[perm], context=16, samples=samples[perm], coordinates=None if coords is None else coords[perm]
        )
        assert _groups(permuted, names[perm]) == _groups(plan, names)


def test_spatial_sentences_are_compact():
    rng = np.random.default_rng(1)
    n = 1000
    coordinates = rng.uniform(0, 100, (n, 2))
    plan = plan_sentences(_names(n), context=50, coordinates=coordinates)
    _check_partition(plan, n, 50)
    sizes = [len(s) for s in plan]
    assert max(sizes) - min(sizes) <= 1

    def spread(points):
        return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))

    within = np.mean([spread(coordinates[s]) for s in plan])
    hashed = np.mean([spread(coordinates[s]) for s in plan_sentences(_names(n), context=50)])
    # twenty k-d leaves of a square: ~sqrt(1/20) of the slide's spread; hashed groups span the whole slide
    assert within < 0.35 * spread(coordinates), (within, spread(coordinates))
    assert hashed > 0.9 * spread(coordinates)


def test_nan_coordinate_samples_are_grouped_by_hash_beside_spatial_ones():
    rng = np.random.default_rng(2)
    n = 120
    names = _names(n)
    samples = np.where(np.arange(n) % 3 == 0, "dissociated", "section")
    coordinates = rng.uniform(0, 10, (n, 2))
    coordinates[samples == "dissociated"] = np.nan
    plan = plan_sentences(names, context=15, samples=samples, coordinates=coordinates)
    _check_partition(plan, n, 15)
    dissociated = np.flatnonzero(samples == "dissociated")
    section = np.flatnonzero(samples == "section")
    alone_hash = plan_sentences(names[dissociated], context=15)
    alone_spatial = plan_sentences(names[section], context=15, coordinates=coordinates[section])
    expected = _groups(alone_hash, names[dissociated]) | _groups(alone_spatial, names[section])
    assert _groups(plan, names) == expected
    assert _groups(alone_spatial, names[section]) != _groups(plan_sentences(names[section], context=15), names[section])


def test_a_single_cell_sample_is_an_error_that_names_it():
    samples = np.array(["a"] * 5 + ["lonely"] + ["b"] * 4)
    with pytest.raises(ValueError, match=r"fewer than 2 cells \(e\.g\. \['lonely'\]\).*sample_key=None"):
        plan_sentences(_names(10), context=4, samples=samples)
    assert len(plan_sentences(_names(10), context=4, samples=samples, min_sample_size=1)) == 2 + 1 + 1
    with pytest.raises(ValueError, match="context"):
        plan_sentences(_names(10), context=0)


def test_partial_nan_coordinates_in_a_sample_are_an_error():
    n = 12
    adata = ad.AnnData(np.ones((n, 3), dtype=np.float32), obs=pd.DataFrame(index=_names(n)))
    coordinates = np.random.default_rng(0).uniform(0, 10, (n, 2))
    samples = np.array(["a"] * 6 + ["b"] * 6)
    coordinates[7] = np.nan  # one cell of sample b
    adata.obsm["spatial"] = coordinates
    with pytest.raises(ValueError, match=r"NaN/inf coordinates for 1 cells \(e\.g\. \['cell7'\]\)"):
        spatial_coordinates(adata, "spatial", samples)
    coordinates[6:] = np.nan  # all of sample b: read without positions
    adata.obsm["spatial"] = coordinates
    out = spatial_coordinates(adata, "spatial", samples)
    assert out.shape == (n, 2) and np.isfinite(out[:6]).all()
    with pytest.raises(ValueError, match="NaN/inf"):  # without samples, any NaN is an error
        spatial_coordinates(adata, "spatial")


def test_sentence_sampler_redraws_hash_samples_and_keeps_spatial_neighbourhoods():
    rng = np.random.default_rng(3)
    n = 90
    samples = np.array(["s"] * 40 + ["d"] * 50)
    coordinates = rng.uniform(0, 10, (n, 2))
    coordinates[40:] = np.nan
    cells = np.arange(5, n)  # a training split
    sampler = SentenceBatchSampler(cells, context=12, samples=samples, coordinates=coordinates)
    torch.manual_seed(0)
    epochs = [list(sampler) for _ in range(2)]
    for batches in epochs:
        assert len(batches) == len(sampler) == 3 + 5  # 35 spatial cells in 3, 50 dissociated in 5
        flat = np.concatenate(batches)
        np.testing.assert_array_equal(np.sort(flat), cells)
        for b in batches:
            assert len(b) <= 12 and len(set(samples[b])) == 1

    def sets(batches, label):
        return {frozenset(b) for b in batches if samples[b[0]] == label}

    assert sets(epochs[0], "s") == sets(epochs[1], "s")
    assert sets(epochs[0], "d") != sets(epochs[1], "d")


def test_sentence_collator_densifies_counts_masks_and_coordinates():
    counts = sp.csr_matrix(np.arange(24, dtype=np.float32).reshape(6, 4))
    groups = np.array([0, 0, 1, 1, 0, 1])
    masks = np.array([[True, True, True, True], [True, False, True, False]])
    coordinates = np.array([[0, 0], [1, 0], [np.nan, np.nan], [np.nan, np.nan], [2, 0], [np.nan, np.nan]], float)
    collate = SentenceCollator(counts, groups, masks, coordinates)
    batch = collate([4, 0])
    torch.testing.assert_close(batch["counts"], torch.tensor([[16.0, 17, 18, 19], [0, 1, 2, 3]]))
    assert batch["measured"].all()
    torch.testing.assert_close(batch["coordinates"], torch.tensor([[2.0, 0], [0, 0]]))
    batch = collate([2, 5])
    torch.testing.assert_close(batch["measured"], torch.tensor([[True, False, True, False]] * 2))
    assert batch["coordinates"].shape == (0, 2)  # a sample without positions
