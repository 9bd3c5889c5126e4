"""`aroma evaluate` on the tiny prepared LLaMA and on short GLUE runs; one slow test on the real SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from test_commonsense import ROW, write_set
from tiny_llm import tiny_llm_dir  # noqa: F401

from aroma_peft.cli import main

SMALL = ["--max-train-samples", "24", "--max-eval-samples", "16", "--batch-size", "8", "--max-seq-len", "32"]
SMALL += ["--max-steps", "3", "--quiet", "--threads", "1", "--data-dir", str(SHARED_DATA / "glue")]


def cli(args: list, capsys) -> tuple[int, str, str]:  # noqa: ANN001
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    write_set(root, "BoolQ", "test", [ROW | {"answer": a} for a in ["true", "false", "true"]])
    opts = "Which? Answer format: answer1/answer2/answer3/answer4"
    write_set(
        root, "OBQA", "test", [ROW | {"instruction": opts, "answer": f"answer{i}"} for i in (1, 2, 3, 4)]
    )
    write_set(
        root,
        "PIQA",
        "test",
        [ROW | {"instruction": "How? Answer format: solution1/solution2", "answer": "solution1"}],
    )
    return root


def test_evaluate_a_causal_lm_in_both_modes(tiny_llm_dir, data, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "eval"
    base = ["evaluate", "--model", tiny_llm_dir, "--task", "commonsense", "--data-dir", data, "--quiet"]
    code, stdout, err = cli(
        [*base, "--eval-sets", "OBQA,BoolQ", "--eval-limit", "2", "--output-dir", out], capsys
    )
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"OBQA", "BoolQ"} and metrics["mode"] == "loglik"
    assert metrics["sets"]["OBQA"]["n"] == 2 and metrics["model"]
    assert metrics["average"] == pytest.approx(sum(metrics["accuracy"].values()) / 2)
    assert "OBQA" in stdout and "average" in stdout
    code, _, err = cli([*base, "--output-dir", out], capsys)
    assert code == 2 and "metrics.json exists: pass --overwrite" in err
    code, _, err = cli([*base, "--eval-mode", "generate", "--output-dir", out, "--overwrite"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "generate" and set(metrics["accuracy"]) == {"BoolQ", "OBQA", "PIQA"}


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "M", "--task", "commonsense", "--eval-sets", "ARC"], "--eval-sets: ARC not found"),
        (["--model", "M", "--task", "rte"], "--model evaluates causal LMs on --task commonsense"),
        (["--model", "M"], "--task is required with --model"),
        (["--run", "RUN", "--task", "commonsense"], "not a run folder (no config.json)"),
        (
            ["--model", "M", "--task", "commonsense", "--eval-limit", "0"],
            "--eval-limit 0: use a positive number",
        ),
        (["--model", "M", "--run", "RUN"], "not allowed with argument"),
        (["--model", "M", "--eval-mode", "beam"], "invalid choice: 'beam'"),
    ],
)
def test_bad_evaluate_input_is_one_line(data, tmp_path, capsys, args, match):
    args = [str(tmp_path / "missing") if a in ("M", "RUN") else a for a in args]
    code, _, err = cli(["evaluate", *args, "--data-dir", data, "--output-dir", tmp_path / "o"], capsys)
    assert code == 2 and match in err and err.strip().count("\n") == 0, err


@pytest.mark.parametrize("method, task", [("lora", "rte"), ("aroma", "mrpc"), ("full", "rte")])
@pytest.mark.slow  # a short real MiniLM training first (~20-40 s on the shared 2 cores)
def test_evaluate_a_glue_run_reproduces_its_final_dev_metrics(tmp_path, capsys, method, task):
    run = tmp_path / "run"
    assert main(["train", "--task", task, "--method", method, "--output-dir", str(run), *SMALL]) == 0
    code, stdout, err = cli(
        ["evaluate", "--run", run, "--eval-limit", "16", "--output-dir", tmp_path / "e"], capsys
    )
    assert code == 0, err
    final = json.loads((run / "metrics.json").read_text())["final"]
    got = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert got["task"] == task and got["metrics"]["accuracy"] == pytest.approx(final["accuracy"])
    assert "accuracy" in stdout


@pytest.mark.slow
def test_evaluate_real_smollm2_on_a_few_items(tmp_path, capsys):
    data = SHARED_DATA / "commonsense"
    for mode in ("loglik", "generate"):
        out = tmp_path / mode
        args = ["evaluate", "--model", "default", "--task", "commonsense", "--data-dir", data, "--quiet"]
        args += [
            "--eval-sets",
            "ARC-Easy,BoolQ",
            "--eval-limit",
            "4",
            "--eval-mode",
            mode,
            "--output-dir",
            out,
        ]
        code, _, err = cli(args, capsys)
        assert code == 0, err
        metrics = json.loads((out / "metrics.json").read_text())
        assert "SmolLM2-135M-Instruct-Q4_1-dequantized" in metrics["model"]
        assert metrics["sets"]["ARC-Easy"]["n"] == 4 and metrics["sets"]["BoolQ"]["family"] == "true/false"
        if mode == "loglik":
            assert metrics["sets"]["ARC-Easy"]["valid"] == 4
