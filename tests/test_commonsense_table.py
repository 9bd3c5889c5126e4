"""benchmarks/commonsense_table.py on a tiny LLaMA and tiny sets: train, both evaluation modes, resume."""

from __future__ import annotations

import json

import pytest
from test_commonsense_train import data  # noqa: F401
from test_evidence import load_script
from tiny_llm import tiny_llm_dir  # noqa: F401


@pytest.fixture
def table(monkeypatch):  # noqa: ANN201
    """The plan at a tiny budget: 2 steps, 3 test items per set, one curve run on BoolQ."""
    module = load_script("commonsense_table")
    tiny = {
        "max_train_samples": None,
        "max_steps": 2,
        "eval_every": 1,
        "max_eval_samples": 2,
        "batch_size": 4,
    }
    monkeypatch.setattr(module, "BUDGET", module.BUDGET | tiny | {"eval_sets": ["BoolQ"]})
    monkeypatch.setattr(module, "EVAL_LIMIT", 3)
    monkeypatch.setattr(module, "CURVE_SET", "BoolQ")
    monkeypatch.setattr(module, "CURVE_BUDGET", module.BUDGET | tiny | {"eval_sets": ["BoolQ"]})
    monkeypatch.setattr(module, "CURVES", {"lora_r8": (5e-4,)})
    return module


def test_table_runs_train_evaluate_both_modes_and_resume_per_set(
    table,
    tiny_llm_dir,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["--only", "cs-base,cs-lora_r8", "--model", str(tiny_llm_dir), "--data-dir", str(data)]
    args += ["--runs-dir", str(runs), "--results-dir", str(results)]
    assert table.main(args) == 0
    row = json.loads((results / "cs-lora_r8.json").read_text())
    assert set(row["evaluation"]) == {"loglik", "generate"}
    for mode in ("loglik", "generate"):
        sets = row["evaluation"][mode]["sets"]
        assert set(sets) == {"BoolQ", "OBQA"} and all(s["n"] == 3 for s in sets.values())
        assert all(isinstance(s["above_majority"], bool) for s in sets.values())
    assert row["steps"] == 2 and row["trainable_params"]["start"] > 0
    assert [e["step"] for e in row["held_out"]] == [1, 2]  # the learning curve
    base = json.loads((results / "cs-base.json").read_text())
    assert base["trainable_params"]["end"] == 0 and "steps" not in base

    # An interrupted evaluation: one (mode, set) pair missing. Only that pair is scored again; no training.
    (results / "cs-lora_r8.json").unlink()
    (runs / "cs-lora_r8" / "evals" / "generate" / "OBQA.json").unlink()
    trained = (runs / "cs-lora_r8" / "metrics.json").stat().st_mtime_ns
    from aroma_peft.tasks.commonsense import CommonsenseTask

    calls = []
    evaluate = CommonsenseTask.evaluate
    monkeypatch.setattr(
        CommonsenseTask,
        "evaluate",
        lambda self, m, t, sets, **o: calls.append((o["mode"], *sets)) or evaluate(self, m, t, sets, **o),
    )
    assert table.main(args) == 0
    assert calls == [("generate", "OBQA")]
    assert (runs / "cs-lora_r8" / "metrics.json").stat().st_mtime_ns == trained
    again = json.loads((results / "cs-lora_r8.json").read_text())["evaluation"]
    assert again["loglik"] == row["evaluation"]["loglik"]  # read back from the files, not recomputed
    obqa = row["evaluation"]["generate"]["sets"]["OBQA"]
    assert again["generate"]["sets"]["OBQA"]["predictions"] == obqa["predictions"]


def test_above_majority_is_two_standard_errors(table):
    # majority 50% of 100 items: SE 5 points, so above means more than 60
    assert not table.above_majority(60.0, 50.0, 100)
    assert table.above_majority(60.5, 50.0, 100)


def test_plan_has_one_budget_and_both_groups():
    table = load_script("commonsense_table")
    runs = table.plan()
    assert [r.id for r in runs if r.group == "table"] == [f"cs-{m}" for m in table.TABLE]
    assert {r.label for r in runs if r.group == "curves"} == {"lora_r8", "aroma_r1", "full"}
    assert len({r.id for r in runs}) == len(runs)


def test_tables_and_curves_from_the_results(
    table,
    tiny_llm_dir,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["--model", str(tiny_llm_dir), "--data-dir", str(data), "--runs-dir", str(runs)]
    assert table.main([*args, "--results-dir", str(results), "--only", "cs-base,cs-lora_r8,curves"]) == 0
    curve = json.loads((results / "cs-boolq-lora_r8-lr0.0005.json").read_text())
    assert set(curve["evaluation"]) == {"loglik"} and set(curve["evaluation"]["loglik"]["sets"]) == {"BoolQ"}
    assert set(curve["held_out_majority"]) == {"BoolQ"}

    tables = load_script("commonsense_tables")
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tables.START}\nold table\n{tables.END}\nrest\n")
    docs = tmp_path / "docs"
    assert tables.main(["--results-dir", str(results), "--docs-dir", str(docs), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old table" not in text and "SmolLM2 untrained" in text and text.endswith("rest\n")
    assert "| majority class |" in text and "**generate**" in text
    doc = (docs / "commonsense.md").read_text()
    last_loss = sum(e["loss"] for e in curve["loss"]) / len(curve["loss"])  # 2 steps: one window
    assert f"LoRA r=8 | 0.0005 | 2 | {last_loss:.3f} |" in doc and "commonsense-curves.png" in doc
    assert (docs / "commonsense-curves.png").stat().st_size > 1000
    assert "commonsense-table-curves.png" in doc  # the table's trained rows have held-out curves too
    assert (docs / "commonsense-table-curves.png").stat().st_size > 1000


def test_every_planned_run_has_valid_settings(tmp_path):
    """A misspelt option fails here, not hours into the plan."""
    from aroma_peft.train import run_settings

    table = load_script("commonsense_table")
    for run in table.plan():
        if run.method is None:
            continue
        values = run.values(tmp_path / run.id, tmp_path, threads=1, model=None)
        config, _ = run_settings(values)
        assert config.max_seq_len == 256 and config.batch_size == 8 and config.lr == run.learning_rate


def test_sora_row_shows_the_pruned_lora_it_ships():
    tables = load_script("commonsense_tables")
    sets = {"BoolQ": {"accuracy": 60.0, "above_majority": False, "majority_class": 62.0}}
    row = {
        "label": "sora",
        "evaluation": {"loglik": {"sets": sets, "average": 60.0, "seconds": 60.0}},
        "trainable_params": {"start": 1_660_080, "mean": 1_660_080, "end": 1_660_080},
        "train_time_s": 3600.0,
    }
    assert "1.66M / 1.66M / 1.66M |" in tables.accuracy_table([row], "loglik")
    pruned = tables.accuracy_table([row | {"adapter_params_pruned": 958_848}], "loglik")
    assert "1.66M / 1.66M / 958.8k (pruned) |" in pruned
