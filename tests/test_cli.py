"""`aroma train` / `aroma report` end to end on a slice of the real GLUE files and the real MiniLM,
and every bad input as a one-line error with a non-zero exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aroma_peft.cli import main

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not available")

SLICE = ["--max-train-samples", "48", "--max-eval-samples", "32", "--batch-size", "8", "--max-seq-len", "32"]
SLICE += ["--max-steps", "24", "--eval-every", "12", "--quiet", "--data-dir", str(GLUE), "--threads", "1"]
# method -> (task, extra flags): four real layouts, a few dozen steps each
RUNS = {
    "aroma": ("rte", ["--t-in", "8", "--check-interval", "2", "--rewarmup-steps", "2", "--eps-out", "1e-4"]),
    "lora": ("mrpc", ["--r", "4"]),
    "adalora": ("mrpc", []),
    "relora": ("sst2", ["--restart-every", "8", "--rewarmup-steps", "2"]),
    "full": ("cola", []),
}
TRAIN_KEYS = {"loss", "lr", "trainable_params", "adapter_params", "total_rank", "finished_modules"}


def cli(args: list[str], capsys) -> tuple[int, str]:  # noqa: ANN001
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, match: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0, err
    assert match in err, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One short run per method (about 5-8 s each on 2 cores)."""
    root = tmp_path_factory.mktemp("runs")
    for method, (task, extra) in RUNS.items():
        code = main(
            ["train", "--task", task, "--method", method, "--output-dir", str(root / method), *SLICE, *extra]
        )
        assert code == 0, method
    return {method: root / method for method in RUNS}


@pytest.mark.parametrize("method", sorted(RUNS))
@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_run_folder(runs, method):
    out = runs[method]
    metrics = json.loads((out / "metrics.json").read_text())
    task = RUNS[method][0]
    assert metrics["task"] == task and metrics["method"] == method and metrics["steps"] <= 24
    main_metric = {"rte": "accuracy", "mrpc": "accuracy", "sst2": "accuracy", "cola": "matthews"}[task]
    assert metrics["main_metric"] == main_metric
    assert set(metrics["best"]) >= {main_metric, "step"} and set(metrics["final"]) >= {main_metric, "step"}
    assert ("f1" in metrics["final"]) == (task == "mrpc")
    for key in ("trainable_params", "adapter_params"):
        assert set(metrics[key]) == {"start", "mean", "end"}
    assert metrics["time_per_step_s"] > 0 and metrics["wall_time_s"] > metrics["train_time_s"] > 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["type"] == "train"]
    assert len(train) == metrics["steps"]
    assert all(set(r) >= TRAIN_KEYS for r in train)
    evals = [r for r in log if r["type"] == "eval"]
    assert evals[-1]["step"] == metrics["steps"] and main_metric in evals[-1]["metrics"]
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["lr"] > 0
    ranks = json.loads((out / "ranks.json").read_text())
    assert len(ranks) == 36  # 6 blocks x (q, k, v, attention output, two feed-forward matrices)
    assert not any("pooler" in name or "classifier" in name for name in ranks)
    assert metrics["heads"] == ["bert.pooler", "classifier"]


@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_aroma_merges_and_exports_a_peft_lora(runs):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from aroma_peft.models import resolve_model

    log = [json.loads(line) for line in (runs["aroma"] / "log.jsonl").read_text().splitlines()]
    events = [e for r in log for e in r.get("events", [])]
    assert any(e["event"] == "merge" for e in events)
    metrics = json.loads((runs["aroma"] / "metrics.json").read_text())
    assert metrics["total_rank_end"] >= 36
    assert (runs["aroma"] / "adapter" / "adapter_model.safetensors").is_file()
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model(None), num_labels=2)
    model = PeftModel.from_pretrained(base, runs["aroma"] / "adapter_lora")
    assert model.peft_config["default"].rank_pattern


