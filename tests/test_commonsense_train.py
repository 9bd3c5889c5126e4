"""`aroma train --task commonsense` on one generic loop: a tiny LLaMA for the mechanics (every method,
AdaLoRA's penalty, kill + resume), the real SmolLM2 end to end (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA
from test_commonsense import ROW, write_set
from test_resume import comparable_metrics, killed_run, log_records
from tiny_llm import random_llama, tiny_llm_dir  # noqa: F401

from aroma_peft.cli import main
from aroma_peft.evaluation import evaluate
from aroma_peft.train import checkpoint

QUIZ = "Which? Answer format: answer1/answer2/answer3/answer4"
COMMON = ["--task", "commonsense", "--batch-size", "4", "--quiet", "--threads", "1", "--eval-batch-size", "8"]
METHODS = {
    "aroma": ["--method", "aroma", "--lr", "1e-2"],
    "lora": ["--method", "lora", "--lr", "1e-2", "--r", "2"],
    "adalora": ["--method", "adalora", "--lr", "1e-2", "--init-r", "4", "--target-r", "2"],
    "relora": ["--method", "relora", "--lr", "1e-2", "--r", "2", "--restart-every", "2"],
    "sora": ["--method", "sora", "--lr", "1e-2", "--r-max", "2"],
    "full": ["--method", "full", "--lr", "1e-3"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two sets of 30 training rows (3 held out each) and 4 test rows, in two label families."""
    root = tmp_path_factory.mktemp("commonsense")
    answers = ["true", "false", "false"] * 10
    write_set(
        root, "BoolQ", "train", [ROW | {"output": f"the correct answer is {a}", "answer": a} for a in answers]
    )
    write_set(root, "BoolQ", "test", [ROW | {"answer": a} for a in ("true", "false", "false", "true")])
    quiz = [
        {"instruction": QUIZ, "input": "", "output": f"the correct answer is answer{i % 4 + 1}"}
        for i in range(30)
    ]
    write_set(root, "OBQA", "train", [row | {"answer": row["output"].split()[-1]} for row in quiz])
    write_set(root, "OBQA", "test", [quiz[i] | {"answer": f"answer{i + 1}"} for i in range(4)])
    return root


def run(model: Path, data: Path, out: Path, method: str, *extra: str) -> dict:
    args = ["train", *COMMON, *METHODS[method], "--model", model, "--data-dir", data, "--output-dir", out]
    assert main([str(a) for a in [*args, *extra]]) == 0
    return json.loads((out / "metrics.json").read_text())


def first_loss(out: Path) -> float:
    return next(
        r["loss"]
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if r["type"] == "train"
    )


def without_timing(run: Path) -> dict:
    metrics = comparable_metrics(run)
    for s in metrics["test"]["sets"].values():
        s.pop("seconds")
    return metrics


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_and_tests_a_causal_lm(tiny_llm_dir, data, tmp_path, method):  # noqa: F811
    out = tmp_path / method
    metrics = run(tiny_llm_dir, data, out, method, "--max-steps", "3", "--eval-every", "2")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    evals = [r for r in log if r["type"] == "eval"]
    assert [e["step"] for e in evals] == [2, 3]
    assert set(evals[-1]["metrics"]) == {"BoolQ", "OBQA", "average"}  # the held-out slices, 3 items each
    assert metrics["task"] == "commonsense" and metrics["main_metric"] == "average"
    assert set(metrics["accuracy"]) == {"BoolQ", "OBQA"} and metrics["test"]["mode"] == "loglik"
    assert metrics["test"]["sets"]["OBQA"]["n"] == 4
    assert metrics["average"] == pytest.approx(sum(metrics["accuracy"].values()) / 2)
    assert metrics["heads"] == [] and metrics["head_params"] == 0  # no head: the LM head is the model's own
    config = json.loads((out / "config.json").read_text())
    assert config["max_seq_len"] == 256 and config["train_on_prompt"] is False
    if method != "full":
        modules = json.loads((out / "ranks.json").read_text())
        suffixes = {name.rsplit(".", 1)[-1] for name in modules}
        assert suffixes == {"q_proj", "k_proj", "v_proj", "up_proj", "down_proj"}  # the LLaMA defaults
    if method in ("aroma", "lora"):  # the saved adapter gives the loop's test accuracy again
        again = evaluate(tmp_path / f"{method}-eval", run=out, data_dir=data, progress=False)
        assert again["accuracy"] == metrics["accuracy"]


