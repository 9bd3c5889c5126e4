"""GLUE (the eight tasks of the AROMA paper) as a task of the training loop: an encoder with a
sequence-classification head (a regression head for STS-B), trained in full beside the adapters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import metrics as glue_metrics
from ..data import batches
from ..data.glue import Example, TaskSpec, get_task, load_task, majority_baseline
from ..errors import UserInputError
from ..models import quiet_transformers, resolve_model
from .base import Task, block_linears

DEFAULT_MAX_SEQ_LEN = 128
CAUSAL_ONLY = {"train_on_prompt": False, "eval_data_dir": None, "eval_sets": None, "eval_mode": "loglik"}


class GlueTask(Task):
    """One GLUE task; its dev sets (MNLI: matched and mismatched) are the evaluation sets."""

    def __init__(self, spec: TaskSpec, max_seq_len: int = DEFAULT_MAX_SEQ_LEN, seed: int = 0) -> None:
        self.spec = spec
        self.name = spec.name
        self.main_metric = spec.main_metric
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.pad_id = 0  # the tokenizer's once loaded
        self.data: dict[str, list[Example]] = {}
        self.max_eval_samples: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> GlueTask:
        given = [f"{k}={getattr(config, k)!r}" for k, v in CAUSAL_ONLY.items() if getattr(config, k) != v]
        if given:
            raise UserInputError(f"{', '.join(given)}: settings of --task commonsense, not of GLUE")
        return cls(get_task(config.task), config.max_seq_len or DEFAULT_MAX_SEQ_LEN, config.seed)

    def load_split(self, data_dir, split, sets=None, limit=None):  # noqa: ANN001, ANN201
        data = load_task(self.spec, data_dir)
        if split == "train":
            return {"train": data["train"][:limit]}
        return {dev.name: data[dev.name][:limit] for dev in self.spec.dev_sets}

    def load_data(self, config: Any) -> tuple[list[Example], dict[str, list[Example]]]:
        self.data = load_task(self.spec, config.data_dir)
        self.max_eval_samples = config.max_eval_samples
        train = batches.subset(self.data["train"], config.max_train_samples)
        return train, {dev.name: self.data[dev.name][: config.max_eval_samples] for dev in self.spec.dev_sets}

    def load_model(self, name_or_path: str | None) -> tuple[nn.Module, Any]:
        tokenizer, model = load_model(name_or_path, self.spec, self.seed)
        self.pad_id = tokenizer.pad_token_id
        return model, tokenizer

    def default_target_modules(self, model: nn.Module) -> list[str]:
        return block_linears(model)

    def default_heads(self, model: nn.Module) -> list[str]:
        return classifier_heads(model)

    def encode(self, examples: Sequence[Example], tokenizer: Any) -> tuple[list[dict[str, Any]], int]:
        return batches.tokenize(tokenizer, examples, self.max_seq_len), 0  # long pairs are truncated

    def eval_items(self, examples: Sequence[Example], tokenizer: Any) -> list[dict[str, Any]]:
        return self.encode(examples, tokenizer)[0]

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return batches.collate(list(features), self.pad_id)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**batch).loss

    @torch.no_grad()
    def predict(self, model: nn.Module, items: list, batch_size: int, device: torch.device) -> list[tuple]:
        preds = predict(model, self.spec, items, batch_size, self.pad_id, device)
        return [(p, f["labels"]) for p, f in zip(preds, items)]

    def metrics(self, outcomes: dict[str, list[tuple]]) -> dict[str, float]:
        prefixes = {dev.name: dev.prefix for dev in self.spec.dev_sets}
        result: dict[str, float] = {}
        for name, pairs in outcomes.items():
            preds, labels = [p for p, _ in pairs], [y for _, y in pairs]
            result |= glue_metrics.compute(self.spec.metrics, preds, labels, prefixes.get(name, ""))
        return result

    def final_results(self, model: nn.Module, tokenizer: Any, train: list[Example], config: Any) -> dict:
        return {"majority_baseline": majority_baseline(self.spec, train, self.data, self.max_eval_samples)}

    def evaluate(self, model: nn.Module, tokenizer: Any, sets: dict[str, list], **options: Any) -> dict:
        items = {name: self.eval_items(examples, tokenizer) for name, examples in sets.items()}
        size, device = options.get("batch_size", 64), next(model.parameters()).device
        return self.metrics({name: self.predict(model, feats, size, device) for name, feats in items.items()})


def load_model(name: str | None, spec: TaskSpec, seed: int) -> tuple[Any, Any]:
    """Tokenizer and sequence-classification model (regression head for STS-B); one-line errors."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    try:
        path = resolve_model(name)
    except FileNotFoundError as err:
        raise UserInputError(str(err)) from None
    try:
        model_config = AutoConfig.from_pretrained(path, num_labels=spec.num_labels)
        if spec.is_regression:
            model_config.problem_type = "regression"
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(seed)  # the new head's initialisation
        with quiet_transformers():  # "newly initialized: classifier" is expected; our bar is the only one
            model = AutoModelForSequenceClassification.from_pretrained(path, config=model_config)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"{name or path}: not a usable model ({first})") from None
    if tokenizer.pad_token_id is None:  # decoder-only tokenizers: pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


@torch.no_grad()
def predict(
    model: Any,
    spec: TaskSpec,
    feats: list[dict[str, Any]],
    batch_size: int,
    pad_id: int,
    device: torch.device | None = None,
) -> list[Any]:
    """The model's prediction (class index, or score for regression) for every example, in order."""
    model.eval()
    preds: list[Any] = [None] * len(feats)
    for idx, batch in batches.eval_batches(feats, batch_size, pad_id):
        batch.pop("labels")
        logits = model(**{k: v.to(device) if device else v for k, v in batch.items()}).logits
        values = logits[:, 0] if spec.is_regression else logits.argmax(-1)
        for i, v in zip(idx, values.tolist()):
            preds[i] = v
    return preds


@torch.no_grad()
def metrics_on(
    model: Any, spec: TaskSpec, feats: list[dict[str, Any]], batch_size: int, pad_id: int, prefix: str = ""
) -> dict[str, float]:
    """The task's metrics on one set of tokenized examples."""
    preds = predict(model, spec, feats, batch_size, pad_id)
    return glue_metrics.compute(spec.metrics, preds, [f["labels"] for f in feats], prefix)


def classifier_heads(model: nn.Module) -> list[str]:
    """The task head: the classifier, plus BERT's pooler (dense + tanh on [CLS]).

    The pooler is trained with the classifier because it is the first half of the classification head
    that RoBERTa (the paper's model) trains in full as ``classifier.dense``; the MiniLM encoder was
    tuned with mean pooling, so its pooler was never trained for [CLS] classification.
    """
    names = {n.rpartition(".")[2] for n, _ in model.named_modules()}
    return [h for h in ("pooler", "classifier", "score") if h in names]
