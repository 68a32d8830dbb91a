"""Handing memory that large steps freed back to the system.

Deriving a million events' frames frees hundreds of megabytes of temporary arrays. Two
allocators keep such memory for reuse rather than return it: Arrow's (mimalloc), which
held each column's copy read from a Parquet file, and glibc's, whose heap serves blocks
under its mmap threshold — a threshold glibc raises to the size of each large block freed
(up to 32 MiB: a column of four million values). What they keep counts in the process's
resident memory and adds to the peak of every later step (1 M events: 1.86 → 1.48 GB
with both measures below and the leaner frames of the same change, ``bench/analysis.py``).

So, once a step over many rows is done, :func:`give_back`

- fixes glibc's mmap threshold at 8 MiB, once per process: a block of a million 8-byte
  values or more is then mapped from the system and unmapped when freed. (At 1 MiB,
  page faults slowed ``lag()`` by half; at 8 MiB the analyses took as long as before.)
  This setting is the process's: it is left alone where the user chose one
  (``MALLOC_MMAP_THRESHOLD_``, or ``mmap_threshold`` in ``GLIBC_TUNABLES``) and where
  ``EVTKIT_MALLOC=keep`` is set.
- asks Arrow's allocator (whichever ``ARROW_DEFAULT_MEMORY_POOL`` chose) and glibc's
  (``malloc_trim``) to return what is free: a few milliseconds.

Outside glibc (musl, macOS, Windows) only Arrow's part applies.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from typing import Any

import pyarrow as pa

__all__ = ["LARGE", "MMAP_THRESHOLD", "give_back"]

LARGE = 200_000
"""Rows from which a step's temporaries are worth handing back (below, they are small)."""
MMAP_THRESHOLD = 8 << 20
"""Blocks from this size on are mapped from the system and returned to it when freed."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def give_back(rows: int) -> None:
    """After a step over ``rows`` rows: return freed memory of Arrow's allocator and of
    the C library's to the system (see the module docstring)."""
    if rows < LARGE:
        return
    libc = _glibc()
    if libc is not None:
        _fix_threshold(libc)
        libc.malloc_trim(0)
    pa.default_memory_pool().release_unused()


@cache
def _glibc() -> Any:
    """The C library if it is glibc (it has ``malloc_trim`` and ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")  # (glibc's name on Linux: no search for it)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


@cache
def _fix_threshold(libc: Any) -> bool:
    """Fix glibc's mmap threshold (once; not where the user chose one or said not to)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or \
            "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "") or \
            os.environ.get("EVTKIT_MALLOC") == "keep":
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
