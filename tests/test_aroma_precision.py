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
    model = adapt(tiny_bert(), aroma_config())
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
