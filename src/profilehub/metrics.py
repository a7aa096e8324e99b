"""Prometheus metrics of one app: requests, the writer queue, merges. Served at ``GET /metrics``.

Each app has its own registry (tests make many apps in one process). Under ``profilehub serve
--workers N`` (N > 1) every worker is its own process with its own counters, and a scrape reaches
one of them at random; so ``serve`` then sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode: each worker writes its values to files there) and ``/metrics`` answers the sum
over all workers, whichever one is scraped.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from profilehub.ingest.progress import STATES, ImportRun

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Requests the router did not match (404s of any path) share one label: a path as sent would make
# a series per scanner probe, and carries ids.
UNMATCHED_ROUTE = "unmatched"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


# prometheus-client names each process's file ``<type>[_<gauge mode>]_<pid>.db`` (its values.py).
_PROCESS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def clear_multiprocess_dir(folder: Path) -> int:
    """Ready ``folder`` for a new run's processes; how many files of earlier runs it removed.

    A scrape sums every process's file in the folder, those of processes long gone included, so
    a run that found an earlier run's files reported its counts on top of its own (and a worker
    given a dead one's pid went on from its values): prometheus-client wants the folder wiped
    before each start. Only files of its naming go; a missing folder is made; one the server
    cannot write to raises ``OSError`` here rather than in every worker."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    removed = 0
    for file in folder.iterdir():
        if _PROCESS_FILE.fullmatch(file.name):
            file.unlink()
            removed += 1
    with tempfile.TemporaryFile(dir=folder):
        pass
    return removed


def foreign_files(folder: Path) -> list[Path]:
    """The ``*.db`` files in ``folder`` that prometheus-client did not name: left out of scrapes."""
    return sorted(f for f in folder.glob("*.db") if not _PROCESS_FILE.fullmatch(f.name))


