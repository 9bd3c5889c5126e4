"""AROMA and SoRA on a torchao int8 weight-only base: pieces are never folded into the quantized weight
but kept as a frozen low-rank stack; the whole update exports as a PEFT LoRA adapter that unmodified
``peft`` loads onto the same quantized base with the same outputs."""

from __future__ import annotations

import pytest
import torch
from test_sora import Tiny
from test_sora import config as sora_config
from torch import nn

from aroma_peft import AromaConfig, AromaController, SoraController, adapt, load

torchao = pytest.importorskip("torchao", reason="the quantized-base tests need torchao (extra `quant`)")
from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: E402

TARGETS = ("up", "down")


def quantized_tiny() -> nn.Module:
    model = Tiny()
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: fqn in TARGETS)
    return model


def aroma_config() -> AromaConfig:
    return AromaConfig(
        target_modules=list(TARGETS), modules_to_save=["head"], r=2, lora_alpha=4, t_in=3, check_interval=1,
        eps_out=1e-4, max_steps=10,
    )  # fmt: skip


def train(model, controller, steps: int, penalty: bool = False) -> None:  # noqa: ANN001
    optimizer = controller.optimizer
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = torch.randn(16, 12, generator=g), torch.randint(0, 3, (16,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        if penalty:
            loss = loss + controller.penalty()
        loss.backward()
        optimizer.step()
        controller.step()
        optimizer.zero_grad()


def int8_data(model: nn.Module) -> list[torch.Tensor]:
    return [model.get_submodule(n).weight.dequantize().clone() for n in TARGETS]


def check_stack_and_export(adapted, tmp_path) -> None:  # noqa: ANN001
    """Each adapted module computes base(x) + s (x A^T) B^T over its exported factors, and unmodified
    peft, loading the export onto a freshly quantized base, computes the same model."""
    from peft import PeftModel

    adapted.eval()
    x = torch.randn(5, 20)
    for name, layer in adapted.adapter_layers().items():
        a, b, s = layer.lora_factors()
        assert a.dtype == torch.float32 and a.shape[0] > 0, name
        xin = x[:, : layer.in_features]
        expected = layer.base_layer(xin) + s * (xin @ a.t()) @ b.t()
        torch.testing.assert_close(layer(xin), expected, rtol=1e-5, atol=1e-6)
    adapted.export_lora(tmp_path)
    peft_model = PeftModel.from_pretrained(quantized_tiny(), tmp_path).eval()
    assert type(peft_model.base_model.model.up).__name__ == "TorchaoLoraLinear"
    inputs = torch.randn(7, 12)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(inputs), adapted(inputs), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="merge_and_unload: the base Linear .* is quantized"):
        adapted.merge_and_unload()


def test_aroma_keeps_merged_pieces_beside_the_int8_weight(tmp_path) -> None:  # noqa: ANN001
    model = adapt(quantized_tiny(), aroma_config())
    before = int8_data(model.model)
    controller = AromaController(model, torch.optim.AdamW(model.optimizer_param_groups(2e-2)))
    train(model, controller, steps=12)
    events = [e["event"] for e in controller.events]
    assert "merge" in events and controller.finished  # merges, then every module finished at T
    assert all(rank >= 2 for rank in controller.ranks().values())
    for name, weight, old in zip(TARGETS, int8_data(model.model), before):
        assert type(model.model.get_submodule(name).weight).__name__ == "Int8Tensor"
        assert torch.equal(weight, old), f"{name}: the quantized weight was written"
    check_stack_and_export(model, tmp_path / "lora")
    model.save_pretrained(tmp_path / "aroma")  # the native format round-trips onto a fresh int8 base
    loaded = load(quantized_tiny(), tmp_path / "aroma").eval()
    x = torch.randn(6, 12)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_aroma_merge_on_int8_base_keeps_the_function() -> None:
    """A merge moves the live piece into the stack: the output does not change (the fold would round
    the piece into int8 and change it)."""
    model = adapt(quantized_tiny(), aroma_config())
    layer = model.model.up
    with torch.no_grad():
        layer.lora_B.normal_(std=0.05)
    x = torch.randn(4, 12)
    before = layer(x)
    layer.merge_live()
    layer.start_piece(torch.Generator().manual_seed(0))
    assert layer.rank == 2
    torch.testing.assert_close(layer(x), before, rtol=1e-6, atol=1e-6)
    # what folding the piece into the int8 weight would compute instead: visibly different
    a, b, s = layer.merged_A, layer.merged_B, layer.scaling
    folded = nn.Linear(12, 20)
    with torch.no_grad():
        folded.weight.copy_(layer.base_layer.weight.dequantize() + s * b @ a)
        folded.bias.copy_(layer.base_layer.bias)
    quantize_(folded, Int8WeightOnlyConfig())
    assert (folded(x) - before).abs().max() > 10 * (layer(x) - before).abs().max()


def test_sora_on_int8_base_exports_to_peft(tmp_path) -> None:  # noqa: ANN001
    model = adapt(quantized_tiny(), sora_config(sparse_lambda=0.1, xi=1e-3, modules_to_save=["head"]))
    assert model.model.up.gate.dtype == model.model.up.lora_A.dtype == torch.float32
    controller = SoraController(model, torch.optim.AdamW(model.optimizer_param_groups(2e-2)))
    train(model, controller, steps=6, penalty=True)
    check_stack_and_export(model, tmp_path)
