"""The eight GLUE tasks of the AROMA paper, read from the standard GLUE folder layout or from the hub.

Every task is described by a :class:`TaskSpec` (which columns hold the texts and the label, which dev
files exist, which metric the paper reports), so one reader handles all layouts. Files are split on
tabs with ``csv.QUOTE_NONE``, as the GLUE download script writes them (quotes are ordinary text).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import metrics
from ..errors import UserInputError


class DataFileError(UserInputError):
    """A data folder or file is missing or malformed; the message names the file and the line."""


class Example(NamedTuple):
    text_a: str
    text_b: str | None
    label: int | float  # class index, or the score for regression (STS-B)


class DevSet(NamedTuple):
    name: str  # key in the dict returned by load_task
    file: str  # file name in the task folder
    hub_split: str  # split name of the `glue` dataset on the hub
    prefix: str  # prefix of its metric names ("" for the main dev set)


DEV = (DevSet("dev", "dev.tsv", "validation", ""),)


@dataclass(frozen=True)
class TaskSpec:
    """Where a GLUE task keeps its fields, and how it is scored."""

    name: str
    folder: str  # folder name in the GLUE layout
    text_columns: tuple[str, ...] | tuple[int, ...]  # header names, or indices for header-less files
    label_column: str | int
    labels: tuple[str, ...] | None  # label strings in the hub's index order; None: regression
    hub_columns: tuple[str, ...]  # text fields of the hub's `glue` dataset
    metrics: tuple[str, ...]
    dev_sets: tuple[DevSet, ...] = DEV
    header: bool = True
    num_fields: int | None = None  # fields per line of a header-less file

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None


BINARY = ("0", "1")
ENTAILMENT = ("entailment", "not_entailment")
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        # CoLA: no header; source, label, original label (often empty), sentence
        TaskSpec("cola", "CoLA", (3,), 1, BINARY, ("sentence",), ("matthews",), header=False, num_fields=4),
        TaskSpec(
            "mnli",
            "MNLI",
            ("sentence1", "sentence2"),
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            ("premise", "hypothesis"),
            ("accuracy",),
            dev_sets=(
                DevSet("dev_matched", "dev_matched.tsv", "validation_matched", ""),
                DevSet("dev_mismatched", "dev_mismatched.tsv", "validation_mismatched", "mm_"),
            ),
        ),
        TaskSpec(
            "mrpc",
            "MRPC",
            ("#1 String", "#2 String"),
            "Quality",
            BINARY,
            ("sentence1", "sentence2"),
            ("accuracy", "f1"),
        ),
        TaskSpec(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            "label",
            ENTAILMENT,
            ("question", "sentence"),
            ("accuracy",),
        ),
        TaskSpec(
            "qqp",
            "QQP",
            ("question1", "question2"),
            "is_duplicate",
            BINARY,
            ("question1", "question2"),
            ("accuracy", "f1"),
        ),
        TaskSpec(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            "label",
            ENTAILMENT,
            ("sentence1", "sentence2"),
            ("accuracy",),
        ),
        TaskSpec("sst2", "SST-2", ("sentence",), "label", BINARY, ("sentence",), ("accuracy",)),
        TaskSpec(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            "score",
            None,
            ("sentence1", "sentence2"),
            ("pearson", "spearman"),
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise UserInputError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    return TASKS[key]


def load_task(task: str | TaskSpec, data_dir: str | Path | None = None) -> dict[str, list[Example]]:
    """``{"train": [...], <dev set name>: [...]}`` from ``data_dir`` (GLUE layout) or, if None, the hub."""
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if data_dir is None:
        return load_from_hub(spec)
    folder = task_folder(spec, Path(data_dir))
    splits = {"train": read_tsv(spec, folder / "train.tsv")}
    for dev in spec.dev_sets:
        splits[dev.name] = read_tsv(spec, folder / dev.file)
    return splits


def task_folder(spec: TaskSpec, data_dir: Path) -> Path:
    """The task's folder: ``data_dir/<Task>`` (any case, with or without '-'), or ``data_dir`` itself."""
    if not data_dir.is_dir():
        raise DataFileError(f"{data_dir}: data folder not found")
    wanted = spec.folder.lower().replace("-", "")
    for child in sorted(data_dir.iterdir()):
        if child.is_dir() and _key(child) == wanted:
            return child
    other = next((t for t in TASKS.values() if t.folder.lower().replace("-", "") == _key(data_dir)), None)
    if (data_dir / "train.tsv").is_file() and (other is None or other is spec):
        return data_dir  # the task folder itself (or a copy under another name)
    where = f" (this is the {other.folder} folder)" if other is not None and other is not spec else ""
    raise DataFileError(
        f"{data_dir}: no {spec.folder}/ folder and no {spec.folder} files here{where}; expected the GLUE "
        f"layout {data_dir}/{spec.folder}/train.tsv"
    )


