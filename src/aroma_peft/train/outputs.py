"""A run's output folder: refuse to clobber a previous run, write every file atomically.

Layout: ``config.json`` (the resolved flat config, readable by ``--config``), ``log.jsonl`` (one JSON
object per step and per evaluation), ``metrics.json``, ``ranks.json`` (rank and effective rank of every
learned dW) and the adapter (``adapter/``, plus ``adapter_lora/`` for AROMA and ReLoRA, or ``model/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..io import atomic_write, write_json

CONFIG, LOG, METRICS, RANKS = "config.json", "log.jsonl", "metrics.json", "ranks.json"
RUN_FILES = (CONFIG, LOG, METRICS, RANKS)


def is_run(directory: Path) -> bool:
    return any((directory / name).exists() for name in RUN_FILES)


def prepare(directory: str | Path, overwrite: bool) -> Path:
    """Check ``directory`` may receive a run; never delete anything.

    Without ``overwrite`` a folder holding a run, or anything else, is refused. With it, the new run's
    files replace the old ones one by one (atomically); files the new run does not write are kept.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{path}: output path exists and is not a folder")
    if path.is_dir() and not overwrite:
        if is_run(path):
            raise UserInputError(
                f"{path}: already holds a run (metrics/log/config); pass --overwrite to replace it"
            )
        if any(path.iterdir()):
            raise UserInputError(
                f"{path}: output folder is not empty; pass --overwrite to write into it anyway"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunWriter:
    """Appends to ``log.jsonl`` (flushed per line) and writes the JSON files atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._log = None

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.directory / CONFIG, config)
        # A new log replaces the old one only once it starts (atomically), never by truncation first.
        atomic_write(self.directory / LOG, lambda tmp: Path(tmp).write_text(""))
        self._log = open(self.directory / LOG, "a")  # noqa: SIM115  (closed by close())

    def log(self, record: dict[str, Any]) -> None:
        assert self._log is not None, "write_config() opens the log"
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def write_json(self, name: str, data: Any) -> None:
        write_json(self.directory / name, data)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def read_run(directory: str | Path) -> dict[str, Any]:
    """A finished run's config, metrics, ranks and log records (for ``aroma report``)."""
    path = Path(directory)
    if not (path / METRICS).is_file():
        raise UserInputError(f"{path}: not a finished run (no {METRICS})")
    try:
        run = {"metrics": json.loads((path / METRICS).read_text())}
        run["config"] = json.loads((path / CONFIG).read_text()) if (path / CONFIG).is_file() else {}
        run["ranks"] = json.loads((path / RANKS).read_text()) if (path / RANKS).is_file() else {}
        log_lines = (path / LOG).read_text().splitlines() if (path / LOG).is_file() else []
        run["log"] = [json.loads(line) for line in log_lines if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: damaged run file ({err})") from None
    run["dir"] = str(path)
    return run
