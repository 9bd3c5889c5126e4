"""Shared fixtures: tiny models for mechanisms, paths to the offline data and models."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from aroma_peft import AromaConfig, AromaController, adapt

# Tests run tiny models, where a second thread only adds synchronisation, and a busy 2-core machine
# oversubscribed by two threads made the suite up to 20x slower: one thread.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def free_port() -> int:
    """A free TCP port on localhost for a test's process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TinyNet(nn.Module):
    """Two adaptable Linear layers of different shapes and a head."""

    def __init__(self, n_in: int = 12, hidden: int = 20, n_out: int = 3) -> None:
        super().__init__()
        self.up = nn.Linear(n_in, hidden)
        self.down = nn.Linear(hidden, n_in)
        self.head = nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.down(torch.tanh(self.up(x)))))


@pytest.fixture
def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 12, generator=g), torch.randint(0, 3, (64,), generator=g)


def teacher_run(
    criterion: str, target_rank: int, eps_out: float, total: int, decay: bool, t_in: int = 50
) -> AromaController:
    """A linear layer learns a rank-``target_rank`` update (a teacher-student problem whose answer is
    known); the lr decays linearly to 0 at ``total`` (``decay``) or stays at its peak. Returns the
    controller after the run ended."""
    torch.manual_seed(0)
    n = 32
    base = nn.Linear(n, n, bias=False)
    target = base.weight.detach() + 0.3 * torch.randn(n, target_rank) @ torch.randn(target_rank, n) / n**0.5
    cfg = AromaConfig(
        target_modules=["0"],
        lora_alpha=1,
        t_in=t_in,
        check_interval=10,
        eps_out=eps_out,
        warmup_steps=10,
        rewarmup_steps=10,
        max_steps=total,
        outer_criterion=criterion,
    )
    model = adapt(nn.Sequential(base), cfg)
    opt = torch.optim.Adam(model.optimizer_param_groups(2e-2))
    factor = (lambda s: max(0.0, 1 - s / total)) if decay else (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    ctl = AromaController(model, opt, sched)
    g = torch.Generator().manual_seed(1)
    while not ctl.finished:
        x = torch.randn(128, n, generator=g)
        ((model(x) - x @ target.T) ** 2).mean().backward()
        opt.step()
        ctl.step()
        sched.step()
        opt.zero_grad()
    return ctl
