"""SoRA's pure parts: proximal operators, xi schedules, stage bookkeeping, config validation."""

import math

import pytest
import torch

from aroma_peft import SoraConfig
from aroma_peft.tuners.sora import schedule
from aroma_peft.tuners.sora.prox import apply_prox

XI = 0.5  # a power of two keeps every hand-computed value exact in float32


@pytest.mark.parametrize(
    "kind, lr, before, after",
    [
        # official: shrink by xi, then zero |p| < xi on the shrunk values: everything below 2 xi -> 0
        ("official", 1.0, [1.5 * XI, -1.5 * XI], [0.0, 0.0]),
        ("official", 1.0, [2.5 * XI, -2.5 * XI], [1.5 * XI, -1.5 * XI]),
        ("official", 1.0, [0.5 * XI, -0.5 * XI, 0.0], [0.0, 0.0, 0.0]),
        ("official", 1.0, [XI, -XI], [XI, -XI]),  # the reference's strict inequalities leave |p| = xi
        ("official", 1.0, [2.0 * XI], [XI]),
        ("official", 1e-3, [1.5 * XI], [0.0]),  # not scaled by the learning rate
        # soft: sign(p) max(|p| - xi, 0)
        ("soft", 1.0, [1.5 * XI, -1.5 * XI], [0.5 * XI, -0.5 * XI]),
        ("soft", 1.0, [0.5 * XI, -XI, 3.0], [0.0, 0.0, 2.5]),
        # soft_lr: threshold xi * lr
        ("soft_lr", 0.25, [1.0, -1.0, 0.1], [1.0 - 0.125, -1.0 + 0.125, 0.0]),
    ],
)
def test_prox_hand_values(kind, lr, before, after):
    gate = torch.tensor(before)
    apply_prox(kind, gate, XI, lr)
    assert gate.tolist() == after


@pytest.mark.parametrize("kind", ["official", "soft", "soft_lr"])
def test_prox_with_zero_xi_changes_nothing(kind):
    gate = torch.tensor([1e-9, -3.0, 0.0, 0.7])
    apply_prox(kind, gate, 0.0, 1.0)
    assert gate.tolist() == torch.tensor([1e-9, -3.0, 0.0, 0.7]).tolist()


def test_prox_unknown_kind():
    with pytest.raises(ValueError, match="prox='hard' is unknown"):
        apply_prox("hard", torch.zeros(2), 0.1, 1.0)


@pytest.mark.parametrize(
    "kind, xi_0, xi_max, n, expected",
    [
        ("linear", 0.0, 7e-4, 8, [i * 1e-4 for i in range(8)]),
        ("linear", 1e-4, 1e-4, 3, [1e-4, 1e-4, 1e-4]),
        ("exp-linear", 1e-5, 1e-3, 3, [1e-5, 1e-4, 1e-3]),
        ("log-linear", 0.0, 1.0, 3, [0.0, math.log((1 + math.e) / 2), 1.0]),
        ("linear", 3e-4, 7e-4, 1, [3e-4]),
    ],
)
def test_xi_values(kind, xi_0, xi_max, n, expected):
    assert schedule.xi_values(kind, xi_0, xi_max, n) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_stage_xis_from_config():
    base = {"target_modules": ["q"]}
    assert schedule.stage_xis(SoraConfig(**base, xi=2e-4)) == [2e-4]
    assert schedule.stage_xis(SoraConfig(**base, xi_schedule=[0, 1e-4])) == [0.0, 1e-4]
    cfg = SoraConfig(**base, xi=0.0, xi_schedule="linear", xi_max=7e-4, xi_stages=8)
    assert schedule.stage_xis(cfg) == pytest.approx([i * 1e-4 for i in range(8)])
    cfg = SoraConfig(
        **base, xi=1e-5, xi_schedule="exp_linear", xi_max=1e-3, xi_stages=3
    )  # reference spelling
    assert cfg.xi_schedule == "exp-linear"


def test_stage_at():
    assert [schedule.stage_at(s, 3, 3) for s in range(11)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
    assert schedule.stage_at(100, None, 3) == 0


def test_summarize_stages_relative_to_first_stage_best():
    evaluations = [
        {"stage": 0, "memorization": 0.80, "generalization": 0.50, "xi": 0.0},
        {"stage": 0, "memorization": 0.90, "generalization": 0.40, "xi": 0.0},
        {"stage": 1, "memorization": 0.45, "generalization": 0.55, "xi": 1e-4, "active": 12},
        {"stage": 1, "memorization": 0.72, "generalization": 0.25, "xi": 1e-4, "active": 10},
    ]
    rows = schedule.summarize_stages(evaluations)
    assert [r["stage"] for r in rows] == [0, 1]
    assert rows[0]["memorization"] == 0.90 and rows[0]["generalization"] == 0.50
    assert rows[1]["memorization_ratio"] == pytest.approx(0.8)
    assert rows[1]["generalization_ratio"] == pytest.approx(1.1)
    assert rows[1]["active"] == 10 and rows[1]["xi"] == 1e-4
    low = schedule.summarize_stages(evaluations, higher_is_better=False)
    assert low[1]["memorization_ratio"] == pytest.approx(0.45 / 0.80)
    assert schedule.summarize_stages([]) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"target_modules": None}, "target_modules=None is invalid"),
        ({"r": 0}, "r=0 is invalid"),
        ({"sparse_lambda": -1.0}, "sparse_lambda=-1.0 is invalid"),
        ({"xi": -1e-4}, "xi=-0.0001 is invalid"),
        ({"prox": "hard"}, r"prox='hard' is invalid: use one of \('official', 'soft', 'soft_lr'\)"),
        ({"gate_init": "zeros"}, "gate_init='zeros' is invalid"),
        ({"xi_schedule": "cosine", "xi_max": 1e-3, "xi_stages": 3}, "xi_schedule='cosine' is invalid"),
        ({"xi_schedule": "linear", "xi_stages": 3}, "xi_max=None is invalid: xi_schedule='linear' needs"),
        ({"xi_schedule": "linear", "xi_max": 1e-3}, "xi_stages=None is invalid"),
        ({"xi_schedule": "linear", "xi_max": 1e-3, "xi_stages": 0}, "xi_stages=0 is invalid"),
        (
            {"xi": 0.0, "xi_schedule": "exp-linear", "xi_max": 1e-3, "xi_stages": 3},
            "xi=0.0 is invalid: 'exp-linear'",
        ),
        ({"xi_schedule": []}, r"xi_schedule=\[\] is invalid"),
        ({"xi_schedule": [1e-4, -1.0]}, "xi_schedule=.* is invalid: give a non-empty list"),
        ({"xi_max": 1e-3}, "xi_max=0.001 is invalid: only used with"),
        ({"xi_schedule": [0.0, 1e-4], "xi_stages": 2}, "xi_stages=2 is invalid: only used with"),
        ({"stage_steps": 100}, "stage_steps=100 is invalid: stages need an xi_schedule"),
        ({"xi_schedule": [0.0], "stage_steps": 0}, "stage_steps=0 is invalid"),
    ],
)
def test_bad_configs(kwargs, message):
    kwargs = {"target_modules": ["q"], **kwargs}
    with pytest.raises(ValueError, match=message):
        SoraConfig(**kwargs)


def test_config_round_trip():
    cfg = SoraConfig(
        target_modules=["q"], xi=0.0, xi_schedule="linear", xi_max=7e-4, xi_stages=7, stage_steps=5
    )
    assert SoraConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.scaling == 16 / 8
