"""scfm.nn: attention masks, attention, transformer stack, heads."""

from __future__ import annotations

import pytest
import torch

from scfm.nn import (
    CellToGeneHead,
    ExpressionHead,
    SelfAttention,
    TransformerStack,
    generative_attention_mask,
    padding_attention_mask,
)


@pytest.fixture
def known_and_padding():
    # batch of 2, length 6. Row 0: [cls K, K, U, U, K, pad]; row 1: [cls K, U, K, U, pad, pad]
    known = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    padding = torch.tensor([[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    return known, padding


def test_generative_mask_shape_and_dtype(known_and_padding):
    known, padding = known_and_padding
    mask = generative_attention_mask(known, padding)
    assert mask.shape == (2, 1, 6, 6)
    assert mask.dtype == torch.bool


def test_generative_mask_semantics(known_and_padding):
    known, padding = known_and_padding
    mask = generative_attention_mask(known, padding)[:, 0]
    for b in range(2):
        real_known = known[b] & ~padding[b]
        for q in range(6):
            row = mask[b, q]
            # every query may see every real known key
            assert torch.equal(row & real_known, real_known)
            # padding keys are never attended, except by the padded query itself (its own diagonal)
            for k in range(6):
                if padding[b, k] and k != q:
                    assert not row[k], (b, q, k)
            # nothing beyond known keys and itself
            allowed = real_known.clone()
            allowed[q] = True
            assert not torch.any(row & ~allowed), (b, q)
            if not padding[b, q] and not known[b, q]:
                # an unknown token sees known tokens and itself, never another unknown
                others_unknown = ~known[b] & ~padding[b]
                others_unknown[q] = False
                assert row[q]
                assert not torch.any(row & others_unknown)
            if known[b, q] and not padding[b, q]:
                # known tokens attend only to known tokens
                assert torch.equal(row, real_known)


def test_generative_mask_exact_values():
    known = torch.tensor([[True, True, False, False]])
    mask = generative_attention_mask(known)[0, 0]
    expected = torch.tensor(
        [
            [1, 1, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_generative_mask_has_no_empty_row():
    # even with no known token at all and padding everywhere but one token, each query sees something
    known = torch.zeros(3, 5, dtype=torch.bool)
    padding = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    mask = generative_attention_mask(known, padding)
    assert mask.any(dim=-1).all()


def test_padding_mask_shape_and_values():
    padding = torch.tensor([[False, False, True], [False, True, True]])
    mask = padding_attention_mask(padding)
    assert mask.shape == (2, 1, 1, 3)
    assert torch.equal(mask[:, 0, 0], ~padding)


def test_self_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(10, 3)


def test_self_attention_output_shape():
    torch.manual_seed(0)
    attn = SelfAttention(8, 2)
    out = attn(torch.randn(3, 5, 8))
    assert out.shape == (3, 5, 8)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_output_unchanged_by_extra_padding(norm_first):
    torch.manual_seed(0)
    stack = TransformerStack(2, 16, 2, 32, norm_first=norm_first).eval()
    x = torch.randn(2, 5, 16)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True  # the second sequence already has two padded positions
    with torch.no_grad():
        short = stack(x, padding_attention_mask(padding))
        x_long = torch.cat([x, torch.randn(2, 4, 16) * 100], dim=1)
        padding_long = torch.cat([padding, torch.ones(2, 4, dtype=torch.bool)], dim=1)
        long = stack(x_long, padding_attention_mask(padding_long))
    real = ~padding
    torch.testing.assert_close(long[:, :5][real], short[real], atol=1e-5, rtol=0)


def test_unknown_token_input_does_not_leak_under_generative_mask():
    torch.manual_seed(0)
    stack = TransformerStack(3, 16, 2, 32).eval()
    known = torch.tensor([[True, True, False, True, False, False, True]])
    mask = generative_attention_mask(known)
    x = torch.randn(1, 7, 16)
    changed = x.clone()
    changed[0, 2] += 5.0 * torch.randn(16)  # an unknown token
    with torch.no_grad():
        base, out = stack(x, mask), stack(changed, mask)
    others = torch.ones(7, dtype=torch.bool)
    others[2] = False
    torch.testing.assert_close(out[0, others], base[0, others], atol=1e-5, rtol=0)
    assert not torch.allclose(out[0, 2], base[0, 2], atol=1e-3)  # the token itself does change


def test_known_token_input_changes_every_output():
    torch.manual_seed(0)
    stack = TransformerStack(2, 16, 2, 32).eval()
    known = torch.tensor([[True, True, False, True, False]])
    mask = generative_attention_mask(known)
    x = torch.randn(1, 5, 16)
    changed = x.clone()
    changed[0, 1] += 5.0 * torch.randn(16)  # a known token: everyone sees it
    with torch.no_grad():
        base, out = stack(x, mask), stack(changed, mask)
    for position in range(5):
        assert not torch.allclose(out[0, position], base[0, position], atol=1e-4), position


def test_transformer_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        TransformerStack(1, 8, 2, 16, activation="tanh")


@pytest.mark.parametrize("predict_zero", [False, True])
def test_expression_head_shapes(predict_zero):
    head = ExpressionHead(12, predict_zero=predict_zero)
    out = head(torch.randn(4, 7, 12))
    assert out["value"].shape == (4, 7)
    assert ("zero_logit" in out) is predict_zero
    if predict_zero:
        assert out["zero_logit"].shape == (4, 7)


@pytest.mark.parametrize("predict_zero", [False, True])
def test_cell_to_gene_head_shapes(predict_zero):
    head = CellToGeneHead(d_gene=8, d_cell=16, predict_zero=predict_zero)
    out = head(torch.randn(3, 16), torch.randn(3, 10, 8))
    assert out["value"].shape == (3, 10)
    assert ("zero_logit" in out) is predict_zero
    if predict_zero:
        assert out["zero_logit"].shape == (3, 10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_last_layer_queries_match_the_full_output(norm_first):
    torch.manual_seed(0)
    stack = TransformerStack(3, 16, 4, 32, norm_first=norm_first).eval()
    x = torch.randn(3, 9, 16)
    padding = torch.zeros(3, 9, dtype=torch.bool)
    padding[1, 6:] = True
    mask = padding_attention_mask(padding)
    with torch.no_grad():
        full = stack(x, mask)
        first_two = stack(x, mask, last_layer_queries=2)
    assert first_two.shape == (3, 2, 16)
    torch.testing.assert_close(first_two, full[:, :2], atol=1e-5, rtol=1e-5)
