"""Where the import's writer spends its time as the store grows, slice by slice.

``python -m bench.writer_phases [--records N] [--backend sqlite|postgres] [--slice S]`` imports the
benchmark file (``bench.generate``) into a fresh database with the real importer and prints, for
every S records, the writer's time per record split into its phases: the batch's reads
(``prefetch``: ids, then the profiles owning them), the resolution in Python (with the few reads
it makes itself when a write needs a row the prefetch did not bring), each statement of the flush
(by table), and the commit with whatever else the transaction costs. It wraps the
writer's own methods with timers (a profiling aid: the wrapped names are profilehub's internals,
so it follows them when they change); the import itself is unchanged.

The figures are what ``bench.ceiling`` cannot show: how the parts of a real write grow with the
store, and so which of them a faster import has to change.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.backends import fresh_database
from bench.generate import ORG_ID, REGION, dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub import profiles
from profilehub.ingest.cdp import cdp_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer, ImportSummary
from profilehub.store import batch_store, database, profile_storage

OUT = Path(__file__).parent / "out"
spent: defaultdict[str, float] = defaultdict(float)
_originals: list[tuple[Any, str, Any]] = []


def _timer(owner: Any, name: str, label: Callable[..., str]) -> None:
    original = getattr(owner, name)
    _originals.append((owner, name, original))

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label(*args)] += time.perf_counter() - started

    setattr(owner, name, timed)


def instrument() -> None:
    store = batch_store.BatchStore
    _timer(database._Writer, "_run_batch", lambda *_: "transaction")
    _timer(profiles.ProfileService, "_write_group", lambda *_: "resolution")
    _timer(store, "prefetch", lambda *_: "reads")
    _timer(store, "flush", lambda *_: "flush")
    # each database writes its statements its own way
    for dialect in (profile_storage.SqliteProfileStorage, profile_storage.PostgresProfileStorage):
        _timer(dialect, "_insert_many", lambda _self, table, *_: f"flush: INSERT {table}")
        _timer(
            dialect,
            "_change_many",
            lambda _self, verb, table, columns, *_: (
                f"flush: {verb} {table}" + (f" ({', '.join(columns)})" if columns else "")
            ),
        )


def uninstrument() -> None:
    while _originals:
        owner, name, original = _originals.pop()
        setattr(owner, name, original)
    spent.clear()


def report(records: int, in_slice: int, seconds: float) -> None:
    """Print the slice's phases per record, largest first, and start the next slice."""
    phases = {
        "reads (prefetch: ids, then their profiles)": spent["reads"],
        "resolution in Python": spent["resolution"] - spent["reads"] - spent["flush"],
        "flush (all statements)": spent["flush"],
        "commit and the rest of the transaction": spent["transaction"] - spent["resolution"],
        **{k: v for k, v in spent.items() if k.startswith("flush: ")},
    }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"[phases] to {records:,} records: {in_slice / seconds:,.0f} records/s in this slice; peak RSS {rss:.0f} MB; "
        f"{load_note()}"
    )
    for name, total in sorted(phases.items(), key=lambda kv: -kv[1]):
        per_record = total * 1e6 / in_slice
        if per_record >= 0.5:
            print(f"[phases]   {name:56s} {per_record:7.1f} µs/record", flush=True)
    spent.clear()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.writer_phases", description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--slice", type=int, default=100_000)
    parser.add_argument(
        "--batch-size", type=int, default=2000, help="The importer's batch (its default: 2,000)."
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help="Where the generated file (and a SQLite store) go."
    )
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        run(args)


def run(args: argparse.Namespace) -> None:
    args.out.mkdir(exist_ok=True)
    data = dataset(args.out, args.records)
    marks = {"read": 0, "at": time.perf_counter()}

    def progress(summary: ImportSummary) -> None:
        if summary.read - marks["read"] >= args.slice or summary.read == data.count:
            now = time.perf_counter()
            report(summary.read, summary.read - int(marks["read"]), now - marks["at"])
            marks["read"], marks["at"] = summary.read, now

    with fresh_database(args.backend, args.out) as url:
        setup_org(url)
        db = database.Database(url)
        instrument()
        try:
            sink = cdp_sink(profiles.ProfileService(db), ORG_ID, REGION, "bench")
            Importer(
                data.records,
                lambda offset, line: read_ndjson(data.records, offset, line),
                sink,
                batch_size=args.batch_size,
                progress=progress,
            ).run()
        finally:
            uninstrument()
            db.close()
    print(
        f"[phases] reproduce: .venv/bin/python -m bench.writer_phases --records {args.records} "
        f"--backend {args.backend} --slice {args.slice} --batch-size {args.batch_size}"
    )


if __name__ == "__main__":
    main()
