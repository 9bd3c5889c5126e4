"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import pytest

from aroma_peft import metrics


def test_accuracy_and_f1():
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert metrics.accuracy(preds, labels) == pytest.approx(3 / 5)
    # tp = 2, fp = 1, fn = 1: precision = recall = 2/3
    assert metrics.f1(preds, labels) == pytest.approx(2 / 3)
    assert metrics.f1([0, 0], [0, 0]) == 0.0  # no positive class at all: 0, not a warning


def test_matthews():
    preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    tp, tn, fp, fn = 2, 1, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews(preds, labels) == pytest.approx(expected)
    assert metrics.matthews([1, 1, 1], [0, 1, 0]) == 0.0  # majority class scores 0


def test_pearson_and_spearman():
    labels = [1.0, 2.0, 3.0, 4.0]
    assert metrics.pearson([2.0, 4.0, 6.0, 8.0], labels) == pytest.approx(1.0)
    assert metrics.pearson([1.0, 3.0, 2.0, 4.0], labels) == pytest.approx(0.8)
    assert metrics.spearman([1.0, 10.0, 100.0, 1000.0], labels) == pytest.approx(1.0)
    assert metrics.pearson([0.5] * 4, labels) == 0.0  # constant predictions: no correlation, not NaN


def test_compute_prefixes_names():
    values = metrics.compute(["accuracy", "f1"], [1, 0], [1, 1], prefix="mm_")
    assert values == {"mm_accuracy": 0.5, "mm_f1": pytest.approx(2 / 3)}
