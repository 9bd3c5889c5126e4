"""Shared fixtures: tiny models for mechanisms, paths to the offline data and models."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from torch import nn

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
