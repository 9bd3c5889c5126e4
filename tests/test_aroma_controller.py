"""AROMA's dual loop: criteria, merges, resets, re-warmup, finishing, rank adaptation, resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import teacher_run
from torch import nn
from torch.nn import functional as F

from aroma_peft import AromaConfig, AromaController, adapt
from aroma_peft.optim import reset_state
from aroma_peft.tuners.aroma import schedule


def config(**overrides) -> AromaConfig:
    base = dict(
        target_modules=["up", "down"],
        modules_to_save=["head"],
        t_in=30,
        check_interval=5,
        warmup_steps=4,
        rewarmup_steps=3,
        eps_out=5e-3,
    )
    return AromaConfig(**{**base, **overrides})


def train(model, optimizer, controller, batch, steps: int, scheduler=None) -> list[float]:
    x, y = batch
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        controller.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if controller.finished:
            break
    return losses


# --- pure decision functions ------------------------------------------------------------------------
def test_relative_change_cases() -> None:
    assert schedule.relative_change("paper", None, 1.0, None) == math.inf  # first check: no predecessor
    assert schedule.relative_change("paper", 0.0, 1.0, None) == math.inf  # b started at zero
    assert schedule.relative_change("paper", 2.0, 1.0, None) == pytest.approx(-0.5)
    assert schedule.relative_change("abs", 2.0, 1.0, None) == pytest.approx(0.5)
    assert schedule.relative_change("delta", 2.0, 1.0, 0.4) == pytest.approx(0.2)
    assert schedule.inner_converged("paper", -0.5, 0.1)  # signed: a shrinking piece is done
    assert not schedule.inner_converged("abs", 0.5, 0.1)
    assert not schedule.inner_converged("none", -1.0, 0.1)


def test_lr_multiplier_warmup_then_rewarmup_from_the_reset() -> None:
    values = [schedule.lr_multiplier(s, 4, None, 3) for s in range(6)]
    assert values == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    # a reset after step 10 re-warms steps 10, 11, 12 (the reset event triggers it, not a cycle)
    values = [schedule.lr_multiplier(s, 4, 10, 3) for s in range(10, 14)]
    assert values == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_outer_ratio_and_decision() -> None:
    assert schedule.outer_ratio(2.0, 0.01, 10.0) == pytest.approx(0.002)
    assert schedule.module_finished(0.002, 5e-3) and not schedule.module_finished(0.01, 5e-3)
    assert not schedule.module_finished(0.0, 0.0)  # eps_out = 0 never finishes (ReLoRA-style)


# --- the controller on a tiny model -------------------------------------------------------------------
def test_inner_criterion_matches_dense_computation(tiny_net, batch) -> None:
    for criterion in ("paper", "abs", "delta"):
        model = adapt(copy.deepcopy(tiny_net), config(inner_criterion=criterion, t_in=1000, eps_in=1e-9))
        opt = torch.optim.Adam(model.optimizer_param_groups(1e-2))
        ctl = AromaController(model, opt)
        layer = model.adapter_layers()["up"]
        snapshots = []
        for step in range(1, 11):
            train(model, opt, ctl, batch, 1)
            if step % 5 == 0:
                snapshots.append(layer.lora_B.detach() @ layer.lora_A.detach())
        prev, now = (torch.linalg.norm(s).item() for s in snapshots)
        expected = {
            "paper": (now - prev) / prev,
            "abs": abs(now - prev) / prev,
            "delta": torch.linalg.norm(snapshots[1] - snapshots[0]).item() / prev,
        }[criterion]
        assert ctl.pieces["up"].prev_norm == pytest.approx(now, rel=1e-5)
        norm = layer.piece_norm()
        prev_factors = ctl.prev_factors.get("up")
        diff = None
        if prev_factors is not None:
            diff = torch.linalg.norm(snapshots[1] - prev_factors[1] @ prev_factors[0]).item()
            assert diff == pytest.approx(0.0, abs=1e-6)  # the stored predecessor is the latest check
        got = schedule.relative_change(
            criterion, prev, norm, expected * prev if criterion == "delta" else None
        )
        assert got == pytest.approx(expected, rel=1e-4)


def test_global_sync_ends_pieces_together_and_merges_without_changing_function(tiny_net, batch) -> None:
    model = adapt(tiny_net, config(eps_out=0.0))  # never finish: watch merges
    opt = torch.optim.Adam(model.optimizer_param_groups(1e-2))
    ctl = AromaController(model, opt)
    x, _ = batch
    for _ in range(60):
        before_ranks = ctl.ranks()
        train(model, opt, ctl, batch, 1)
        if ctl.ranks() != before_ranks:
            break
    merged_at = ctl.global_step
    assert set(ctl.ranks().values()) == {1}, "every module's piece ends at the same step"
    assert {e["step"] for e in ctl.events} == {merged_at}
    assert merged_at <= 30  # at the latest at t_in
    for layer in model.adapter_layers().values():
        assert torch.count_nonzero(layer.lora_B) == 0
        assert layer.lora_A.grad is None  # the old piece's gradient can never reach the new piece


def test_first_piece_is_kept_without_the_outer_check_unless_asked(tiny_net, batch) -> None:
    """eps_out so large that every piece fails the outer check: 'keep' (the reference code) still
    merges each module's first piece and finishes at the second; 'check' finishes untrained."""
    ranks = {}
    for first_piece in ("keep", "check"):
        model = adapt(copy.deepcopy(tiny_net), config(eps_out=10.0, t_in=10, first_piece=first_piece))
        opt = torch.optim.Adam(model.optimizer_param_groups(1e-2))
        ctl = AromaController(model, opt)
        train(model, opt, ctl, batch, 100)
        assert ctl.finished
        ranks[first_piece] = ctl.ranks()
        assert [e["event"] for e in ctl.events if e["module"] == "up"] == (
            ["merge", "finish"] if first_piece == "keep" else ["finish"]
        )
    assert ranks == {"keep": {"up": 1, "down": 1}, "check": {"up": 0, "down": 0}}
    with pytest.raises(ValueError, match="first_piece='first' is invalid"):
        config(first_piece="first")


