"""torch.compile on an AROMA model: one graph (fullgraph), a recompile per finish and no more; the
finished flag a Python bool in the forward but still the saved buffer ``finished``."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyNet
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from aroma_peft import AromaConfig, AromaController, adapt, load


def adapted(net: nn.Module | None = None) -> nn.Module:
    if net is None:
        torch.manual_seed(0)
        net = TinyNet()
    return adapt(net, AromaConfig(target_modules=["up", "down"], modules_to_save=["head"]))


def train_steps(model, compiled, optimizer, controller, batch, steps: int) -> list[float]:  # noqa: ANN001
    x, y = batch
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        optimizer.step()
        controller.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def run(batch, backend: str | None) -> tuple[list[float], CompileCounterWithBackend | None]:  # noqa: ANN001
    """Three steps, a module finishes, three more steps: compiled with ``backend``, or eager (None)."""
    torch._dynamo.reset()
    model = adapted()
    counter = CompileCounterWithBackend(backend) if backend else None
    compiled = torch.compile(model, fullgraph=True, backend=counter) if backend else model
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(lr=1e-2))
    controller = AromaController(model, optimizer)
    losses = train_steps(model, compiled, optimizer, controller, batch, 3)
    frames = counter.frame_count if counter else 0
    model.model.up.finish()  # a module finishes mid-run: its forward changes
    losses += train_steps(model, compiled, optimizer, controller, batch, 3)
    if counter:
        assert counter.frame_count == frames + 1  # one recompile for the finish, none per step
    return losses, counter


def test_compiled_fullgraph_matches_eager_with_one_recompile_per_finish(batch) -> None:
    eager, _ = run(batch, None)
    compiled, counter = run(batch, "aot_eager")
    assert counter.frame_count == 2
    torch.testing.assert_close(compiled, eager)


@pytest.mark.slow
def test_inductor_compiles_an_adapted_model(batch) -> None:
    eager, _ = run(batch, None)
    compiled, _ = run(batch, "inductor")
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_finished_flag_saves_and_loads_as_the_buffer(tmp_path) -> None:
    model = adapted()
    model.model.up.finish()
    state = model.state_dict()
    assert state["model.up.finished"].item() is True and "model.down.finished" in state
    model.save_pretrained(tmp_path)
    fresh = adapted()
    fresh.load_state_dict(state)  # a full state dict (e.g. a Trainer checkpoint)
    assert fresh.model.up.is_finished and not fresh.model.down.is_finished
    assert not fresh.model.up.lora_A.requires_grad
    torch.manual_seed(0)
    restored = load(TinyNet(), tmp_path)  # our adapter format
    assert restored.model.up.is_finished and not restored.model.down.is_finished