class ProcessFilesCollector(Collector):
    """prometheus-client's sum over the processes' files, of its own files only: its
    MultiProcessCollector reads every ``*.db`` in the folder, so one of the operator's (an empty
    foo.db) failed every scrape with a 500."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def collect(self) -> Iterable[Metric]:
        files = [str(f) for f in self.folder.glob("*.db") if _PROCESS_FILE.fullmatch(f.name)]
        merged: Iterable[Metric] = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "profilehub_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "profilehub_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "profilehub_write_queue_depth",
            "Writes waiting for the writer (summed over server processes).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "profilehub_write_batch_size",
            "Writes committed together in one writer transaction.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.merges = Counter("profilehub_merges", "Profiles merged into another by a write.", registry=r)
        self.merges_refused = Counter(
            "profilehub_merges_refused",
            "Merges a write would have made but an idType's limit refused (merge_refused notices).",
            registry=r,
        )
        self._depth: Callable[[], int] | None = None
        # Read from the database at each scrape, so they are not per-process values: under
        # multiprocess mode they are added to the summed answer, not written to its files.
        self._scraped: list[Collector] = []
        # Label children by key: ``labels()`` checks and joins its arguments on every call.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    # --- observers, called by the HTTP shell and the writer ---
    def request(self, method: str, route: str | None, status: int, seconds: float) -> None:
        key = (method, route or UNMATCHED_ROUTE, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self.requests.labels(key[0], key[1], str(status)),
                self.latency.labels(key[0], key[1]),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def batch(self, size: int, waiting: int) -> None:
        """The writer took ``size`` writes into one transaction; ``waiting`` are left queued."""
        self.batch_size.observe(size)
        self.queue_depth.set(waiting)

    def written(self, merges: int, refused: int) -> None:
        if merges:
            self.merges.inc(merges)
        if refused:
            self.merges_refused.inc(refused)

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue's depth again at each scrape (the writer only sets it per batch, and a
        stuck writer takes no batch)."""
        self._depth = depth

    def watch_backlog(self, backlog: Callable[[], dict[str, int]]) -> None:
        """Show the webhook endpoints' backlogs ``backlog()`` finds at each scrape."""
        self._watch(WebhookBacklogCollector(backlog))

    def watch_imports(self, runs: Callable[[], list[ImportRun]]) -> None:
        """Show the imports ``runs()`` finds (read from the database at each scrape: imports run
        in processes of their own, see profilehub.ingest.progress)."""
        self._watch(ImportsCollector(runs))

    def _watch(self, collector: Collector) -> None:
        self._scraped.append(collector)
        if multiprocess_dir() is None:
            self.registry.register(collector)

    # --- exposition ---
    def render(self) -> bytes:
        if self._depth is not None:
            self.queue_depth.set(self._depth())
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        collected = CollectorRegistry()
        collected.register(ProcessFilesCollector(path))
        for collector in self._scraped:
            collected.register(collector)
        return generate_latest(collected)

    @staticmethod
    def process_exited(pid: int) -> None:
        """Drop an exited worker's live gauges (its counters keep counting in the sum)."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class WebhookBacklogCollector(Collector):
    """``profilehub_webhook_backlog_events`` per enabled endpoint, from the database at each scrape.

    Not a labelled ``Gauge``: only the endpoints that exist now are shown, so a deleted or
    disabled one's series goes at once. A gauge kept the last value it was set to, and in
    multiprocess mode (``serve --workers N``) it cannot drop a label set at all (prometheus-client
    warns on ``clear()``, on stderr, outside the JSON log). A scrape while the database is away
    leaves the series out and answers the rest."""

    def __init__(self, backlog: Callable[[], dict[str, int]]) -> None:
        self.backlog = backlog

    def collect(self) -> Iterable[Metric]:
        try:
            found = self.backlog()
        except Exception:  # the database is away: the scrape still answers, without these
            log.warning("metrics: cannot read the webhook backlog", exc_info=True)
            return
        family = GaugeMetricFamily(
            "profilehub_webhook_backlog_events",
            "Events an enabled webhook endpoint has yet to receive: committed after its cursor, "
            "plus those waiting for a retry (read from the database at each scrape).",
            labels=["endpoint"],
        )
        for endpoint, count in found.items():
            family.add_metric([endpoint], count)
        yield family


_IMPORT_LABELS = ["org_id", "import_id", "kind", "source"]


class ImportsCollector(Collector):
    """Gauges per import run, from the database's ``import_runs`` at each scrape.

    A scrape while the database is down leaves these series out instead of failing the whole
    answer (the other metrics are what an operator looks at then)."""

    def __init__(self, runs: Callable[[], list[ImportRun]]) -> None:
        self.runs = runs

    def collect(self) -> Iterable[Metric]:
        try:
            runs = self.runs()
        except sa.exc.SQLAlchemyError:
            log.warning("import progress not shown in /metrics: the database did not answer")
            return
        records = GaugeMetricFamily(
            "profilehub_import_records",
            "Records of an import run so far, by outcome (read = created + updated + rejected).",
            labels=[*_IMPORT_LABELS, "outcome"],
        )
        source = GaugeMetricFamily(
            "profilehub_import_source_bytes", "Size of the import's file.", labels=_IMPORT_LABELS
        )
        read = GaugeMetricFamily(
            "profilehub_import_read_bytes",
            "Bytes of the file committed so far (up to the last checkpoint).",
            labels=_IMPORT_LABELS,
        )
        state = GaugeMetricFamily(
            "profilehub_import_state",
            "1 for the run's state: running, done, interrupted (Ctrl-C), stopped (its first records "
            "all rejected alike) or failed.",
            labels=[*_IMPORT_LABELS, "state"],
        )
        times = {
            name: GaugeMetricFamily(
                f"profilehub_import_{name}_timestamp_seconds", help_text, labels=_IMPORT_LABELS
            )
            for name, help_text in (
                ("started", "When the run started (Unix time)."),
                (
                    "updated",
                    "The run's last progress (Unix time); a running import whose process was "
                    "killed stops moving it.",
                ),
                ("finished", "When the run ended (Unix time); absent while it runs."),
            )
        }
        for run in runs:
            labels = [str(run.org_id), run.run_id, run.kind, run.source]
            for outcome, count in run.records.items():
                records.add_metric([*labels, outcome], count)
            source.add_metric(labels, run.source_bytes)
            read.add_metric(labels, run.read_bytes)
            for name in STATES:
                state.add_metric([*labels, name], 1.0 if run.state == name else 0.0)
            times["started"].add_metric(labels, run.started_ts / 1000)
            times["updated"].add_metric(labels, run.updated_ts / 1000)
            if run.finished_ts is not None:
                times["finished"].add_metric(labels, run.finished_ts / 1000)
        yield from (records, source, read, state, *times.values())
