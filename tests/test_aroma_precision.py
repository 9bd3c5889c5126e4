"""AROMA under mixed precision (autocast, Trainer(bf16=True)) and with a base that trains its bias."""

from __future__ import annotations

import pytest
import torch
from test_trainer import Pairs, args, aroma_config, tiny_bert
from torch import nn
from transformers import Trainer

from aroma_peft import AromaCallback, AromaConfig, AromaController, adapt
from aroma_peft.tuners.aroma.layer import AromaLinear

LOW = [torch.bfloat16, torch.float16]


def layer_with_piece(dropout: float = 0.0) -> AromaLinear:
    torch.manual_seed(0)
    config = AromaConfig(target_modules=["x"], r=2, lora_alpha=4, lora_dropout=dropout)
    layer = AromaLinear(nn.Linear(24, 16), config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def grads(layer: AromaLinear, x: torch.Tensor, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = layer(x)
    out.float().square().sum().backward()
    result = (out.detach(), x.grad, layer.lora_A.grad, layer.lora_B.grad)
    layer.zero_grad(set_to_none=True)
    return result


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_autocast_runs_in_low_precision_and_matches_fp32(dtype: torch.dtype, dropout: float) -> None:
    """The fused function and the dropout path: low-precision outputs, fp32 gradients of the factors,
    equal to the fp32 computation within the low-precision tolerance."""
    layer = layer_with_piece(dropout).eval()  # eval: dropout off, so both runs compute the same function
    x = torch.randn(3, 5, 24)
    ref = grads(layer, x, None)
    low = grads(layer, x, dtype)
    assert low[0].dtype == dtype
    assert low[2].dtype == low[3].dtype == torch.float32  # the factors keep their own dtype
    for got, want in zip(low, ref):
        torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2 * want.abs().max().item())


@pytest.mark.parametrize("dtype", LOW)
def test_plain_loop_trains_under_autocast(tiny_net: nn.Module, batch, dtype: torch.dtype) -> None:
    model = adapt(tiny_net, AromaConfig(target_modules=["up", "down"], modules_to_save=["head"]))
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=1e-2))
    controller = AromaController(model, optimizer)
    a0 = model.model.up.lora_A.detach().clone()
    x, y = batch
    losses = []
    for _ in range(5):
        with torch.autocast("cpu", dtype=dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        controller.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert not torch.equal(model.model.up.lora_A, a0)


def test_trainer_bf16_trains_aroma(tmp_path) -> None:
    # T beyond the Trainer's 4 steps: the final decision would discard the live piece this test inspects.
    model = adapt(tiny_bert(), aroma_config(max_steps=100))
    layer = model.model.bert.encoder.layer[0].attention.self.query
    b0 = layer.lora_B.detach().clone()
    trainer = Trainer(
        model=model,
        args=args(tmp_path, bf16=True, max_steps=4),
        train_dataset=Pairs(),
        callbacks=[AromaCallback()],
    )
    trainer.train()
    assert layer.lora_B.dtype == torch.float32 and not torch.equal(layer.lora_B, b0)


@pytest.mark.parametrize("trainable", ["bias", "weight"])
def test_fused_path_gives_an_unfrozen_base_its_gradient(trainable: str) -> None:
    layer = layer_with_piece()
    param = getattr(layer.base_layer, trainable)
    param.requires_grad_(True)
    x = torch.randn(4, 3, 24)
    layer(x).square().sum().backward()
    fused = param.grad.clone()
    param.grad = None
    w = layer.base_layer.weight + layer.scaling * layer.lora_B @ layer.lora_A
    (x @ w.T + layer.base_layer.bias).square().sum().backward()
    assert fused.abs().sum() > 0
    torch.testing.assert_close(fused, param.grad)


def bf16_layer_and_pieces(pieces: int = 6) -> tuple[AromaLinear, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A bf16 Linear and rank-one pieces each of 5e-3 of ||W|| (the default outer threshold's size)."""
    torch.manual_seed(0)
    config = AromaConfig(target_modules=["x"], r=1, lora_alpha=1)
    layer = AromaLinear(nn.Linear(256, 128).to(torch.bfloat16), config, torch.Generator().manual_seed(0))
    w_norm = float(layer.base_layer.weight.float().norm())
    result = []
    for _ in range(pieces):
        a, b = torch.randn(1, 256), torch.randn(128, 1)
        b *= 5e-3 * w_norm / float((b @ a).norm())
        result.append((a, b))
    return layer, result


def test_bf16_base_keeps_fp32_factors_and_exact_merges() -> None:
    """After many merges the bf16 weight is the fp32 reference W0 + sum b a correctly rounded (within
    half a bf16 ulp) and outputs match the fp32 reference within bf16 tolerance; folding each piece into
    the bf16 weight (the naive fold) drifts by hundreds of ulps and doubles the output error."""
    layer, pieces = bf16_layer_and_pieces(20)
    assert layer.lora_A.dtype == layer.lora_B.dtype == layer.merged_A.dtype == torch.float32
    w0 = layer.base_layer.weight.detach().float().clone()
    naive = layer.base_layer.weight.detach().clone()
    for a, b in pieces:
        with torch.no_grad():
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
        layer.merge_live()
        layer.start_piece(torch.Generator().manual_seed(1))
        naive = torch.addmm(naive, b.bfloat16(), a.bfloat16())  # rounds W + b a into bf16 at each fold
    update = sum(b @ a for a, b in pieces)
    torch.testing.assert_close(layer.delta_weight(), update)  # the exported factors are exact
    reference = w0 + update
    ulp = reference.abs().log2().floor().exp2() * 2**-7  # bf16 keeps 8 significant bits

    def ulps(w: torch.Tensor) -> float:
        return float(((w.float() - reference).abs() / ulp).max())

    assert ulps(layer.base_layer.weight) <= 0.5 + 1e-3 and ulps(naive) > 10
    x = torch.randn(64, 256).bfloat16()
    want = x.float() @ reference.T + layer.base_layer.bias.float()
    with torch.no_grad():
        got = layer(x).float()
        got_naive = (x @ naive.T + layer.base_layer.bias).float()
    torch.testing.assert_close(got, want, rtol=1.6e-2, atol=1e-2)
    assert (got_naive - want).norm() > 2 * (got - want).norm()


def test_bf16_master_survives_save_load_and_finish(tmp_path) -> None:
    layer, pieces = bf16_layer_and_pieces(3)
    for a, b in pieces:
        with torch.no_grad():
            layer.lora_A.copy_(a)
            layer.lora_B.copy_(b)
        layer.merge_live()
        layer.start_piece(torch.Generator().manual_seed(1))
    x = torch.randn(8, 256).bfloat16()
    with torch.no_grad():
        before = layer(x)
    fresh, _ = bf16_layer_and_pieces(0)
    fresh.load_adapter_state(layer.adapter_state())
    torch.testing.assert_close(fresh.master, layer.master, rtol=0, atol=0)  # re-folded as in training
    layer.finish()
    assert layer.master is None
    with torch.no_grad():
        assert torch.equal(layer(x), before)  # B = 0: the forward is the rounded master either way


def test_bf16_model_trains_merges_and_reloads(batch) -> None:
    from conftest import TinyNet

    def bf16_model() -> nn.Module:
        torch.manual_seed(0)
        config = AromaConfig(
            target_modules=["up", "down"], modules_to_save=["head"], t_in=2, check_interval=1, eps_out=0.0
        )
        return adapt(TinyNet().to(torch.bfloat16), config)

    model = bf16_model()
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=1e-2))
    controller = AromaController(model, optimizer)
    x, y = batch
    for _ in range(6):
        nn.functional.cross_entropy(model(x.bfloat16()).float(), y).backward()
        optimizer.step()
        controller.step()
        optimizer.zero_grad()
    assert model.model.up.rank == 3 and model.model.up.lora_A.dtype == torch.float32
    fresh = bf16_model()
    fresh.load_state_dict(model.state_dict())  # a full checkpoint: the master restarts from the weight
    with torch.no_grad():  # equal up to one bf16 rounding of the folded weight
        torch.testing.assert_close(fresh(x.bfloat16()), model(x.bfloat16()), rtol=1.6e-2, atol=1e-2)
