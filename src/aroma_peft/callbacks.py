"""``transformers.Trainer`` integration: thin delegates to a method's controller.

Plain loops and the Trainer share one code path: the callback builds the controller when training
begins and calls its ``step()`` after every optimizer step (``on_optimizer_step`` runs after
``optimizer.step()`` and before the schedule moves on and gradients are zeroed).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerControl, TrainerState, TrainingArguments

from .tuners.callback import ControllerCallback


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

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ):
        """Another callback ended training before the Trainer's ``max_steps`` (e.g. transformers'
        ``EarlyStoppingCallback``): every module takes its final decision now, as it would at T, so the
        model ends with zero trainable parameters. (A run that reaches ``max_steps`` short of a larger
        ``AromaConfig.max_steps`` keeps its live pieces, as that config asks.)"""
        stopped_early = state.max_steps > 0 and state.global_step < state.max_steps
        if stopped_early and self.controller is not None and not self.controller.finished:
            self.controller.finish_all()
