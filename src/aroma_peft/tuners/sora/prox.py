"""The proximal step on SoRA's gates, applied in place after every optimizer step.

With the L1 penalty ``xi ||g||_1`` the proximal operator is soft-thresholding. The reference code
writes it as three masked assignments, the last on the already shrunk values, so it shrinks twice:

    g = 1.5 xi  ->  0.5 xi (first assignment)  ->  0 (third: |0.5 xi| < xi)
    g = 2.5 xi  ->  1.5 xi                       (kept)

i.e. every gate below 2 xi in magnitude ends at 0 ("official", the default, to reproduce the paper).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def prox_official(gate: torch.Tensor, xi: float) -> None:
    """The reference code's three masked assignments, in its order (no-op for xi = 0, as there)."""
    if xi <= 0:
        return
    gate[gate > xi] -= xi
    gate[gate < -xi] += xi
    gate[gate.abs() < xi] = 0.0


@torch.no_grad()
def prox_soft(gate: torch.Tensor, xi: float) -> None:
    """Textbook soft-thresholding ``sign(g) max(|g| - xi, 0)``."""
    if xi <= 0:
        return
    gate.copy_(gate.sign() * (gate.abs() - xi).clamp_(min=0.0))


def apply_prox(kind: str, gate: torch.Tensor, xi: float, lr: float) -> None:
    """Apply the proximal step ``kind`` to ``gate`` in place; ``soft_lr`` thresholds by ``xi * lr``."""
    if kind == "official":
        prox_official(gate, xi)
    elif kind == "soft":
        prox_soft(gate, xi)
    elif kind == "soft_lr":
        prox_soft(gate, xi * lr)
    else:
        raise ValueError(f"prox={kind!r} is unknown: use 'official', 'soft' or 'soft_lr'")
