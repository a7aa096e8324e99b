"""Feature on against off, in alternating rounds of one run: the pattern of the cost benchmarks
(journal, consent ledger, suppression, receipts).

The rounds go on, off, off, on, on, off, so that whatever drifts over a run (caches warming, the
shared machine's load) falls on both sides alike; each side's figure is the mean of its rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

ORDER = (True, False, False, True, True, False)


def on_off(one_round: Callable[[bool], float]) -> dict[str, Any]:
    """``one_round(on)`` answers a rate; the answer holds both means, their ratio and every round."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    for on in ORDER:
        rates[on].append(one_round(on))
    on_mean, off_mean = statistics.mean(rates[True]), statistics.mean(rates[False])
    return {"on": on_mean, "off": off_mean, "ratio": on_mean / off_mean, "rounds": rates}


def rounds_note(cost: dict[str, Any]) -> str:
    """``rounds on: a, b, c; off: d, e, f``, for the figure line."""
    on = ", ".join(f"{r:.0f}" for r in cost["rounds"][True])
    off = ", ".join(f"{r:.0f}" for r in cost["rounds"][False])
    return f"rounds on: {on}; off: {off}"