def test_train_on_prompt_moves_the_loss_onto_the_prompt(tiny_llm_dir, data, tmp_path):  # noqa: F811
    first = {}
    for flag in ("--no-train-on-prompt", "--train-on-prompt"):
        out = tmp_path / flag
        run(tiny_llm_dir, data, out, "lora", "--max-steps", "1", flag)
        first[flag] = first_loss(out)
    assert first["--train-on-prompt"] != first["--no-train-on-prompt"]


def test_adalora_penalty_reaches_the_logged_loss(tiny_llm_dir, data, tmp_path):  # noqa: F811
    """The loss is computed outside the model's forward: AdaLoRA's orthogonal penalty must still be in
    it, linear in its weight (the first step's parameters are the same whatever the weight)."""
    loss = {}
    for weight in ("0", "0.5", "1"):
        out = tmp_path / weight
        run(tiny_llm_dir, data, out, "adalora", "--max-steps", "1", "--orth-reg-weight", weight)
        loss[weight] = first_loss(out)
    penalty = loss["1"] - loss["0"]
    assert penalty > 1e-4
    assert loss["0.5"] - loss["0"] == pytest.approx(penalty / 2, rel=1e-3)


@pytest.mark.parametrize("method", ["aroma", "lora", "full"])
def test_merged_causal_run_is_a_plain_causal_lm_with_the_runs_outputs(tiny_llm_dir, data, tmp_path, method):  # noqa: F811
    """`aroma merge` goes through the run's task: a commonsense run becomes an AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM

    from aroma_peft.evaluation import attach_run
    from aroma_peft.tasks import get_task

    out, merged = tmp_path / "run", tmp_path / "merged"
    run(tiny_llm_dir, data, out, method, "--max-steps", "3")
    assert main(["merge", str(out), "--output-dir", str(merged)]) == 0
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert type(plain).__name__ == "LlamaForCausalLM" and "lora" not in str(plain)
    base, _ = get_task("commonsense").load_model(str(tiny_llm_dir))
    x = torch.randint(0, plain.config.vocab_size, (2, 9))
    with torch.no_grad():
        assert (plain(x).logits - base(x).logits).abs().max() > 1e-4  # the update is in the weights
        trained = attach_run(base, out).eval()
        torch.testing.assert_close(plain(x).logits, trained(x).logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kill_at", ["step:5"])
def test_killed_commonsense_run_resumes_exactly(tiny_llm_dir, data, tmp_path, kill_at):  # noqa: F811
    extra = ["--max-steps", "8", "--eval-every", "3", "--save-every", "2"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run(tiny_llm_dir, data, reference, "aroma", *extra)
    args = ["train", *COMMON, *METHODS["aroma"], "--model", tiny_llm_dir, "--data-dir", data, *extra]
    killed_run([str(a) for a in [*args, "--output-dir", resumed]], kill_at)
    assert not (resumed / "metrics.json").exists() and checkpoint.latest(resumed) is not None
    assert main(["train", "--output-dir", str(resumed), "--resume", "--threads", "1"]) == 0
    assert log_records(resumed) == log_records(reference)
    assert without_timing(resumed) == without_timing(reference)


def test_two_processes_train_a_causal_lm_as_one(tiny_llm_dir, data, tmp_path):  # noqa: F811
    """torch.distributed (gloo), 2 processes, global batch 4: the same losses, decisions and metrics
    as one process."""
    from test_distributed_train import assert_same_log, two_processes

    extra = ["--max-steps", "6", "--eval-every", "3"]
    args = ["train", *COMMON, *METHODS["aroma"], "--model", tiny_llm_dir, "--data-dir", data, *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([str(a) for a in [*args, "--output-dir", one]]) == 0
    assert two_processes([str(a) for a in [*args, "--output-dir", two]]) == [0, 0]
    assert_same_log(one, two)
    ma, mb = (without_timing(r) for r in (one, two))
    assert (ma.pop("world_size"), mb.pop("world_size")) == (1, 2)
    assert ma == mb


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method", "lora"], "--data-dir is required with --task commonsense"),
        (["--method", "lora", "--data-dir", "DATA", "--eval-mode", "beam"], "eval_mode='beam'"),
        (["--method", "lora", "--data-dir", "DATA", "--eval-sets", "Nope"], "--eval-sets: Nope not found"),
    ],
)
def test_bad_commonsense_settings_are_one_line(data, tmp_path, capsys, args, match):
    args = [str(data) if a == "DATA" else a for a in args]
    assert main(["train", "--task", "commonsense", *args, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_commonsense_settings_are_refused_for_glue(tmp_path, capsys):
    args = [
        "train",
        "--task",
        "sst2",
        "--method",
        "lora",
        "--train-on-prompt",
        "--output-dir",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "train_on_prompt=True: settings of --task commonsense, not of GLUE" in capsys.readouterr().err


def test_folded_live_piece_gives_the_same_outputs_and_restores_the_weights():
    from aroma_peft import AromaConfig, adapt
    from aroma_peft.tasks.causal_lm import default_target_modules
    from aroma_peft.tuners.aroma.fold import folded

    base = random_llama()
    model = adapt(base, AromaConfig(target_modules=default_target_modules(base), r=1, lora_dropout=0.0))
    with torch.no_grad():
        for layer in model.adapter_layers().values():
            layer.lora_A.add_(0.1)
            layer.lora_B.add_(0.1)
    ids = torch.randint(0, 64, (2, 9))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with folded(model):
            inside = model(input_ids=ids).logits
            assert not any(layer._finished is False for layer in model.adapter_layers().values())
    torch.testing.assert_close(inside, plain, rtol=1e-5, atol=1e-6)  # 2 x 9 tokens: unfolded in training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(layer.is_finished for layer in model.adapter_layers().values())


@pytest.mark.slow
def test_real_smollm2_trains_and_evaluates(tmp_path):
    """The prepared SmolLM2-135M-Instruct: 8 training rows, 3 steps of AROMA r=1, 4 test items per set."""
    data = tmp_path / "data"
    for name in ("ARC-Easy", "BoolQ"):
        rows = json.loads((SHARED_DATA / "commonsense" / name / "train.json").read_text())[:80]
        write_set(data, name, "train", rows)
        write_set(
            data, name, "test", json.loads((SHARED_DATA / "commonsense" / name / "test.json").read_text())
        )
    out = tmp_path / "run"
    args = ["train", "--task", "commonsense", "--method", "aroma", "--data-dir", data, "--output-dir", out]
    args += ["--max-train-samples", "8", "--max-steps", "3", "--batch-size", "4", "--max-eval-samples", "4"]
    args += ["--quiet", "--eval-batch-size", "4"]
    assert main([str(a) for a in args]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["accuracy"]) == {"ARC-Easy", "BoolQ"}
    assert all(s["n"] == 4 and s["valid"] == 4 for s in metrics["test"]["sets"].values())
    assert metrics["steps"] == 3 and 0 < metrics["final"]["average"] <= 100
    assert (out / "adapter").is_dir()
    # The trained run through the other commands: decoding evaluation and the uniform-rank export.
    args = ["evaluate", "--run", out, "--data-dir", data, "--eval-sets", "ARC-Easy", "--eval-limit", "2"]
    args += ["--eval-mode", "generate", "--quiet", "--output-dir", tmp_path / "eval"]
    assert main([str(a) for a in args]) == 0
    generated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert generated["mode"] == "generate" and generated["sets"]["ARC-Easy"]["n"] == 2
    assert main(["export", str(out), "--output-dir", str(tmp_path / "uniform")]) == 0
    config = json.loads((tmp_path / "uniform" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] >= 1 and config["task_type"] == "CAUSAL_LM"
