"""benchmarks/evidence_tables.py on hand-written result records: mean ± std over seeds, the 2-SE rule,
the learning-rate grid's choice on the selection half, AROMA's stop table, what the plan lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evidence import load_script


@pytest.fixture(scope="module")
def tables():  # noqa: ANN201
    load_script("evidence")  # evidence_tables imports the plan from it
    return load_script("evidence_tables")


def record(label: str, seed: int, value: float, **extra) -> dict:  # noqa: ANN003
    base = {
        "id": f"mrpc-{label}-s{seed}",
        "task": "mrpc",
        "model": "all-MiniLM-L6-v2",
        "label": label,
        "method": label.split("_")[0],
        "variant": "",
        "seed": seed,
        "lr": 1e-3,
        "lr_factor": 1.0,
        "main_metric": "accuracy",
        "majority": {"accuracy": 0.68, "f1": 0.81},
        "diverged": None,
        "steps": 1500,
        "planned_steps": 1500,
        "stopped_early": False,
        "selected": {"accuracy": value, "step": 700, "selection": value + 0.01},
        "final_report": {"accuracy": value - 0.01, "step": 1500},
        "adapter_params": {"start": 41472, "mean": 60000.0, "end": 0},
        "total_rank_end": 40,
        "rank_sum": 40,
        "effective_rank_sum": 38.0,
        "trajectory": [{"step": 100, "select": 0.7, "report": value, "adapter_params": 1, "total_rank": 0}],
        "time_per_step_s": 1.0,
        "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 1},
    }
    return base | extra


def test_headline_mean_std_and_baseline(tables):
    rows = tables.headline([record("aroma", s, v) for s, v in enumerate((0.80, 0.82, 0.84))]).splitlines()
    assert rows[2].startswith(
        "| mrpc | aroma | 3 | 82.0 ± 2.0 | 81.0 ± 2.0 | 68.0 | 41.5k / 60.0k / 0 | 40.0 ± 0.0 |"
    )
    assert "| 0.95 |" in rows[2]


def test_real_difference_only_beyond_two_standard_errors(tables):
    far = [record("aroma", s, v) for s, v in enumerate((0.80, 0.81, 0.82))]
    far += [record("lora_r8", s, v) for s, v in enumerate((0.70, 0.71, 0.72))]
    assert "| mrpc | aroma - lora_r8 | +10.0 | 1.6 | real |" in tables.comparisons(far)
    near = [record("aroma", s, v) for s, v in enumerate((0.70, 0.80, 0.75))]
    near += [record("lora_r8", s, v) for s, v in enumerate((0.72, 0.78, 0.76))]
    assert "within the seed spread" in tables.comparisons(near)
    single = [record("aroma", 0, 0.8), record("lora_r8", 0, 0.7)]
    assert "indicative (one seed)" in tables.comparisons(single)


def test_lr_grid_chooses_on_the_selection_half(tables):
    runs = [
        record(
            "lora_r8", 0, 0.90, lr=3.3e-4, lr_factor=1 / 3, selected={"accuracy": 0.90, "selection": 0.70}
        ),
        record("lora_r8", 0, 0.80, selected={"accuracy": 0.80, "selection": 0.85}),
        record("lora_r8", 0, 0.0, lr=3e-3, lr_factor=3.0, diverged="diverged at step 9"),
    ]
    row = tables.lr_grid(runs).splitlines()[2]
    assert row == "| mrpc | lora_r8 | 0.00033: 70.0 / 90.0; 0.001: 85.0 / 80.0 **chosen**; 0.003: diverged |"


def test_stop_table_and_pending_runs(tables, tmp_path):
    runs = [
        record("aroma", 0, 0.8, stopped_early=True, steps=1450, first_module_finished_at=1200),
        record("aroma", 0, 0.8, variant="steps3000", planned_steps=3000, stopped_early=True, steps=2900),
    ]
    text = tables.aroma_table(runs, ("", "steps3000"))
    assert (
        "| mrpc | default | 1500 | 1200 (80%) | 1450 (97%) |" in text
        and "| mrpc | steps3000 | 3000 | - | 2900 (97%) |" in text
    )
    for r in runs:
        (tmp_path / f"{r['id']}{r['variant']}.json").write_text(json.dumps(r))
    out = tmp_path / "docs"
    assert tables.main(["--results-dir", str(tmp_path), "--out-dir", str(out)]) == 0
    glue = (out / "glue.md").read_text()
    assert "1 of 122 planned runs finished." in glue and "- g1: 23 pending" in glue
    assert "2900 (97%)" in (out / "aroma.md").read_text()
    assert Path(out / "lr_grid.md").read_text().count("No grid finished yet") == 1
