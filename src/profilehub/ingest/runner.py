"""The import loop: read a batch, hand it to a sink, record rejects, checkpoint, repeat.

A sink is any callable that takes a batch of parsed records and returns one outcome per record, in
order: something with ``.created`` when the record was written, or the ``ProfilehubError`` that
refused it. The runner knows nothing of CDP or CRM; ``cdp.py`` (and the CRM people sink) adapt the
core's batch writes to this shape. One batch is in flight in the sink's thread while the next one
is read and parsed (and, for a ``StagedSink``, prepared in a worker process), and memory holds at
most two batches whatever the file's size.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, Protocol, runtime_checkable

import orjson

from profilehub import collector
from profilehub.errors import ProfilehubError, error_body
from profilehub.identity.resolve import ID_LIMIT
from profilehub.identity.suppression import ID_SUPPRESSED
from profilehub.ingest import checkpoint as checkpoints
from profilehub.ingest.checkpoint import Checkpoint
from profilehub.ingest.reader import SourceRecord


class Written(Protocol):
    @property
    def created(self) -> bool: ...


Outcome = Written | ProfilehubError
Sink = Callable[[Sequence[dict[str, Any]]], Sequence[Outcome]]


@runtime_checkable
class StagedSink(Protocol):
    """A sink whose CPU-heavy first stage can run in worker processes.

    ``prepare_job(records)`` returns a picklable function and its arguments (or None: nothing to
    prepare ahead); the importer runs it in a worker process as soon as the batch is read, and the
    sink's thread later calls ``write(records, <what it returned, or None>)``. The sink also works
    as a plain ``Sink``.
    """

    def prepare_job(
        self, records: Sequence[dict[str, Any]]
    ) -> tuple[Callable[..., Any], tuple[Any, ...]] | None: ...

    def write(self, records: Sequence[dict[str, Any]], prepared: Any) -> Sequence[Outcome]: ...

    def __call__(self, records: Sequence[dict[str, Any]]) -> Sequence[Outcome]: ...


def _start_worker(parent: int) -> None:
    """In a worker process: tune the garbage collector as the importer does, and exit when the
    importer is gone.

    A killed importer (``kill -9``, out of memory) leaves its workers waiting on a queue that
    never closes; this watch ends them within a second instead of leaving them running.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-importer", daemon=True).start()
    collector.tune()


class WorkerPool(ProcessPoolExecutor):
    """The import's worker processes; ``peak_rss_bytes`` is the largest peak resident memory of
    one of them, read as the pool shuts down (0 where ``/proc`` is not there to read).

    Not ``getrusage(RUSAGE_CHILDREN)``: Linux counts in a child's ``ru_maxrss`` the memory its
    process had before ``exec`` (a copy of the importer, or the importer's own with ``vfork``),
    so that figure is the importer's size when the worker started, not the worker's. ``VmHWM`` is
    the high-water mark of the worker's own address space."""

    peak_rss_bytes = 0

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for process in list((getattr(self, "_processes", None) or {}).values()):
            self.peak_rss_bytes = max(self.peak_rss_bytes, _high_water_mark(process.pid))
        super().shutdown(wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        """End the worker processes now, their jobs unfinished (an import that stops). SIGKILL:
        they start with SIGTERM blocked (``_stop_signals_blocked``)."""
        for process in list((getattr(self, "_processes", None) or {}).values()):
            process.kill()
        self.shutdown(wait=False, cancel_futures=True)


def _high_water_mark(pid: int | None) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError):
        pass  # already gone, or not Linux
    return 0


def worker_pool(workers: int) -> Any:
    """``workers`` preparing processes (a ``WorkerPool``) as a context manager, or
    ``nullcontext(None)`` for none."""
    if not workers:
        return nullcontext(None)
    # spawn, not fork: this process already runs threads (the database writer's, at least)
    return WorkerPool(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )


# The interpreter's switch interval (``sys.setswitchinterval``) while a thread of this process
# keeps its core busy and worker processes are fed beside it: the pool's own threads, which hand
# the workers their tasks and take their results back, need the GIL, and at the default 5 ms a
# turn the workers waited on them (the bulk importer's one worker at ~0.5 of a core while the
# importer prepared chunks itself; at 0.5 ms ~0.8, and prepare 19.8 -> 15.9 s at a million:
# bench/NOTES-bulk.md).
FEEDING_SWITCH_SECONDS = 0.0005


@contextmanager
def feeding_switches(seconds: float = FEEDING_SWITCH_SECONDS) -> Iterator[None]:
    """The switch interval at most ``seconds`` for the block (it is the process's), then as it was."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def default_workers() -> int:
    """Worker processes for a staged sink: the cores the writer thread leaves free (at most 4)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


