"""GLUE loaders: every task's layout (small files written here), the real shared files, every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from aroma_peft.data import DataFileError, Example, get_task, load_task
from aroma_peft.errors import UserInputError

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="../shared/data/glue not available")

MNLI_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
    "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
)
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"

# task -> (folder, {file: text}, expected first train example, expected dev sets)
LAYOUTS = {
    "cola": (
        "CoLA",
        {"train.tsv": "gj04\t1\t\tThe sailors rode the breeze.\nclc95\t0\t*\tHe a book read.\n"},
        Example("The sailors rode the breeze.", None, 1),
        ["dev"],
    ),
    "sst2": (
        "SST-2",
        {"train.tsv": 'sentence\tlabel\nit \'s "charming" . \t1\n'},
        Example('it \'s "charming" . ', None, 1),
        ["dev"],
    ),
    "mrpc": (
        "MRPC",
        {"train.tsv": '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA " quote .\tB b .\n'},
        Example('A " quote .', "B b .", 0),
        ["dev"],
    ),
    "rte": (
        "RTE",
        {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\tA man runs.\tSomeone moves.\tentailment\n"},
        Example("A man runs.", "Someone moves.", 0),
        ["dev"],
    ),
    "qnli": (
        "QNLI",
        {"train.tsv": "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tnot_entailment\n"},
        Example("Who?", "Him.", 1),
        ["dev"],
    ),
    "qqp": (
        "QQP",
        {"train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n7\t1\t2\tHow?\tWhy?\t1\n"},
        Example("How?", "Why?", 1),
        ["dev"],
    ),
    "stsb": (
        "STS-B",
        {
            "train.tsv": STSB_HEADER
            + "\n0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane.\tA jet.\t4.750\n"
        },
        Example("A plane.", "A jet.", 4.75),
        ["dev"],
    ),
    "mnli": (
        "MNLI",
        {
            "train.tsv": MNLI_HEADER
            + "\n0\t1\t1e\tgov\t( x )\t( y )\t(S x)\t(S y)\tIt rains.\tIt is wet.\tneutral\tneutral\n"
        },
        Example("It rains.", "It is wet.", 1),
        ["dev_matched", "dev_mismatched"],
    ),
}


def write_task(root: Path, task: str) -> Path:
    """A task folder whose dev files repeat the train file (the layout is what matters here)."""
    folder, files, _, devs = LAYOUTS[task]
    path = root / folder
    path.mkdir(parents=True, exist_ok=True)
    text = files["train.tsv"]
    for name in ["train.tsv", *(f"{d}.tsv" for d in devs)]:
        (path / name).write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_every_layout_loads(tmp_path, task):
    write_task(tmp_path, task)
    splits = load_task(task, tmp_path)
    _, _, first, devs = LAYOUTS[task]
    assert list(splits) == ["train", *devs]
    assert splits["train"][0] == first
    spec = get_task(task)
    assert spec.num_labels == (1 if task == "stsb" else 3 if task == "mnli" else 2)


def test_task_folder_given_directly_and_names_are_forgiving(tmp_path):
    folder = write_task(tmp_path, "sst2")
    assert load_task("SST-2", folder)["train"][0].label == 1
    (tmp_path / "SST-2").rename(tmp_path / "sst2")
    assert load_task("sst2", tmp_path)["dev"][0].label == 1


@needs_glue
@pytest.mark.parametrize(
    ("task", "train", "dev"),
    [("cola", 8551, 1043), ("mrpc", 3668, 408), ("rte", 2490, 277), ("sst2", 67349, 872)],
)
def test_shared_glue_files_have_official_sizes(task, train, dev):
    splits = load_task(task, GLUE)
    assert (len(splits["train"]), len(splits["dev"])) == (train, dev)
    labels = {e.label for e in splits["train"]}
    assert labels == {0, 1}


@needs_glue
def test_mrpc_bom_is_stripped_and_quotes_are_text():
    first = load_task("mrpc", GLUE)["dev"][0]
    assert first.label == 1 and first.text_b.startswith('" The foodservice')


@pytest.mark.parametrize(
    ("task", "text", "match"),
    [
        (
            "rte",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n",
            r"train\.tsv:3: expected 4 tab-separated fields, found 3",
        ),
        (
            "rte",
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
            r"train\.tsv:2: label 'maybe' is not one of",
        ),
        ("rte", "index\tpremise\tsentence2\tlabel\n", r"train\.tsv:1: header has no column 'sentence1'"),
        (
            "cola",
            "gj04\t1\t\tok\ngj04\t1\tjust three\n",
            r"train\.tsv:2: expected 4 tab-separated fields, found 3",
        ),
        (
            "stsb",
            STSB_HEADER + "\n0\tg\tf\ty\to\ts\ts\ta\tb\thigh\n",
            r"train\.tsv:2: score 'high' is not a number",
        ),
        ("sst2", "", r"train\.tsv: empty file"),
        ("sst2", "sentence\tlabel\n", r"train\.tsv: no examples"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, task, text, match):
    folder = write_task(tmp_path, task)
    (folder / "train.tsv").write_text(text)
    with pytest.raises(DataFileError, match=match):
        load_task(task, tmp_path)


def test_not_utf8_names_the_file(tmp_path):
    folder = write_task(tmp_path, "sst2")
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\n\xff\xfe bad\t1\n")
    with pytest.raises(DataFileError, match=r"dev\.tsv:\d+: not UTF-8 text"):
        load_task("sst2", tmp_path)


def test_missing_folder_task_and_file(tmp_path):
    with pytest.raises(DataFileError, match="data folder not found"):
        load_task("rte", tmp_path / "nope")
    with pytest.raises(DataFileError, match=r"no RTE/ folder and no RTE files here; expected the GLUE"):
        load_task("rte", tmp_path)
    folder = write_task(tmp_path, "mnli")
    (folder / "dev_mismatched.tsv").unlink()
    with pytest.raises(DataFileError, match=r"dev_mismatched\.tsv: file not found"):
        load_task("mnli", tmp_path)


def test_unknown_task():
    with pytest.raises(UserInputError, match="unknown task 'wnli': expected one of cola, mnli"):
        get_task("wnli")


def test_hub_path_converts_the_glue_dataset(monkeypatch):
    import datasets

    def fake(name, task):
        assert (name, task) == ("glue", "mnli")
        split = {"premise": ["p"], "hypothesis": ["h"], "label": [2]}
        return {"train": split, "validation_matched": split, "validation_mismatched": split}

    monkeypatch.setattr(datasets, "load_dataset", fake)
    splits = load_task("mnli")
    assert splits["dev_mismatched"] == [Example("p", "h", 2)]


def test_hub_failure_is_one_line(monkeypatch):
    import datasets

    def fail(*args, **kwargs):
        raise ConnectionError("no internet\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(
        UserInputError,
        match=r"could not load GLUE rte from the Hugging Face hub \(no internet\); pass --data-dir",
    ):
        load_task("rte")
