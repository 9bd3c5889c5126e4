"""Data parallelism for ``aroma train`` under ``torchrun`` / ``accelerate launch`` (torch.distributed).

The launcher's environment (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...) starts one process group:
gloo on CPU, nccl on GPUs. ``--batch-size`` stays the global batch: every process takes an equal
slice of the same global batch and gradients are averaged (DDP), so a run computes the same thing
whatever the number of processes. Only rank 0 writes files and shows progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserInputError


@dataclass
class Group:
    """This process's place in the run (rank 0 of 1 without a launcher)."""

    rank: int = 0
    world: int = 1
    owned: bool = False  # this run created the process group (and destroys it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This process's GPU (``LOCAL_RANK``) when there is one, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def setup() -> Group:
    """Join the launcher's process group, if there is one (an existing group is used as it is)."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Group()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(Group().device)
    dist.init_process_group(backend)
    return Group(dist.get_rank(), dist.get_world_size(), owned=True)


def check_batches(group: Group, batch_size: int, examples: int) -> None:
    """Every process needs rows of every batch, in equal slices of the global batch."""
    if group.world == 1:
        return
    if batch_size % group.world:
        raise UserInputError(
            f"batch_size={batch_size} is not divisible by the {group.world} processes: it is the global batch"
        )
    if 0 < examples % batch_size < group.world:
        raise UserInputError(
            f"the last batch of an epoch holds {examples % batch_size} examples, fewer than the "
            f"{group.world} processes: change batch_size or max_train_samples"
        )


def wrap(model: torch.nn.Module, group: Group) -> torch.nn.Module:
    """DDP around the model for the training forward. ``find_unused_parameters``: an AROMA module that
    finished stops using its parameters mid-run (the alternative, rebuilding DDP at every finish,
    costs a bucket rebuild and a broadcast each time). Buffers change identically on every process
    (AROMA's merges), so they are only synced once, when DDP starts."""
    if group.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, find_unused_parameters=True, forward_sync_buffers=False)


def shard(batch: dict[str, torch.Tensor], group: Group) -> tuple[dict[str, torch.Tensor], float]:
    """This process's slice of the global batch, and the factor that makes the average over processes
    of its mean loss the global batch's mean loss (1 for equal slices)."""
    device = group.device
    if group.world == 1:
        return {k: v.to(device) for k, v in batch.items()}, 1.0
    rows = len(batch["labels"])
    part = {k: torch.tensor_split(v, group.world)[group.rank].to(device) for k, v in batch.items()}
    return part, len(part["labels"]) * group.world / rows


def global_loss(loss: torch.Tensor, weight: float, group: Group) -> float:
    """The global batch's mean loss (NaN anywhere makes it NaN everywhere, so every process stops)."""
    if group.world == 1:
        return loss.item()
    total = loss.detach().reshape(1) * weight
    dist.all_reduce(total)
    return total.item() / group.world


def gather(values: list[Any], group: Group) -> list[list[Any]]:
    """Every process's list (evaluation predictions), on every process."""
    if group.world == 1:
        return [values]
    out: list[Any] = [None] * group.world
    dist.all_gather_object(out, values)
    return out