@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_adalora_really_reallocates_ranks(runs):
    log = [json.loads(line) for line in (runs["adalora"] / "log.jsonl").read_text().splitlines()]
    totals = [r["total_rank"] for r in log if r["type"] == "train"]
    assert totals[0] == 12 * 36 and totals[-1] == 8 * 36  # init_r -> target_r budget
    per_module = [r["ranks"] for r in log if "ranks" in r]
    assert len({tuple(r.values()) for r in per_module}) > 1
    assert (runs["adalora"] / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_relora_restarts_on_a_fixed_clock(runs):
    ranks = json.loads((runs["relora"] / "ranks.json").read_text())
    assert {r["rank"] for r in ranks.values()} == {24}  # 3 pieces of rank 8 in 24 steps
    assert all(r["numerical_rank"] <= 24 for r in ranks.values())
    log = [json.loads(line) for line in (runs["relora"] / "log.jsonl").read_text().splitlines()]
    merge_steps = sorted({e["step"] for r in log for e in r.get("events", []) if e["event"] == "merge"})
    assert merge_steps == [8, 16]


@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_full_fine_tuning_trains_everything(runs):
    metrics = json.loads((runs["full"] / "metrics.json").read_text())
    assert metrics["adapter_params"]["start"] > 20_000_000 and metrics["total_rank_end"] is None
    assert (runs["full"] / "model" / "config.json").is_file()
    ranks = json.loads((runs["full"] / "ranks.json").read_text())
    assert all(r["numerical_rank"] > 8 for r in ranks.values())


@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_report_writes_figures_and_table(runs, tmp_path, capsys):
    out = tmp_path / "report"
    code, _ = cli(["report", *runs.values(), "--out", out], capsys)
    assert code == 0
    assert (out / "fig1_training.png").stat().st_size > 20_000
    for method in RUNS:
        assert (out / f"fig3_{method}.png").stat().st_size > 20_000
    table = (out / "table.md").read_text()
    assert all(f"| {method} |" in table for method in RUNS)


@pytest.mark.slow  # shares the module fixture: five real trainings, ~30-50 s in all
def test_existing_run_is_refused_and_kept(runs, capsys):
    before = {p.name: p.read_bytes() for p in runs["lora"].iterdir() if p.is_file()}
    code, err = cli(
        ["train", "--task", "mrpc", "--method", "lora", "--output-dir", runs["lora"], *SLICE], capsys
    )
    assert_one_line_error(code, err, "already holds a run (metrics/log/config); pass --overwrite")
    assert {p.name: p.read_bytes() for p in runs["lora"].iterdir() if p.is_file()} == before


def test_config_file_with_flags_overriding_and_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    config = tmp_path / "config.yaml"
    config.write_text("task: sst2\nmethod: lora\nlr: 1e-3\nr: 2\nmax-steps: 5\nbatch_size: 4\n")
    args = [
        "train",
        "--config",
        config,
        "--output-dir",
        out,
        "--max-steps",
        "2",
        *SLICE[:6],
        "--quiet",
        "--threads",
        "1",
    ]
    args += ["--data-dir", GLUE]
    code, err = cli(args, capsys)
    assert_one_line_error(code, err, "output folder is not empty; pass --overwrite")
    code, _ = cli([*args, "--overwrite"], capsys)
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["lr"], saved["r"], saved["max_steps"], saved["batch_size"]) == (1e-3, 2, 2, 8)
    assert (out / "notes.txt").read_text() == "mine"  # --overwrite never deletes what it did not write
    code, _ = cli(
        ["train", "--config", out / "config.json", "--overwrite", "--threads", "1"], capsys
    )  # a saved config re-runs
    assert code == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--task", "wnli", "--method", "lora"], "unknown task 'wnli': expected one of cola"),
        (["--task", "rte", "--method", "dora"], "unknown method 'dora': expected one of"),
        (["--task", "rte"], "--method is required"),
        (
            ["--task", "rte", "--method", "lora", "--t-in", "5"],
            "option 't_in' does not apply to method 'lora' (an option of aroma",
        ),
        (["--task", "rte", "--method", "lora", "--lr", "fast"], "lr='fast': expected float"),
        (
            ["--task", "rte", "--method", "aroma", "--eps-in", "-1"],
            "eps_in=-1.0 is invalid: use a positive threshold",
        ),
        (["--task", "rte", "--method", "adalora", "--target-r", "20"], "target_r=20 is invalid"),
        (["--task", "rte", "--method", "lora", "--batch-size", "0"], "batch_size=0: use an integer >= 1"),
        (
            ["--task", "rte", "--method", "lora", "--config", "missing.yaml"],
            "missing.yaml: config file not found",
        ),
        (["--task", "rte", "--method", "lora", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
    ],
)
def test_bad_flags(tmp_path, capsys, args, match):
    code, err = cli(["train", "--output-dir", tmp_path / "out", *args], capsys)
    assert_one_line_error(code, err, match)
    assert not (tmp_path / "out").exists()


def test_malformed_config_file_names_the_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: rte\nmethod: [lora\n")
    code, err = cli(["train", "--config", config, "--output-dir", tmp_path / "out"], capsys)
    assert_one_line_error(code, err, "c.yaml:3: not valid YAML/JSON")


def test_bad_data_and_model(tmp_path, capsys):
    base = ["train", "--task", "rte", "--method", "lora", "--quiet", "--max-steps", "1"]
    code, err = cli([*base, "--data-dir", tmp_path / "none", "--output-dir", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, "none: data folder not found")
    data = tmp_path / "glue" / "RTE"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tyes\n")
    (data / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    code, err = cli([*base, "--data-dir", tmp_path / "glue", "--output-dir", tmp_path / "b"], capsys)
    assert_one_line_error(code, err, f"{data / 'train.tsv'}:3: label 'yes' is not one of")
    (data / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    not_a_model = tmp_path / "model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{broken")
    base += ["--data-dir", tmp_path / "glue", "--output-dir", tmp_path / "c"]
    code, err = cli([*base, "--model", not_a_model], capsys)
    assert_one_line_error(code, err, f"{not_a_model}: not a usable model")
    missing = tmp_path / "no-such-model"
    code, err = cli([*base, "--model", missing], capsys)
    assert_one_line_error(code, err, f"{missing}: no such folder, and not found on the hub")


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, err = cli(["report", tmp_path, "--out", tmp_path / "rep"], capsys)
    assert_one_line_error(code, err, "not a finished run (no metrics.json)")


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("aroma")
    result = subprocess.run(
        [script, "train", "--task", "nope", "--method", "lora", "--output-dir", "x"],
        capture_output=True,
        text=True,
    )
    expected = "unknown task 'nope': expected one of cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb"
    assert result.returncode == 2 and result.stderr.strip() == f"aroma train: error: {expected}"
