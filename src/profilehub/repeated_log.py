"""Log lines that an outage repeats, said once per interval with how often they came.

While the database is down or its disk is full, every request answers the same 503 and every
failed write batch fails alike: one line each made thousands of error lines (and tracebacks) a
minute, burying the first one, which is the one an operator needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# How often one repeating line is said again (with how many times it came meanwhile).
INTERVAL_SECONDS = 10.0


class RepeatedLog:
    """``say(key, level, message)`` logs ``message`` the first time ``key`` comes, then at most
    once per ``interval`` seconds, adding how many times it came since it was last said."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # said from the event loop and the writer thread alike
        self._said: dict[str, tuple[float, int]] = {}  # key -> (when last said, repeats since)

    def say(self, key: str, level: int, message: str, *, exc_info: BaseException | None = None) -> None:
        now = self._clock()
        with self._lock:
            said = self._said.get(key)
            if said is not None and now - said[0] < self._interval:
                self._said[key] = (said[0], said[1] + 1)
                return
            if len(self._said) > 1000:  # keys are a few messages; never let them grow unbounded
                self._said.clear()
            self._said[key] = (now, 0)
        if said is not None and said[1]:
            message = f"{message} (and {said[1]:,} more like it in the last {now - said[0]:.0f} s)"
        self._log.log(level, "%s", message, exc_info=exc_info)
