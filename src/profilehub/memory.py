"""Give freed memory back to the system after a large request (glibc only).

A 1,000-record ``_bulk`` body becomes ~115 MB of short-lived Python objects. Once freed, glibc's
allocator keeps most of those pages in the process (the freed chunks lie between live ones at the
top of its heaps, and its automatic trimming only releases the very top), so the server stayed
near its peak while idle. ``malloc_trim(0)`` releases every free whole page of every heap: a few
milliseconds after a request that already took seconds. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def give_back() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
