"""Golden runs: `aroma train` on a tiny BERT and a tiny SST-2 folder must log the same numbers as the
values recorded in ``tests/golden/glue_runs.json``, so a refactor of the recipes or their options
provably moves no number (every step's loss, learning rate and total rank, every evaluation, and the
resolved settings in ``config.json``).

Floats are compared bit for bit on the machine the values were recorded on (CPU model, the kernel set
torch picks on it, and torch version are stored with them); elsewhere the losses are compared to 1e-4
relative, because other kernels round differently (two hosts both named "AMD EPYC" differed in the
last bit). Record again only when a change is meant to move the numbers, or to store a field of this
key: ``AROMA_RECORD_GOLDEN=1 pytest tests/test_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny_glue import write_tiny_glue

from aroma_peft.cli import main
from aroma_peft.train.loop import machine

GOLDEN = Path(__file__).parent / "golden" / "glue_runs.json"
COMMON = ["--task", "sst2", "--max-steps", "30", "--eval-every", "15", "--batch-size", "8", "--seed", "3"]
COMMON += ["--threads", "1", "--quiet"]
# run name -> flags: the recipes whose options come from the adapter configs, with their CLI defaults
RUNS = {
    "aroma": ["--method", "aroma", "--check-interval", "5"],
    "relora": ["--method", "relora", "--restart-every", "10", "--lr", "3e-3"],
    "sora": ["--method", "sora", "--xi-schedule", "linear", "--xi-max", "5e-3", "--xi-stages", "3"],
    "lora": ["--method", "lora", "--r", "2"],
    "adalora": ["--method", "adalora"],
    "full": ["--method", "full"],
}
PATHS = ("output_dir", "model", "data_dir")  # differ per machine: not part of the golden config


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("golden")
    return root, *write_tiny_glue(root)


def kernels() -> dict[str, str]:
    """What decides the rounding: CPU model, the kernel set torch picks on it, torch version."""
    return {k: machine()[k] for k in ("cpu", "cpu_capability", "torch")}


def run_numbers(out: Path) -> dict:
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    return {
        "loss": [r["loss"] for r in log if r["type"] == "train"],
        "lr": [r["lr"] for r in log if r["type"] == "train"],
        "total_rank": [r["total_rank"] for r in log if r["type"] == "train"],
        "evals": [r["metrics"] for r in log if r["type"] == "eval"],
        "config": {k: v for k, v in sorted(config.items()) if k not in PATHS},
    }


@pytest.fixture(scope="module")
def runs(setup) -> dict[str, dict]:
    root, model_dir, glue = setup
    found = {}
    for name, flags in RUNS.items():
        out = root / name
        args = ["train", *COMMON, *flags, "--model", model_dir, "--data-dir", glue]
        assert main([str(a) for a in [*args, "--output-dir", out]]) == 0, name
        found[name] = run_numbers(out)
    if os.environ.get("AROMA_RECORD_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        where = kernels()
        GOLDEN.write_text(json.dumps({"machine": where, "runs": found}, indent=1) + "\n")
    return found


def test_golden_file_covers_every_run(runs):
    golden = json.loads(GOLDEN.read_text())
    assert set(golden["runs"]) == set(RUNS)
    assert all(len(run["loss"]) == 30 for run in golden["runs"].values())


@pytest.mark.parametrize("name", list(RUNS))
def test_run_matches_golden(runs, name):
    golden = json.loads(GOLDEN.read_text())
    expected, found = golden["runs"][name], runs[name]
    # Settings added later (with defaults that change nothing) may appear; none may change or go.
    assert {k: found["config"].get(k) for k in expected["config"]} == expected["config"]
    same_machine = golden["machine"] == kernels()
    if not same_machine:
        assert found["loss"] == pytest.approx(expected["loss"], rel=1e-4)
        return
    assert found["loss"] == expected["loss"]  # bit for bit: JSON floats round-trip exactly
    assert found["lr"] == expected["lr"]
    assert found["total_rank"] == expected["total_rank"]
    assert found["evals"] == expected["evals"]
