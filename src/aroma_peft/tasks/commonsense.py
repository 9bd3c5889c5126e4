"""Commonsense reasoning as a task: instruction tuning of a causal LM on the union of the sets'
``train.json`` files (format: ``commonsense_data``), evaluated by ``commonsense_eval``.

Training target: ``output`` followed by EOS (trained on). Loss on the response tokens only by default;
``train_on_prompt=True`` is LLM-Adapters' own default. Rows longer than the cutoff (256 tokens, theirs)
would lose their response or EOS: they are dropped and counted instead of truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from ..tuners.aroma.fold import folded
from .base import Task
from .causal_lm import IGNORE, causal_lm_loss, collate_causal, default_target_modules, load_causal_lm
from .commonsense_data import HELD_OUT, Example, hold_out, load_sets
from .commonsense_eval import evaluate_sets, loglik_predictions

CUTOFF = 256  # tokens per row, LLM-Adapters' cutoff


def encode_example(
    example: Example, tokenizer: Any, cutoff: int = CUTOFF, train_on_prompt: bool = False
) -> dict[str, list[int]] | None:
    """Prompt + output + EOS as token ids, labels ``IGNORE`` on the prompt unless ``train_on_prompt``;
    ``None`` if the whole does not fit in ``cutoff`` tokens."""
    prompt = tokenizer(example.prompt)["input_ids"]  # with BOS where the tokenizer adds one
    response = tokenizer(example.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt + response
    if len(ids) > cutoff:
        return None
    labels = list(ids) if train_on_prompt else [IGNORE] * len(prompt) + response
    return {"input_ids": ids, "labels": labels}


class CommonsenseTask(Task):
    name = "commonsense"
    main_metric = "average"  # accuracy (%) averaged over the sets, unweighted

    def __init__(self, cutoff: int = CUTOFF, train_on_prompt: bool = False) -> None:
        if cutoff < 2:
            raise UserInputError(f"cutoff={cutoff!r} is invalid: use a length in tokens of at least 2")
        self.cutoff = self.max_seq_len = cutoff
        self.train_on_prompt = train_on_prompt
        self.pad_id = 0  # any id works (padding is masked and carries no loss); the tokenizer's once loaded
        self.tokenizer: Any = None
        self.test_sets: dict[str, list[Example]] = {}

    @classmethod
    def from_config(cls, config: Any) -> CommonsenseTask:
        if not config.data_dir:
            raise UserInputError("--data-dir is required with --task commonsense: folder of <set>/train.json")
        return cls(config.max_seq_len or CUTOFF, config.train_on_prompt)

    def load_split(self, data_dir, split, sets=None, limit=None):  # noqa: ANN001, ANN201
        return load_sets(data_dir, split, sets, limit)

    def load_data(self, config: Any) -> tuple[list[Example], dict[str, list[Example]]]:
        """The union of the training files minus a held-out slice of each (the sets evaluated during
        training); the test sets are read now too, so a bad file fails before any slow work."""
        from ..data.batches import subset

        train, held = hold_out(load_sets(config.data_dir, "train"), HELD_OUT)
        test_dir = config.eval_data_dir or config.data_dir
        self.test_sets = load_sets(test_dir, "test", config.eval_sets, config.max_eval_samples)
        held = {name: examples[: config.max_eval_samples] for name, examples in held.items() if examples}
        return subset(train, config.max_train_samples), held

    def load_model(self, name_or_path: str | None) -> tuple[nn.Module, Any]:
        model, tokenizer = load_causal_lm(name_or_path)
        self.pad_id, self.tokenizer = tokenizer.pad_token_id, tokenizer
        return model, tokenizer

    def default_target_modules(self, model: nn.Module) -> list[str]:
        """Full names of the Linear modules the family's defaults name (full fine-tuning takes names)."""
        suffixes = set(default_target_modules(model))
        return [
            n
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and n.rpartition(".")[2] in suffixes
        ]

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> tuple[list[dict[str, list[int]]], int]:
        encoded = [encode_example(e, tokenizer, self.cutoff, self.train_on_prompt) for e in examples]
        kept = [f for f in encoded if f is not None]
        return kept, len(encoded) - len(kept)

    def collate(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        return collate_causal(features, self.pad_id)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(model, batch)

    def predict(self, model: nn.Module, items: list[Example], batch_size: int, device: Any) -> list[tuple]:
        """(predicted label, gold label) per item, by label log-likelihood."""
        with folded(model):
            preds = loglik_predictions(model, self.tokenizer, items, batch_size, progress=False)
        return [(p, e.answer) for p, e in zip(preds, items)]

    def metrics(self, outcomes: dict[str, list[tuple]]) -> dict[str, float]:
        acc = {name: 100.0 * sum(p == y for p, y in o) / max(1, len(o)) for name, o in outcomes.items()}
        return acc | {"average": sum(acc.values()) / max(1, len(acc))}

    def final_results(self, model: nn.Module, tokenizer: Any, train: list[Example], config: Any) -> dict:
        """Accuracy on the test sets in ``config.eval_mode``."""
        result = self.evaluate(
            model,
            tokenizer,
            self.test_sets,
            mode=config.eval_mode,
            batch_size=config.eval_batch_size,
            progress=not config.quiet,
        )
        accuracy = {name: s["accuracy"] for name, s in result["sets"].items()}
        return {"test": result, "accuracy": accuracy, "average": result["average"]}

    def evaluate(
        self, model: nn.Module, tokenizer: Any, sets: dict[str, list[Example]], **options: Any
    ) -> dict:
        with folded(model):
            return evaluate_sets(model, tokenizer, sets, **options)
