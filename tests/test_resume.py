"""Checkpoint and exact resume of `aroma train`: a run SIGKILLed at any point (a training step, an
evaluation, the middle of a checkpoint write) and resumed ends identical to the uninterrupted run.

The killed run is the CLI in a forked child process that SIGKILLs itself at the chosen point
(``AROMA_TEST_KILL_AT``, the one test hook in checkpoint.py): nothing is cleaned up, as after a real
kill. Tiny BERT, tiny SST-2 folder, one thread: a few seconds per case.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_glue import write_tiny_bert

from aroma_peft.cli import main
from aroma_peft.train import checkpoint

WORDS = ["good", "bad", "movie", "great", "awful", "fun", "dull", "plot"]
TIMING = {"eval_time_s", "wall_time_s", "train_time_s", "time_per_step_s"}
# 48 examples in batches of 8: 6 steps per epoch, 3 epochs; checkpoints every 4 steps.
COMMON = ["--task", "sst2", "--batch-size", "8", "--epochs", "3", "--eval-every", "5", "--save-every", "4"]
COMMON += ["--quiet", "--threads", "1"]
METHODS = {
    "aroma": ["--method", "aroma", "--lr", "1e-2", "--t-in", "6", "--check-interval", "2"]
    + ["--rewarmup-steps", "2", "--eps-out", "2e-3"],
    "sora": ["--method", "sora", "--lr", "1e-2", "--r-max", "4", "--sparse-lambda", "100", "--xi", "0"]
    + ["--xi-schedule", "linear", "--xi-max", "0.2", "--xi-stages", "3", "--gate-lr", "0.05"],
    "lora": ["--method", "lora", "--lr", "1e-2", "--r", "2"],
    "adalora": ["--method", "adalora", "--lr", "1e-2", "--init-r", "4", "--target-r", "2", "--delta-t", "2"],
    "relora": [
        "--method",
        "relora",
        "--lr",
        "1e-2",
        "--r",
        "2",
        "--restart-every",
        "5",
        "--rewarmup-steps",
        "2",
    ],
    "full": ["--method", "full", "--lr", "1e-3"],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """A 2-layer BERT (dropout on, so the torch generator matters) and a 48/16-row SST-2 folder."""
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def build_tiny(root: Path, dropout: float = 0.1) -> dict[str, Path]:
    write_tiny_bert(root, WORDS, hidden=16, intermediate=24, layers=2, dropout=dropout)
    rng = random.Random(0)
    rows = []
    for _ in range(64):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        positive = sum(w in ("good", "great", "fun") for w in words) > sum(
            w in ("bad", "awful") for w in words
        )
        rows.append(f"{' '.join(words)}\t{int(positive)}")
    data = root / "glue" / "SST-2"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:48]) + "\n")
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[48:]) + "\n")
    return {"model": root / "model", "data": root / "glue"}


def args_for(tiny: dict[str, Path], method: str, out: Path, *extra: str) -> list[str]:
    paths = ["--model", str(tiny["model"]), "--data-dir", str(tiny["data"]), "--output-dir", str(out)]
    return ["train", *COMMON, *METHODS[method], *paths, *extra]


def _child(argv: list[str], kill_at: str) -> None:
    os.environ["AROMA_TEST_KILL_AT"] = kill_at
    main(argv)
    os._exit(0)


def killed_run(argv: list[str], kill_at: str) -> None:
    """Run the CLI in a child process that SIGKILLs itself at ``kill_at``."""
    child = multiprocessing.get_context("fork").Process(target=_child, args=(argv, kill_at))
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL, f"the run was not killed at {kill_at} (exit {child.exitcode})"


def log_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def comparable_metrics(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING}


@pytest.mark.parametrize(
    ("method", "kill_at"),
    [
        ("aroma", "step:11"),  # during training, 3 steps after the checkpoint of step 8
        ("aroma", "save:8"),  # in the middle of writing a checkpoint: the one of step 4 is used
        ("relora", "step:9"),  # a restart (merge + optimizer reset) at step 10, after the resume point
        ("full", "eval:5"),
        ("sora", "eval:10"),  # during an evaluation
        ("lora", "step:7"),  # in the second epoch (the data order of an epoch is restored)
        ("adalora", "step:13"),  # the allocator's importance statistics travel with the checkpoint
    ],
)
def test_killed_run_resumes_exactly(tiny, tmp_path, method, kill_at):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert main(args_for(tiny, method, reference)) == 0
    killed_run(args_for(tiny, method, resumed), kill_at)
    assert not (resumed / "metrics.json").exists() and checkpoint.latest(resumed) is not None
    assert main(["train", "--output-dir", str(resumed), "--resume", "--threads", "1"]) == 0

    assert log_records(resumed) == log_records(reference)  # every loss, lr, rank, event and metric
    assert comparable_metrics(resumed) == comparable_metrics(reference)
    weights = "model/model.safetensors" if method == "full" else "adapter/adapter_model.safetensors"
    before, after = (load_file(r / weights) for r in (reference, resumed))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.allclose(before[key].float(), after[key].float(), atol=1e-6, rtol=0), key
    assert not (resumed / checkpoint.FOLDER).exists()  # a finished run keeps no checkpoint
    events = [e for r in log_records(reference) for e in r.get("events", [])]
    if method == "aroma":  # the resumed part of the run takes merge and finish decisions
        assert {e["event"] for e in events if e["step"] > 8} == {"merge", "finish"}
        metrics = comparable_metrics(reference)  # every module finished: nothing trainable at the end
        assert metrics["adapter_params"]["end"] == 0 < metrics["adapter_params"]["start"]
        assert metrics["trainable_params"]["end"] == metrics["head_params"]
        assert metrics["schema_version"] == 2 and metrics["world_size"] == 1
        assert set(metrics["versions"]) == {"torch", "transformers", "peft", "aroma-peft"}
    if method == "sora":
        assert [e["step"] for e in events if e["event"] == "stage_end"] == [6, 12, 18]
    if method == "adalora":
        changes = [r["step"] for r in log_records(reference) if "ranks" in r]
        assert any(step > 12 for step in changes[1:])  # ranks reallocated after the resume point


def test_resume_of_a_finished_run_does_nothing(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(args_for(tiny, "lora", run)) == 0
    before = (run / "metrics.json").read_bytes()
    assert main(["train", "--output-dir", str(run), "--resume"]) == 0
    assert "has finished" in capsys.readouterr().out
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--lr", "0.5"], "these flags would change it: lr=0.5 (the run has 0.01)"),
        (["--r", "3"], "r=3 (the run has 2)"),
        (["--overwrite"], "--resume and --overwrite exclude each other"),
    ],
)
def test_resume_refuses_flags_that_change_the_run(tiny, tmp_path, capsys, extra, match):
    run = tmp_path / "run"
    killed_run(args_for(tiny, "lora", run), "step:5")
    capsys.readouterr()
    assert main(["train", "--output-dir", str(run), "--resume", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.strip().count("\n") == 0, err


def test_resume_without_checkpoint_is_a_one_line_error(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    killed_run(args_for(tiny, "lora", run, "--save-every", "0"), "step:3")
    assert main(["train", "--output-dir", str(run), "--resume"]) == 2
    assert "no checkpoint to resume from; start again with --overwrite" in capsys.readouterr().err
    assert main(["train", "--output-dir", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "no run to resume (no config.json)" in capsys.readouterr().err


def test_checkpoints_are_kept_last_k_and_overwrite_removes_exactly_the_run(tiny, tmp_path):
    run = tmp_path / "run"
    killed_run(args_for(tiny, "lora", run, "--save-every", "2", "--keep-checkpoints", "3"), "step:11")
    assert [p.name for p in checkpoint.checkpoints(run)] == [
        "step-00000006",
        "step-00000008",
        "step-00000010",
    ]
    (run / "notes.txt").write_text("mine")
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert {"config.json", "log.jsonl", "checkpoints", "manifest.json"} <= set(manifest)
    assert main(args_for(tiny, "lora", run, "--overwrite", "--max-steps", "2")) == 0
    assert not (run / "checkpoints").exists()
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["notes.txt", *json.loads((run / "manifest.json").read_text())["files"]]
    )


def test_failed_start_leaves_no_folder(tiny, tmp_path, capsys):
    out = tmp_path / "new" / "run"
    args = ["train", *COMMON, *METHODS["lora"], "--model", str(tiny["model"]), "--output-dir", str(out)]
    assert main([*args, "--data-dir", str(tmp_path / "no-data")]) == 2
    assert not out.exists()


def test_minilm_run_killed_and_resumed_by_the_cli(tmp_path):
    from conftest import SHARED_DATA

    glue = SHARED_DATA / "glue"
    if not glue.is_dir():
        pytest.skip("../shared/data/glue not available")
    common = ["train", "--task", "rte", "--method", "aroma", "--data-dir", str(glue), "--quiet"]
    common += ["--max-train-samples", "40", "--max-eval-samples", "16", "--batch-size", "4"]
    common += ["--max-seq-len", "32", "--max-steps", "10", "--eval-every", "5", "--save-every", "3"]
    common += ["--t-in", "4", "--check-interval", "2", "--rewarmup-steps", "1", "--threads", "1"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert main([*common, "--output-dir", str(reference)]) == 0
    killed_run([*common, "--output-dir", str(resumed)], "step:8")
    assert main(["train", "--output-dir", str(resumed), "--resume"]) == 0
    assert log_records(resumed) == log_records(reference)
    assert comparable_metrics(resumed) == comparable_metrics(reference)
    before, after = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (reference, resumed))
    assert all(torch.allclose(before[k], after[k], atol=1e-6, rtol=0) for k in before)


def test_glue_table_skips_finished_runs_and_resumes_interrupted_ones(tmp_path, monkeypatch, capsys):
    import importlib.util
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location(
        "glue_table", Path(__file__).parents[1] / "benchmarks" / "glue_table.py"
    )
    glue_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(glue_table)
    calls = []
    monkeypatch.setattr(glue_table.subprocess, "call", lambda args, **_: calls.append(args) or 0)
    (tmp_path / "rte" / "aroma").mkdir(parents=True)
    (tmp_path / "rte" / "aroma" / "metrics.json").write_text("{}")
    (tmp_path / "mrpc" / "aroma" / "checkpoints" / "step-00000005").mkdir(parents=True)
    (tmp_path / "sst2" / "aroma").mkdir(parents=True)
    for task in ("rte", "mrpc", "sst2"):
        glue_table.run_one(task, "aroma", "small", tmp_path, threads=1)
    assert "skip rte/aroma: finished" in capsys.readouterr().out
    resumed, restarted = calls  # the finished run was not started again
    assert "--resume" in resumed and "--task" not in resumed and "--overwrite" not in resumed
    assert "--overwrite" in restarted and "--resume" not in restarted

    script = Path(__file__).parents[1] / "benchmarks" / "glue_table.py"
    done = subprocess.run(
        [sys.executable, str(script), "--table-only", "--runs-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == f"glue_table.py: no finished run in {tmp_path / 'none'} (run without --table-only first)"
    )


# --- faults -----------------------------------------------------------------------------------------
NO_ADAPTER = "(no adapter saved; the last checkpoint is kept)"


def poison(monkeypatch, where: str, at_forward: int) -> None:
    """Make the ``at_forward``-th training forward's loss (or its gradient) NaN, as bad data would."""
    from aroma_peft.tasks import glue

    load = glue.load_model

    def load_poisoned(*args, **kwargs):
        tokenizer, model = load(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, output):
            if not module.training:
                return None
            calls["n"] += 1
            if calls["n"] != at_forward:
                return None
            if where == "loss":
                return output * float("nan")
            output.register_hook(lambda grad: grad * float("nan"))
            return None

        model.classifier.register_forward_hook(hook)
        return tokenizer, model

    monkeypatch.setattr(glue, "load_model", load_poisoned)