def test_module_sync_runs_modules_on_their_own_clock(tiny_net, batch) -> None:
    model = adapt(tiny_net, config(sync="module", eps_out=0.0, t_in=1000, eps_in=0.05, rewarmup_steps=20))
    groups = model.optimizer_param_groups(1e-2)
    assert len(groups) == 4  # down, up, head weight, head bias
    opt = torch.optim.Adam(groups)
    ctl = AromaController(model, opt)
    index = {name: i for i, names in enumerate(ctl.group_modules) for name in names}
    solo_resets = 0
    for _ in range(150):
        seen = len(ctl.events)
        train(model, opt, ctl, batch, 1)
        new = {e["module"] for e in ctl.events[seen:]}
        if len(new) == 1 and ctl.global_step > 30:
            (reset,) = new
            other = ({"up", "down"} - new).pop()
            assert ctl.lr_multiplier(index[reset]) == pytest.approx(1 / 20)  # this module re-warms alone
            assert ctl.pieces[other].steps > 0  # the other one keeps training its piece
            solo_resets += 1
    assert solo_resets >= 2


def test_module_sync_rejects_a_shared_group(tiny_net) -> None:
    model = adapt(tiny_net, config(sync="module"))
    opt = torch.optim.Adam(model.optimizer_param_groups(1e-2, per_module=False))
    with pytest.raises(ValueError, match="one optimizer param group per module"):
        AromaController(model, opt)


def test_rewarmup_applied_to_lr_with_and_without_scheduler(tiny_net, batch) -> None:
    for use_scheduler in (False, True):
        model = adapt(copy.deepcopy(tiny_net), config(eps_out=0.0, t_in=10, check_interval=100))
        opt = torch.optim.SGD(model.optimizer_param_groups(0.1), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0) if use_scheduler else None
        ctl = AromaController(model, opt, sched)
        lrs = []
        x, y = batch
        for _ in range(16):
            lrs.append(opt.param_groups[0]["lr"])
            F.cross_entropy(model(x), y).backward()
            opt.step()
            ctl.step()
            if sched:
                sched.step()
            opt.zero_grad()
        # warmup 4 steps, full lr until the reset after step 10, then 3 re-warmup steps
        expected = [
            0.025,
            0.05,
            0.075,
            0.1,
            0.1,
            0.1,
            0.1,
            0.1,
            0.1,
            0.1,
            0.1 / 3,
            0.2 / 3,
            0.1,
            0.1,
            0.1,
            0.1,
        ]
        assert lrs == pytest.approx(expected), use_scheduler
        head_lr = opt.param_groups[-1]["lr"]
        assert head_lr == pytest.approx(0.1)  # the head is never reset, so never re-warmed


