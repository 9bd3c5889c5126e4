"""AROMA's stop under a decaying learning rate: the outer criterion 'lr' judges a piece per unit of the
lr it was trained with, so a schedule running down cannot finish a module by itself."""

from __future__ import annotations

import json

import pytest
from conftest import teacher_run
from test_evidence import train_args
from tiny_glue import write_tiny_glue

from aroma_peft import AromaConfig, AromaController
from aroma_peft.cli import main
from aroma_peft.tuners.aroma import schedule


def finished_before_the_end(ctl: AromaController) -> bool:
    return any(e["event"] == "finish" and e["step"] < ctl.max_steps for e in ctl.events)


def test_outer_ratio_divides_by_the_mean_lr_factor() -> None:
    assert schedule.outer_ratio(2.0, 0.01, 10.0, 0.25) == pytest.approx(0.008)
    assert schedule.outer_ratio(2.0, 0.01, 10.0) == schedule.outer_ratio(2.0, 0.01, 10.0, 1.0)
    assert schedule.outer_ratio(2.0, 0.0, 10.0, 0.0) == 0.0  # no lr, no piece: its plain ratio


def test_a_decaying_lr_finishes_a_module_under_paper_but_not_under_lr() -> None:
    # At the peak lr this module keeps growing pieces above eps_out until the planned end ...
    constant = teacher_run("paper", 16, 0.04, 600, decay=False)
    assert not finished_before_the_end(constant)
    # ... so a linear decay is what finishes it early under the paper's criterion,
    decayed = teacher_run("paper", 16, 0.04, 600, decay=True)
    assert finished_before_the_end(decayed)
    # and the criterion per unit of lr keeps it growing to the end, with more rank.
    normalised = teacher_run("lr", 16, 0.04, 600, decay=True)
    assert not finished_before_the_end(normalised)
    assert normalised.ranks()["0"] > decayed.ranks()["0"]
    factors = [e["lr_factor"] for e in normalised.events]
    assert factors[0] > 0.9 and factors[-2] < 0.1  # the late pieces trained at a small lr


def test_lr_criterion_equals_paper_under_a_constant_lr() -> None:
    paper = teacher_run("paper", 16, 0.1, 400, decay=False)
    lr = teacher_run("lr", 16, 0.1, 400, decay=False)
    assert [(e["step"], e["event"], e["rank"]) for e in lr.events] == [
        (e["step"], e["event"], e["rank"]) for e in paper.events
    ]
    assert [e["ratio"] for e in lr.events] == pytest.approx([e["ratio"] for e in paper.events])
    assert all(e["lr_factor"] == pytest.approx(1.0) for e in lr.events)


def test_lr_criterion_stops_a_learned_module_at_the_same_step_whatever_the_planned_total() -> None:
    # A rank-1 target is learned by the first piece: the stop follows that, not the planned total.
    stops = {total: teacher_run("lr", 1, 0.1, total, decay=True).global_step for total in (300, 1200)}
    assert stops[300] == stops[1200] < 300


def test_outer_criterion_is_validated() -> None:
    with pytest.raises(
        ValueError, match=r"outer_criterion='weight' is invalid: use one of \('paper', 'lr'\)"
    ):
        AromaConfig(target_modules=["q"], outer_criterion="weight")


def test_aroma_train_takes_the_outer_criterion(tmp_path):
    """`aroma train --outer-criterion lr`: the option reaches the controller (its events carry the mean
    lr factor, below 1 under the linear decay) and is saved in config.json."""
    tiny = write_tiny_glue(tmp_path)
    out = tmp_path / "run"
    flags = ["--method", "aroma", "--outer-criterion", "lr", "--t-in", "3", "--check-interval", "1"]
    assert main(train_args(tiny, out, *flags)) == 0
    assert json.loads((out / "config.json").read_text())["outer_criterion"] == "lr"
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    events = [e for r in log if r["type"] == "train" for e in r.get("events", [])]
    assert events and all(0 < e["lr_factor"] < 1 for e in events)
    assert main(train_args(tiny, tmp_path / "bad", "--method", "aroma", "--outer-criterion", "x")) == 2
