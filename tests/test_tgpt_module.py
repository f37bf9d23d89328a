"""tGPT network: causal masking, padding invariance, tied next-gene head, gene-token mean embedding, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scfm.models.tgpt import TGPTConfig, TGPTModule, causal_padding_mask, rank_tokenize_csr

CONFIG = {"n_tokens": 40, "d_model": 16, "n_heads": 2, "n_layers": 2, "d_hidden": 32, "max_len": 12}


@pytest.fixture
def module() -> TGPTModule:
    torch.manual_seed(0)
    return TGPTModule(TGPTConfig(**CONFIG)).eval()


def test_a_token_never_sees_the_future(module):
    tokens = torch.tensor([[1, 5, 9, 7, 11, 13, 2]])
    changed = tokens.clone()
    changed[0, 4:] = torch.tensor([20, 21, 22])
    with torch.no_grad():
        a, b = module.hidden_states(tokens), module.hidden_states(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_right_padding_changes_nothing(module):
    tokens = torch.tensor([[1, 5, 9, 7, 2]])
    padded = torch.tensor([[1, 5, 9, 7, 2, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(module.hidden_states(padded)[:, :5], module.hidden_states(tokens))
        torch.testing.assert_close(module.embed(padded), module.embed(tokens))
        assert float(module.next_gene_loss(padded)) == pytest.approx(float(module.next_gene_loss(tokens)), rel=1e-5)


def test_causal_padding_mask_values():
    mask = causal_padding_mask(torch.tensor([[False, False, True]]))
    expected = torch.tensor([[True, False, False], [True, True, False], [True, True, False]])
    torch.testing.assert_close(mask[0, 0], expected)


def test_embedding_is_the_mean_over_gene_tokens(module):
    tokens = torch.tensor([[1, 5, 9, 7, 2, 0]])
    with torch.no_grad():
        hidden = module.hidden_states(tokens)
        torch.testing.assert_close(module.embed(tokens), hidden[:, 1:4].mean(1))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible"):
        TGPTConfig(n_tokens=10, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="must differ"):
        TGPTConfig(n_tokens=10, begin_id=0)
    with pytest.raises(ValueError, match="family"):
        TGPTConfig.from_dict({"n_tokens": 10, "family": "scgpt"})
    with pytest.raises(ValueError, match="unknown fields"):
        TGPTConfig.from_dict({"n_tokens": 10, "n_bins": 51})
    with pytest.raises(ValueError, match="exceed max_len"):
        TGPTModule(TGPTConfig(**CONFIG)).hidden_states(torch.ones(1, 13, dtype=torch.long))


def test_next_gene_training_learns_a_planted_ranking():
    """Two planted programmes: after training, the model predicts each programme's next gene."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_cells, n_genes = 64, 30
    counts = np.zeros((n_cells, n_genes), dtype=np.float32)
    for cell in range(n_cells):
        genes = np.arange(0, 10) if cell % 2 == 0 else np.arange(10, 20)
        counts[cell, genes] = np.linspace(50, 5, 10) + rng.uniform(0, 0.5, 10)
    token_ids = np.arange(n_genes) + 4
    sequences = rank_tokenize_csr(counts, token_ids, begin_id=1, end_id=2, max_len=12)
    batch = torch.tensor(np.stack(sequences))
    module = TGPTModule(TGPTConfig(**CONFIG))
    optimiser = torch.optim.Adam(module.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(module.next_gene_loss(batch))
    for _ in range(150):
        loss = module.next_gene_loss(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss) < 0.2 * first, (first, float(loss))
    module.eval()
    with torch.no_grad():
        predicted = module.next_token_logits(module.hidden_states(batch[:2, :3])).argmax(-1)[:, -1]
    np.testing.assert_array_equal(predicted.numpy(), [4 + 2, 14 + 2])  # third gene of each programme


def test_scvi_module_protocol_gives_the_same_loss(module):
    from scfm.models.tgpt import TOKEN_IDS

    tokens = torch.tensor([[1, 5, 9, 7, 2, 0], [1, 8, 6, 2, 0, 0]])
    with torch.no_grad():
        _, _, output = module({TOKEN_IDS: tokens})
        assert float(output.loss) == pytest.approx(float(module.next_gene_loss(tokens)), rel=1e-6)


def test_ranked_dataset_and_padding_collator():
    import scipy.sparse as sp

    from scfm.models.tgpt import TOKEN_IDS, PadTokens, RankedSampleDataset

    matrix = sp.csr_matrix(np.array([[0, 3, 1, 0], [5, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    dataset = RankedSampleDataset(matrix, np.array([4, 5, 6, -1]), np.array([2, 0, 1]), begin_id=1, end_id=2, max_len=8)
    batch = PadTokens(pad_id=0)([dataset[i] for i in range(len(dataset))])[TOKEN_IDS]
    np.testing.assert_array_equal(batch.numpy(), [[1, 2, 0, 0], [1, 5, 6, 2], [1, 4, 2, 0]])
