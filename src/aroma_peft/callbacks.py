"""``transformers.Trainer`` integration: thin delegates to a method's controller.

Plain loops and the Trainer share one code path: the callback builds the controller when training
begins and calls its ``step()`` after every optimizer step (``on_optimizer_step`` runs after
``optimizer.step()`` and before the schedule moves on and gradients are zeroed).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState


class ControllerCallback(TrainerCallback, ExportableState):
    """Base of the method callbacks: builds, steps, checkpoints and restores a controller.

    The controller's state is saved in every Trainer checkpoint and restored on
    ``resume_from_checkpoint``, with or without ``restore_callback_states_from_checkpoint``.
    """

    def __init__(self, controller_state: dict[str, Any] | None = None) -> None:
        self.controller: Any = None
        self.controller_state = controller_state
        self.max_steps: int | None = None  # the Trainer's, known at on_train_begin

    def make_controller(self, model: Any, optimizer: Any, lr_scheduler: Any) -> Any:
        raise NotImplementedError

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        model = kwargs["model"]
        model = getattr(model, "module", model)  # DistributedDataParallel
        self.max_steps = state.max_steps if state.max_steps > 0 else None
        self.controller = self.make_controller(model, kwargs["optimizer"], kwargs.get("lr_scheduler"))
        saved = self.controller_state
        if saved is None and state.global_step > 0:
            # Resuming without restore_callback_states_from_checkpoint: the loaded TrainerState has it.
            stored = state.stateful_callbacks.get(type(self).__name__)
            stored = stored[0] if isinstance(stored, list) else stored
            saved = (stored or {}).get("args", {}).get("controller_state")
            if saved is None:
                raise ValueError(
                    f"{type(self).__name__}: the checkpoint at step {state.global_step} holds no controller "
                    "state; resuming would repeat the method's decisions"
                )
        if saved is not None:
            self.controller.load_state_dict(saved)

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        assert self.controller is not None, f"{type(self).__name__}.on_train_begin did not run"
        self.controller.step()
        if getattr(self.controller, "finished", False):
            control.should_training_stop = True

    def state(self) -> dict[str, Any]:
        current = self.controller.state_dict() if self.controller else self.controller_state
        return {"args": {"controller_state": current}, "attributes": {}}


class AromaCallback(ControllerCallback):
    """Drives AROMA's controller from the Trainer and stops training once every module has finished.

    The re-warmup multiplies the Trainer's own schedule, so set ``warmup_steps`` in ``AromaConfig``
    (not in ``TrainingArguments``). Unless ``AromaConfig.max_steps`` is set, the controller's T is the
    Trainer's ``state.max_steps`` (optimizer steps, also with gradient accumulation), so every module
    still growing at the end takes its last outer decision: its live piece is merged or dropped.
    """

    def make_controller(self, model: Any, optimizer: Any, lr_scheduler: Any) -> Any:
        from .tuners.aroma.controller import AromaController

        max_steps = model.config.max_steps or self.max_steps  # the config's own T wins
        return AromaController(model, optimizer, lr_scheduler, max_steps=max_steps)
