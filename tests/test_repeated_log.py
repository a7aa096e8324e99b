"""An outage's repeating log lines: the first said, the rest counted into one line per interval.

Before, every 503 of an outage was an error line of its own (about 5,000 in 10 s under load, a full
disk), and every failed write batch a traceback: the first line, the one that says what happened,
was buried."""

from __future__ import annotations

import logging
import sqlite3

import pytest
import sqlalchemy as sa

from profilehub import http
from profilehub.repeated_log import RepeatedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _disk_full() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("INSERT …", {}, sqlite3.OperationalError("database or disk is full"))


def test_an_outage_answers_every_request_but_logs_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    monkeypatch.setattr(http, "_outage", RepeatedLog(http.log, interval=10, clock=clock))
    with caplog.at_level(logging.ERROR, logger="profilehub.http"):
        answers = [http.database_error_response(_disk_full()) for _ in range(1000)]
        assert {a.status_code for a in answers} == {503}
        [first] = [r.getMessage() for r in caplog.records]
        assert first.startswith("database: "), first
        clock.now += 10
        http.database_error_response(_disk_full())
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[1].endswith("(and 999 more like it in the last 10 s)"), said


def test_different_lines_are_each_said() -> None:
    logger = logging.getLogger("profilehub.test_repeated")
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    try:
        log = RepeatedLog(logger, interval=10, clock=Clock())
        for key in ("a", "b", "a", "b", "c"):
            log.say(key, logging.INFO, key)
    finally:
        logger.handlers.clear()
    assert said == ["a", "b", "c"]
