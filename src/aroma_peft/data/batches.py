"""Tokenised examples and dynamically padded batches (a batch is as long as its longest example)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .glue import Example

SUBSET_SEED = 0  # fixed: every run of a task trains on the same subset, whatever its own seed


def subset(examples: list[Example], size: int | None) -> list[Example]:
    """A fixed random subset of ``size`` examples (all of them if ``size`` is None or larger)."""
    if size is None or size >= len(examples):
        return examples
    keep = sorted(random.Random(SUBSET_SEED).sample(range(len(examples)), size))
    return [examples[i] for i in keep]


def tokenize(tokenizer: Any, examples: Sequence[Example], max_len: int) -> list[dict[str, Any]]:
    """Features without padding: ``input_ids``, ``attention_mask`` (and ``token_type_ids``), ``labels``."""
    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples] if examples and examples[0].text_b is not None else None
    encoded = tokenizer(texts_a, texts_b, truncation=True, max_length=max_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [{**{k: encoded[k][i] for k in keys}, "labels": e.label} for i, e in enumerate(examples)]


def collate(features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest feature of the batch (dynamic padding)."""
    longest = max(len(f["input_ids"]) for f in features)
    batch: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if key in features[0]:
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.tensor([f[key] + [fill] * (longest - len(f[key])) for f in features])
    labels = [f["labels"] for f in features]
    batch["labels"] = torch.tensor(labels, dtype=torch.float if isinstance(labels[0], float) else torch.long)
    return batch


def train_order(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator, group: bool
) -> list[list[int]]:
    """One epoch of batches. ``group``: sort shuffled chunks of 50 batches by length (as transformers'
    ``group_by_length``), so batches hold similar lengths; the batch order is shuffled again."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group:
        chunk = 50 * batch_size
        order = [
            i
            for s in range(0, len(order), chunk)
            for i in sorted(order[s : s + chunk], key=lambda j: lengths[j])
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def eval_batches(
    features: list[dict[str, Any]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], dict]]:
    """Length-sorted batches (indices, tensors): same results, far less padding."""
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield idx, collate([features[i] for i in idx], pad_id)
