"""`aroma export`: a run's update as a PEFT LoRA adapter that unmodified peft applies exactly as the run."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import cli
from test_commonsense_train import data, run  # noqa: F401
from test_merge import TINY
from tiny_llm import tiny_llm_dir  # noqa: F401

from aroma_peft.cli import main
from aroma_peft.evaluation import attach_run
from aroma_peft.tasks import get_task

# Pieces end every 2 steps and no module finishes: several merged pieces per module by step 8.
AROMA = ["--t-in", "2", "--check-interval", "1", "--rewarmup-steps", "1", "--eps-out", "1e-9"]


@pytest.fixture(scope="module")
def aroma_run(tiny_llm_dir, data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("export") / "run"
    run(tiny_llm_dir, data, out, "aroma", "--max-steps", "8", *AROMA)
    return out


def outputs(tiny_llm_dir, adapter=None, run_dir=None) -> torch.Tensor:  # noqa: F811
    from peft import PeftModel

    base, _ = get_task("commonsense").load_model(str(tiny_llm_dir))
    model = PeftModel.from_pretrained(base, adapter) if adapter else attach_run(base, run_dir)
    x = torch.arange(40).reshape(2, 20) % base.config.vocab_size
    with torch.no_grad():
        return model.eval()(x).logits


@pytest.mark.parametrize(
    ("args", "rank"), [([], None), (["--rank", "16"], 16), (["--format", "patterns"], None)]
)
def test_exported_adapter_reproduces_the_run_in_plain_peft(
    tiny_llm_dir,  # noqa: F811
    aroma_run,
    tmp_path,
    capsys,
    args,
    rank,
):
    ranks = {m: v["rank"] for m, v in json.loads((aroma_run / "ranks.json").read_text()).items()}
    assert max(ranks.values()) > 1  # pieces were merged: a real multi-piece update
    out = tmp_path / "adapter"
    assert main([str(a) for a in ["export", aroma_run, "--output-dir", out, *args]]) == 0
    printed = capsys.readouterr().out
    config = json.loads((out / "adapter_config.json").read_text())
    if "patterns" in args:
        assert config["rank_pattern"]
    else:
        r = rank or max(ranks.values())
        assert (config["r"], config["lora_alpha"]) == (r, r) and not config["rank_pattern"]
        assert f"rank {r} for every module, lora_alpha {r}" in printed
    torch.testing.assert_close(
        outputs(tiny_llm_dir, adapter=out), outputs(tiny_llm_dir, run_dir=aroma_run), rtol=1e-4, atol=1e-5
    )


def test_export_refusals_are_one_line(tiny_llm_dir, data, aroma_run, tmp_path, capsys):  # noqa: F811
    lora = tmp_path / "lora"
    run(tiny_llm_dir, data, lora, "lora", "--max-steps", "1")
    code, err = cli(["export", lora, "--output-dir", tmp_path / "x"], capsys)
    assert code == 2 and "method 'lora' saved a PEFT adapter already: serve it as is" in err
    code, err = cli(
        ["export", aroma_run, "--output-dir", tmp_path / "x", "--format", "patterns", "--rank", "8"], capsys
    )
    assert code == 2 and "--rank pads the uniform export" in err
    code, err = cli(["export", aroma_run, "--output-dir", tmp_path / "x", "--rank", "1"], capsys)
    assert code == 2 and "below the largest module rank" in err and not (tmp_path / "x").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    code, err = cli(["export", aroma_run, "--output-dir", tmp_path / "full"], capsys)
    assert code == 2 and "exists and is not an empty folder" in err
    code, err = cli(["export", aroma_run, "--output-dir", tmp_path / "full", "--overwrite"], capsys)
    assert code == 2 and "holds no adapter (no adapter_config.json)" in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep"


def test_uniform_export_refuses_a_trained_head(tmp_path, capsys):
    """A GLUE run trains its classifier in full (modules_to_save), which vLLM refuses: patterns keeps it."""
    glue = tmp_path / "glue"
    code, err = cli(["train", "--method", "aroma", "--output-dir", glue, *TINY, "--max-steps", "2"], capsys)
    assert code == 0, err
    code, err = cli(["export", glue, "--output-dir", tmp_path / "u"], capsys)
    assert code == 2 and "modules_to_save" in err and "--format patterns keeps them" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".u.")]  # no temporary left
    code, err = cli(["export", glue, "--output-dir", tmp_path / "p", "--format", "patterns"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["modules_to_save"]
