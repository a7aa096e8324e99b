"""Delivery settings from the environment (``PROFILEHUB_WEBHOOK_*``, ``PROFILEHUB_DELIVERY_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from profilehub.config import SettingsError

# Seconds to wait after each failed attempt of an event: a first retry within 5 s, then the
# schedule Standard Webhooks' reference implementations use, about 27.5 hours in all. An event
# still failing after the last step disables its endpoint (its events wait; nothing is dropped).
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def _float_env(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {raw}")
    return value


def parse_schedule(raw: str, name: str = "PROFILEHUB_WEBHOOK_RETRY_SCHEDULE") -> tuple[float, ...]:
    try:
        steps = tuple(float(s) for s in raw.split(",") if s.strip())
    except ValueError as exc:
        raise SettingsError(
            f"{name}: expected seconds separated by commas (5,300,1800), got {raw!r}"
        ) from exc
    if not steps or any(s < 0 for s in steps):
        raise SettingsError(f"{name}: give at least one delay, none negative (e.g. 5,300,1800), got {raw!r}")
    return steps


@dataclass(frozen=True)
class DeliverySettings:
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    # Seconds an endpoint has to answer a delivery; past it, the attempt failed.
    timeout_seconds: float = 10.0
    # A deliverer holds an endpoint (or an org's stream) this long without renewing it; one that
    # died is replaced after it, and its unacknowledged events are delivered again.
    lease_seconds: float = 30.0
    # How often an idle deliverer looks for new events (``profilehub serve`` is also woken by
    # its own writes at once).
    poll_seconds: float = 0.5
    # After a round that delivered something, wait this long before the next (see runner).
    linger_seconds: float = 0.02
    # Events read, and deliveries in flight, per endpoint at a time (one per ordering key).
    batch_size: int = 200
    concurrency: int = 32

    @classmethod
    def from_env(cls) -> DeliverySettings:
        raw = os.environ.get("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "").strip()
        return cls(
            retry_schedule=parse_schedule(raw) if raw else DEFAULT_RETRY_SCHEDULE,
            timeout_seconds=_float_env("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1),
            lease_seconds=_float_env("PROFILEHUB_DELIVERY_LEASE_SECONDS", 30.0, 1.0),
            poll_seconds=_float_env("PROFILEHUB_DELIVERY_POLL_SECONDS", 0.5, 0.01),
        )
