"""aroma prepare-model: a GGUF written here converts to an HF folder equal to gguf's own dequantization."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_llm import write_tiny_llama_gguf

from aroma_peft.cli import main
from aroma_peft.prepare import MARKER, check_against_gguf, default_causal_lm_path, prepare_model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_llama_gguf(path)


def test_prepare_model_cli_converts_and_checks(tiny_gguf, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, hf = tiny_gguf
    out = tmp_path / "model"
    assert main(["prepare-model", "--gguf", str(path), "--output-dir", str(out)]) == 0
    assert "max |logit diff| vs GGUF model 0" in capsys.readouterr().out
    report = json.loads((out / MARKER).read_text())
    assert report["max_abs_tensor_diff_vs_gguf_dequantize"] == 0.0
    assert "dequantized" in report["name"] and "dequantized" in report["base_model_name_or_path"]
    assert not (out / "config.json").read_text().count("quantization_config")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(model, "hf_quantizer", None) is None
    state = model.state_dict()
    # q/k come back in HF order: within Q4_1's rounding (step = range/15) of the weights written, whereas
    # the GGUF's interleaved order would be off by the weights' own size.
    for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"]:
        assert (state[name] - torch.from_numpy(hf[name])).abs().max() < 0.06
    q = hf["model.layers.0.self_attn.q_proj.weight"]
    assert np.abs(q - q.reshape(4, 8, 2, -1).swapaxes(1, 2).reshape(q.shape)).max() > 0.3
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.") and p.is_dir()]  # no temp left


def test_second_prepare_reuses_and_foreign_folder_is_refused(tiny_gguf, tmp_path, capsys):
    path, _ = tiny_gguf
    out = tmp_path / "model"
    first = prepare_model(path, out)
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert prepare_model(path, out) == first
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("keep")
    code = main(["prepare-model", "--gguf", str(path), "--output-dir", str(tmp_path / "other")])
    assert code == 2 and "is not a prepared model" in capsys.readouterr().err
    assert (tmp_path / "other" / "x.txt").read_text() == "keep"
    code = main(["prepare-model", "--gguf", str(tmp_path / "none.gguf"), "--output-dir", str(tmp_path / "n")])
    assert code == 2 and "GGUF file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name",
    [
        "model.layers.0.self_attn.k_proj.weight",  # permuted in the GGUF
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.1.mlp.gate_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.norm.weight",
    ],
)
def test_tensor_check_catches_a_wrong_weight_anywhere(tiny_gguf, tmp_path, name):
    """Every tensor is compared with gguf's own dequantization, not a sample of them."""
    from transformers import AutoModelForCausalLM

    path, _ = tiny_gguf
    prepare_model(path, tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert check_against_gguf(model, path) == 0.0
    with torch.no_grad():
        model.get_parameter(name).view(-1)[0] += 0.01
    with pytest.raises(RuntimeError, match=f"{name} differs"):
        check_against_gguf(model, path)


@pytest.mark.slow
def test_default_smollm2_is_prepared_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AROMA_PEFT_CACHE", str(tmp_path))
    path = Path(default_causal_lm_path())
    report = json.loads((path / MARKER).read_text())
    assert path.parent == tmp_path and "SmolLM2-135M-Instruct" in path.name and "Q4_1" in path.name
    assert "not the released weights" in report["base_model_name_or_path"]
    assert report["max_abs_logit_diff_vs_gguf_model"] <= 1e-4
    assert report["max_abs_tensor_diff_vs_gguf_dequantize"] == 0.0
    assert default_causal_lm_path() == str(path)
