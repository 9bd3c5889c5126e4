"""`aroma train` on several processes (torch.distributed, gloo on CPU): --batch-size is the global
batch, so a 2-process run equals the 1-process run.

Tolerance: the processes compute the same global batch in two halves and DDP averages the two
half-batch gradients, where one process averages over the whole batch: the same numbers summed in
another order, float32 rounding (~1e-7 relative) that Adam carries through the run. Decisions
(merge / finish steps, ranks) and metrics must be identical; losses and weights agree to 1e-5.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port
from safetensors.torch import load_file
from test_resume import METHODS, TIMING, build_tiny, log_records

from aroma_peft.cli import main

ARGS = ["train", "--task", "sst2", "--batch-size", "8", "--epochs", "3", "--eval-every", "5"]
ARGS += ["--quiet", "--threads", "1", *METHODS["aroma"]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return build_tiny(tmp_path_factory.mktemp("tiny"), dropout=0.0)  # dropout masks differ per process


def _rank(argv: list[str], rank: int, world: int, port: int, kill_at: str = "") -> None:
    # What torchrun puts in each process's environment.
    os.environ.update(AROMA_TEST_KILL_AT=kill_at)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    os._exit(main(argv))


def two_processes(argv: list[str], kill_at: str = "") -> list[int | None]:
    """Exit codes of the two processes (``kill_at``: both SIGKILL themselves there)."""
    context, port = multiprocessing.get_context("fork"), free_port()
    procs = [context.Process(target=_rank, args=(argv, rank, 2, port, kill_at)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    return [p.exitcode for p in procs]


def exact(record: dict) -> dict:
    """A log record without the floats that summation order changes."""
    events = [{k: v for k, v in e.items() if k != "ratio"} for e in record.get("events", [])]
    return {k: v for k, v in record.items() if k != "loss"} | {"events": events}


def assert_same_log(one: Path, two: Path) -> None:
    """The 1-process and 2-process runs' log.jsonl: identical up to the losses' summation order."""
    a, b = log_records(one), log_records(two)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and x["type"] == y["type"] and x["step"] == y["step"]
        if x["type"] in ("train", "stop"):  # a stop record carries the final decisions' events
            if "loss" in x:
                assert x["loss"] == pytest.approx(y["loss"], rel=1e-5)
            for ex, ey in zip(x.get("events", []), y.get("events", [])):
                assert ex["ratio"] == pytest.approx(ey["ratio"], rel=1e-5)  # a float the decision compares
            assert exact(x) == exact(y)  # lr, parameters, ranks, every merge / finish and its step
        else:
            assert x == y  # the metrics


def assert_same_run(one: Path, two: Path) -> None:
    assert_same_log(one, two)
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    assert (ma["world_size"], mb["world_size"]) == (1, 2)
    skip = TIMING | {"world_size"}
    assert {k: v for k, v in ma.items() if k not in skip} == {k: v for k, v in mb.items() if k not in skip}
    wa, wb = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (one, two))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5, rtol=0) for k in wa)


def test_two_processes_equal_one(tiny, tmp_path):
    paths = ["--model", str(tiny["model"]), "--data-dir", str(tiny["data"])]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, *paths, "--output-dir", str(one)]) == 0
    assert two_processes([*ARGS, *paths, "--output-dir", str(two)]) == [0, 0]
    assert_same_run(one, two)
    events = [e for r in log_records(one) for e in r.get("events", [])]
    assert {e["event"] for e in events} == {"merge", "finish"}  # modules finish mid-run (DDP copes)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # rank 0 only


def test_early_stopping_stops_every_process_at_the_same_evaluation(tiny, tmp_path):
    paths = ["--model", str(tiny["model"]), "--data-dir", str(tiny["data"])]
    stalled = ["--lr", "1e-9", "--early-stopping-patience", "1", "--t-in", "100", "--check-interval", "100"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, *paths, *stalled, "--output-dir", str(one)]) == 0
    assert two_processes([*ARGS, *paths, *stalled, "--output-dir", str(two)]) == [0, 0]
    assert_same_run(one, two)  # the same stop step and final decisions on both processes
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["stop_reason"].startswith("early stopping") and metrics["adapter_params"]["end"] == 0


def test_global_batch_must_split_evenly(tiny, tmp_path):
    paths = ["--model", str(tiny["model"]), "--data-dir", str(tiny["data"])]
    argv = [*ARGS, *paths, "--output-dir", str(tmp_path / "run"), "--batch-size", "7"]
    assert two_processes(argv) == [2, 2]  # a one-line error on every process, no hang
    assert not (tmp_path / "run").exists()


def test_two_process_run_killed_and_resumed(tiny, tmp_path):
    """Every process draws the same dropout masks from the same seed, so rank 0's generators restore
    every process (dropout on here)."""
    dropout = build_tiny(tmp_path / "tiny", dropout=0.1)
    paths = ["--model", str(dropout["model"]), "--data-dir", str(dropout["data"]), "--save-every", "4"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert two_processes([*ARGS, *paths, "--output-dir", str(reference)]) == [0, 0]
    assert two_processes([*ARGS, *paths, "--output-dir", str(resumed)], kill_at="step:10") == [-9, -9]
    assert two_processes(["train", "--output-dir", str(resumed), "--resume"]) == [0, 0]
    assert log_records(resumed) == log_records(reference)
    wa, wb = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (reference, resumed))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0) for k in wa)


@pytest.mark.slow  # two launchers, four Python processes importing transformers: ~1 min on 2 cores
@pytest.mark.parametrize(
    "launcher",
    [
        ["torchrun", "--nproc-per-node", "2", "--no-python", "aroma"],
        ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
        + ["--mixed_precision", "no", "--dynamo_backend", "no", "--no_python", "aroma"],
    ],
    ids=["torchrun", "accelerate"],
)
def test_launchers(tiny, tmp_path, launcher):
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / launcher[0]).exists() or shutil.which("aroma", path=str(bin_dir)) is None:
        pytest.skip(f"{launcher[0]} or aroma not installed beside {sys.executable}")
    paths = ["--model", str(tiny["model"]), "--data-dir", str(tiny["data"])]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*ARGS, *paths, "--output-dir", str(one)]) == 0
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [str(bin_dir / launcher[0]), *launcher[1:], *ARGS, *paths, "--output-dir", str(two)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("done in ") == 1  # rank 0 alone reports
    assert_same_run(one, two)
