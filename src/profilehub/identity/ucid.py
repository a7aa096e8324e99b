"""New ucids: time-ordered UUIDs (version 7 layout), strictly increasing within a process.

A merge makes the first-created profile the master, comparing ``(created_ts, ucid)``. Writes in
one batch share a millisecond, so with random ucids the tie would be broken by chance and a batch
could pick another master than the same records sent one by one. Increasing ucids break the tie
in creation order.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

_COUNTER_BITS = 42  # rand_a (12 bits) and the top 30 bits of rand_b
_lock = threading.Lock()
_last_ms = -1
_counter = 0


def new_ucid() -> str:
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            # Start low in a random place so ucids of two processes rarely collide in order.
            _counter = int.from_bytes(os.urandom(4), "big") << 8
        else:
            ms = _last_ms
            _counter += 1
            if _counter >= 1 << _COUNTER_BITS:  # practically unreachable; move to the next ms
                _last_ms += 1
                ms = _last_ms
                _counter = 0
        counter = _counter
    rand_a = counter >> 30
    rand_b = ((counter & ((1 << 30) - 1)) << 32) | int.from_bytes(os.urandom(4), "big")
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return _text(value)


def _text(value: int) -> str:
    """``str(uuid.UUID(int=value))`` (the canonical form) at a quarter of its CPU: every new
    profile and CRM record is named by one."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class UcidBlock:
    """``n`` ucids reserved at once, in order: ``block(k)`` is the k-th, above every ucid this
    process made before the block and below every one it makes after.

    The bulk import names a profile created by its k-th record ``block(k)``, so its profiles sort
    in file order (as the online import's, which creates them one by one), whichever order it
    resolves them in.
    """

    def __init__(self, n: int) -> None:
        global _last_ms, _counter
        with _lock:
            ms = time.time_ns() // 1_000_000
            if ms > _last_ms:
                start = int.from_bytes(os.urandom(4), "big") << 8
            else:
                ms, start = _last_ms, _counter + 1
            if start + n >= 1 << _COUNTER_BITS:  # practically unreachable; the next ms
                ms, start = max(ms, _last_ms) + 1, 0
            _last_ms, _counter = ms, start + max(n, 1) - 1
        self.ms = ms
        self.start = start
        self.n = n

    def __call__(self, k: int) -> str:
        return self.many((k,))[0]

    def many(self, ks: Sequence[int]) -> list[str]:
        """``[self(k) for k in ks]``: ``new_ucid``'s layout (its counter is ``start + k``),
        formatted from the integers without a ``uuid.UUID`` each (the bulk import names tens of
        thousands at a time)."""
        if ks and (min(ks) < 0 or max(ks) >= self.n):
            raise IndexError(f"ucids {min(ks)}..{max(ks)} of a block of {self.n}")
        ms = f"{self.ms & ((1 << 48) - 1):012x}"
        head = f"{ms[:8]}-{ms[8:]}-7"
        start, low = self.start, (1 << 30) - 1
        randoms = os.urandom(4 * len(ks))
        out = []
        for n, k in enumerate(ks):
            counter = start + k
            rand = int.from_bytes(randoms[4 * n : 4 * n + 4], "big")
            tail = f"{0b10 << 62 | (counter & low) << 32 | rand:016x}"
            out.append(f"{head}{counter >> 30:03x}-{tail[:4]}-{tail[4:]}")
        return out
