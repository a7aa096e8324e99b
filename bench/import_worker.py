"""One timed import in its own process, so its peak memory is its own. Prints one JSON line.

``python -m bench.import_worker FILE --url URL [--baseline]``: with ``--baseline`` the same records
are parsed and their ids normalised exactly as the importer does, then written as raw rows with
``INSERT ... ON CONFLICT DO UPDATE`` (no identity resolution): the limit of the machine for the
same rows on the same database.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bench.figures import latency_ms, peak_rss_mb
from bench.generate import ORG_ID, REGION
from bench.machine import command_line, exclusive_run, load_note
from profilehub.errors import ProfilehubError, each_or_error
from profilehub.identity.normalize import Identifier, normalise_ids
from profilehub.identity.strategy import Strategy
from profilehub.ingest.cdp import cdp_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer, Outcome
from profilehub.profiles import ProfileService
from profilehub.store.database import Database

raw_metadata = sa.MetaData()
raw_ids = sa.Table(
    "bench_raw_ids",
    raw_metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True),
    sa.Column("region", sa.String(16), primary_key=True),
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    sa.Column("record", sa.BigInteger, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
)
raw_profiles = sa.Table(
    "bench_raw_profiles",
    raw_metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
)


def raw_ids_upsert(db: Database) -> Any:
    """Create the baseline's raw tables; the ``INSERT ... ON CONFLICT DO UPDATE`` of one id row."""
    with db.engine.begin() as conn:
        raw_metadata.create_all(conn)
    stmt = _insert(db)(raw_ids)
    return stmt.on_conflict_do_update(
        index_elements=["org_id", "region", "id_type", "value"],
        set_={"record": stmt.excluded.record, "ts": stmt.excluded.ts},
    )


def _insert(db: Database) -> Any:
    return postgresql.insert if db.dialect == "postgresql" else sqlite.insert


def raw_profiles_upsert(db: Database) -> Any:
    """The ``INSERT ... ON CONFLICT DO UPDATE`` of one raw profile row (tables made by ``raw_ids_upsert``)."""
    stmt = _insert(db)(raw_profiles)
    return stmt.on_conflict_do_update(
        index_elements=["org_id", "key"], set_={"data": stmt.excluded.data, "ts": stmt.excluded.ts}
    )


def write_raw_rows(
    conn: sa.Connection,
    ids_stmt: Any,
    prof_stmt: Any,
    records: Sequence[tuple[dict[str, Any], list[Identifier]]],
    record_number: int,
    now: int,
) -> None:
    """A batch of records as the baseline's raw rows, one statement (``executemany``) per table:
    one row per distinct stored id, one profile row per record's first id (the last one wins)."""
    id_rows: dict[tuple[str, str], dict[str, Any]] = {}
    profile_rows: dict[str, dict[str, Any]] = {}
    for record, ids in records:
        for i in ids:
            id_rows[(i.id_type, i.value)] = {
                "org_id": ORG_ID,
                "region": REGION,
                "id_type": i.id_type,
                "value": i.value,
                "record": record_number,
                "ts": now,
            }
        if ids:
            key = f"{ids[0].id_type}:{ids[0].value}"[:200]
            profile_rows[key] = {
                "org_id": ORG_ID,
                "key": key,
                "data": orjson.dumps(record.get("upsert") or {}).decode(),
                "ts": now,
            }
    if id_rows:
        conn.execute(ids_stmt, list(id_rows.values()))
    if profile_rows:
        conn.execute(prof_stmt, list(profile_rows.values()))


def baseline_sink(db: Database) -> Any:
    """The same rows, upserted raw: one row per stored id and one per record's first id."""
    ids_stmt = raw_ids_upsert(db)
    prof_stmt = raw_profiles_upsert(db)
    service = ProfileService(db)
    counter = {"n": 0}

    class Done:
        created = True

    def write(records: Sequence[dict[str, Any]], prepared: Prepared | None = None) -> Sequence[Outcome]:
        def job(conn: sa.Connection) -> list[Outcome]:
            strategy = service.strategies.get(conn, ORG_ID)
            normalised = (
                prepared.ids
                if prepared and prepared.strategy_version == strategy.version
                else normalise_records(strategy, records).ids
            )
            now = time.time_ns() // 1_000_000
            out: list[Outcome] = []
            good: list[tuple[dict[str, Any], list[Identifier]]] = []
            for record, ids in zip(records, normalised, strict=True):
                counter["n"] += 1
                if isinstance(ids, ProfilehubError):
                    out.append(ids)
                    continue
                good.append((record, ids))
                out.append(Done())
            write_raw_rows(conn, ids_stmt, prof_stmt, good, counter["n"], now)
            return out

        result: list[Outcome] = db.write(job)
        return result

    class BaselineSink:
        """Staged like profilehub's CDP sink: ids normalised in the importer's worker processes."""

        def prepare_job(self, records: Sequence[dict[str, Any]]) -> tuple[Any, tuple[Any, ...]] | None:
            strategy = service.strategies.cached(ORG_ID)
            return (normalise_records, (strategy, records)) if strategy else None

        def write(self, records: Sequence[dict[str, Any]], prepared: Prepared | None) -> Sequence[Outcome]:
            return write(records, prepared)

        def __call__(self, records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
            return write(records)

    return BaselineSink()


@dataclass
class Prepared:
    strategy_version: int
    ids: list[list[Identifier] | ProfilehubError]


def normalise_records(strategy: Strategy, records: Sequence[dict[str, Any]]) -> Prepared:
    ids = each_or_error(lambda record: normalise_ids(strategy, record.get("ids") or {}, REGION)[0], records)
    return Prepared(strategy.version, ids)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--workers", type=int, help="Importer worker processes (default: as the CLI's).")
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        run(args)


def run(args: argparse.Namespace) -> None:
    db = Database(args.url)
    batch_seconds: list[float] = []
    inner = baseline_sink(db) if args.baseline else cdp_sink(ProfileService(db), ORG_ID, REGION, "bench")

    class Timed:
        """The sink, staged as it is, with the time of each batch's write stage recorded."""

        def prepare_job(self, records: Sequence[dict[str, Any]]) -> tuple[Any, tuple[Any, ...]] | None:
            return inner.prepare_job(records)

        def write(self, records: Sequence[dict[str, Any]], prepared: Any) -> Sequence[Outcome]:
            started = time.perf_counter()
            out = inner.write(records, prepared)
            batch_seconds.append(time.perf_counter() - started)
            return out

        def __call__(self, records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
            return self.write(records, None)

    importer = Importer(
        args.file,
        lambda offset, line: read_ndjson(args.file, offset, line),
        Timed(),
        batch_size=args.batch_size,
        workers=args.workers,
    )
    started = time.perf_counter()
    summary = importer.run()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    db.close()
    result = {
        "records": summary.read,
        "seconds": seconds,
        "rate": summary.read / seconds,
        "created": summary.created,
        "updated": summary.updated,
        "rejected": summary.rejected,
        "batch_ms": latency_ms(batch_seconds),
        # The importer's own process (reader, writer, unpickling what workers send) holds one GIL:
        # its CPU seconds are the cost to cut, steadier than wall time on a shared machine.
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": peak_rss_mb(children=importer.workers),
        "workers": importer.workers,
        "machine": load_note(),
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
