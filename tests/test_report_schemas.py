"""`aroma report` on hand-written run folders of every metrics.json schema: 1 (no schema_version),
2 (versions, world_size) and a diverged run (no best / final: shown as diverged, curves from its log)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aroma_peft.cli import main
from aroma_peft.report import figures, markdown_table, write_report
from aroma_peft.train.outputs import read_run

MODULE = "bert.encoder.layer.0.attention.self.query"


def log_records(steps: int, diverged_at: int | None = None) -> list[dict]:
    records: list[dict] = []
    for step in range(1, steps + 1):
        record = {"type": "train", "step": step, "loss": 1 / step, "lr": 1e-3, "trainable_params": 90}
        record |= {"adapter_params": 60 - step, "total_rank": step, "finished_modules": 0}
        if step == 1:
            record["ranks"] = {MODULE: 1}
        records.append(record)
        if step % 3 == 0:
            records.append({"type": "eval", "step": step, "metrics": {"accuracy": 0.5 + step / 100}})
    if diverged_at is not None:
        message = f"diverged at step {diverged_at}: non-finite loss"
        records.append({"type": "diverged", "step": diverged_at, "message": message})
    return records


def write_run(path: Path, metrics: dict, log: list[dict]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.json").write_text(json.dumps({"method": metrics["method"]}))
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return path


def finished(schema: int) -> dict:
    metrics = {
        "task": "sst2",
        "method": "aroma",
        "main_metric": "accuracy",
        "best": {"accuracy": 0.56, "step": 6},
        "final": {"accuracy": 0.56, "step": 6},
        "trainable_params": {"start": 90, "mean": 87.5, "end": 84},
        "adapter_params": {"start": 59, "mean": 56.5, "end": 54},
        "steps": 6,
        "stopped_early": False,
        "total_rank_end": 6,
        "time_per_step_s": 0.25,
        "wall_time_s": 30.0,
    }
    if schema == 2:
        metrics |= {
            "schema_version": 2,
            "versions": {"torch": "2.13.0", "transformers": "5.0.0", "peft": "0.18.0", "aroma-peft": "0.1"},
            "world_size": 2,
            "planned_steps": 6,
            "train_time_s": 1.5,
            "majority_baseline": {"accuracy": 0.51},
            "machine": {"cpu": "x"},
        }
    return metrics


def diverged(step: int = 7) -> dict:
    """What ``aroma train`` writes when the loss or a gradient is not finite (schema 2)."""
    return {
        "task": "sst2",
        "method": "aroma",
        "main_metric": "accuracy",
        "diverged": f"diverged at step {step}: non-finite loss",
        "stopped_early": False,
        "steps": step - 1,
        "evals": [{"step": 6, "metrics": {"accuracy": 0.56}}],
        "schema_version": 2,
        "world_size": 1,
    }


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [
        write_run(tmp_path / "old", finished(1), log_records(6)),
        write_run(tmp_path / "new", finished(2), log_records(6)),
        write_run(tmp_path / "broke", diverged(7), log_records(6, diverged_at=7)),
    ]


def test_table_reads_every_schema_and_shows_the_diverged_step(runs):
    table = markdown_table([read_run(r) | {"label": r.name} for r in runs]).splitlines()
    finished_row = "accuracy 56.0 | 56.0 | 59 | 56 | 54 | 6 | 0.25 s | 30 s | 6 |"
    assert table[2] == f"| sst2 | old | aroma | {finished_row}"
    assert table[3] == f"| sst2 | new | aroma | {finished_row}"
    assert (
        table[4]
        == "| sst2 | broke | aroma | accuracy diverged at step 7 | - | - | - | - | - | - | - | 6 (diverged) |"
    )


def test_report_writes_figures_with_the_diverged_run_from_its_log(runs, tmp_path, monkeypatch):
    figs = []
    save = figures.save
    monkeypatch.setattr(figures, "save", lambda fig, path: figs.append(fig) or save(fig, path))
    written = write_report([str(r) for r in runs], tmp_path / "report")
    assert [p.name for p in written] == ["fig1_training.png", "table.md"]
    assert "diverged at step 7" in (tmp_path / "report" / "table.md").read_text()
    params, _, _, metric = figs[0].axes[:4]
    lines = {line.get_label(): line for line in params.get_lines()}
    assert list(lines["broke (diverged at step 7)"].get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert 7 in [line.get_xdata()[0] for line in params.get_lines() if line.get_linestyle() == ":"]
    evals = {line.get_label(): list(line.get_xdata()) for line in metric.get_lines()}
    assert evals["broke (diverged at step 7)"] == [3, 6]


def test_cli_report_exit_0_on_a_diverged_run(runs, tmp_path, capsys):
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table.md").is_file()


def test_a_diverged_run_without_its_keys_is_still_one_line(tmp_path, capsys):
    metrics = diverged()
    del metrics["steps"]
    run = write_run(tmp_path / "broke", metrics, log_records(3))
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks steps" in err
