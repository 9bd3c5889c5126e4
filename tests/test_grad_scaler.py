"""fp16 with a gradient scaler: a step the scaler skips (inf/nan gradients) is neither fatal nor counted
by the AROMA or SoRA controller; the run matches one in which that step never happened."""

from __future__ import annotations

import pytest
import torch
from test_sora import Tiny
from test_sora import config as sora_config
from torch import nn

from aroma_peft import AromaConfig, AromaController, SoraController, adapt

BAD = 3  # the step whose gradients are poisoned


def aroma_config() -> AromaConfig:
    return AromaConfig(
        target_modules=["up", "down"], r=2, lora_alpha=4, t_in=4, check_interval=2, eps_out=1e-4, max_steps=12
    )


def run(
    method: str, steps: int, poison: int | None, drop: int | None = None
) -> tuple[list, nn.Module, object]:
    """A plain fp16 loop with ``torch.amp.GradScaler("cpu")``; at step ``poison`` one gradient is inf;
    batch ``drop`` is left out."""
    model = adapt(Tiny(), aroma_config() if method == "aroma" else sora_config(sparse_lambda=0.1, xi=1e-3))
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(1e-2))
    make = AromaController if method == "aroma" else SoraController
    controller = make(model, optimizer)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(8, 12, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(steps)
    ]
    batches = [b for i, b in enumerate(batches) if i != drop]
    trace = []
    for step, (x, y) in enumerate(batches):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        if method == "sora":
            loss = loss + controller.penalty()
        scaler.scale(loss).backward()
        if step == poison:
            model.model.up.lora_A.grad[0, 0] = float("inf")
        before = (controller.global_step, scaler.get_scale())
        scaler.step(optimizer)
        scaler.update()
        controller.step()
        optimizer.zero_grad()
        trace.append((step, before, controller.global_step, scaler.get_scale()))
        if step == poison:
            # the scaler skipped the step and halved its scale; the controller did not count it
            assert scaler.get_scale() == before[1] / 2
            assert controller.global_step == before[0]
    return trace, model, controller


@pytest.mark.parametrize("method", ["aroma", "sora"])
def test_a_skipped_step_is_not_counted(method: str) -> None:
    _, poisoned, ctl_p = run(method, steps=10, poison=BAD)
    _, clean, ctl_c = run(method, steps=10, poison=None, drop=BAD)  # the same updates, no skipped step
    assert ctl_p.watch.skipped == 1 and ctl_c.watch.skipped == 0
    assert ctl_p.global_step == ctl_c.global_step == 9
    # the scale halves on the skip, an exact power of two: unscaled gradients and updates are the same
    for (name, p), (_, q) in zip(poisoned.state_dict().items(), clean.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    if method == "aroma":
        assert {n: s.steps for n, s in ctl_p.pieces.items()} == {n: s.steps for n, s in ctl_c.pieces.items()}
        assert [e["step"] for e in ctl_p.events] == [e["step"] for e in ctl_c.events]
        assert ctl_p.events, "the short run must merge at least one piece"
    else:
        assert ctl_p.history[-1]["ranks"] == ctl_c.history[-1]["ranks"]


def test_aroma_piece_steps_stop_on_a_skipped_step() -> None:
    """Step by step: the piece counters of every live module stand still on the skipped step only."""
    trace, _, _ = run("aroma", steps=6, poison=BAD)
    counted = [after - before[0] for _, before, after, _ in trace]
    assert counted == [1, 1, 1, 0, 1, 1]


def test_trainer_callback_does_not_count_a_step_accelerate_skipped() -> None:
    """The Trainer calls ``on_optimizer_step`` also after a skipped step (transformers 5); Accelerate's
    wrapper skips the inner ``optimizer.step()`` through its scaler, and the callback's controller sees
    it. (Accelerate refuses fp16 on CPU, so the wrapper is built here with a CPU scaler.)"""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer
    from accelerate.state import AcceleratorState
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from aroma_peft import AromaCallback

    args = TrainingArguments("unused", report_to=[], use_cpu=True)
    _ = args.device  # sets up (and resets) Accelerate's state, before the Accelerator below
    Accelerator(cpu=True)
    try:
        model = adapt(Tiny(), aroma_config())
        inner = torch.optim.AdamW(model.optimizer_param_groups(1e-2))
        optimizer = AcceleratedOptimizer(inner, device_placement=False, scaler=torch.amp.GradScaler("cpu"))
        callback = AromaCallback()
        callback.controller = AromaController(model, optimizer)
        counted = []
        for step in range(4):
            loss = nn.functional.cross_entropy(model(torch.randn(8, 12)), torch.randint(0, 3, (8,)))
            optimizer.scaler.scale(loss).backward()
            if step == 2:
                model.model.down.lora_B.grad[0, 0] = float("nan")
            optimizer.step()
            callback.on_optimizer_step(args, TrainerState(), TrainerControl())
            optimizer.zero_grad()
            counted.append((optimizer.step_was_skipped, callback.controller.global_step))
        assert counted == [(False, 1), (False, 2), (True, 2), (False, 3)]
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
