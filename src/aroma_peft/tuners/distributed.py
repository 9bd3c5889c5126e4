"""Rank agreement for data-parallel runs: every process adopts rank 0's decisions.

Under DDP the parameters are equal on every process, so every process would take the same decisions
anyway; but a decision that differs by one float rounding (or parameters that are not synced, as
with a user's own data-parallel code) would make processes merge, finish or prune different modules
and then hang or silently train different models. Broadcasting the decisions costs one tiny message.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def communication_device() -> torch.device:
    """nccl moves GPU tensors only, each process from its own GPU (plain "cuda" means GPU 0 on every
    process, which makes them all talk through one device); gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as rank 0 holds it (a copy on this process's device); unchanged without distribution."""
    if not is_distributed():
        return tensor
    moved = tensor.detach().to(communication_device(), copy=True)
    dist.broadcast(moved, src=0)
    return moved.to(tensor.device)


def agree(flags: list[bool]) -> list[bool]:
    """Rank 0's flags, on every process."""
    if not flags or not is_distributed():
        return flags
    return [bool(v) for v in broadcast_from_rank0(torch.tensor(flags, dtype=torch.uint8)).tolist()]
