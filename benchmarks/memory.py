"""Peak resident-memory sampling for one call (the benchmarks' memory figure).

What is measured: the process's resident set size (``/proc/self/statm``), sampled every
``interval`` seconds by a background thread while the call runs, minus the RSS at the start of
the call: the call's peak *working* memory. glibc's mmap threshold is pinned at 64 KiB first,
so every tensor of 64 KiB or more is its own mapping that is returned to the OS when freed (RSS
then follows torch's live CPU allocations rather than malloc's high-water mark). Linux only.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable

_M_MMAP_THRESHOLD = -3
_PAGE = os.sysconf("SC_PAGE_SIZE")


def pin_mmap_threshold(nbytes: int = 64 * 1024) -> bool:
    """Fix glibc's mmap threshold (disables its dynamic growth); False if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    except OSError:
        return False


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_working_memory(fn: Callable[[], object], interval: float = 2e-4) -> int:
    """Peak RSS during ``fn()`` minus RSS just before it, in bytes (>= 0)."""
    base = _rss()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, max(peak, _rss()) - base)
