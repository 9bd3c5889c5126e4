"""``transformers.Trainer`` integration: a thin delegate to :class:`SoraController`."""

from __future__ import annotations

from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments

from ..callback import ControllerCallback
from .controller import SoraController


class SoraCallback(ControllerCallback):
    """Adds SoRA's sparse penalty and proximal step to a Trainer run.

    The penalty's gradient is added to the gates at ``on_step_begin``, before the first backward of
    each optimizer step, so gradient clipping sees it exactly as if ``sparse_lambda * mean(|g|)`` were
    part of the loss (the logged loss is the task loss alone). The proximal step runs in
    ``on_optimizer_step``, after ``optimizer.step()`` and before the learning-rate schedule moves on.

    Gates take no weight decay: with ``weight_decay > 0`` pass ``optimizers=(optimizer, None)``
    built from ``model.optimizer_param_groups(lr, weight_decay)``; the callback refuses a gate with
    weight decay.
    """

    def __init__(self, controller_state: dict[str, Any] | None = None, record_every: int = 50) -> None:
        super().__init__(controller_state)
        self.record_every = record_every

    def make_controller(self, model: Any, optimizer: Any, lr_scheduler: Any) -> SoraController:
        return SoraController(model, optimizer, record_every=self.record_every)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        assert self.controller is not None, "SoraCallback.on_train_begin did not run"
        self.controller.add_penalty_grad()

    def state(self) -> dict[str, Any]:
        saved = super().state()
        saved["args"]["record_every"] = self.record_every
        return saved
