"""AROMA's layer: the fused forward/backward, statistics, merge, reinit and finish."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aroma_peft import AromaConfig, adapt
from aroma_peft.tuners.aroma.layer import AromaLinear, FoldedRankOneLinear, folds, product_inner


def make_layer(r: int = 1, alpha: float = 4.0, dropout: float = 0.0, seed: int = 0) -> AromaLinear:
    torch.manual_seed(seed)
    config = AromaConfig(target_modules=["x"], r=r, lora_alpha=alpha, lora_dropout=dropout)
    return AromaLinear(nn.Linear(7, 5), config, torch.Generator().manual_seed(seed))


def trained_piece(layer: AromaLinear, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g))
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g))


def reference(layer: AromaLinear, x: torch.Tensor) -> torch.Tensor:
    w = layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A
    return x @ w.T + layer.base_layer.bias


@pytest.mark.parametrize("tokens", [2, 24], ids=["unfolded", "folded"])
@pytest.mark.parametrize("r", [1, 3])
def test_fused_function_matches_plain_autograd(r: int, tokens: int) -> None:
    layer = make_layer(r=r).double()
    trained_piece(layer)
    x = torch.randn(tokens // 2, 2, 7, dtype=torch.float64, requires_grad=True)
    assert folds(x, layer.base_layer.weight) == (tokens == 24)
    torch.autograd.gradcheck(
        lambda x, a, b: FoldedRankOneLinear.apply(
            x, layer.base_layer.weight, layer.base_layer.bias, a, b, 0.7
        ),
        (x, layer.lora_A, layer.lora_B),
    )
    out = layer(x)
    torch.testing.assert_close(out, reference(layer, x))
    grad = torch.randn_like(out)
    fused = torch.autograd.grad(out, (x, layer.lora_A, layer.lora_B), grad)
    plain = torch.autograd.grad(reference(layer, x), (x, layer.lora_A, layer.lora_B), grad)
    for f, p in zip(fused, plain):
        torch.testing.assert_close(f, p)


def test_short_batches_through_large_layers_do_not_fold() -> None:
    """Folding copies W twice per step: SmolLM2's projections at 2 x 128 tokens take the unfolded path
    (the fold cost 550 MB of copies per step there), MiniLM's at 32 x 128 fold."""
    smollm2_up, minilm_up = torch.empty(1536, 576), torch.empty(1536, 384)
    assert not folds(torch.empty(2, 128, 576), smollm2_up)
    assert not folds(torch.empty(2, 128, 576), torch.empty(192, 576))  # k_proj / v_proj
    assert folds(torch.empty(32, 128, 384), minilm_up)
    assert folds(torch.empty(32, 128, 1536), minilm_up.t())
    assert not folds(torch.empty(8, 96, 576), torch.empty(576, 576))  # SmolLM2 q_proj, commonsense batch


def test_dropout_path_is_base_plus_scaled_branch() -> None:
    layer = make_layer(dropout=0.5)
    trained_piece(layer)
    layer.eval()  # dropout off: must equal the fused function
    x = torch.randn(3, 7)
    torch.testing.assert_close(layer(x), reference(layer, x))


def test_new_piece_is_kaiming_uniform_a_and_zero_b() -> None:
    layer = make_layer(r=200)  # many rows, to see the bound
    bound = 1 / math.sqrt(7)
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.9 * bound
    assert torch.count_nonzero(layer.lora_B) == 0


def test_statistics_match_dense_reference() -> None:
    layer = make_layer(r=3)
    trained_piece(layer)
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    assert layer.piece_norm() == pytest.approx(float(torch.linalg.norm(b @ a)), rel=1e-6)
    assert layer.weight_norm() == pytest.approx(float(torch.linalg.norm(layer.base_layer.weight)), rel=1e-6)
    a2, b2 = torch.randn_like(a), torch.randn_like(b)
    assert product_inner(b, a, b2, a2) == pytest.approx(float(((b @ a) * (b2 @ a2)).sum()), rel=1e-6)


@pytest.mark.parametrize("tokens", [3, 40], ids=["unfolded", "folded"])
def test_merge_leaves_function_unchanged_and_starts_a_fresh_piece(tokens: int) -> None:
    layer = make_layer(r=2)
    trained_piece(layer)
    x = torch.randn(tokens, 7)
    before = layer(x)
    piece = (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
    layer.merge_live()
    layer.start_piece(torch.Generator().manual_seed(3))
    if folds(x, layer.base_layer.weight):
        assert torch.equal(layer(x), before)  # bit-identical: the fold is the forward's own addmm
    else:  # W x + s (x a) b before, (W + s b a) x after: equal up to fp32 rounding
        torch.testing.assert_close(layer(x), before, rtol=1e-6, atol=1e-6)
    assert layer.rank == 2
    torch.testing.assert_close(layer.merged_A, piece[0])
    torch.testing.assert_close(layer.merged_B, piece[1])
    assert torch.count_nonzero(layer.lora_B) == 0 and not torch.equal(layer.lora_A, piece[0])
    torch.testing.assert_close(layer.delta_weight(), layer.scaling * piece[1] @ piece[0])


def test_forward_cost_does_not_grow_with_rank() -> None:
    """Merged pieces live in the base weight: the forward touches only the live piece."""
    layer = make_layer()
    for _ in range(5):
        trained_piece(layer)
        layer.merge_live()
        layer.start_piece(torch.Generator())
    assert layer.rank == 5 and layer.lora_A.shape == (1, 7)
    x = torch.randn(2, 7)
    w = layer.base_layer.weight.detach()
    torch.testing.assert_close(layer(x), x @ w.T + layer.base_layer.bias)  # B = 0: nothing else is added


def test_finish_discards_live_piece_and_freezes() -> None:
    layer = make_layer()
    trained_piece(layer)
    layer.merge_live()
    trained_piece(layer, seed=5)  # a further piece that will be discarded
    x = torch.randn(2, 7)
    merged_only = x @ layer.base_layer.weight.detach().T + layer.base_layer.bias
    layer.finish()
    assert layer.is_finished and layer.rank == 1
    assert not layer.lora_A.requires_grad and not layer.lora_B.requires_grad
    torch.testing.assert_close(layer(x), merged_only)


def test_unfold_restores_base_weight() -> None:
    layer = make_layer()
    w0 = layer.base_layer.weight.detach().clone()
    for seed in range(3):
        trained_piece(layer, seed)
        layer.merge_live()
    layer.unfold_all()
    torch.testing.assert_close(layer.base_layer.weight.detach(), w0, atol=1e-5, rtol=0)


def test_adapt_targets_by_suffix_and_regex(tiny_net: nn.Module) -> None:
    by_list = adapt(tiny_net, AromaConfig(target_modules=["up", "down"]))
    assert sorted(by_list.adapter_layers()) == ["down", "up"]
    torch.manual_seed(0)
    from conftest import TinyNet

    by_regex = adapt(TinyNet(), AromaConfig(target_modules=r"(up|head)"))
    assert sorted(by_regex.adapter_layers()) == ["head", "up"]