Progress = Callable[["ImportSummary"], None]
RecordSource = Callable[[int, int], Iterator[SourceRecord]]  # (offset, line) -> records from there


@dataclass
class ImportSummary:
    source: Path
    source_size: int
    offset: int = 0
    line: int = 0
    read: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    # Records that carried a suppressed id (written without it, or rejected: docs/privacy.md).
    suppressed: int = 0
    # Records written without some of their ids: the profile held its idType's limit of values.
    over_id_limit: int = 0
    resumed_from_line: int = 0
    seconds: float = 0.0
    reject_reasons: dict[str, int] = field(default_factory=dict)
    # The first rejected record's error message per reason, to show what went wrong (of the whole
    # import: a resumed run starts from the checkpoint's).
    reject_examples: dict[str, str] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.created + self.updated

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read,
            "created": self.created,
            "updated": self.updated,
            "rejected": self.rejected,
            "suppressed": self.suppressed,
            "over_id_limit": self.over_id_limit,
        }


class ImportInterrupted(Exception):
    """Ctrl-C (or SIGTERM: ``terminated``) stopped the import after a committed, checkpointed
    batch; ``--resume`` goes on from ``summary.line``, and nothing after it was written."""

    def __init__(self, summary: ImportSummary, terminated: bool = False) -> None:
        super().__init__(f"interrupted after line {summary.line:,}")
        self.summary = summary
        self.terminated = terminated


