"""Early stopping (``--early-stopping-patience``): when it stops, what it stops on, and that AROMA then
ends every module (zero trainable parameters) with the evaluated model being the saved one."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from test_resume import args_for, build_tiny, killed_run, log_records

from aroma_peft.cli import main
from aroma_peft.train.results import early_stop_reason


def evals(scores: list[float], select: list[float] | None = None) -> list[dict]:
    records = [{"step": 10 * (i + 1), "metrics": {"accuracy": s}} for i, s in enumerate(scores)]
    for record, s in zip(records, select or []):
        record["select"] = {"accuracy": s}
    return records


def test_stops_once_patience_evaluations_fail_to_beat_the_best():
    history = evals([0.5, 0.7, 0.6, 0.65])
    reason = early_stop_reason(history, "accuracy", 2, 0.0)
    assert reason is not None and "0.7000 (step 20)" in reason and "2 evaluations" in reason
    assert early_stop_reason(history[:3], "accuracy", 2, 0.0) is None  # 0.7 beat what came before
    assert early_stop_reason(history, "accuracy", 3, 0.0) is None
    assert early_stop_reason(history, "accuracy", None, 0.0) is None  # off by default
    assert early_stop_reason(history[:2], "accuracy", 2, 0.0) is None  # too few evaluations yet


def test_threshold_is_the_improvement_that_counts():
    history = evals([0.5, 0.7, 0.705, 0.71])
    assert early_stop_reason(history, "accuracy", 2, 0.0) is None
    assert early_stop_reason(history, "accuracy", 2, 0.02) is not None


def test_decides_on_the_selection_half_not_the_reported_metric():
    history = evals([0.5, 0.6, 0.7], select=[0.8, 0.7, 0.7])
    reason = early_stop_reason(history, "accuracy", 2, 0.0)
    assert reason is not None and "selection half" in reason
    assert early_stop_reason(evals([0.8, 0.7, 0.7]), "accuracy", 2, 0.0) is not None
    assert early_stop_reason(evals([0.5, 0.6, 0.7]), "accuracy", 2, 0.0) is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny"))


# An lr so small that the metric cannot move: every evaluation ties the first.
STALLED = ["--lr", "1e-9", "--early-stopping-patience", "1"]
LONG_PIECES = ["--t-in", "100", "--check-interval", "100"]  # AROMA's own stop cannot come first


def read(run):
    return json.loads((run / "metrics.json").read_text())


def test_aroma_stops_early_and_finishes_every_module(tiny, tmp_path):
    out = tmp_path / "aroma"
    assert main(args_for(tiny, "aroma", out, *STALLED, *LONG_PIECES)) == 0
    metrics = read(out)
    assert metrics["steps"] == 10 < metrics["planned_steps"] == 18  # evaluations at 5 and 10
    assert metrics["stopped_early"] and metrics["stop_reason"].startswith("early stopping: accuracy")
    assert metrics["adapter_params"]["end"] == 0  # every module finished: nothing left to train
    records = log_records(out)
    stops = [r for r in records if r["type"] == "stop"]
    assert [s["step"] for s in stops] == [10]
    # AROMA's final decisions can discard a piece: the model is evaluated again after them
    assert [r["step"] for r in records if r["type"] == "eval"] == [5, 10, 10]
    finishes = [e for r in records for e in r.get("events", []) if e["event"] == "finish"]
    assert len(finishes) == 12  # 2 layers x 6 Linears


def test_lora_stops_without_a_second_evaluation(tiny, tmp_path):
    out = tmp_path / "lora"
    assert main(args_for(tiny, "lora", out, *STALLED)) == 0
    metrics = read(out)
    assert metrics["steps"] == 10 and metrics["stopped_early"]
    assert [r["step"] for r in log_records(out) if r["type"] == "eval"] == [5, 10]


def test_without_patience_the_run_trains_its_planned_steps(tiny, tmp_path):
    out = tmp_path / "plain"
    assert main(args_for(tiny, "lora", out, "--lr", "1e-9")) == 0
    metrics = read(out)
    assert metrics["steps"] == 18 and not metrics["stopped_early"] and metrics["stop_reason"] is None


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tiny, tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert main(args_for(tiny, "aroma", reference, *STALLED, *LONG_PIECES)) == 0
    # killed after the first evaluation, before the one that stops the run
    killed_run(args_for(tiny, "aroma", resumed, *STALLED, *LONG_PIECES), "step:7")
    assert main(["train", "--output-dir", str(resumed), "--resume", "--threads", "1"]) == 0
    assert log_records(resumed) == log_records(reference)
    weights = "adapter/adapter_model.safetensors"
    before, after = (load_file(r / weights) for r in (reference, resumed))
    assert all(before[k].equal(after[k]) for k in before)
