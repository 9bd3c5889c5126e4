"""AROMA's dual loop: when a piece is done (inner loop), and whether a module grows on (outer loop).

Call order in a training loop::

    loss.backward(); optimizer.step(); controller.step(); scheduler.step(); optimizer.zero_grad()

``step()`` runs after the optimizer step, so a reset never lets the old piece's gradient reach the new
piece. Decisions are functions of the parameters (identical on every data-parallel process) and are
broadcast from rank 0 anyway, so every process merges, resets and finishes the same modules.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ...optim import current_lrs, remove_params, reset_state, unwrap_optimizer, wrap_lambda_scheduler
from ..distributed import agree
from ..model import AdaptedModel
from ..steps import StepWatch
from . import schedule
from .config import AromaConfig
from .layer import AromaLinear, product_inner


@dataclass
class PieceState:
    """Where one module is in its current piece."""

    steps: int = 0  # optimizer steps the live piece has trained
    ready: bool = False  # inner criterion met (sticky) or t_in reached
    prev_norm: float | None = None  # ||b a||_F at the previous check
    last_reset: int | None = None  # global step at which the live piece started (None: the first)
    lr_factor_sum: float = 0.0  # sum over its steps of the lr schedule's factor (outer criterion 'lr')


class AromaController:
    """Drives every AromaLinear of an AdaptedModel; the same code serves plain loops and the Trainer."""

    def __init__(
        self,
        model: AdaptedModel,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        max_steps: int | None = None,
    ) -> None:
        """``max_steps`` (T, at which every module takes its last decision) defaults to the config's;
        the Trainer callback passes the Trainer's own when the config leaves it unset."""
        if not isinstance(model.config, AromaConfig):
            raise ValueError(
                f"AromaController needs a model adapted with AromaConfig, got {model.config.method}"
            )
        self.model = model
        self.config: AromaConfig = model.config
        self.max_steps = max_steps if max_steps is not None else self.config.max_steps
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps={self.max_steps!r} is invalid: use None or >= 1")
        self.optimizer = optimizer
        self.layers: dict[str, AromaLinear] = model.adapter_layers()  # type: ignore[assignment]
        self.pieces = {name: PieceState() for name in self.layers}
        self.prev_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.global_step = 0
        self.generator = torch.Generator().manual_seed(self.config.seed + 1)
        self.events: list[dict[str, Any]] = []
        self.group_modules = self._group_modules()
        self.module_group = {m: i for i, modules in enumerate(self.group_modules) for m in modules}
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in unwrap_optimizer(optimizer).param_groups]
        for layer in self.layers.values():
            if layer.is_finished:
                remove_params(optimizer, [layer.lora_A, layer.lora_B])
        self.watch = StepWatch(optimizer)
        self.scheduler = scheduler
        if scheduler is not None:
            wrap_lambda_scheduler(scheduler, self.lr_multiplier)
        self._apply_lr()

    # --- public ---------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return all(layer.is_finished for layer in self.layers.values())

    def ranks(self) -> dict[str, int]:
        return {name: layer.rank for name, layer in self.layers.items()}

    def trainable_parameters(self) -> int:
        """Trainable adapter parameters (0 once every module has finished)."""
        return sum(p.numel() for p in self.model.adapter_trainable_parameters())

    def step(self) -> None:
        """Account one optimizer step; check, merge, reset or finish modules as due. A step the
        gradient scaler skipped (inf/nan gradients) is not counted."""
        if self.finished:
            return
        active = [n for n, layer in self.layers.items() if not layer.is_finished]
        if self.watch.was_skipped(p for n in active for p in (self.layers[n].lora_A, self.layers[n].lora_B)):
            return
        if self.config.outer_criterion == "lr":  # the step just taken's factors, before global_step moves
            factors = self._schedule_factors()
            for name in active:
                self.pieces[name].lr_factor_sum += factors[self.module_group[name]]
        self.global_step += 1
        for name in active:
            piece = self.pieces[name]
            piece.steps += 1
            if piece.steps >= self.config.t_in:
                piece.ready = True
            elif piece.steps % self.config.check_interval == 0 and not piece.ready:
                piece.ready = self._inner_check(name)
        ready = self._agree([self.pieces[n].ready for n in active])
        if self.max_steps is not None and self.global_step >= self.max_steps:
            ending, final = active, True
        elif self.config.sync == "global":
            ending, final = (active if all(ready) else []), False
        else:
            ending, final = [n for n, r in zip(active, ready) if r], False
        if ending:
            self._end_pieces(ending, final)
        if self.scheduler is None:
            self._apply_lr()

    def finish_all(self) -> None:
        """End every module now (training stops before ``max_steps``, e.g. early stopping): each live
        piece takes the final decision it would take at the planned end, so the run ends with zero
        trainable parameters."""
        active = [n for n, layer in self.layers.items() if not layer.is_finished]
        if active:
            self._end_pieces(active, final=True)

    def lr_multiplier(self, group_index: int) -> float:
        """Warmup and per-piece re-warmup factor of a param group for the next optimizer step."""
        modules = self.group_modules[group_index]
        resets = [self.pieces[m].last_reset for m in modules if self.pieces[m].last_reset is not None]
        last_reset = max(resets) if resets else None
        return schedule.lr_multiplier(
            self.global_step, self.config.warmup_steps, last_reset, self.config.rewarmup_steps
        )

    # --- the two loops ----------------------------------------------------------------------------
    def _inner_check(self, name: str) -> bool:
        layer, piece = self.layers[name], self.pieces[name]
        norm = layer.piece_norm()
        diff = None
        if self.config.inner_criterion == "delta" and name in self.prev_factors:
            pa, pb = self.prev_factors[name]
            a, b = layer.lora_A, layer.lora_B
            sq = product_inner(b, a, b, a) + product_inner(pb, pa, pb, pa) - 2 * product_inner(b, a, pb, pa)
            diff = math.sqrt(max(sq, 0.0))
        change = schedule.relative_change(self.config.inner_criterion, piece.prev_norm, norm, diff)
        piece.prev_norm = norm
        if self.config.inner_criterion == "delta":
            self.prev_factors[name] = (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
        return schedule.inner_converged(self.config.inner_criterion, change, self.config.eps_in)

    def _end_pieces(self, names: list[str], final: bool) -> None:
        """Outer loop: keep (merge) each ended piece unless it is too small; finish modules that stop."""
        layers = self.layers
        ratios = [
            schedule.outer_ratio(
                self.config.scaling, layers[n].piece_norm(), layers[n].weight_norm(), self._lr_factor(n)
            )
            for n in names
        ]
        keep = self._agree(
            [
                schedule.keep_piece(r, self.config.eps_out, layers[n].rank == 0, self.config.first_piece)
                for n, r in zip(names, ratios)
            ]
        )
        for name, ratio, kept in zip(names, ratios, keep):
            layer, lr_factor = layers[name], self._lr_factor(name)
            if kept:
                layer.merge_live()
            if final or not kept:  # the piece that fails the outer check is discarded (Algorithm 1)
                remove_params(self.optimizer, [layer.lora_A, layer.lora_B])
                layer.finish()
                self.pieces[name] = PieceState()
            else:
                layer.start_piece(self.generator)
                params = [layer.lora_A, layer.lora_B]
                reset_state(
                    self.optimizer,
                    params,
                    self.config.optimizer_reset,
                    self.config.reset_prune_ratio,
                    self.generator,
                )
                self.pieces[name] = PieceState(last_reset=self.global_step)
            self.prev_factors.pop(name, None)
            event = "finish" if layer.is_finished else "merge"
            record = {
                "step": self.global_step,
                "module": name,
                "event": event,
                "ratio": ratio,
                "rank": layer.rank,
            }
            if self.config.outer_criterion == "lr":
                record["lr_factor"] = lr_factor  # the ratio above is already divided by it
            self.events.append(record)

    def _lr_factor(self, name: str) -> float:
        """The mean lr schedule factor over the live piece's steps (outer criterion 'lr'), else 1."""
        piece = self.pieces[name]
        if self.config.outer_criterion != "lr" or piece.steps == 0:
            return 1.0
        return piece.lr_factor_sum / piece.steps

    def _schedule_factors(self) -> list[float]:
        """Per param group, the lr the optimizer just used over its peak lr times AROMA's own warmup
        and re-warmup multiplier: what the run's schedule (e.g. a linear decay) gave that step."""
        groups = unwrap_optimizer(self.optimizer).param_groups
        factors = []
        for index, (group, base) in enumerate(zip(groups, self.base_lrs)):
            full = base * self.lr_multiplier(index) if self.group_modules[index] else 0.0
            factors.append(group["lr"] / full if full > 0 else 1.0)
        return factors

    # --- plumbing -------------------------------------------------------------------------------------
    def _group_modules(self) -> list[list[str]]:
        owner = {id(p): name for name, layer in self.layers.items() for p in (layer.lora_A, layer.lora_B)}
        groups = []
        for index, group in enumerate(unwrap_optimizer(self.optimizer).param_groups):
            modules = sorted({owner[id(p)] for p in group["params"] if id(p) in owner})
            if self.config.sync == "module" and len(modules) > 1:
                raise ValueError(
                    f"sync='module' needs one optimizer param group per module, but group {index} holds "
                    f"{len(modules)} modules: build the optimizer from model.optimizer_param_groups(lr)"
                )
            groups.append(modules)
        trained = {m for modules in groups for m in modules}
        untrained = [n for n, layer in self.layers.items() if not layer.is_finished and n not in trained]
        if untrained:
            # e.g. an optimizer built before adapt(): it updates frozen base weights, never the pieces
            raise ValueError(
                f"the optimizer holds no live piece of module {untrained[0]!r} ({len(untrained)} modules in "
                "all): build it after adapt(), from model.optimizer_param_groups(lr)"
            )
        return groups

    def _apply_lr(self) -> None:
        """Set every group's lr for the next step (the scheduler's own step does it when there is one)."""
        groups = unwrap_optimizer(self.optimizer).param_groups
        if self.scheduler is not None:
            lrs = current_lrs(self.scheduler)
        else:
            lrs = [base * self.lr_multiplier(i) for i, base in enumerate(self.base_lrs)]
        for group, lr in zip(groups, lrs):
            group["lr"] = lr

    @staticmethod
    def _agree(flags: list[bool]) -> list[bool]:
        """Every process adopts rank 0's decisions (they agree anyway when parameters are in sync)."""
        return agree(flags)

    # --- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state: together with the model, optimizer and scheduler state, a
        resumed run takes the same decisions as an uninterrupted one."""
        return {
            "global_step": self.global_step,
            "pieces": {name: asdict(piece) for name, piece in self.pieces.items()},
            "prev_factors": {n: [a.tolist(), b.tolist()] for n, (a, b) in self.prev_factors.items()},
            "generator": self.generator.get_state().tolist(),
            "events": list(self.events),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state["pieces"]) ^ set(self.layers))
        if unknown:
            raise ValueError(f"controller state does not match the model: modules {unknown}")
        self.global_step = int(state["global_step"])
        self.pieces = {name: PieceState(**piece) for name, piece in state["pieces"].items()}
        self.prev_factors = {}
        for name, (a, b) in state["prev_factors"].items():
            ref = self.layers[name].lora_A
            self.prev_factors[name] = (ref.new_tensor(a), ref.new_tensor(b))
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.events = list(state["events"])
        self._apply_lr()
