"""The base of the ``transformers.Trainer`` callbacks of every method: builds, steps, checkpoints and
restores a method's controller. It sits in ``tuners/`` (below the methods' folders) so a method's own
callback (``tuners/sora/callback.py``) imports it downwards; ``aroma_peft.callbacks`` re-exports it.
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
        if self.controller is not None:  # train() again: the old controller's step hook must go
            self.controller.watch.close()
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
