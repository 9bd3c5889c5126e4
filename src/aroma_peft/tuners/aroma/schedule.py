"""AROMA's decisions as pure functions of (step, config, statistics): testable without a model."""

from __future__ import annotations

import math


def warmup_factor(step: int, start: int | None, length: int) -> float:
    """Linear warmup from ``1/length`` at ``step == start`` to 1 at ``start + length - 1``."""
    if start is None or length <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / length)


def lr_multiplier(step: int, warmup_steps: int, last_reset: int | None, rewarmup_steps: int) -> float:
    """Multiplier on the base schedule for optimizer step ``step`` (0-based).

    The initial warmup runs from step 0; every reset re-warms from the step after it, triggered by the
    reset event itself (not by a fixed cycle, unlike the reference code).
    """
    return min(warmup_factor(step, 0, warmup_steps), warmup_factor(step, last_reset, rewarmup_steps))


def relative_change(criterion: str, prev_norm: float | None, norm: float, diff_norm: float | None) -> float:
    """The inner statistic; ``inf`` when there is no usable predecessor (first check, or b a = 0)."""
    if criterion == "none" or prev_norm is None or prev_norm == 0.0:  # "none": only t_in ends a piece
        return math.inf
    if criterion == "paper":
        return (norm - prev_norm) / prev_norm
    if criterion == "abs":
        return abs(norm - prev_norm) / prev_norm
    if criterion == "delta":
        assert diff_norm is not None
        return diff_norm / prev_norm
    raise ValueError(f"inner_criterion={criterion!r} is unknown")


def inner_converged(criterion: str, change: float, eps_in: float) -> bool:
    """Paper: ``(||b_t a_t|| - ||b_(t-dT) a_(t-dT)||) / ||b_(t-dT) a_(t-dT)|| < eps_in``."""
    return criterion != "none" and change < eps_in


def outer_ratio(scaling: float, piece_norm: float, weight_norm: float, lr_factor: float = 1.0) -> float:
    """``s ||b_p a_p||_F / ||W0 + s B_(p-1) A_(p-1)||_F``, divided by ``lr_factor``.

    ``lr_factor`` (outer criterion 'lr') is the mean over the piece's steps of the lr schedule's
    factor: Adam moves a factor by about the lr per step whatever the gradient's scale, so a piece
    trained at a tenth of the peak lr is about a tenth as large for the same learning signal. Dividing
    by it judges the piece by what it learned per unit of lr. A piece that got no lr at all (factor 0)
    learned nothing and keeps its plain ratio.
    """
    if weight_norm <= 0:
        return math.inf
    ratio = scaling * piece_norm / weight_norm
    return ratio / lr_factor if lr_factor > 0 else ratio


def module_finished(ratio: float, eps_out: float) -> bool:
    """The outer criterion: a piece this small relative to the weight means the module is done."""
    return ratio < eps_out


def keep_piece(ratio: float, eps_out: float, first: bool, first_piece: str) -> bool:
    """Whether an ended piece is merged (and the module grows on). The reference code has no outer
    check for a module's first piece (its ratio needs a predecessor): with ``first_piece='keep'`` a
    module always keeps what its first piece learned instead of finishing untrained."""
    return (first and first_piece == "keep") or not module_finished(ratio, eps_out)
