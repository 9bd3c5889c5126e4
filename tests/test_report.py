"""`aroma report` pieces on synthetic run folders (no model needed): table, labels, figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aroma_peft.errors import UserInputError
from aroma_peft.report import labels, markdown_table, write_report
from aroma_peft.report.figures import grid, module_ranks
from aroma_peft.train.outputs import read_run

MODULES = [
    f"bert.encoder.layer.{i}.{kind}" for i in (0, 1, 10) for kind in ("attention.self.query", "output.dense")
]


def fake_run(path: Path, method: str, ranks: bool = True) -> Path:
    path.mkdir(parents=True)
    log = []
    for step in range(1, 11):
        record = {
            "type": "train",
            "step": step,
            "loss": 1 / step,
            "lr": 1e-3,
            "trainable_params": 100,
            "adapter_params": 50,
            "total_rank": step if ranks else None,
            "finished_modules": 0,
        }
        if ranks and step in (1, 6):
            record["ranks"] = {m: step for m in MODULES}
        log.append(record)
        if step % 5 == 0:
            log.append({"type": "eval", "step": step, "metrics": {"accuracy": 0.5 + step / 100, "f1": 0.6}})
    (path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    metrics = {
        "task": "mrpc",
        "method": method,
        "main_metric": "accuracy",
        "best": {"accuracy": 0.6, "f1": 0.6, "step": 10},
        "final": {"accuracy": 0.6, "f1": 0.6, "step": 10},
        "adapter_params": {"start": 41472, "mean": 2e6, "end": 0},
        "trainable_params": {"start": 1, "mean": 1, "end": 1},
        "steps": 10,
        "stopped_early": True,
        "total_rank_end": 12 if ranks else None,
        "time_per_step_s": 0.5,
        "wall_time_s": 300.0,
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "config.json").write_text(json.dumps({"method": method}))
    stats = {m: {"rank": 2, "numerical_rank": 2, "effective_rank": 1.5} for m in MODULES}
    (path / "ranks.json").write_text(json.dumps(stats))
    return path


def test_table_row(tmp_path):
    run = read_run(fake_run(tmp_path / "a", "aroma"))
    table = markdown_table([run])
    row = table.splitlines()[2]
    cells = (
        "mrpc | a | aroma | accuracy 60.0 (f1 60.0) | 60.0 (f1 60.0) | 41.5k | 2.00M | 0 | 12 | 0.50 s"
        " | 5.0 min"
    )
    assert row == f"| {cells} | 10 (stopped) |"
    assert table.splitlines()[1].count("---") == table.splitlines()[0].count("|") - 1


def test_labels_tell_runs_apart():
    assert labels([Path("x/rte/aroma"), Path("x/mrpc/aroma")]) == ["rte/aroma", "mrpc/aroma"]
    assert labels([Path("x/a"), Path("x/b")]) == ["a", "b"]


def test_ranks_fill_forward_and_grid_orders_layers_numerically(tmp_path):
    run = read_run(fake_run(tmp_path / "a", "aroma"))
    steps, values = module_ranks(run, MODULES[0])
    assert steps == list(range(1, 11)) and values == [1] * 5 + [6] * 5
    layers, kinds, values = grid(run["ranks"], "effective_rank")
    assert layers == ["0", "1", "10"] and kinds == ["query", "output.dense"] and values[0] == [1.5, 1.5]


def test_write_report(tmp_path):
    runs = [
        fake_run(tmp_path / "rte" / "aroma", "aroma"),
        fake_run(tmp_path / "mrpc" / "aroma", "aroma"),
        fake_run(tmp_path / "mrpc" / "full", "full", ranks=False),
    ]
    written = write_report([str(r) for r in runs], tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == [
        "fig1_training.png",
        "fig3_mrpc_aroma.png",
        "fig3_mrpc_full.png",
        "fig3_rte_aroma.png",
        "table.md",
    ]
    assert all(p.stat().st_size > (10_000 if p.suffix == ".png" else 300) for p in written)


def test_unfinished_or_damaged_runs_are_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserInputError, match="not a finished run"):
        read_run(tmp_path / "run")
    (tmp_path / "run" / "metrics.json").write_text("{")
    with pytest.raises(UserInputError, match="damaged run file"):
        read_run(tmp_path / "run")
