"""Delivery settings from the environment: the switch of serve's background delivery, and bad
values refused at start with the variable named."""

from __future__ import annotations

import pytest

from profilehub.config import Settings, SettingsError
from profilehub.delivery.settings import DEFAULT_RETRY_SCHEDULE, DeliverySettings


@pytest.mark.parametrize(("value", "expected"), [("", True), ("on", True), ("off", False), ("0", False)])
def test_serve_delivers_in_the_background_unless_switched_off(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("PROFILEHUB_SERVE_DELIVERS", value)
    assert Settings.from_env().deliver_in_background is expected


def test_the_retry_schedule_and_timings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DeliverySettings.from_env().retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert DEFAULT_RETRY_SCHEDULE[0] <= 5 and sum(DEFAULT_RETRY_SCHEDULE) >= 24 * 3600
    monkeypatch.setenv("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "1, 60,3600")
    monkeypatch.setenv("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", "2.5")
    found = DeliverySettings.from_env()
    assert found.retry_schedule == (1.0, 60.0, 3600.0) and found.timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "5,soon"),
        ("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "-1"),
        ("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("PROFILEHUB_DELIVERY_LEASE_SECONDS", "x"),
        ("PROFILEHUB_SERVE_DELIVERS", "maybe"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()
        DeliverySettings.from_env()
