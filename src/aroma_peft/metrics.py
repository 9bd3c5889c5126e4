"""GLUE metrics as the paper reports them (Matthews for CoLA, Pearson for STS-B, accuracy, F1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    return float(accuracy_score(labels, preds))


def f1(preds: Sequence[int], labels: Sequence[int]) -> float:
    """F1 of the positive class (1 = paraphrase / duplicate), as GLUE scores MRPC and QQP."""
    return float(f1_score(labels, preds, zero_division=0.0))


def matthews(preds: Sequence[int], labels: Sequence[int]) -> float:
    return float(matthews_corrcoef(labels, preds))


def _correlation(fn: Callable, preds: Sequence[float], labels: Sequence[float]) -> float:
    # Constant predictions (an untrained regression head) have no correlation: report 0, not NaN.
    if np.std(preds) == 0 or np.std(labels) == 0:
        return 0.0
    return float(fn(preds, labels)[0])


def pearson(preds: Sequence[float], labels: Sequence[float]) -> float:
    return _correlation(pearsonr, preds, labels)


def spearman(preds: Sequence[float], labels: Sequence[float]) -> float:
    return _correlation(spearmanr, preds, labels)


METRICS: dict[str, Callable[[Sequence, Sequence], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Sequence[str], preds: Sequence, labels: Sequence, prefix: str = "") -> dict[str, float]:
    """``{prefix + name: value}`` for every metric name."""
    return {prefix + name: METRICS[name](preds, labels) for name in names}
