"""Whether the optimizer really stepped: steps a gradient scaler skips must not count.

``torch.amp.GradScaler`` skips ``optimizer.step()`` when it finds inf/nan gradients (fp16 overflow) and
lowers its scale; Accelerate does the same through it, and the Trainer still calls ``on_optimizer_step``
after a skipped step. A controller that counted such a step would age its pieces (AROMA) or threshold
unchanged gates (SoRA) for an update that never happened, so the controllers ask :class:`StepWatch`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..optim import unwrap_optimizer


class StepWatch:
    """Counts the torch optimizer's real steps with a step post-hook (fired by ``optimizer.step()``
    only, also under an Accelerate wrapper, never when a scaler skips the step)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.steps = 0  # real optimizer steps seen
        self.seen = 0  # ... at the previous check
        self.skipped = 0  # checks that found a skipped step
        self.handle = unwrap_optimizer(optimizer).register_step_post_hook(self._count)

    def _count(self, *_: object) -> None:
        self.steps += 1

    def was_skipped(self, params: Iterable[torch.Tensor]) -> bool:
        """True if no optimizer step ran since the previous check although one was due: the optimizer
        stepped before, or ``params`` hold gradients (a backward ran). A loop that drives the controller
        without ever stepping an optimizer (nor computing gradients) is not taken for a skip."""
        stepped, self.seen = self.steps > self.seen, self.steps
        if stepped:
            return False
        skipped = self.steps > 0 or any(p.grad is not None for p in params)
        self.skipped += skipped
        return skipped

    def close(self) -> None:
        """Remove the hook (a controller replaced on the same optimizer stops counting)."""
        self.handle.remove()
