"""The CRM's answers show times as the vendor does (``record_store.iso``): ISO 8601 in UTC with
milliseconds and an explicit ``+00:00``, the same text as ``datetime``'s own formatting."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from profilehub.crm.record_store import iso


def _datetime_text(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


# From 1901 to 2106 (where a float of seconds still holds every millisecond exactly enough).
@given(st.integers(min_value=-(2**31) * 1000, max_value=2**32 * 1000 - 1))
def test_iso_is_datetime_text(ms: int) -> None:
    assert iso(ms) == _datetime_text(ms)


def test_iso_of_times_around_one_second() -> None:
    for ms in [0, 1, 999, 1000, -1, -999, -1000, -1001, 1_764_570_000_000, 1_764_570_000_999]:
        assert iso(ms) == _datetime_text(ms)
    assert iso(1_764_570_000_123) == "2025-12-01T06:20:00.123+00:00"