@pytest.mark.parametrize(
    ("where", "message"), [("loss", "non-finite loss"), ("gradient", "non-finite gradient")]
)
def test_non_finite_loss_or_gradient_stops_the_run(tiny, tmp_path, monkeypatch, capsys, where, message):
    poison(monkeypatch, where, at_forward=7)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(args_for(tiny, "aroma", run))
    assert exit_.value.code == 3
    err = capsys.readouterr().err.strip()
    assert err == f"aroma train: error: diverged at step 7: {message} " + NO_ADAPTER
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["diverged"] == f"diverged at step 7: {message}" and metrics["stopped_early"] is False
    assert metrics["steps"] == 6 and not (run / "adapter").exists()
    assert [p.name for p in checkpoint.checkpoints(run)] == ["step-00000004"]  # the last good state
    # nothing non-finite reached a weight: the last good checkpoint's adapter holds finite tensors only
    saved = load_file(checkpoint.latest(run) / checkpoint.ADAPTER / "adapter_model.safetensors")
    assert all(torch.isfinite(t.float()).all() for t in saved.values())


def test_huge_learning_rate_is_reported_as_diverged_never_as_stopped_early(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(args_for(tiny, "aroma", run, "--lr", "1e3"))
    assert exit_.value.code == 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["diverged"].startswith("diverged at step ") and metrics["stopped_early"] is False
    assert "above" in metrics["diverged"]  # losses of thousands, against a first loss of about ln 2


def test_gradient_clipping():
    from aroma_peft.train.loop import optimizer_step

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return type("Out", (), {"loss": (self.w * x).sum()})()

    for clip, expected in ((None, 100.0 * 3**0.5), (0.5, 0.5)):
        model = Model()
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        loss, fault = optimizer_step(model, {"x": torch.full((3,), 100.0)}, optimizer, clip)
        assert fault is None and loss == 300.0
        assert float((torch.ones(3) - model.w.detach()).norm()) == pytest.approx(expected)  # the step taken


def test_saving_schedule(monkeypatch):
    from aroma_peft.train import loop

    assert [loop.save_due(4, step, last_save=0.0) for step in (3, 4, 8)] == [False, True, True]
    assert not loop.save_due(0, 4, last_save=0.0)  # 0: never
    monkeypatch.setattr(loop.time, "time", lambda: 1000.0 + checkpoint.SAVE_MINUTES * 60)
    assert loop.save_due(None, 3, last_save=1000.0) and not loop.save_due(None, 3, last_save=1001.0)


def test_resume_with_other_threads_warns(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    killed_run(args_for(tiny, "lora", run), "step:5")
    capsys.readouterr()
    assert main(["train", "--output-dir", str(run), "--resume", "--threads", "2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: resuming on another setup (torch_threads 1 -> 2)" in err


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("save_every", -1, "save_every=-1: use a number of steps >= 1, or 0 for none"),
        ("keep_checkpoints", 0, "keep_checkpoints=0: use an integer >= 1"),
        ("divergence_factor", 0.5, "divergence_factor=0.5: use a factor > 1, or 0 for none"),
        ("max_grad_norm", 0.0, "max_grad_norm=0.0: use a positive norm (or none)"),
    ],
)
def test_checkpoint_and_fault_settings_are_checked(field, value, match):
    from aroma_peft.train.config import TrainConfig

    config = TrainConfig(task="sst2", method="lora", output_dir="x", **{field: value})
    assert config.check() == [match]


def test_adalora_with_a_module_pruned_to_rank_zero_saves_without_a_sharding_warning(tiny, tmp_path):
    """PEFT reads a zero-sized lora_A / lora_B as unsharded ZeRO-3 / FSDP tensors; for AdaLoRA it is
    the allocation, so the save stays quiet and the adapter loads back, quietly, with its rank pattern
    (PEFT also calls AdaLoRA's own rank_pattern keys unmatched, and then uses them). Neither wrapping
    nor loading passes on the deprecation warning PEFT's own read of is_gradient_checkpointing raises."""
    from peft import get_peft_model_state_dict
    from transformers import AutoModelForSequenceClassification

    from aroma_peft.train.lora import load_peft_adapter

    run = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args_for(tiny, "adalora", run, "--target-r", "1")) == 0
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    assert any(0 in t.shape for key, t in saved.items() if ".lora_A" in key)  # a module at rank 0
    assert not [w for w in caught if "invalid shape" in str(w.message)]
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    base = AutoModelForSequenceClassification.from_pretrained(tiny["model"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = get_peft_model_state_dict(load_peft_adapter(base, run / "adapter"))
    assert not [w for w in caught if "rank_pattern" in str(w.message) or "checkpointing" in str(w.message)]
    assert loaded.keys() == saved.keys()
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key