def test_optimizer_reset_modes() -> None:
    p = nn.Parameter(torch.randn(200, 500))
    for mode in ("prune", "zero", "none"):
        opt = torch.optim.Adam([p], lr=1e-3)
        p.grad = torch.randn_like(p)
        opt.step()
        state = opt.state[p]
        before = {k: v.clone() for k, v in state.items()}
        reset_state(opt, [p], mode, 0.999, torch.Generator().manual_seed(0))
        assert p.grad is None
        if mode == "zero":
            assert p not in opt.state  # fresh state: Adam restarts its step counter
        elif mode == "none":
            assert all(torch.equal(state[k], before[k]) for k in before)
        else:
            kept_m = state["exp_avg"] != 0
            kept_v = state["exp_avg_sq"] != 0
            assert torch.equal(kept_m, kept_v)  # one mask for both moments
            assert kept_m.float().mean().item() == pytest.approx(0.001, abs=0.0004)
            assert state["step"] == before["step"]


def test_finished_modules_leave_the_optimizer_and_training_ends_with_zero_trainable(tiny_net, batch) -> None:
    model = adapt(tiny_net, config(eps_out=0.05, max_steps=400))
    opt = torch.optim.Adam(model.optimizer_param_groups(1e-2))
    ctl = AromaController(model, opt)
    assert ctl.trainable_parameters() == sum(1 * (i + o) for i, o in ((12, 20), (20, 12)))
    train(model, opt, ctl, batch, 400)
    assert ctl.finished and ctl.trainable_parameters() == 0
    adapter_params = {id(p) for layer in model.adapter_layers().values() for p in layer.parameters()}
    assert not any(id(p) in adapter_params for g in opt.param_groups for p in g["params"])
    assert not any(id(p) in adapter_params for p in opt.state)
    assert model.num_trainable_parameters(include_saved_modules=False) == 0
    assert any(e["event"] == "finish" for e in ctl.events)


def test_max_steps_ends_training(tiny_net, batch) -> None:
    model = adapt(tiny_net, config(eps_out=0.0, max_steps=12))
    opt = torch.optim.Adam(model.optimizer_param_groups(1e-2))
    ctl = AromaController(model, opt)
    losses = train(model, opt, ctl, batch, 100)
    assert len(losses) == 12 and ctl.finished and ctl.trainable_parameters() == 0
    assert all(r == 1 for r in ctl.ranks().values())  # the last piece passed the outer check: kept


def test_learned_rank_grows_with_the_target_rank() -> None:
    ranks = [teacher_run("paper", k, 0.02, 3000, decay=False, t_in=100).ranks()["0"] for k in (1, 4, 8)]
    assert ranks[0] < ranks[1] < ranks[2], ranks
    assert ranks[0] >= 1


def test_resume_reproduces_an_uninterrupted_run(tiny_net, batch, tmp_path) -> None:
    from aroma_peft import load

    def fresh(net):
        model = adapt(net, config(optimizer_reset="prune", t_in=12, eps_out=0.02, max_steps=90))
        opt = torch.optim.AdamW(model.optimizer_param_groups(1e-2))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / 100)
        return model, opt, sched, AromaController(model, opt, sched)

    base_copy = copy.deepcopy(tiny_net)
    model_full, opt, sched, ctl = fresh(copy.deepcopy(tiny_net))
    train(model_full, opt, ctl, batch, 90, sched)
    full_ranks, full_events = ctl.ranks(), ctl.events

    model, opt, sched, ctl = fresh(copy.deepcopy(tiny_net))
    train(model, opt, ctl, batch, 40, sched)
    assert any(e["event"] == "merge" for e in ctl.events)
    model.save_pretrained(tmp_path / "ckpt")
    saved = {"opt": opt.state_dict(), "sched": sched.state_dict(), "ctl": ctl.state_dict()}

    resumed = load(base_copy, tmp_path / "ckpt")
    opt2 = torch.optim.AdamW(resumed.optimizer_param_groups(1e-2))
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1 - s / 100)
    ctl2 = AromaController(resumed, opt2, sched2)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    ctl2.load_state_dict(saved["ctl"])
    train(resumed, opt2, ctl2, batch, 50, sched2)
    assert ctl2.ranks() == full_ranks
    assert ctl2.events == full_events
    x, _ = batch
    assert torch.equal(resumed(x), model_full(x))


def test_an_optimizer_without_the_pieces_is_refused(tiny_net) -> None:
    optimizer = torch.optim.AdamW(tiny_net.parameters())  # built before adapt(): base weights only
    model = adapt(tiny_net, config())
    with pytest.raises(ValueError, match=r"holds no live piece of module 'up' \(2 modules in all\)"):
        AromaController(model, optimizer)
