"""Every subcommand's bad inputs, as a new user types them: a one-line error naming the flag, file or
module, exit status 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, cli
from test_report import fake_run

SST2 = "sentence\tlabel\n" + "".join(f"sentence {i}\t{i % 2}\n" for i in range(8))


@pytest.fixture
def glue(tmp_path) -> Path:
    """A small GLUE folder: SST-2 (clean), RTE, and CoLA whose train.tsv has a bad byte on line 4."""
    root = tmp_path / "glue"
    for folder, text in {
        "SST-2": SST2,
        "RTE": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
    }.items():
        (root / folder).mkdir(parents=True)
        (root / folder / "train.tsv").write_text(text)
        (root / folder / "dev.tsv").write_text(text)
    (root / "CoLA").mkdir()
    (root / "CoLA" / "train.tsv").write_bytes(b"s\t1\t\ta\ns\t0\t\tb\ns\t1\t\tc\ns\t1\t\td \xff\n")
    return root


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method", "lora", "--lr", "-1e-3"], "lr=-0.001: use a positive learning rate"),
        (["--method", "aroma", "--eps-out", "-.5"], "eps_out=-0.5 is invalid"),
        (
            ["--method", "aroma", "--target-modules", "nonexistent"],
            "--target-modules: no nn.Linear module named "
            "'nonexistent' in BertForSequenceClassification; valid names include classifier",
        ),
        (
            ["--method", "lora", "--target-modules", "query,nonexistent"],
            "no nn.Linear module named 'nonexistent'",
        ),
        (
            ["--method", "aroma", "--target-modules", "attention"],
            "'attention' matches bert.encoder.layer.0."
            "attention, a BertAttention: only nn.Linear can be adapted",
        ),
        (
            ["--method", "lora", "--modules-to-save", "nohead"],
            "--modules-to-save: no module named 'nohead' in "
            "BertForSequenceClassification; valid names include",
        ),
        (
            ["--method", "lora", "--model", "/nonexistent/model"],
            "/nonexistent/model: no such folder, and not found on the hub (not a valid hub name either)",
        ),
        (
            ["--method", "lora", "--model", "models/minilm"],
            "models/minilm: no such folder, and not found on the hub",
        ),
        (
            ["--method", "lora", "--task", "cola", "--data-dir", "{glue}/RTE"],
            "RTE: no CoLA/ folder and no CoLA files here (this is the RTE folder)",
        ),
        (["--method", "lora", "--task", "cola"], "CoLA/train.tsv:4: not UTF-8 text"),
        (["--method", "lora", "--task", "stsb"], "glue: no STS-B/ folder"),
    ],
)
def test_train(tmp_path, glue, capsys, monkeypatch, args, match):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never wait for the network
    base = [
        "train",
        "--task",
        "sst2",
        "--data-dir",
        glue,
        "--output-dir",
        tmp_path / "out",
        "--max-steps",
        "1",
    ]
    code, err = cli([*base, *[a.format(glue=glue) for a in args], "--quiet"], capsys)
    assert_one_line_error(code, err, match)


def test_report(tmp_path, capsys):
    run = fake_run(tmp_path / "run", "aroma")
    code, err = cli(["report", run, "--out", tmp_path / "r", "--modules", "nonexistent.module"], capsys)
    assert_one_line_error(
        code,
        err,
        "--modules: no run has a module named 'nonexistent.module'; modules include "
        "bert.encoder.layer.0.attention.self.query",
    )
    assert not (tmp_path / "r").exists()
    (tmp_path / "file").write_text("x")
    code, err = cli(["report", run, "--out", tmp_path / "file"], capsys)
    assert_one_line_error(code, err, "file: exists and is not a folder")
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "main_metric"}))
    code, err = cli(["report", run, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "metrics.json: lacks main_metric, best.None, final.None")
    (run / "metrics.json").write_text("[]")
    code, err = cli(["report", run, "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "metrics.json: expected a JSON object, found a list")
    code, err = cli(["report", tmp_path / "none", "--out", tmp_path / "r"], capsys)
    assert_one_line_error(code, err, "none: not a finished run (no metrics.json)")


def test_merge(tmp_path, capsys):
    code, err = cli(["merge", tmp_path / "none", "--output-dir", tmp_path / "m"], capsys)
    assert_one_line_error(code, err, "none: not a run folder (no config.json)")
    run = fake_run(tmp_path / "run", "aroma")  # a run folder without its adapter
    (run / "config.json").write_text(json.dumps({"task": "sst2", "method": "aroma"}))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, err = cli(["merge", run, "--output-dir", tmp_path / "full"], capsys)
    assert_one_line_error(
        code, err, "--output-dir " + str(tmp_path / "full") + ": exists and is not an empty folder"
    )
    code, err = cli(["merge", run, "--output-dir", tmp_path / "full", "--overwrite"], capsys)
    assert_one_line_error(code, err, "full: holds no saved model (no config.json); not replacing it")
    code, err = cli(["merge", run, "--output-dir", tmp_path / "m"], capsys)
    assert_one_line_error(code, err, "run: no adapter/ or model/ folder (the run did not finish)")
    assert not (tmp_path / "m").exists()
    code, err = cli(["merge", run], capsys)
    assert_one_line_error(code, err, "the following arguments are required: --output-dir")
    for method in ("bitfit", "adapterh"):  # no low-rank update to merge: said before any model loads
        (run / "config.json").write_text(json.dumps({"task": "sst2", "method": method}))
        code, err = cli(["merge", run, "--output-dir", tmp_path / "m"], capsys)
        assert_one_line_error(code, err, f"method '{method}' trains no low-rank update")
