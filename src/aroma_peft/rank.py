"""Rank statistics of learned updates."""

from __future__ import annotations

import torch


def effective_rank(matrix: torch.Tensor, eps: float = 1e-12) -> float:
    """Roy & Vetterli's effective rank: ``exp(H(p))`` with ``p = sigma / sum(sigma)`` (AROMA, App. C).

    A rank-k matrix with equal singular values has effective rank k; a zero matrix has 0.
    """
    sigma = torch.linalg.svdvals(matrix.detach().double())
    total = sigma.sum()
    if total <= eps:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
