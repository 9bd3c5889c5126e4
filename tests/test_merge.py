"""`aroma merge`: a run's update merged into a plain transformers model that reproduces its dev metric."""

from __future__ import annotations

import json

import pytest
from test_cli import GLUE, cli
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from aroma_peft.data import batches
from aroma_peft.data.glue import get_task, load_task
from aroma_peft.tasks.glue import metrics_on
from aroma_peft.tuners.layer import AdapterLayer

TINY = ["--task", "sst2", "--data-dir", GLUE, "--max-train-samples", "32", "--max-eval-samples", "48"]
TINY += ["--batch-size", "8", "--max-seq-len", "32", "--max-steps", "6", "--quiet", "--threads", "1"]
METHODS = {
    "aroma": [
        "--t-in",
        "2",
        "--check-interval",
        "1",
        "--rewarmup-steps",
        "1",
        "--eps-out",
        "1e-9",
        "--lr",
        "1e-2",
    ],
    "lora": ["--r", "2", "--lr", "1e-2"],  # PEFT's own adapter format
}


@pytest.mark.parametrize(
    "method",
    ["aroma", pytest.param("lora", marks=pytest.mark.slow)],  # ~10 s each on a quiet 2-core CPU
)
def test_merged_model_loads_in_plain_transformers_and_scores_like_the_run(tmp_path, capsys, method):
    run, merged = tmp_path / "run", tmp_path / "merged"
    code, err = cli(["train", "--method", method, "--output-dir", run, *TINY, *METHODS[method]], capsys)
    assert code == 0, err
    code, err = cli(["merge", run, "--output-dir", merged], capsys)
    assert code == 0, err
    model = AutoModelForSequenceClassification.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert not any(isinstance(m, AdapterLayer) or "lora" in n for n, m in model.named_modules())
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, nn.Linear)
    metrics = json.loads((run / "metrics.json").read_text())
    if method == "aroma":
        assert metrics["total_rank_end"] > 36  # pieces were merged during the run, and more than one each
    spec = get_task("sst2")
    dev = batches.tokenize(tokenizer, load_task(spec, GLUE)["dev"][:48], 32)
    scores = metrics_on(model, spec, dev, 16, tokenizer.pad_token_id)
    assert scores["accuracy"] == metrics["final"]["accuracy"]
    labels = [f["labels"] for f in dev]  # the 32 training sentences hold more 1s than 0s
    assert metrics["majority_baseline"] == {"accuracy": labels.count(1) / len(labels)}
    code, err = cli(["merge", run, "--output-dir", merged], capsys)  # never over a previous merge
    assert code == 2 and "exists and is not an empty folder (--overwrite replaces it)" in err
    (merged / "stale.txt").write_text("from the replaced model")
    code, err = cli(["merge", run, "--output-dir", merged, "--overwrite"], capsys)
    assert code == 0, err
    assert not (merged / "stale.txt").exists() and (merged / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
