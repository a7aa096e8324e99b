"""Latency percentiles and the one-line figures every benchmark prints."""

from __future__ import annotations

import resource
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {f"p{p}": percentile(ordered, p) * 1000 for p in (50, 95, 99)}


def peak_rss_mb(children: int = 0) -> float:
    """This process's peak resident memory plus ``children`` times the largest peak of its finished
    child processes (the importer's workers): an upper bound for the whole import (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if children else 0
    return (own + children * child) / 1024


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x" if baseline else "n/a"
