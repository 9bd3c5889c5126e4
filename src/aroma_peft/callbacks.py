"""``transformers.Trainer`` integration: a thin delegate to :class:`AromaController`."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from .tuners.aroma.controller import AromaController


class AromaCallback(TrainerCallback, ExportableState):
    """Drives AROMA's controller from the Trainer and stops training once every module has finished.

    The re-warmup multiplies the Trainer's own schedule, so set ``warmup_steps`` in ``AromaConfig``
    (not in ``TrainingArguments``). The controller's state is saved in Trainer checkpoints; to resume,
    set ``TrainingArguments(restore_callback_states_from_checkpoint=True)``.
    """

    def __init__(self, controller_state: dict[str, Any] | None = None) -> None:
        self.controller: AromaController | None = None
        self.controller_state = controller_state

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        model, optimizer = kwargs["model"], kwargs["optimizer"]
        model = getattr(model, "module", model)  # DistributedDataParallel
        self.controller = AromaController(model, optimizer, kwargs.get("lr_scheduler"))
        if self.controller_state is not None:
            self.controller.load_state_dict(self.controller_state)
        elif state.global_step > 0:
            raise ValueError(
                f"AromaCallback: resuming at step {state.global_step} without AROMA's controller state would "
                "repeat its decisions; set TrainingArguments(restore_callback_states_from_checkpoint=True)"
            )

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        assert self.controller is not None, "AromaCallback.on_train_begin did not run"
        self.controller.step()
        if self.controller.finished:
            control.should_training_stop = True

    def state(self) -> dict[str, Any]:
        current = self.controller.state_dict() if self.controller else self.controller_state
        return {"args": {"controller_state": current}, "attributes": {}}
