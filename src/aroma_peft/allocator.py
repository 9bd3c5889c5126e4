"""Keep freed CPU memory in the process between training steps (glibc's malloc only).

PyTorch's CPU tensors come from ``malloc``. glibc returns the free top of its heap to the system once
it exceeds a trim threshold, and a step that frees its activations at the end of the backward does so
every step; the next step then takes a page fault on every fresh 4 kB page it touches again. Measured on
MiniLM (8 x 128, 1 thread, ``benchmarks/speed/page_faults.py``): AROMA's step took 10,000-30,000 minor
faults, the frozen floor's far fewer, because a method that keeps more activations for its backward
(AROMA keeps each adapted Linear's input, the frozen floor does not) crosses the threshold more often.
Raising the trim threshold, and pinning the mmap threshold at its maximum (glibc's automatic threshold
is switched off as soon as either is set, and would fall back to 128 kB), keeps those pages mapped: the
faults vanish for every method and the process keeps its high-water mark of memory, as jemalloc or
tcmalloc would. ``aroma train`` and ``aroma bench`` call it; a library user can call it too, or set
``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` (which this leaves alone).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap memory
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value (HEAP_MAX_SIZE / 2 on 64-bit)
ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds (see the module docstring). Returns True if set; False on
    another C library, or when the user set the thresholds through the environment."""
    if any(name in os.environ for name in ENV):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has mallopt as a no-op)
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
