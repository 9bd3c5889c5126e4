"""The PEFT LoRA export as another machine sees it: task type, portable base name, PEFT's Auto classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)

from aroma_peft import AromaConfig, adapt
from aroma_peft.models import default_encoder_path
from aroma_peft.tuners.export import portable_base_name, task_type

HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def with_pieces(model, seed: int = 0):
    """Every module with one merged piece and a non-zero live piece, as mid-training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.adapter_layers().values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.05)
            layer.merge_live()
            layer.start_piece(g)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.05)
    return model


def hub_cache(root: Path, hub_id: str, folder: Path) -> Path:
    """A Hugging Face hub cache holding ``folder`` as the snapshot of ``hub_id`` (links, no copies)."""
    repo = root / f"models--{hub_id.replace('/', '--')}"
    revision = "0" * 40
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for item in folder.iterdir():
        (snapshot / item.name).symlink_to(item)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return root


def test_auto_peft_model_loads_the_export_offline(tmp_path, monkeypatch) -> None:
    import huggingface_hub
    from peft import AutoPeftModelForSequenceClassification

    folder = Path(default_encoder_path())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    model = with_pieces(
        adapt(base, AromaConfig(target_modules=TARGETS, modules_to_save=["classifier", "pooler"]))
    )
    model.eval()
    model.export_lora(tmp_path / "lora")
    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["base_model_name_or_path"] == HUB_ID

    cache = hub_cache(tmp_path / "hub", HUB_ID, folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "lora").eval()
    batch = tokenizer(["a fine film", "the plot makes no sense at all"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(base_logits(folder, batch), expected, atol=1e-3)  # the update matters


def base_logits(folder: Path, batch) -> torch.Tensor:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)(**batch).logits


def tiny_bert(name_or_path: str) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    cfg._name_or_path = name_or_path
    return BertForSequenceClassification(cfg)


@pytest.mark.parametrize(
    ("name_or_path", "expected"),
    [
        ("prajjwal1/bert-tiny", "prajjwal1/bert-tiny"),  # a hub id is kept
        ("HUB_SNAPSHOT", "org/some-model"),  # a hub cache snapshot folder: its hub id
        ("PACKAGED", HUB_ID),  # the packaged MiniLM: its hub id, never the virtualenv path
        ("USER_FOLDER", "USER_FOLDER"),  # the user's own folder is kept
        ("", None),
    ],
)
def test_portable_base_names(tmp_path, name_or_path, expected) -> None:
    snapshot = tmp_path / "models--org--some-model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    user = tmp_path / "my-model"
    user.mkdir()
    paths = {"HUB_SNAPSHOT": str(snapshot), "PACKAGED": default_encoder_path(), "USER_FOLDER": str(user)}
    expected = str(user) if expected == "USER_FOLDER" else expected
    assert portable_base_name(tiny_bert(paths.get(name_or_path, name_or_path))) == expected


def test_task_type_follows_the_model_class() -> None:
    from conftest import TinyNet
    from transformers import GPT2Config, GPT2LMHeadModel

    assert task_type(tiny_bert("x")) == "SEQ_CLS"
    gpt = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=16))
    assert task_type(gpt) == "CAUSAL_LM"
    assert task_type(tiny_bert("x").bert) == "FEATURE_EXTRACTION"
    assert task_type(TinyNet()) is None


def test_export_of_a_causal_lm_loads_through_auto_peft_model_for_causal_lm(tmp_path) -> None:
    from peft import PeftModelForCausalLM
    from transformers import LlamaConfig, LlamaForCausalLM

    def gpt() -> LlamaForCausalLM:
        torch.manual_seed(0)
        cfg = LlamaConfig(
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=20,
        )
        return LlamaForCausalLM(cfg)

    model = with_pieces(adapt(gpt(), AromaConfig(target_modules=["q_proj", "v_proj", "down_proj"])))
    model.eval()
    model.export_lora(tmp_path, base_model_name_or_path="my-org/tiny-gpt")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == "my-org/tiny-gpt"
    loaded = PeftModelForCausalLM.from_pretrained(gpt(), tmp_path).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
