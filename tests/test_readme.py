"""Every code block of README.md runs as written.

A fence's info string names the language and optional skip tags (```` ```bash long ````): ``long``,
``gpu`` and ``network`` blocks are not run, but the flags of their ``aroma`` commands are parsed.
Python blocks run in order in one namespace, as a reader pastes them; bash blocks run in a copy of the
repository's layout (symlinks: ``.venv``, ``src``, ``scripts``, ``../shared``) so their ``runs/`` stay
in a temporary folder. Blocks in other languages (``text``: shown output) are not code.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import REPO, SHARED_DATA

from aroma_peft.cli import build_parser

SKIP_TAGS = {"long", "gpu", "network"}
FENCE = re.compile(r"^```(\S*)(.*)$")


class Block(NamedTuple):
    line: int  # 1-based line of the first code line
    language: str
    tags: frozenset[str]
    code: str

    @property
    def runs(self) -> bool:
        return not self.tags & SKIP_TAGS


def blocks(path: Path = REPO / "README.md") -> list[Block]:
    found, current, lines = [], None, []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        match = FENCE.match(text)
        if match and current is None:
            current, lines = (number + 1, match.group(1), frozenset(match.group(2).split())), []
        elif text.startswith("```") and current is not None:
            found.append(Block(*current, "\n".join(lines) + "\n"))
            current = None
        elif current is not None:
            lines.append(text)
    return found


BASH = [b for b in blocks() if b.language in ("bash", "sh")]
PYTHON = [b for b in blocks() if b.language == "python"]


def test_readme_has_code_and_every_block_is_known():
    assert len(PYTHON) >= 2 and any(b.runs for b in BASH) and any(not b.runs for b in BASH)
    assert {b.language for b in blocks()} <= {"bash", "sh", "python", "text"}
    assert all(b.tags <= SKIP_TAGS for b in blocks())


def aroma_commands(code: str) -> list[list[str]]:
    """The arguments of every ``.venv/bin/aroma`` command of a block (comments dropped)."""
    commands = []
    for line in code.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words and words[0] in (".venv/bin/aroma", "aroma"):
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("block", [b for b in BASH if not b.runs], ids=lambda b: f"README.md:{b.line}")
def test_long_blocks_use_real_flags(block):
    for args in aroma_commands(block.code):
        try:
            build_parser().parse_args(args)
        except SystemExit as exit_:
            pytest.fail(f"README.md:{block.line}: aroma {' '.join(args)} -> exit {exit_.code}")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The repository's layout: the code by symlink, a fresh folder for what the blocks write."""
    root = tmp_path_factory.mktemp("readme")
    repo = root / "repo"
    repo.mkdir()
    for name in ("src", "scripts", "benchmarks", "tests", "pyproject.toml", "README.md"):
        (repo / name).symlink_to(REPO / name)
    (repo / ".venv").symlink_to(Path(sys.executable).parents[1])
    (root / "shared").symlink_to(SHARED_DATA.parent)
    return repo


@pytest.mark.slow  # a real training of a few steps on MiniLM, a report and a merge
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not available")
@pytest.mark.parametrize("block", [b for b in BASH if b.runs], ids=lambda b: f"README.md:{b.line}")
def test_bash_block_runs(block, checkout):
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.code], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"README.md:{block.line}\n{result.stdout}\n{result.stderr}"
    for noise in (
        "Traceback",
        "Warning",
        "Loading weights",
        "Writing model shards",
        "LOAD REPORT",
        "Failed to",
    ):
        assert noise not in result.stderr + result.stdout, result.stderr  # quiet by default
    if "aroma train" in block.code:  # the run's summary, to judge it
        assert "majority class" in result.stdout and "figures and table: aroma report" in result.stdout


def test_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the blocks write out/...
    namespace: dict = {"__name__": "__readme__"}
    for block in PYTHON:
        if block.runs:
            exec(compile("\n" * (block.line - 1) + block.code, str(REPO / "README.md"), "exec"), namespace)
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "out" / "sora_lora" / "adapter_config.json").is_file()