def _key(path: Path) -> str:
    return path.name.lower().replace("-", "")


def read_tsv(spec: TaskSpec, path: Path) -> list[Example]:
    """Read one GLUE file; any malformed line raises a DataFileError naming the file and the line."""
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # MRPC starts with a BOM
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # decoded whole, so the line of the bad byte is exact
        line = raw[: err.start].count(b"\n") + 1
        raise DataFileError(f"{path}:{line}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    rows = iter(enumerate(reader, start=1))
    text_idx, label_idx, num_fields = _columns(spec, path, rows)
    examples: list[Example] = []
    for line, row in rows:
        if len(row) != num_fields:
            raise DataFileError(
                f"{path}:{line}: expected {num_fields} tab-separated fields, found {len(row)}"
            )
        texts = [row[i] for i in text_idx]
        label = _parse_label(spec, path, line, row[label_idx])
        examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
    if not examples:
        raise DataFileError(f"{path}: no examples")
    return examples


def _columns(spec: TaskSpec, path: Path, rows) -> tuple[list[int], int, int]:  # noqa: ANN001
    """Indices of the text and label fields and the expected field count (reads the header if any)."""
    if not spec.header:
        return list(spec.text_columns), int(spec.label_column), int(spec.num_fields or 0)
    line_header = next(rows, None)
    if line_header is None:
        raise DataFileError(f"{path}: empty file")
    _, header = line_header
    missing = [c for c in (*spec.text_columns, spec.label_column) if c not in header]
    if missing:
        raise DataFileError(f"{path}:1: header has no column {missing[0]!r} (found {header})")
    return [header.index(c) for c in spec.text_columns], header.index(spec.label_column), len(header)


def _parse_label(spec: TaskSpec, path: Path, line: int, value: str) -> int | float:
    if spec.labels is None:
        try:
            score = float(value)
        except ValueError:
            raise DataFileError(f"{path}:{line}: score {value!r} is not a number") from None
        if not 0.0 <= score <= 5.0:  # STS-B's similarity scale; also refuses nan and inf
            raise DataFileError(f"{path}:{line}: score {value!r} is outside STS-B's range [0, 5]")
        return score
    if value not in spec.labels:
        raise DataFileError(f"{path}:{line}: label {value!r} is not one of {list(spec.labels)}")
    return spec.labels.index(value)


def majority_baseline(
    spec: TaskSpec,
    train: list[Example],
    splits: dict[str, list[Example]],
    max_eval_samples: int | None = None,
) -> dict[str, float]:
    """Every dev metric of always predicting the training set's majority class (for STS-B, its mean
    score), on the dev examples a run evaluates: the floor a run must beat to show it learned."""
    labels = [e.label for e in train]
    guess = sum(labels) / len(labels) if spec.is_regression else Counter(labels).most_common(1)[0][0]
    result: dict[str, float] = {}
    for dev in spec.dev_sets:
        gold = [e.label for e in splits[dev.name][:max_eval_samples]]
        result |= metrics.compute(spec.metrics, [guess] * len(gold), gold, dev.prefix)
    return result


def load_from_hub(spec: TaskSpec) -> dict[str, list[Example]]:
    """The usual path on a machine with internet: ``datasets.load_dataset("glue", task)``."""
    try:
        from datasets import load_dataset

        data = load_dataset("glue", spec.name)
    except Exception as err:  # noqa: BLE001  (network, cache and format errors alike)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(
            f"could not load GLUE {spec.name} from the Hugging Face hub ({first}); pass --data-dir DIR "
            "with a local copy in the GLUE layout"
        ) from None
    splits = {"train": data["train"]} | {dev.name: data[dev.hub_split] for dev in spec.dev_sets}
    result = {}
    for name, split in splits.items():
        columns = [split[c] for c in spec.hub_columns]
        texts_b = columns[1] if len(columns) > 1 else [None] * len(columns[0])
        result[name] = [Example(a, b, y) for a, b, y in zip(columns[0], texts_b, split["label"])]
    return result
