"""Delivery settings from the environment: the switch of serve's background delivery, and bad
values refused at start with the variable named."""

from __future__ import annotations

import pytest

from profilehub.config import Settings, SettingsError
from profilehub.delivery.settings import DEFAULT_RETRY_SCHEDULE, DeliverySettings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "process"),
        ("on", "process"),
        ("process", "process"),
        ("Thread", "thread"),
        ("off", "off"),
        ("0", "off"),
    ],
)
def test_serve_delivers_from_a_process_of_its_own_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("PROFILEHUB_SERVE_DELIVERS", value)
    settings = Settings.from_env()
    assert settings.serve_delivers == expected
    assert settings.deliver_in_background is (expected != "off")


def test_the_retry_schedule_and_timings_are_part_of_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().delivery.retry_schedule == DEFAULT_RETRY_SCHEDULE
    assert DEFAULT_RETRY_SCHEDULE[0] <= 5 and sum(DEFAULT_RETRY_SCHEDULE) >= 24 * 3600
    monkeypatch.setenv("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "1, 60,3600")
    monkeypatch.setenv("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", "2.5")
    found = Settings.from_env().delivery
    assert found.retry_schedule == (1.0, 60.0, 3600.0) and found.timeout_seconds == 2.5
    assert found == DeliverySettings.from_env()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "5,soon"),
        ("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "-1"),
        ("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("PROFILEHUB_DELIVERY_LEASE_SECONDS", "x"),
        ("PROFILEHUB_DELIVERY_POLL_SECONDS", "nan"),  # was taken: the deliverer spun at full CPU
        ("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", "inf"),  # was taken: a silent endpoint held it for ever
        ("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "5,nan"),
        ("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "5,inf"),
        ("PROFILEHUB_SERVE_DELIVERS", "maybe"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()
