"""Uniform-rank LoRA export: one rank, scale folded into B, alpha = r; unmodified peft reproduces outputs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_llm import random_llama

from aroma_peft import SoraConfig, adapt
from aroma_peft.tasks.causal_lm import default_target_modules
from aroma_peft.tuners.export import export_uniform_lora


def mixed_rank_model(seed: int = 0):  # noqa: ANN201
    """SoRA on a tiny LLaMA with gates switched off unevenly: module ranks 1..4, scale alpha / r_max = 4."""
    base = random_llama(seed)
    model = adapt(
        copy.deepcopy(base), SoraConfig(target_modules=default_target_modules(base), r=4, lora_alpha=16)
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, layer in enumerate(model.adapter_layers().values()):
            layer.lora_B.copy_(0.05 * torch.randn(layer.lora_B.shape, generator=g))
            layer.gate.copy_(torch.randn(4, generator=g))
            layer.gate[: i % 4] = 0.0  # ranks 4, 3, 2, 1, 4, ...
    return base, model


def test_unmodified_peft_reproduces_the_adapted_model(tmp_path):
    from peft import PeftModel

    base, model = mixed_rank_model()
    assert len(set(model.ranks().values())) == 4
    r = export_uniform_lora(model, tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert r == 4 and cfg["r"] == 4 and cfg["lora_alpha"] == 4  # any reader's scale alpha / r is 1
    assert not cfg["rank_pattern"] and not cfg["alpha_pattern"] and not cfg["modules_to_save"]
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert {t.shape[0] for k, t in tensors.items() if "lora_A" in k} == {4}
    x = torch.randint(0, 64, (2, 9))
    peft_model = PeftModel.from_pretrained(base, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x).logits, model(x).logits, rtol=1e-4, atol=1e-5)


def test_padding_to_a_server_rank_and_refusals(tmp_path):
    from peft import PeftModel

    base, model = mixed_rank_model(seed=1)
    assert export_uniform_lora(model, tmp_path / "r16", rank=16) == 16
    x = torch.randint(0, 64, (1, 7))
    with torch.no_grad():
        ref = model(x).logits
        torch.testing.assert_close(
            PeftModel.from_pretrained(base, tmp_path / "r16")(x).logits, ref, rtol=1e-4, atol=1e-5
        )
    with pytest.raises(ValueError, match="rank=2 is below the largest module rank 4"):
        export_uniform_lora(model, tmp_path / "r2", rank=2)
    with_head = adapt(random_llama(), SoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]))
    with pytest.raises(ValueError, match="trains modules_to_save \\(lm_head\\).*use export_lora"):
        export_uniform_lora(with_head, tmp_path / "h")
    with torch.no_grad():
        for layer in model.adapter_layers().values():
            layer.gate.zero_()
    with pytest.raises(ValueError, match="every module has rank 0"):
        export_uniform_lora(model, tmp_path / "z")
