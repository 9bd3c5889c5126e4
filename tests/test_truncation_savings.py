"""benchmarks/truncation_savings.py: the truncated blocks per step from a run's finish events, and the
whole-run saving from per-k step costs (measured on a tiny BERT, or read back)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_bench import tiny_model  # noqa: F401 (the fixture)
from test_evidence import load_script

from aroma_peft.bench import BenchConfig

MODULES = [f"bert.encoder.layer.{b}.{m}" for b in (0, 1) for m in ("query", "output.dense")]


def write_run(folder: Path, model: Path | None = None) -> Path:
    """An 8-step run: block 0 finishes after steps 3 and 5, block 1 only half (step 4)."""
    finishes = {3: MODULES[0], 5: MODULES[1], 4: MODULES[2]}
    lines = []
    for step in range(1, 9):
        events = [{"step": step, "module": finishes[step], "event": "finish"}] if step in finishes else []
        events += [{"step": step, "module": MODULES[3], "event": "merge"}] if step == 2 else []
        lines.append({"type": "train", "step": step, "ranks": dict.fromkeys(MODULES, 1), "events": events})
    lines.append({"type": "eval", "step": 8, "metrics": {}})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    config = {"task": "sst2", "model": str(model) if model else None, "batch_size": 2, "max_seq_len": 8}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_truncated_blocks_follow_the_lowest_fully_finished_blocks(tmp_path) -> None:
    script = load_script("truncation_savings")
    ks, blocks = script.truncated_blocks(write_run(tmp_path / "run") / "log.jsonl")
    # block 0 is done after step 5, so steps 6-8 truncate it; block 1 never finishes entirely
    assert blocks == 2 and ks == [0, 0, 0, 0, 0, 1, 1, 1]


def test_whole_run_saving_from_given_costs(tmp_path, capsys, monkeypatch) -> None:
    script = load_script("truncation_savings")
    run = write_run(tmp_path / "run")
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"0": {"full": 1.0, "truncated": 1.0}, "1": {"full": 1.0, "truncated": 0.6}}))
    monkeypatch.setattr(sys, "argv", ["truncation_savings.py", str(run), "--costs", str(costs)])
    script.main()
    out = capsys.readouterr().out
    assert "| 1 | 3 | 1.000 | 0.600 | 0.400 |" in out
    assert "Saved by truncation: 1.2 s of 8.0 s estimated without it (15.00%" in out


def test_costs_are_measured_with_and_without_truncation(tiny_model, tmp_path) -> None:  # noqa: F811
    script = load_script("truncation_savings")
    config = BenchConfig(
        model=str(tiny_model), methods=["aroma"], batch_size=2, seq_len=8, output_dir=str(tmp_path),
        warmup=1, rounds=1, steps=4,
    )  # fmt: skip
    costs = script.measure(config, [0, 1], steps=2)
    assert costs[0]["full"] == costs[0]["truncated"] > 0  # nothing finished: one mode
    assert costs[1]["full"] > 0 and costs[1]["truncated"] > 0
