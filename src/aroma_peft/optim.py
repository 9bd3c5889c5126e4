"""Optimizer surgery: reset a parameter's state, take parameters out, wrap a schedule."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside an Accelerate / Trainer wrapper."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def unwrap_scheduler(scheduler: object | None) -> object | None:
    inner = getattr(scheduler, "scheduler", None)
    return inner if isinstance(inner, torch.optim.lr_scheduler.LRScheduler) else scheduler


def reset_state(
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    mode: str,
    prune_ratio: float,
    generator: torch.Generator,
) -> None:
    """Reset the optimizer state of ``params`` for a fresh piece.

    ``prune`` zeroes a random ``prune_ratio`` of the entries with one mask shared by every moment (so no
    first moment survives without its second) and keeps the step counter, as ReLoRA does; ``zero``
    drops the state, restarting the step counter and bias correction; ``none`` keeps it.
    """
    optimizer = unwrap_optimizer(optimizer)
    for p in params:
        p.grad = None  # the old piece's gradient must never reach the new piece
        state = optimizer.state.get(p)
        if not state or mode == "none":
            continue
        if mode == "zero":
            del optimizer.state[p]
            continue
        keep = (torch.rand(p.shape, generator=generator) >= prune_ratio).to(p.device)
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                value.mul_(keep.to(value.dtype))


def remove_params(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> None:
    """Take ``params`` out of every group and drop their state (groups stay, possibly empty)."""
    optimizer = unwrap_optimizer(optimizer)
    ids = {id(p) for p in params}
    for group in optimizer.param_groups:
        group["params"] = [q for q in group["params"] if id(q) not in ids]
    for key in [p for p in optimizer.state if id(p) in ids]:
        del optimizer.state[key]


def wrap_lambda_scheduler(scheduler: object, multiplier: Callable[[int], float]) -> None:
    """Multiply each group's lambda of a ``LambdaLR`` by ``multiplier(group_index)``.

    Closures (not objects) so that ``scheduler.state_dict()`` stays free of them.
    """
    inner = unwrap_scheduler(scheduler)
    if not isinstance(inner, torch.optim.lr_scheduler.LambdaLR):
        raise ValueError(
            f"scheduler: {type(inner).__name__} is not supported; use a LambdaLR (every transformers "
            "schedule is one) or none"
        )

    def wrapped(original: Callable[[int], float], index: int) -> Callable[[int], float]:
        def lr_lambda(step: int) -> float:
            return original(step) * multiplier(index)

        return lr_lambda

    inner.lr_lambdas = [wrapped(fn, i) for i, fn in enumerate(inner.lr_lambdas)]


def current_lrs(scheduler: object) -> list[float]:
    """What a LambdaLR gives every group at its current step (after its lambdas changed)."""
    inner = unwrap_scheduler(scheduler)
    return [base * fn(inner.last_epoch) for base, fn in zip(inner.base_lrs, inner.lr_lambdas)]
