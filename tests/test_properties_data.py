"""Property tests over GLUE data rows: files with missing and extra columns, unknown labels, bad bytes
or a damaged header, in four task layouts, each end in one DataFileError line naming the file and the
line; the CLI turns it into exit 2 and leaves no run folder. Empty and very long texts are valid rows
(truncation to --max-seq-len handles length) and are read back exactly.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aroma_peft.cli import main
from aroma_peft.data import DataFileError, Example, load_task


@dataclass(frozen=True)
class Layout:
    """How one task's file is written (the GLUE download's layout)."""

    task: str
    folder: str
    header: tuple[str, ...] | None  # None: no header line
    num_fields: int
    text_idx: tuple[int, ...]
    label_idx: int
    labels: tuple[str, ...] | None  # None: a float score
    bom: bool = False


BINARY = ("0", "1")
STSB_HEADER = (
    "index",
    "genre",
    "filename",
    "year",
    "old_index",
    "source1",
    "source2",
    "sentence1",
    "sentence2",
)
LAYOUTS = [
    Layout("sst2", "SST-2", ("sentence", "label"), 2, (0,), 1, BINARY),
    Layout(
        "mrpc", "MRPC", ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), 5, (3, 4), 0, BINARY, True
    ),
    Layout("cola", "CoLA", None, 4, (3,), 1, BINARY),
    Layout(
        "stsb",
        "STS-B",
        (*STSB_HEADER, "score"),
        10,
        (7, 8),
        9,
        None,
    ),
]
FAST = settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# Text of one field: no tab or line break (they delimit fields and rows), no surrogates; empty or long.
FIELD_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
WORD = st.text(FIELD_CHARS, min_size=1, max_size=8)
TEXTS = st.one_of(
    st.text(FIELD_CHARS, max_size=30),
    st.just(""),
    st.builds(lambda w, n: (w + " ") * n, WORD, st.integers(2000, 6000)),
)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@st.composite
def rows(draw, layout: Layout, max_rows: int) -> list[tuple[list[str], int | float]]:
    """Valid rows (fields, parsed label)."""
    out = []
    for _ in range(draw(st.integers(1, max_rows))):
        fields = [draw(st.sampled_from(["gj04", "x", "7", ""])) for _ in range(layout.num_fields)]
        for i in layout.text_idx:
            fields[i] = draw(TEXTS)
        if layout.labels is None:
            value = f"{draw(st.floats(0, 5)):.3f}"
            fields[layout.label_idx], label = value, float(value)
        else:
            label = draw(st.integers(0, len(layout.labels) - 1))
            fields[layout.label_idx] = layout.labels[label]
        out.append((fields, label))
    return out


def encode(layout: Layout, header: tuple[str, ...] | None, lines: list[bytes]) -> bytes:
    head = [("\t".join(header)).encode()] if header is not None else []
    return (codecs.BOM_UTF8 if layout.bom else b"") + b"\n".join(head + lines) + b"\n"


def write(root: Path, layout: Layout, files: dict[str, bytes]) -> Path:
    folder = root / layout.folder
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def valid_files(layout: Layout, splits: dict[str, list]) -> dict[str, bytes]:
    return {
        f"{name}.tsv": encode(layout, layout.header, ["\t".join(f).encode() for f, _ in part])
        for name, part in splits.items()
    }


@st.composite
def damaged(draw, layout: Layout) -> tuple[dict[str, bytes], str, int, str]:
    """(files, damaged file, line, what the message says) with exactly one fault."""
    splits = {"train": draw(rows(layout, 5)), "dev": draw(rows(layout, 3))}
    files = valid_files(layout, splits)
    name = draw(st.sampled_from(["train", "dev"]))
    faults = ["missing", "extra", "label", "bytes", "blank"] + (["header"] if layout.header else [])
    fault = draw(st.sampled_from(faults))
    if fault == "header":
        header = list(layout.header)
        header.remove(header[draw(st.sampled_from([*layout.text_idx, layout.label_idx]))])
        lines = ["\t".join(f).encode() for f, _ in splits[name]]
        files[f"{name}.tsv"] = encode(layout, tuple(header), lines)
        return files, f"{name}.tsv", 1, "header has no column"
    part = splits[name]
    index = draw(st.integers(0, len(part) - 1))
    lines = ["\t".join(f).encode() for f, _ in part]
    fields = list(part[index][0])
    if fault == "missing":
        del fields[draw(st.integers(0, len(fields) - 1))]
        found = len(fields) if "\t".join(fields) else 0  # an empty line holds no field at all
        expect = f"expected {layout.num_fields} tab-separated fields, found {found}"
    elif fault == "extra":
        fields.insert(draw(st.integers(0, len(fields))), draw(st.text(FIELD_CHARS, max_size=5)))
        expect = f"expected {layout.num_fields} tab-separated fields, found {layout.num_fields + 1}"
    elif fault == "label":
        bad = st.text(FIELD_CHARS, max_size=6)
        if layout.labels is None:
            fields[layout.label_idx] = draw(bad.filter(lambda s: not is_number(s)))
            expect = "is not a number"
        else:
            fields[layout.label_idx] = draw(bad.filter(lambda s: s not in layout.labels))
            expect = "is not one of"
    elif fault == "blank":
        fields = []
        expect = "found 0"
    lines[index] = "\t".join(fields).encode()
    if fault == "bytes":  # a byte sequence that is never UTF-8, anywhere in the row
        at = draw(st.integers(0, len(lines[index])))
        junk = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80"]))
        lines[index] = lines[index][:at] + junk + lines[index][at:]
        expect = "not UTF-8 text"
    files[f"{name}.tsv"] = encode(layout, layout.header, lines)
    return files, f"{name}.tsv", index + 1 + (layout.header is not None), expect


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.task)
@settings(FAST, max_examples=8)
@given(data=st.data())
def test_valid_rows_read_back_exactly(layout, data):
    splits = {"train": data.draw(rows(layout, 5)), "dev": data.draw(rows(layout, 3))}
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), layout, valid_files(layout, splits))
        loaded = load_task(layout.task, tmp)
    for name, part in splits.items():
        expected = [
            Example(f[layout.text_idx[0]], f[layout.text_idx[1]] if len(layout.text_idx) > 1 else None, label)
            for f, label in part
        ]
        assert loaded[name] == expected


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.task)
@FAST
@given(data=st.data())
def test_one_bad_row_is_one_line_naming_file_and_line(layout, data):
    files, name, line, expect = data.draw(damaged(layout))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp), layout, files)
        with pytest.raises(DataFileError) as err:
            load_task(layout.task, tmp)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / name}:{line}: "), message
    assert expect in message


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.task)
@settings(FAST, max_examples=4)
@given(data=st.data())
def test_cli_exits_2_with_one_line_and_no_run_folder(layout, data):
    """Data are read before the model: --model names a folder that does not exist and is never reached."""
    files, name, line, _ = data.draw(damaged(layout))
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp), layout, files)
        out = Path(tmp) / "run"
        argv = [
            "train",
            "--task",
            layout.task,
            "--method",
            "lora",
            "--data-dir",
            tmp,
            "--output-dir",
            f"{out}",
        ]
        stderr, stdout = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            code = main([*argv, "--model", str(Path(tmp) / "no-model"), "--max-steps", "1"])
        assert code == 2
        assert stderr.getvalue().startswith(f"aroma train: error: {folder / name}:{line}: ")
        assert stderr.getvalue().count("\n") == 1
        assert not out.exists()


@pytest.mark.parametrize("score", ["nan", "inf", "1e999", "-7", "5.5"])
def test_stsb_score_outside_its_scale_names_file_and_line(tmp_path, score):
    layout = next(layout for layout in LAYOUTS if layout.task == "stsb")
    good = ["x"] * layout.num_fields
    good[layout.label_idx] = "3.2"
    bad = list(good)
    bad[layout.label_idx] = score
    lines = ["\t".join(good).encode(), "\t".join(bad).encode()]
    folder = write(tmp_path, layout, {"train.tsv": encode(layout, layout.header, lines), "dev.tsv": b""})
    with pytest.raises(DataFileError, match=r"train\.tsv:3: score .* outside STS-B's range") as err:
        load_task("stsb", folder)
    assert "\n" not in str(err.value)