@contextmanager
def _handling(signum: signal.Signals, handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """``handler`` for ``signum`` while the block runs, the previous one after. Not where signal
    handlers cannot be set (a thread but the main one), nor for a signal the process was started
    ignoring (nohup, a background job): ignored on purpose, it stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signum)
    if previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signum, handler)
    try:
        yield
    finally:
        # None: a handler not set from Python; Python's own default stands in for it
        default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        signal.signal(signum, previous if previous is not None else default)


@contextmanager
def _stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """While the import runs, a first Ctrl-C only asks it to stop once the batch being written is
    committed and checkpointed, so the checkpoint never lags what was written (a batch written
    twice would count twice and see its ids again). A second Ctrl-C stops at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    with _handling(signal.SIGINT, handler):
        yield


@contextmanager
def stop_on_terminate(stop: threading.Event, terminated: threading.Event | None = None) -> Iterator[None]:
    """While the block runs, SIGTERM (``kill``, a service manager or container stopping the job)
    asks the import to stop as a first Ctrl-C does (``stop``), at the next place it looks: the
    online import after the batch being written is committed and checkpointed; a bulk import
    between chunks of records, groups of components and blocks of rows loaded (its transaction
    rolled back, its folder removed; an index being built is finished first). SIGKILL cannot be
    caught: the next bulk import removes what such a run left (``bulk.workdir.remove_stale``), and
    an online import's checkpoint may then lag its last committed batch. ``terminated`` is set
    too, so that the command can tell a SIGTERM (status 1) from a Ctrl-C (status 130)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if terminated is not None:
            terminated.set()
        stop.set()

    with _handling(signal.SIGTERM, handler):
        yield


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Around a submit to the worker pool, which starts its processes on demand.

    A terminal's Ctrl-C reaches the whole process group, workers included, and so does a service
    manager's SIGTERM (systemd's default ``KillMode=control-group``). The importer decides how to
    stop (after the batch being written); a worker interrupted or terminated mid-job, or while it
    is still starting, would fail that batch and print a traceback of its own. A process inherits
    the signal mask of the thread that starts it, so a worker started here never receives SIGINT
    or SIGTERM (``WorkerPool.terminate`` ends workers with SIGKILL; a worker whose importer is gone
    exits by itself, ``_start_worker``). The block is per thread: a signal meanwhile is taken by
    another thread and still reaches the importer's handler (ignoring it instead would drop it).
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# An import whose first this-many records were all rejected for one reason stops there: a wrong
# org, region or mapping would otherwise read the whole file to reject every record the same way.
EARLY_STOP_RECORDS = 100


class ImportStopped(Exception):
    """The first records of the run were all rejected for one reason, so the import stopped after
    the batches in flight; they are committed and checkpointed as after a Ctrl-C."""

    def __init__(self, summary: ImportSummary, reason: str, records: int) -> None:
        example = summary.reject_examples.get(reason, "")
        super().__init__(
            f"stopped after line {summary.line:,}: the first {records:,} records were all rejected "
            f"for the same reason ({reason}: {example}); fix that and run the import again"
        )
        self.summary = summary
        self.reason = reason


def _batches(records: Iterator[SourceRecord], size: Callable[[], int]) -> Iterator[list[SourceRecord]]:
    """Batches of ``size()`` records, asked again for each batch."""
    batch: list[SourceRecord] = []
    limit = size()
    for record in records:
        batch.append(record)
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = size()
    if batch:
        yield batch


def _reason(error: ProfilehubError) -> str:
    # A few errors name their own reason (``Suppressed``: id_suppressed); the rest, their field.
    return getattr(error, "reason", None) or error.field or type(error).__name__


def _noticed(outcome: Any, code: str) -> bool:
    # A CDP write's notices are ``Notice``s, a CRM person's dicts.
    notices = getattr(outcome, "notices", None) or ()
    return any((n.get("code") if isinstance(n, dict) else n.code) == code for n in notices)


def carried_suppressed(outcome: Any) -> bool:
    """Whether a record's outcome says it carried a suppressed id (written without it, or refused)."""
    if isinstance(outcome, ProfilehubError):
        return getattr(outcome, "reason", None) == ID_SUPPRESSED
    return _noticed(outcome, ID_SUPPRESSED)


def over_id_limit(outcome: Any) -> bool:
    """Whether a record was written without some of its ids because its profile held as many
    values of their idType as the strategy allows (the notice ``id_limit``)."""
    return not isinstance(outcome, ProfilehubError) and _noticed(outcome, ID_LIMIT)


SHARED_BATCH_DIVISOR = 20


class SharedWriteLock(Protocol):
    """What the importer asks of the database it shares with other writers (``Database``)."""

    def writers_waiting(self) -> bool: ...

    def writers_present(self) -> bool: ...


class Importer:
    """Runs one import of ``source`` through ``sink``; resumable from its checkpoint."""

    def __init__(
        self,
        source: Path,
        records: RecordSource,
        sink: Sink,
        *,
        batch_size: int = 2000,
        progress: Progress | None = None,
        workers: int | None = None,
        early_stop: int = EARLY_STOP_RECORDS,
        shared: SharedWriteLock | None = None,
        at: int | None = None,
    ) -> None:
        self.source = source
        # The sink's fixed write time (``--at``), kept in the checkpoint: a resumed run must write
        # at the time the records before it were written at, or the file is split between times.
        self.at = at
        self.records = records
        self.sink = sink
        self.batch_size = batch_size
        # Asked before each batch: while other writers wait for the database (a server on the same
        # SQLite file), batches (one transaction each) are a twentieth of the size, so the waiters'
        # turns come sooner. Beside a server they start so, and double with each batch nobody
        # waited for.
        self.shared = shared
        self._shared_size = max(1, batch_size // SHARED_BATCH_DIVISOR)
        self._size = 0  # the last batch's size (0: none yet)
        self.progress = progress or (lambda _summary: None)
        self.workers = default_workers() if workers is None else workers
        self.early_stop = early_stop  # 0: never stop early
        self._head_seen = 0  # records of this run's first ``early_stop`` seen so far
        self._head_reasons: set[str] = set()  # why they were rejected ("" for one written)
        self._stopped_for: str | None = None
        self._stop = threading.Event()  # set by Ctrl-C or an early stop; renewed by each run
        # The last run's counts as they stand (also after it failed midway): what it reports.
        self.summary: ImportSummary | None = None

    def _next_batch_size(self) -> int:
        if self.shared is None:
            return self.batch_size
        if self.shared.writers_waiting():
            self._size = self._shared_size
        elif not self._size:
            self._size = self._shared_size if self.shared.writers_present() else self.batch_size
        else:
            self._size = min(self.batch_size, self._size * 2)
        return self._size

    def _worker_pool(self) -> Any:
        return worker_pool(self.workers if isinstance(self.sink, StagedSink) else 0)

    def _submit(
        self, pool: Executor, workers: Executor | None, parsed: list[dict[str, Any]]
    ) -> Future[Sequence[Outcome]]:
        sink = self.sink
        if workers is None or not isinstance(sink, StagedSink):
            return pool.submit(sink, parsed)
        job = sink.prepare_job(parsed)
        if job is None:
            return pool.submit(sink.write, parsed, None)
        with _stop_signals_blocked():
            prepared = workers.submit(job[0], *job[1])
        return pool.submit(lambda: sink.write(parsed, prepared.result()))

    def run(self, resume: bool = False) -> ImportSummary:
        size, mtime_ns = checkpoints.fingerprint(self.source)
        saved = checkpoints.load(self.source) if resume else None
        if saved is not None and saved.at != self.at:
            given = "no --at" if self.at is None else f"--at {self.at}"
            raise checkpoints.CheckpointMismatch(
                f"{self.source} was being imported with "
                + ("no --at" if saved.at is None else f"--at {saved.at}")
                + f", and --resume was given {given}: resume with the same"
            )
        state = saved or Checkpoint(size, mtime_ns, at=self.at)
        summary = ImportSummary(self.source, size, state.offset, state.line, resumed_from_line=state.line)
        self.summary = summary
        for name, value in state.counts.items():
            setattr(summary, name, value)
        summary.reject_reasons = dict(state.reject_reasons)
        summary.reject_examples = dict(state.reject_examples)
        rejects_file = checkpoints.rejects_path(self.source)
        started = time.monotonic()
        with rejects_file.open("r+b" if saved and rejects_file.exists() else "wb") as rejects:
            # Rejects written after the last checkpoint belong to records that will be read again.
            rejects.truncate(state.rejects_size)
            rejects.seek(state.rejects_size)
            stop = self._stop = threading.Event()
            terminated = threading.Event()
            interrupted = False
            with (
                _stop_on_interrupt(stop),
                stop_on_terminate(stop, terminated),
                collector.tuned(),
                self._worker_pool() as workers,
                ThreadPoolExecutor(1, thread_name_prefix="profilehub-import") as pool,
            ):
                in_flight: tuple[list[SourceRecord], Future[Sequence[Outcome]]] | None = None
                for batch in _batches(self.records(state.offset, state.line), self._next_batch_size):
                    if stop.is_set():
                        interrupted = True  # this batch was read, not written: resume reads it again
                        break
                    parsed = [r.data for r in batch if r.data is not None]
                    future = self._submit(pool, workers, parsed)
                    if in_flight is not None:
                        self._commit(*in_flight, state, summary, rejects, started)
                    in_flight = (batch, future)
                if in_flight is not None:
                    self._commit(*in_flight, state, summary, rejects, started)
        summary.seconds = time.monotonic() - started
        if interrupted and self._stopped_for is not None:
            raise ImportStopped(summary, self._stopped_for, self.early_stop)
        if interrupted:
            raise ImportInterrupted(summary, terminated.is_set())
        checkpoints.clear(self.source)
        if summary.rejected == 0:
            rejects_file.unlink(missing_ok=True)
        return summary

    def _commit(
        self,
        batch: list[SourceRecord],
        future: Future[Sequence[Outcome]],
        state: Checkpoint,
        summary: ImportSummary,
        rejects: BinaryIO,
        started: float,
    ) -> None:
        outcomes = iter(future.result())
        for record in batch:
            summary.read += 1
            if record.data is None:
                body = error_body(400, record.error or "unreadable record", {"line": "unreadable"})
                self._reject(record, body, "parse", summary, rejects)
                continue
            outcome = next(outcomes)
            if carried_suppressed(outcome):
                summary.suppressed += 1
            if over_id_limit(outcome):
                summary.over_id_limit += 1
            if isinstance(outcome, ProfilehubError):
                body = error_body(outcome.status, outcome.message, outcome.errors)
                self._reject(record, body, _reason(outcome), summary, rejects)
            else:
                self._watch_head("")
                if outcome.created:
                    summary.created += 1
                else:
                    summary.updated += 1
        rejects.flush()
        last = batch[-1]
        state.offset, state.line = last.end_offset, last.line
        state.rejects_size = rejects.tell()
        state.counts = summary.counts()
        state.reject_reasons = dict(summary.reject_reasons)
        state.reject_examples = dict(summary.reject_examples)
        checkpoints.save(self.source, state)
        summary.offset, summary.line = state.offset, state.line
        summary.seconds = time.monotonic() - started
        self.progress(summary)
        head_done = self.early_stop and self._head_seen >= self.early_stop
        if head_done and self._stopped_for is None and len(self._head_reasons) == 1:
            reason = next(iter(self._head_reasons))
            if reason:  # "" is a record written
                self._stopped_for = reason
                self._stop.set()  # the loop stops as after a Ctrl-C: no batch after the one in flight

    def _watch_head(self, reason: str) -> None:
        if self._head_seen < self.early_stop:
            self._head_seen += 1
            self._head_reasons.add(reason)

    def _reject(
        self,
        record: SourceRecord,
        error: dict[str, Any],
        reason: str,
        summary: ImportSummary,
        rejects: BinaryIO,
    ) -> None:
        self._watch_head(reason)
        summary.rejected += 1
        summary.reject_reasons[reason] = summary.reject_reasons.get(reason, 0) + 1
        message = str(error["message"])
        example = message if message.startswith("line ") else f"line {record.line}: {message}"
        summary.reject_examples.setdefault(reason, example)
        rejects.write(orjson.dumps({"line": record.line, "record": record.raw, "error": error}) + b"\n")
