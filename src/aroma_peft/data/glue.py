"""The eight GLUE tasks of the AROMA paper, read from the standard GLUE folder layout or from the hub.

Every task is described by a :class:`TaskSpec` (which columns hold the texts and the label, which dev
files exist, which metric the paper reports), so one reader handles all layouts. Files are split on
tabs with ``csv.QUOTE_NONE``, as the GLUE download script writes them (quotes are ordinary text).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
        if child.is_dir() and child.name.lower().replace("-", "") == wanted:
            return child
    if (data_dir / "train.tsv").is_file():
        return data_dir
    raise DataFileError(
        f"{data_dir}: no {spec.folder}/ folder (expected the GLUE layout {data_dir}/{spec.folder}/train.tsv)"
    )


def read_tsv(spec: TaskSpec, path: Path) -> list[Example]:
    """Read one GLUE file; any malformed line raises a DataFileError naming the file and the line."""
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    examples: list[Example] = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC starts with a BOM
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            rows = iter(enumerate(reader, start=1))
            text_idx, label_idx, num_fields = _columns(spec, path, rows)
            for line, row in rows:
                if len(row) != num_fields:
                    raise DataFileError(
                        f"{path}:{line}: expected {num_fields} tab-separated fields, found {len(row)}"
                    )
                texts = [row[i] for i in text_idx]
                label = _parse_label(spec, path, line, row[label_idx])
                examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label))
        except UnicodeDecodeError:
            raise DataFileError(f"{path}:{reader.line_num + 1}: not UTF-8 text") from None
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
            return float(value)
        except ValueError:
            raise DataFileError(f"{path}:{line}: score {value!r} is not a number") from None
    if value not in spec.labels:
        raise DataFileError(f"{path}:{line}: label {value!r} is not one of {list(spec.labels)}")
    return spec.labels.index(value)


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
