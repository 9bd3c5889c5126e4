"""A run's output folder: refuse to clobber a previous run, write every file atomically.

Layout: ``config.json`` (the resolved flat config, readable by ``--config``), ``log.jsonl`` (one JSON
object per step and per evaluation), ``metrics.json``, ``ranks.json`` (rank and effective rank of every
learned dW), the adapter (``adapter/``, plus ``adapter_lora/`` for AROMA and ReLoRA, or ``model/``),
``checkpoints/`` while the run is unfinished, and ``manifest.json``: every name the run wrote, which
is exactly what ``--overwrite`` deletes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..io import atomic_write, write_json

CONFIG, LOG, METRICS, RANKS, MANIFEST = (
    "config.json",
    "log.jsonl",
    "metrics.json",
    "ranks.json",
    "manifest.json",
)
RUN_FILES = (CONFIG, LOG, METRICS, RANKS)
# What a run wrote before runs had a manifest (deleted by --overwrite of such a run).
LEGACY_OUTPUTS = (*RUN_FILES, "adapter", "adapter_lora", "model", "sora.json")


def is_run(directory: Path) -> bool:
    return any((directory / name).exists() for name in (*RUN_FILES, MANIFEST))


def prepare(directory: str | Path, overwrite: bool) -> Path:
    """Check ``directory`` may receive a run; create and delete nothing (a failed start leaves no trace).

    Without ``overwrite`` a folder holding a run, or anything else, is refused. With it, the replaced
    run's files are deleted when the new run starts writing (:meth:`RunWriter.start`); files the run
    did not write are kept.
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
    return path


def written_names(directory: Path) -> list[str]:
    """What the run in ``directory`` wrote: its manifest, or the known outputs of an older run."""
    manifest = directory / MANIFEST
    if manifest.is_file():
        try:
            return [str(name) for name in json.loads(manifest.read_text())["files"]]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise UserInputError(f"{manifest}: damaged manifest; remove the run's files by hand") from None
    return [name for name in LEGACY_OUTPUTS if (directory / name).exists()]


def remove_run(directory: Path) -> None:
    """Delete exactly the files and folders a previous run wrote (the manifest last)."""
    for name in written_names(directory):
        path = directory / name
        if Path(name).name != name or name in ("", ".", ".."):
            continue  # a manifest only names entries of the run folder itself
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (directory / MANIFEST).unlink(missing_ok=True)


class RunWriter:
    """Appends to ``log.jsonl`` (flushed per line), writes the JSON files atomically and keeps the
    manifest of everything the run wrote. A disabled writer (processes other than rank 0) writes
    nothing."""

    def __init__(self, directory: Path, enabled: bool = True) -> None:
        self.directory = directory
        self.enabled = enabled
        self._log = None
        self._files: list[str] = []
        self._present: set[str] = set()

    def start(self, config: dict[str, Any], overwrite: bool) -> None:
        """A new run: replace the previous run's files (with ``overwrite``), write config and empty log."""
        if not self.enabled:
            return
        if overwrite and self.directory.is_dir():
            remove_run(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._present = set(os.listdir(self.directory))
        self.track(MANIFEST, CONFIG, LOG)
        write_json(self.directory / CONFIG, config)
        # A new log replaces the old one only once it starts (atomically), never by truncation first.
        atomic_write(self.directory / LOG, lambda tmp: Path(tmp).write_text(""))
        self._log = open(self.directory / LOG, "ab")  # noqa: SIM115  (closed by close())

    def resume(self, log_offset: int) -> None:
        """Continue a run: the log is cut back to what it held at the checkpoint being resumed."""
        if not self.enabled:
            return
        self._files = written_names(self.directory)
        self._present = set(os.listdir(self.directory))
        with open(self.directory / LOG, "r+b") as f:
            f.truncate(log_offset)
        self._log = open(self.directory / LOG, "ab")  # noqa: SIM115  (closed by close())

    def track(self, *names: str) -> None:
        """Add names to the manifest (written before the files, so a kill never leaves one unlisted)."""
        new = [n for n in names if n not in self._files]
        if new and self.enabled:
            self._files += new
            write_json(self.directory / MANIFEST, {"files": self._files})

    def track_new(self) -> None:
        """Add whatever appeared in the folder since the run started (e.g. a method's adapter files)."""
        self.track(*sorted(set(os.listdir(self.directory)) - self._present))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        assert self._log is not None, "start() opens the log"
        self._log.write((json.dumps(record) + "\n").encode())
        self._log.flush()

    def log_offset(self) -> int:
        """Bytes of ``log.jsonl`` written so far (what a checkpoint records)."""
        assert self._log is not None, "start() opens the log"
        return self._log.tell()

    def write_json(self, name: str, data: Any) -> None:
        if self.enabled:
            self.track(name)
            write_json(self.directory / name, data)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def read_config(directory: str | Path) -> dict[str, Any]:
    """A run folder's saved settings (``config.json``), with one-line errors for a missing or damaged one."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise UserInputError(f"{path.parent}: not a run folder (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: damaged run file ({err})") from None


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
