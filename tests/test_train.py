"""Training pieces without a pretrained model: config parsing, batching, targets, output folders."""

from __future__ import annotations

import pytest
import torch

from aroma_peft.data import Example, batches
from aroma_peft.errors import UserInputError
from aroma_peft.tasks.base import block_linears
from aroma_peft.tasks.glue import classifier_heads
from aroma_peft.train import RECIPES, outputs
from aroma_peft.train.aroma import AromaOptions
from aroma_peft.train.config import (
    TrainConfig,
    coerce,
    read_config_file,
    resolved,
    resume_values,
    split_options,
)
from aroma_peft.train.loop import linear_schedule


@pytest.mark.parametrize(
    ("value", "hint", "expected"),
    [
        ("1e-3", float, 1e-3),
        ("5", int, 5),
        ("1e3", int, 1000),
        (8.0, int, 8),
        ("none", int | None, None),
        ("q, k,v", list[str] | None, ["q", "k", "v"]),
        ("false", bool, False),
        ("x", str, "x"),
    ],
)
def test_coerce(value, hint, expected):
    assert coerce("key", value, hint) == expected


@pytest.mark.parametrize(("value", "hint"), [("fast", float), (2.5, int), ("maybe", bool)])
def test_coerce_rejects(value, hint):
    with pytest.raises(UserInputError, match=f"key={value!r}: expected"):
        coerce("key", value, hint)


def test_split_options_reports_every_problem_at_once():
    values = {"task": "rte", "method": "lora", "output_dir": "x", "t_in": 3, "batch_size": 0, "lr": "-1"}
    others = {name: r.Options for name, r in RECIPES.items()}
    with pytest.raises(UserInputError) as err:
        split_options(values, RECIPES["lora"].Options, "lora", others)
    message = str(err.value)
    assert "option 't_in' does not apply to method 'lora' (an option of aroma)" in message
    assert "batch_size=0: use an integer >= 1" in message and "lr=-1.0: use a positive" in message


def test_resolved_config_round_trips():
    config, options = split_options(
        {"task": "rte", "method": "aroma", "output_dir": "x", "t_in": "30"}, AromaOptions, "aroma", {}
    )
    flat = resolved(config, options)
    assert flat["t_in"] == 30 and flat["task"] == "rte" and flat["eps_in"] == 0.1
    again, options2 = split_options(flat, AromaOptions, "aroma", {})
    assert again == config and options2 == options


def test_read_config_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"max-steps": 3, "lr": 0.001}')
    assert read_config_file(path) == {"max_steps": 3, "lr": 0.001}
    path.write_text('{"lr": }')
    with pytest.raises(UserInputError, match=r"c.json:1: not valid JSON"):
        read_config_file(path)
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(UserInputError, match="expected a mapping of option: value, found a list"):
        read_config_file(path)


def test_subset_is_fixed_and_collate_pads():
    examples = [Example(str(i), None, i % 2) for i in range(100)]
    assert batches.subset(examples, 10) == batches.subset(examples, 10)
    assert batches.subset(examples, 10) != examples[:10] and batches.subset(examples, None) is examples
    batch = batches.collate(
        [
            {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": 1},
            {"input_ids": [5], "attention_mask": [1], "labels": 0},
        ],
        pad_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]] and batch["labels"].dtype == torch.long
    assert batches.collate([{"input_ids": [1], "labels": 0.5}], 0)["labels"].dtype == torch.float


@pytest.mark.parametrize("group", [True, False])
def test_train_order_is_one_epoch(group):
    lengths = [i % 17 for i in range(1000)]
    order = batches.train_order(lengths, 8, torch.Generator().manual_seed(0), group)
    assert sorted(i for b in order for i in b) == list(range(1000))
    if group:  # grouped batches hold similar lengths
        spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in order) / len(order)
        assert spread < 2


def test_targets_are_block_linears_and_heads_pooler_and_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12
    )
    model = BertForSequenceClassification(config)
    targets = block_linears(model)
    assert len(targets) == 12 and "bert.encoder.layer.1.attention.output.dense" in targets
    assert not any("pooler" in t or "classifier" in t for t in targets)
    assert classifier_heads(model) == ["pooler", "classifier"]


def test_linear_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, warmup=2, total=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_prepare_output_folder(tmp_path):
    assert outputs.prepare(tmp_path / "new", overwrite=False) == tmp_path / "new"
    assert not (tmp_path / "new").exists()  # created when the run starts writing, not before
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "log.jsonl").write_text("")
    with pytest.raises(UserInputError, match="already holds a run"):
        outputs.prepare(tmp_path / "run", overwrite=False)
    assert outputs.prepare(tmp_path / "run", overwrite=True) == tmp_path / "run"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="exists and is not a folder"):
        outputs.prepare(tmp_path / "file", overwrite=True)


def test_every_recipe_has_documented_options():
    assert {"aroma", "lora", "adalora", "relora", "full"} <= set(RECIPES)
    import dataclasses

    for name, recipe in RECIPES.items():
        for f in dataclasses.fields(recipe.Options):
            assert f.metadata.get("help"), f"{name}.{f.name} has no help text"


def test_train_config_defaults_are_valid():
    assert TrainConfig(task="rte", method="lora", output_dir="x").check() == []


def test_resume_accepts_the_saved_value_in_another_spelling(tmp_path):
    """A run's config.json holds lr 5e-05; resuming it with the same lr is no change (PyYAML would read
    that JSON number as the string '5e-05')."""
    path = tmp_path / "config.json"
    path.write_text('{"lr": 5e-05, "max_steps": 10, "threads": 2}')
    saved = read_config_file(path)
    assert saved["lr"] == 5e-05
    assert resume_values(saved, {"lr": 5e-05, "max_steps": "10", "threads": 1}, AromaOptions)["threads"] == 1
    with pytest.raises(UserInputError, match=r"lr=0.0001 \(the run has 5e-05\)"):
        resume_values(saved, {"lr": 1e-4}, AromaOptions)
