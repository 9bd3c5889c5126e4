"""SoRA's driver: the sparse penalty, the proximal step on the gates, the xi stages and pruning.

Call order in a plain training loop::

    loss = task_loss + controller.penalty()       # sparse_lambda * mean(|g|) over every gate
    loss.backward(); clip(...); optimizer.step()
    controller.step()                             # proximal step on the gates, stage bookkeeping
    scheduler.step(); optimizer.zero_grad()

Instead of adding ``penalty()`` to the loss, a loop may call ``controller.add_penalty_grad()`` once
per optimizer step before the first backward of its accumulation window: the penalty's gradient
``sparse_lambda * sign(g) / N`` only depends on the gates, which do not change within the window, so
both give the same gradients, before clipping. ``SoraCallback`` uses the second form
(``on_step_begin``), so the Trainer's own loss stays untouched yet clipping sees the penalty, as in
the reference code where the penalty is part of the loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...optim import unwrap_optimizer
from ..distributed import broadcast_from_rank0, is_distributed
from ..model import AdaptedModel
from ..steps import StepWatch
from . import schedule
from .config import SoraConfig
from .layer import SoraLinear
from .prox import apply_prox


class SoraController:
    """Drives every SoraLinear of an AdaptedModel; the same code serves plain loops and the Trainer.

    ``optimizer`` must hold every live gate in a param group without weight decay (build it from
    ``model.optimizer_param_groups(lr)`` or :func:`param_groups`). ``history`` holds the active rank
    per module whenever it changed, checked every ``record_every`` steps and at every stage end.
    """

    def __init__(self, model: AdaptedModel, optimizer: torch.optim.Optimizer, record_every: int = 50) -> None:
        config = getattr(model, "config", None)
        if not isinstance(config, SoraConfig):
            method = getattr(config, "method", config)
            raise ValueError(f"SoraController needs a model adapted with SoraConfig, got {method!r}")
        if record_every < 1:
            raise ValueError(f"record_every={record_every!r} is invalid: use a number of steps >= 1")
        self.model = model
        self.config: SoraConfig = config
        self.optimizer = optimizer
        self.record_every = record_every
        self.layers: dict[str, SoraLinear] = model.adapter_layers()  # type: ignore[assignment]
        self.xis = schedule.stage_xis(config)
        self.stage = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []  # {"step", "stage", "ranks": {module: active rank}}
        self.stage_ends: list[dict[str, Any]] = []  # {"step", "stage", "xi", "ranks"} at each stage end
        self._gate_groups = self._find_gate_groups()
        self.watch = StepWatch(optimizer)
        self._record(force=True)

    # --- public ---------------------------------------------------------------------------------
    @property
    def xi(self) -> float:
        """The proximal threshold of the current stage."""
        return self.xis[self.stage]

    @property
    def num_stages(self) -> int:
        return len(self.xis)

    def gates(self) -> list[nn.Parameter]:
        """The gates still trained (not those of pruned modules)."""
        return [layer.gate for layer in self.layers.values() if not layer.is_pruned]

    def penalty(self) -> torch.Tensor:
        """``sparse_lambda * mean(|g|)`` over every live gate of the model: add it to the task loss."""
        gates = self.gates()
        if not gates or self.config.sparse_lambda == 0:
            return torch.zeros((), device=self.model_device())
        return self.config.sparse_lambda * torch.cat([g.abs().reshape(-1) for g in gates]).mean()

    @torch.no_grad()
    def add_penalty_grad(self) -> None:
        """Add the gradient of :meth:`penalty` to the gates' ``.grad`` (sign(0) = 0, as autograd's |g|)."""
        gates = self.gates()
        total = sum(g.numel() for g in gates)
        if not total or self.config.sparse_lambda == 0:
            return
        weight = self.config.sparse_lambda / total
        for g in gates:
            grad = g.sign() * weight
            g.grad = grad if g.grad is None else g.grad.add_(grad)

    @torch.no_grad()
    def step(self) -> None:
        """Account one optimizer step: the proximal step on every gate, then the stage bookkeeping.
        A step the gradient scaler skipped (inf/nan gradients) is not counted and moves no gate."""
        live = [layer for layer in self.layers.values() if not layer.is_pruned]
        if self.watch.was_skipped(p for layer in live for p in (layer.gate, layer.lora_A, layer.lora_B)):
            return
        if self.config.stage_steps is not None:
            self.stage = schedule.stage_at(self.global_step, self.config.stage_steps, self.num_stages)
        groups = unwrap_optimizer(self.optimizer).param_groups
        for index, gates in self._gate_groups:
            for gate in gates:
                apply_prox(self.config.prox, gate.data, self.xi, groups[index]["lr"])
        self._agree_gates()
        self.global_step += 1
        steps = self.config.stage_steps
        if (
            steps is not None
            and self.global_step % steps == 0
            and self.global_step // steps <= self.num_stages
        ):
            self.end_stage()
        else:
            self._record()

    def end_stage(self) -> bool:
        """Record the current stage's end and move to the next xi; False once on the last stage.

        Called by :meth:`step` when ``stage_steps`` is set, otherwise by the training loop.
        """
        self.stage_ends.append(
            {"step": self.global_step, "stage": self.stage, "xi": self.xi, "ranks": self.ranks()}
        )
        self._record(force=True)
        if self.stage + 1 >= self.num_stages:
            return False
        self.stage += 1
        return True

    def ranks(self) -> dict[str, int]:
        """Active rank (non-zero gates) per module."""
        return {name: layer.rank for name, layer in self.layers.items()}

    def num_active_gates(self) -> int:
        return sum(self.ranks().values())

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        return parameter_counts(self.model)

    def model_device(self) -> torch.device:
        return next(iter(self.layers.values())).lora_A.device

    # --- plumbing -------------------------------------------------------------------------------------
    def _agree_gates(self) -> None:
        """Every process takes rank 0's gates after the proximal step, so the ranks switched off (and
        pruned later) are the same everywhere, even if the processes' gates drifted apart by rounding."""
        gates = [gate for _, group in self._gate_groups for gate in group]
        if not gates or not is_distributed():
            return
        flat = broadcast_from_rank0(torch.cat([g.detach().reshape(-1) for g in gates]))
        for gate, value in zip(gates, flat.split([g.numel() for g in gates])):
            gate.data.copy_(value.view_as(gate))

    def _find_gate_groups(self) -> list[tuple[int, list[nn.Parameter]]]:
        groups = unwrap_optimizer(self.optimizer).param_groups
        where = {id(p): i for i, group in enumerate(groups) for p in group["params"]}
        found: dict[int, list[nn.Parameter]] = {}
        for name, layer in self.layers.items():
            if layer.is_pruned:
                continue
            index = where.get(id(layer.gate))
            if index is None:
                raise ValueError(
                    f"the gate of {name!r} is in no optimizer param group: build the optimizer from "
                    "model.optimizer_param_groups(lr) (or aroma_peft.sora_param_groups)"
                )
            if groups[index].get("weight_decay", 0.0) != 0:
                raise ValueError(
                    f"the gate of {name!r} is in a param group with weight_decay="
                    f"{groups[index]['weight_decay']!r}: gates take no weight decay; build the optimizer "
                    "from model.optimizer_param_groups(lr, weight_decay), which gives gates their own group"
                )
            found.setdefault(index, []).append(layer.gate)
        return sorted(found.items())

    def _record(self, force: bool = False) -> None:
        """Append the active ranks if they changed; checked every ``record_every`` steps (a fixed
        grid, so a resumed run records the same history) and at stage ends."""
        if not force and self.global_step % self.record_every != 0:
            return
        ranks = self.ranks()
        last = self.history[-1] if self.history else None
        if last is None or last["ranks"] != ranks or last["stage"] != self.stage:
            self.history.append({"step": self.global_step, "stage": self.stage, "ranks": ranks})

    # --- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state: with the model, optimizer and scheduler state, a resumed run
        continues exactly (the proximal step itself has no randomness)."""
        return {
            "global_step": self.global_step,
            "stage": self.stage,
            "xis": list(self.xis),
            "history": list(self.history),
            "stage_ends": list(self.stage_ends),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if [float(x) for x in state["xis"]] != self.xis:
            raise ValueError(f"controller state has xi stages {state['xis']}, this config {self.xis}")
        self.global_step = int(state["global_step"])
        self.stage = int(state["stage"])
        self.history = list(state["history"])
        self.stage_ends = list(state["stage_ends"])


def param_groups(
    model: AdaptedModel, lr: float, weight_decay: float = 0.0, gate_lr: float | None = None
) -> list[dict[str, Any]]:
    """``model.optimizer_param_groups(lr, weight_decay)`` with the gates' group at ``gate_lr``."""
    groups = model.optimizer_param_groups(lr, weight_decay)
    if gate_lr is not None:
        for group in groups:
            if group.get("kind") == "gate":
                group["lr"] = gate_lr
    return groups


def prune(model: AdaptedModel) -> dict[str, int]:
    """Remove every rank whose gate is exactly 0 from every SoRA module; returns the rank per module.

    The result is an ordinary LoRA with one rank per module (``export_lora`` leaves out rank-0
    modules); ``save_pretrained`` / ``load`` round-trip it. Parameters are replaced, so build a new
    optimizer (and controller) to train on.
    """
    layers = {n: m for n, m in model.adapter_layers().items() if isinstance(m, SoraLinear)}
    if not layers:
        raise ValueError("prune: the model has no SoRA module (adapt it with SoraConfig)")
    return {name: layer.prune() for name, layer in layers.items()}


def parameter_counts(model: AdaptedModel) -> dict[str, dict[str, int]]:
    """Exact per-module counts (see ``SoraLinear.parameter_counts``) plus a ``total`` row."""
    rows = {n: m.parameter_counts() for n, m in model.adapter_layers().items() if isinstance(m, SoraLinear)}
    keys = ("r_max", "active", "before", "after")
    rows["total"] = {k: sum(row[k] for row in rows.values()) for k in keys}
    return rows
