"""The LLM-Adapters instruction format of the commonsense sets (BoolQ, PIQA, ARC, OBQA, ...): reading
and checking the files, the prompt template, the label families and the held-out split.

Data: ``<dir>/<Set>/{train,test}.json``, each a JSON list of ``{"instruction", "input", "output",
"answer"}``; ``output`` is the full response ("the correct answer is answer2"), ``answer`` the gold
label. Sets are named by their folder. Prompt: LLM-Adapters' ``generate_prompt`` with its stray
indentation and trailing spaces removed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError

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
