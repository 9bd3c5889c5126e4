"""``transformers.Trainer`` integration: a thin delegate to :class:`SoraController`."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from .controller import SoraController


class SoraCallback(TrainerCallback, ExportableState):
    """Adds SoRA's sparse penalty and proximal step to a Trainer run.

    The penalty's gradient is added to the gates at ``on_step_begin``, before the first backward of
    each optimizer step, so gradient clipping sees it exactly as if ``sparse_lambda * mean(|g|)`` were
    part of the loss (the logged loss is the task loss alone). The proximal step runs in
    ``on_optimizer_step``, after ``optimizer.step()`` and before the learning-rate schedule moves on.

    Gates take no weight decay: with ``weight_decay > 0`` pass ``optimizers=(optimizer, None)``
    built from ``model.optimizer_param_groups(lr, weight_decay)``; the callback refuses a gate with
    weight decay. The controller's state is saved in Trainer checkpoints and restored on
    ``resume_from_checkpoint`` (with or without ``restore_callback_states_from_checkpoint``).
    """

    def __init__(self, controller_state: dict[str, Any] | None = None, record_every: int = 50) -> None:
        self.controller: SoraController | None = None
        self.controller_state = controller_state
        self.record_every = record_every

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        model = kwargs["model"]
        model = getattr(model, "module", model)  # DistributedDataParallel
        self.controller = SoraController(model, kwargs["optimizer"], record_every=self.record_every)
        saved = self.controller_state
        if saved is None and state.global_step > 0:
            # Resuming without restore_callback_states_from_checkpoint: the loaded TrainerState has it.
            stored = state.stateful_callbacks.get(type(self).__name__)
            stored = stored[0] if isinstance(stored, list) else stored
            saved = (stored or {}).get("args", {}).get("controller_state")
        if saved is not None:
            self.controller.load_state_dict(saved)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        assert self.controller is not None, "SoraCallback.on_train_begin did not run"
        self.controller.add_penalty_grad()

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        assert self.controller is not None, "SoraCallback.on_train_begin did not run"
        self.controller.step()

    def state(self) -> dict[str, Any]:
        current = self.controller.state_dict() if self.controller else self.controller_state
        return {"args": {"controller_state": current, "record_every": self.record_every}, "attributes": {}}
