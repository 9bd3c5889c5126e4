"""Commonsense reasoning in the LLM-Adapters instruction format (BoolQ, PIQA, ARC, OBQA, ...).

Data: ``<dir>/<Set>/{train,test}.json``, each a JSON list of ``{"instruction", "input", "output",
"answer"}``; ``output`` is the full response ("the correct answer is answer2"), ``answer`` the gold
label. Sets are named by their folder. Training takes the union of the ``train.json`` files.

Prompt: LLM-Adapters' ``generate_prompt`` with its stray indentation and trailing spaces removed.
Training target: ``output`` followed by EOS (trained on). Loss on the response tokens only by default;
``train_on_prompt=True`` is LLM-Adapters' own default. Rows longer than the cutoff (256 tokens, theirs)
would lose their response or EOS: they are dropped and counted instead of truncated.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError
from ..tuners.aroma.fold import folded
from .base import Task
from .causal_lm import IGNORE, causal_lm_loss, collate_causal, default_target_modules, load_causal_lm

CUTOFF = 256  # tokens per row, LLM-Adapters' cutoff
HELD_OUT = 100  # items per set held out of training for the evaluations during training
FIELDS = ("instruction", "input", "output", "answer")
FAMILIES = {  # LLM-Adapters' label families, in their regex order
    "true/false": ("true", "false"),
    "solution": ("solution1", "solution2"),
    "answer": ("answer1", "answer2", "answer3", "answer4", "answer5"),
    "option": ("option1", "option2"),
    "ending": ("ending1", "ending2", "ending3", "ending4"),
}
FAMILY_OF = {label: family for family, labels in FAMILIES.items() for label in labels}
ANSWER_PREFIX = "the correct answer is "  # every response in the data has this form

PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
    "### Input:\n{input}\n\n### Response:\n"
)


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str
    answer: str

    @property
    def prompt(self) -> str:
        template = PROMPT_WITH_INPUT if self.input else PROMPT
        return template.format(instruction=self.instruction, input=self.input)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The labels the instruction offers ("Answer format: answer1/answer2/answer3/answer4"), else
        the whole family of the gold label (ARC has 4- and 5-way items in one file)."""
        tail = self.instruction.rsplit("Answer format:", 1)
        offered = tuple(t.strip() for t in tail[1].split("/")) if len(tail) == 2 else ()
        family = FAMILIES[FAMILY_OF[self.answer]]
        return offered if self.answer in offered and all(o in family for o in offered) else family


def read_set(path: Path) -> list[Example]:
    """Rows of one JSON file; a malformed row fails with the file and its index."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(rows, list):
        raise UserInputError(f"{path}: expected a JSON list of rows, found {type(rows).__name__}")
    examples: list[Example] = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise UserInputError(f"{where}: expected an object, found {type(row).__name__}")
        missing = [k for k in FIELDS if k not in row]
        if missing:
            raise UserInputError(f"{where}: missing key(s) {', '.join(missing)}")
        bad = [k for k in FIELDS if not isinstance(row[k], str)]
        if bad:
            found = type(row[bad[0]]).__name__
            raise UserInputError(f"{where}: field {bad[0]!r} must be a string, found {found}")
        if row["answer"] not in FAMILY_OF:
            families = ", ".join(FAMILIES)
            raise UserInputError(f"{where}: answer {row['answer']!r} is in no label family ({families})")
        if examples and FAMILY_OF[row["answer"]] != FAMILY_OF[examples[0].answer]:
            raise UserInputError(
                f"{where}: answer {row['answer']!r} is not in the set's label family "
                f"({'/'.join(FAMILIES[FAMILY_OF[examples[0].answer]])}, from row 0)"
            )
        examples.append(Example(*(row[k] for k in FIELDS)))
    if not examples:
        raise UserInputError(f"{path}: no rows")
    return examples


def set_files(data_dir: str | Path, split: str) -> dict[str, Path]:
    """``{set name: <dir>/<Set>/<split>.json}``; a set's own folder works too."""
    root = Path(data_dir)
    if (root / f"{split}.json").is_file():
        return {root.resolve().name: root / f"{split}.json"}
    if not root.is_dir():
        raise UserInputError(f"{root}: data folder not found")
    found = {p.parent.name: p for p in sorted(root.glob(f"*/{split}.json"))}
    if not found:
        raise UserInputError(f"{root}: no <set>/{split}.json files")
    return found


def load_sets(
    data_dir: str | Path, split: str, sets: Sequence[str] | None = None, limit: int | None = None
) -> dict[str, list[Example]]:
    """Examples per set (the first ``limit`` of each), in folder order or the order of ``sets``."""
    files = set_files(data_dir, split)
    if sets:
        unknown = [s for s in sets if s not in files]
        if unknown:
            raise UserInputError(
                f"--eval-sets: {', '.join(unknown)} not found in {data_dir} (sets with {split}.json: "
                f"{', '.join(files)})"
            )
        files = {s: files[s] for s in sets}
    return {name: read_set(path)[:limit] for name, path in files.items()}


def hold_out(
    sets: dict[str, list[Example]], per_set: int = 100, seed: int = 0
) -> tuple[list[Example], dict[str, list[Example]]]:
    """Training examples (the union) and a held-out slice of each set for evaluations during training.

    At most ``per_set`` items per set, never more than a tenth of it, chosen by a seeded shuffle so every
    method sees the same split; the test files stay untouched until the final evaluation.
    """
    rng = random.Random(seed)
    train: list[Example] = []
    held: dict[str, list[Example]] = {}
    for name, examples in sets.items():
        order = list(range(len(examples)))
        rng.shuffle(order)
        n = min(per_set, len(examples) // 10)
        held[name] = [examples[i] for i in sorted(order[:n])]
        train += [examples[i] for i in sorted(order[n:])]
    return train, held


def label_family(examples: Sequence[Example]) -> str:
    """The family of a set, from its gold answers (not from its name)."""
    return FAMILY_OF[examples[0].answer]  # read_set has checked that a file holds one family


def encode_example(
    example: Example, tokenizer: Any, cutoff: int = 256, train_on_prompt: bool = False
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
        from ..train.batches import subset

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
        from .commonsense_eval import loglik_predictions

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
        from .commonsense_eval import evaluate_sets

        with folded(model):
            return evaluate_sets(model, tokenizer, sets, **options)
