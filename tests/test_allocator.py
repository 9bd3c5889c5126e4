"""Freed memory stays in the process (glibc): what a step frees is not handed back to the system, so the
next step does not page-fault it in again. Each case runs in a fresh process (the setting is
process-wide)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from aroma_peft.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
handed_back = []
for _ in range(3):  # three "steps": activations of 1-8 MB each (~240 MB), freed at the end
    xs = [torch.ones(1 << 18 + i % 4) for i in range(64)]
    full = resident_mb()
    del xs
    handed_back.append(full - resident_mb())
print(kept, max(handed_back))
"""


def handed_back_mb(mode: str, **env: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env,
    ).stdout.split()  # fmt: skip
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_activations_stay_in_the_process() -> None:
    kept, kept_mb = handed_back_mb("keep")
    default, default_mb = handed_back_mb("default")
    assert kept and not default
    assert default_mb > 100  # glibc's defaults hand most of the ~240 MB back (re-faulted next step)
    assert kept_mb < 5


def test_thresholds_from_the_environment_win() -> None:
    kept, _ = handed_back_mb("keep", MALLOC_TRIM_THRESHOLD_="131072")
    assert not kept
