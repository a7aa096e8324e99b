"""Import progress in ``/metrics``: ``profilehub import`` runs in a process of its own, so it keeps
its progress in the database and every server's ``/metrics`` shows it (issue 15), on both
databases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.cli import main
from profilehub.ingest import progress
from profilehub.ingest.cdp import cdp_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer, ImportSummary
from profilehub.metrics import Metrics
from profilehub.profiles import ProfileService
from tests.conftest import OrgFixture
from tests.test_metrics import Sample, scrape, value


def import_samples(samples: dict[Sample, float]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v for k, v in samples.items() if k[0].startswith("profilehub_import_")}


def run_labels(samples: dict[Sample, float]) -> dict[str, str]:
    """The one import run the scrape shows: its labels."""
    runs = {k[1] for k in import_samples(samples) if k[0] == "profilehub_import_source_bytes"}
    assert len(runs) == 1, runs
    return dict(next(iter(runs)))


def write_ndjson(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def good(i: int) -> dict[str, Any]:
    return {"ids": {"email": f"p{i}@acme.com"}, "upsert": {"profile": {"n": i}}}


BAD = {"ids": {"no_such_type": "x"}, "upsert": {}}


def test_a_finished_import_shows_its_counts_in_a_servers_metrics(
    client: TestClient, org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert import_samples(scrape(client)) == {}  # no import yet: no series
    source = write_ndjson(tmp_path / "customers.ndjson", [good(0), good(1), BAD, good(0), good(2)])
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    run = CliRunner().invoke(
        main,
        [
            "import",
            "cdp",
            str(source),
            "--org-id",
            str(org.org_id),
            "--region",
            "EU",
            "--max-rejects",
            "1",
            "--quiet",
            "--workers",
            "0",
        ],
    )
    assert run.exit_code == 0, run.output

    samples = scrape(client)  # the server's own process: it read the importer's row
    labels = run_labels(samples)
    assert labels["org_id"] == str(org.org_id) and labels["kind"] == "cdp"
    assert labels["source"] == "customers.ndjson"  # the file's name, not its path
    counts = {
        outcome: value(samples, "profilehub_import_records", **labels, outcome=outcome)
        for outcome in ("read", "created", "updated", "rejected")
    }
    assert counts == {"read": 5, "created": 3, "updated": 1, "rejected": 1}
    size = source.stat().st_size
    assert value(samples, "profilehub_import_source_bytes", **labels) == size
    assert value(samples, "profilehub_import_read_bytes", **labels) == size
    states = {s: value(samples, "profilehub_import_state", **labels, state=s) for s in progress.STATES}
    assert states == {"running": 0, "done": 1, "interrupted": 0, "stopped": 0, "failed": 0}
    started = value(samples, "profilehub_import_started_timestamp_seconds", **labels)
    finished = value(samples, "profilehub_import_finished_timestamp_seconds", **labels)
    assert 1_700_000_000 < started <= finished


def test_an_import_stopped_by_its_first_records_shows_stopped(
    client: TestClient, org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_ndjson(tmp_path / "wrong.ndjson", [BAD] * 400)  # all rejected alike: stops soon after 100
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    run = CliRunner().invoke(
        main,
        [
            "import",
            "cdp",
            str(source),
            "--org-id",
            str(org.org_id),
            "--region",
            "EU",
            "--quiet",
            "--batch-size",
            "50",
            "--workers",
            "0",
        ],
    )
    assert run.exit_code == 1 and "stopped after line" in run.output, run.output
    samples = scrape(client)
    labels = run_labels(samples)
    assert value(samples, "profilehub_import_state", **labels, state="stopped") == 1
    assert value(samples, "profilehub_import_state", **labels, state="running") == 0
    rejected = value(samples, "profilehub_import_records", **labels, outcome="rejected")
    assert 100 <= rejected < 400  # the batches in flight when it stopped, not the whole file
    assert value(samples, "profilehub_import_records", **labels, outcome="read") == rejected
    assert value(samples, "profilehub_import_records", **labels, outcome="created") == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_running_import_moves_its_gauges_batch_by_batch(
    app: FastAPI, client: TestClient, org: OrgFixture, tmp_path: Path
) -> None:
    """The importer as the command runs it, scraped after each committed batch."""
    source = write_ndjson(tmp_path / "batches.ndjson", [good(i) for i in range(6)])
    clock = Clock()
    recorder = progress.ProgressRecorder(app.state.db, org.org_id, "cdp", source, clock=clock)
    sink = cdp_sink(ProfileService(app.state.db), org.org_id, "EU", "test")
    seen: list[tuple[float, float, float]] = []

    def on_batch(summary: ImportSummary) -> None:
        clock.now += 2  # past the recorder's once-a-second throttle
        recorder(summary)
        samples = scrape(client)
        labels = run_labels(samples)
        finished = ("profilehub_import_finished_timestamp_seconds", tuple(sorted(labels.items())))
        assert finished not in samples  # no end while it runs
        seen.append(
            (
                value(samples, "profilehub_import_records", **labels, outcome="created"),
                value(samples, "profilehub_import_state", **labels, state="running"),
                value(samples, "profilehub_import_updated_timestamp_seconds", **labels),
            )
        )

    recorder.start()
    importer = Importer(source, lambda o, line: read_ndjson(source, o, line), sink, batch_size=2)
    importer.progress = on_batch
    importer.workers = 0
    summary = importer.run()
    assert seen == [(2, 1, 1_800_000_002), (4, 1, 1_800_000_004), (6, 1, 1_800_000_006)]
    clock.now += 0.5
    recorder(summary)  # within the second: not written again
    recorder.finish(summary, "done")
    samples = scrape(client)
    labels = run_labels(samples)
    assert value(samples, "profilehub_import_state", **labels, state="done") == 1
    assert value(samples, "profilehub_import_finished_timestamp_seconds", **labels) == 1_800_000_006.5


def test_runs_are_shown_an_hour_after_their_last_update_and_kept_a_week(
    app: FastAPI, org: OrgFixture
) -> None:
    db = app.state.db
    hour, week = progress.SHOWN_FOR_MS, progress.KEPT_FOR_MS
    t0 = 1_800_000_000_000
    old = db.write(lambda c: progress.start_run(c, org.org_id, "cdp", "old.ndjson", 10, t0))
    with db.read() as conn:
        assert [r.run_id for r in progress.recent_runs(conn, t0 + hour)] == [old]
        assert progress.recent_runs(conn, t0 + hour + 1) == []  # a killed importer's run fades out
    db.write(lambda c: progress.start_run(c, org.org_id, "people", "new.ndjson", 10, t0 + week + 1))
    with db.read() as conn:
        # The org's next import deleted the run not updated for a week.
        kept = conn.execute(sa.text("SELECT source FROM import_runs")).scalars().all()
    assert kept == ["new.ndjson"]


def test_metrics_answer_without_import_series_when_the_runs_cannot_be_read() -> None:
    metrics = Metrics()

    def unreadable() -> list[progress.ImportRun]:
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    metrics.watch_imports(unreadable)
    metrics.written(merges=1, refused=0)
    text = metrics.render().decode()
    assert "profilehub_merges_total 1.0" in text and "profilehub_import_" not in text
