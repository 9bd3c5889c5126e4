"""Rank statistics of learned updates."""

from __future__ import annotations

import torch


def effective_rank(matrix: torch.Tensor, eps: float = 1e-12) -> float:
    """Roy & Vetterli's effective rank: ``exp(H(p))`` with ``p = sigma / sum(sigma)`` (AROMA, App. C).

    A rank-k matrix with equal singular values has effective rank k; a zero matrix has 0.
    """
    return effective_rank_of(torch.linalg.svdvals(matrix.detach().double()), eps)


def effective_rank_of(sigma: torch.Tensor, eps: float = 1e-12) -> float:
    """``effective_rank`` from the singular values."""
    total = sigma.sum()
    if total <= eps:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def rank_stats(matrix: torch.Tensor) -> tuple[int, float]:
    """(numerical rank, effective rank) of ``matrix`` from one SVD: the numerical rank counts singular
    values above ``torch.linalg.matrix_rank``'s float32 tolerance (``sigma_max * max(m, n) * eps``)."""
    sigma = torch.linalg.svdvals(matrix.detach().double())
    if not sigma.numel() or sigma[0] == 0:
        return 0, 0.0
    tolerance = sigma[0] * max(matrix.shape) * torch.finfo(torch.float32).eps
    return int((sigma > tolerance).sum()), effective_rank_of(sigma)
