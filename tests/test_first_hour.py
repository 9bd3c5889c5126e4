"""What a new user meets first: the end-of-run summary, the majority baseline, and the library checks
behind the one-line errors (bad bytes, the wrong task folder, model names, module names)."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import RepositoryNotFoundError

from aroma_peft.data.glue import DataFileError, Example, get_task, load_task, majority_baseline
from aroma_peft.errors import UserInputError
from aroma_peft.models import check_module_names, resolve_model
from aroma_peft.train.summary import run_summary

SST2 = "sentence\tlabel\n" + "".join(f"s{i}\t{i % 3 == 0:d}\n" for i in range(9))  # six 0s, three 1s


def test_bad_byte_is_reported_at_its_own_line(tmp_path):
    for bom in (b"", b"\xef\xbb\xbf"):  # the BOM must not shift the count
        (tmp_path / "SST-2").mkdir(exist_ok=True)
        (tmp_path / "SST-2" / "train.tsv").write_bytes(
            bom + b"sentence\tlabel\na\t0\nb\t1\nc \xff\t0\nd\t1\n"
        )
        with pytest.raises(DataFileError, match=r"train\.tsv:4: not UTF-8 text"):
            load_task("sst2", tmp_path)


def test_another_tasks_folder_is_not_read_as_this_task(tmp_path):
    rte = tmp_path / "RTE"
    rte.mkdir()
    (rte / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataFileError, match=r"RTE: no CoLA/ folder and no CoLA files here \(this is the RTE"):
        load_task("cola", rte)
    (tmp_path / "my-copy").mkdir()  # a folder under another name is still taken as the task folder
    (tmp_path / "my-copy" / "train.tsv").write_text(SST2)
    (tmp_path / "my-copy" / "dev.tsv").write_text(SST2)
    assert len(load_task("sst2", tmp_path / "my-copy")["train"]) == 9


def test_majority_baseline_predicts_the_training_majority_on_dev():
    train = [Example("a", None, y) for y in (1, 1, 0)]
    dev = {"dev": [Example("a", None, y) for y in (0, 0, 0, 1, 1)]}
    assert majority_baseline(get_task("sst2"), train, dev) == {"accuracy": pytest.approx(0.4)}
    assert majority_baseline(get_task("sst2"), train, dev, max_eval_samples=3) == {"accuracy": 0.0}
    mrpc = majority_baseline(get_task("mrpc"), train, dev)
    assert mrpc["f1"] == pytest.approx(2 * 0.4 / 1.4)  # all positive: precision 0.4, recall 1
    assert majority_baseline(get_task("cola"), train, dev) == {"matthews": 0.0}
    mnli = get_task("mnli")
    devs = {"dev_matched": [Example("a", "b", 2)], "dev_mismatched": [Example("a", "b", 0)]}
    train3 = [Example("a", "b", 2)] * 2 + [Example("a", "b", 0)]
    assert majority_baseline(mnli, train3, devs) == {"accuracy": 1.0, "mm_accuracy": 0.0}
    scores = majority_baseline(
        get_task("stsb"), [Example("a", "b", 1.0)], {"dev": [Example("a", "b", 2.0)] * 2}
    )
    assert scores == {"pearson": 0.0, "spearman": 0.0}  # a constant guess has no correlation


def fake_result(**extra) -> dict:
    return {
        "main_metric": "accuracy",
        "best": {"accuracy": 0.8125, "step": 60},
        "final": {"accuracy": 0.8, "step": 125},
        "majority_baseline": {"accuracy": 0.5092},
        "trainable_params": {"start": 190082, "mean": 170000, "end": 152200},
        "steps": 125,
        "wall_time_s": 150.0,
        "total_rank_end": 70,
        **extra,
    }


def test_run_summary_says_what_judges_a_run(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter_lora").mkdir()
    ranks = {f"m{i}": {"rank": 1 + i % 3, "numerical_rank": 1, "effective_rank": 1.0} for i in range(6)}
    (tmp_path / "ranks.json").write_text(json.dumps(ranks))
    text = run_summary(fake_result(), tmp_path)
    assert "done in 2.5 min (125 steps)" in text
    assert "best 0.8125 (step 60), final 0.8000; majority class 0.5092 (+30.3 points)" in text
    assert "190,082 at the start, 152,200 at the end" in text
    assert "ranks: total 12 over 6 modules (1 to 3 per module)" in text
    assert (
        f"adapter: {tmp_path / 'adapter'}" in text
        and f"PEFT LoRA export: {tmp_path / 'adapter_lora'}" in text
    )
    assert f"aroma report {tmp_path} --out {tmp_path / 'report'}" in text
    full = run_summary(fake_result(total_rank_end=None), tmp_path)  # full fine-tuning has no ranks
    assert "ranks:" not in full


def test_a_missing_model_folder_offline_never_reaches_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(HfApi, "model_info", lambda *a, **k: pytest.fail("network request while offline"))
    for name in ("/nonexistent/model", "models/minilm"):
        with pytest.raises(UserInputError, match=f"{name}: no such folder, and not found on the hub"):
            resolve_model(name)


def test_a_hub_name_is_tried_once_with_a_short_timeout(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []

    def not_found(self, name, timeout=None):  # noqa: ANN001
        calls.append((name, timeout))
        url = f"https://huggingface.co/api/models/{name}"
        raise RepositoryNotFoundError("404", response=httpx.Response(404, request=httpx.Request("GET", url)))

    monkeypatch.setattr(HfApi, "model_info", not_found)
    with pytest.raises(UserInputError, match="models/minilm: no such folder, and not found on the hub"):
        resolve_model("models/minilm")
    assert calls == [("models/minilm", 5.0)]
    monkeypatch.setattr(HfApi, "model_info", lambda self, name, timeout=None: calls.append(name))
    assert resolve_model("org/model") == "org/model"  # found on the hub: passed on to transformers


def test_a_local_folder_is_used_as_is(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(UserInputError, match="weights.bin: a file, not a model folder"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_module_names_are_checked_against_the_model(tiny_net):
    assert check_module_names(tiny_net, None, "target_modules") is None
    assert check_module_names(tiny_net, ["up", "head"], "target_modules", linear=True) == ["up", "head"]
    with pytest.raises(
        UserInputError,
        match=r"--target-modules: no nn.Linear module named 'nonexistent' in "
        r"TinyNet; valid names include down, head, up",
    ):
        check_module_names(tiny_net, ["up", "nonexistent"], "target_modules", linear=True)
    with pytest.raises(UserInputError, match="--modules-to-save: no module named 'nohead'"):
        check_module_names(tiny_net, ["nohead"], "modules_to_save")
