"""`aroma train --method sora` end to end on a tiny BERT and a tiny SST-2 folder (offline)."""

import json

import pytest

pytest.importorskip("aroma_peft.train")

from tiny_glue import write_tiny_bert  # noqa: E402

from aroma_peft.cli import main  # noqa: E402

WORDS = ["good", "bad", "movie", "great", "awful", "fun", "dull", "plot"]


@pytest.fixture
def setup(tmp_path):
    model_dir = write_tiny_bert(tmp_path, WORDS, hidden=16, intermediate=24, layers=1)
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    rows = [
        f"{a} {b} {c}\t{int(a in ('good', 'great', 'fun'))}"
        for a, b, c in zip(WORDS * 3, WORDS[3:] * 5, WORDS[::-1] * 3)
    ]
    for name, part in (("train.tsv", rows[:20]), ("dev.tsv", rows[20:24])):
        (data / name).write_text("sentence\tlabel\n" + "\n".join(part) + "\n")
    return tmp_path, model_dir


def test_train_sora_with_xi_schedule(setup):
    tmp_path, model_dir = setup
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--method",
            "sora",
            "--task",
            "sst2",
            "--model",
            str(model_dir),
            "--data-dir",
            str(tmp_path / "glue"),
            "--output-dir",
            str(out),
            "--max-steps",
            "6",
            "--batch-size",
            "8",
            "--quiet",
            "--r-max",
            "4",
            "--sparse-lambda",
            "100",
            "--xi",
            "0",
            "--xi-schedule",
            "linear",
            "--xi-max",
            "0.2",
            "--xi-stages",
            "3",
            "--prox",
            "official",
            "--gate-lr",
            "0.05",
            "--lr",
            "1e-2",
        ]
    )
    assert code == 0
    sora = json.loads((out / "sora.json").read_text())
    assert sora["xis"] == pytest.approx([0.0, 0.1, 0.2])
    assert [e["step"] for e in sora["stage_ends"]] == [2, 4, 6]
    assert sora["parameters_before_pruning"] == 4 * (4 * (16 + 16) + 4) + 2 * (4 * (16 + 24) + 4)
    assert sora["active_gates"] < 6 * 4  # xi = 0.2 after an Adam step of ~0.05 switches gates off
    assert sora["parameters_after_pruning"] == sum(
        row["after"] for name, row in sora["modules"].items() if name != "total"
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["adapter_params_pruned"] == sora["parameters_after_pruning"]
    config = json.loads((out / "config.json").read_text())
    assert config["r_max"] == 4 and config["gate_lr"] == 0.05 and config["xi_schedule"] == "linear"
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    events = [e for r in log for e in r.get("events", [])]
    assert [e["stage"] for e in events if e["event"] == "stage_end"] == [0, 1, 2]
    assert (out / "adapter" / "adapter_config.json").is_file()
    # memorisation (train subset) and generalisation (dev) at every stage end, relative to stage 0's best
    stage_records = [r for r in log if r["type"] == "stage"]
    assert [r["step"] for r in stage_records] == [2, 4, 6]
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == [0, 1, 2]
    for record, summary in zip(stage_records, stages):
        assert 0.0 <= summary["memorization"] <= 1.0 and summary["memorization"] == record["memorization"]
        first = stages[0]
        assert summary["generalization_ratio"] == pytest.approx(
            summary["generalization"] / first["generalization"]
        )
        assert summary["memorization_ratio"] == pytest.approx(summary["memorization"] / first["memorization"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--prox", "hard"], "prox='hard' is invalid"), (["--xi-schedule", "linear"], "xi_max=None is invalid")],
)
def test_bad_sora_options_are_reported(tmp_path, capsys, flags, message):
    out = str(tmp_path / "bad")
    assert main(["train", "--method", "sora", "--task", "sst2", "--output-dir", out, *flags]) == 2
    assert message in capsys.readouterr().err


def test_sora_options_schedule_parsing():
    from aroma_peft.train.sora import SoraOptions

    assert SoraOptions(xi_schedule="0, 1e-4,2e-4").schedule() == [0.0, 1e-4, 2e-4]
    assert SoraOptions(xi=1e-5, xi_schedule="exp_linear", xi_max=1e-3, xi_stages=3).schedule() == "exp_linear"
    with pytest.raises(ValueError, match="xi_schedule='0,abc1' is invalid"):
        SoraOptions(xi_schedule="0,abc1")
    with pytest.raises(ValueError, match="gate_lr=0.0 is invalid"):
        SoraOptions(gate_lr=0.0)
    with pytest.raises(ValueError, match="stage_steps=5 is invalid: stages need an xi_schedule"):
        SoraOptions(stage_steps=5)
