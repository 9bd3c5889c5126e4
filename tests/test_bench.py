"""``aroma bench`` on a tiny BERT: every method takes real optimizer steps; JSON and Markdown content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from aroma_peft.bench import METHODS
from aroma_peft.cli import main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A two-block BERT with dropout 0.1 and a word-piece tokenizer, saved as a model folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def bench(tiny_model: Path, out: Path, *extra: str) -> int:
    return main(
        ["bench", "--model", str(tiny_model), "--batch-size", "4", "--seq-len", "8", "--rounds", "2",
         "--steps", "2", "--warmup", "1", "--threads", "1", "--output-dir", str(out), *extra]
    )  # fmt: skip


def test_every_method_steps_its_optimizer_and_the_json_says_so(tiny_model, tmp_path) -> None:
    assert bench(tiny_model, tmp_path) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    methods = result["methods"]
    assert sorted(methods) == sorted(METHODS)
    for name, v in methods.items():
        assert v["timed_steps"] == 4 and len(v["step_times_s"]) == 4 and v["median_s"] > 0
        assert v["p90_s"] >= v["median_s"]
        # warmup + rounds x steps optimizer steps, for every method but the forward-only floor
        assert v["optimizer_steps"] == (0 if name == "forward" else 5), name
    assert methods["frozen"]["vs_frozen"] == methods["forward"]["vs_forward"] == 1.0
    params = {n: v["trainable_params_start"] for n, v in methods.items()}
    head = 16 * 16 + 16 + 16 * 2 + 2  # pooler + classifier
    assert params["forward"] == 0 and params["frozen"] == head
    assert params["full"] == sum(
        p.numel() for p in BertForSequenceClassification.from_pretrained(tiny_model).parameters()
    )
    assert head < params["aroma"] < params["lora"] < params["full"]  # r = 1 pieces vs LoRA r = 8
    assert head < params["aroma_late"] == head + (params["aroma"] - head) // 2  # block 0 of 2 finished
    assert (
        methods["aroma"]["controller_median_ms"] is not None
        and methods["forward"]["controller_median_ms"] is None
    )
    assert result["machine"]["torch_threads"] == 1 and result["machine"]["cpu"]
    assert result["command"].startswith("aroma bench --model")
    table = (tmp_path / "bench.md").read_text()
    assert "| aroma |" in table and "vs frozen" in table and result["machine"]["cpu"] in table
    assert result["allocator"] in table  # whether freed memory was kept (allocator.py) is on record


@pytest.mark.slow  # a fresh Python importing torch and transformers: ~15 s on a busy 2-core machine
def test_peak_memory_from_one_subprocess_per_method(tiny_model, tmp_path) -> None:
    assert bench(tiny_model, tmp_path, "--methods", "full", "--memory") == 0
    methods = json.loads((tmp_path / "bench.json").read_text())["methods"]
    assert 50 < methods["full"]["peak_memory_mb"] < 10_000  # torch alone takes tens of MB
    assert "peak memory (MB)" in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--methods", "aroma,nope"], "--methods: unknown 'nope'"),
        (["--rounds", "0"], "--rounds=0"),
        (["--task", "nope"], "nope"),
        (["--quantize", "int3"], "--quantize=int3: use int8"),
        (["--quantize", "int8", "--methods", "aroma,full"], "--methods: 'full' cannot train on a quantized"),
    ],
)
def test_bad_input_is_one_line(tiny_model, tmp_path, capsys, args, match) -> None:
    assert bench(tiny_model, tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("aroma bench: error:") and match in err and "\n" not in err


def test_bf16_autocast_bench_steps_aroma_and_lora(tiny_model, tmp_path) -> None:
    assert bench(tiny_model, tmp_path, "--methods", "aroma,lora,frozen", "--bf16") == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["config"]["bf16"] and "bf16 autocast" in (tmp_path / "bench.md").read_text()
    assert all(v["optimizer_steps"] == 5 for v in result["methods"].values())


def test_int8_quantized_base_bench_steps_aroma_lora_and_the_floors(tiny_model, tmp_path) -> None:
    pytest.importorskip("torchao")
    assert (
        bench(tiny_model, tmp_path, "--methods", "aroma,sora,lora,frozen,forward", "--quantize", "int8") == 0
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    assert "int8 weight-only base" in (tmp_path / "bench.md").read_text()
    assert all(v["optimizer_steps"] == 5 for n, v in result["methods"].items() if n != "forward")
    from aroma_peft.bench import BenchConfig, build

    runner = build("aroma", BenchConfig(model=str(tiny_model), quantize="int8", output_dir=str(tmp_path)))
    layers = runner.model.adapter_layers().values()
    assert len(layers) == 12 and all(layer.quantized for layer in layers)  # 6 Linears per block
