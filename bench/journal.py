"""What explaining and undoing merges costs (docs/unmerge.md), in one run, on SQLite and PostgreSQL:

1. CDP writes/s with the journal against the same writes without it (``ProfileService(journal=
   False)``, the only switch), in alternating rounds (on, off, off, on, on, off), a fresh database each:
   single writes sent by concurrent threads to the service, as the HTTP route sends them, so the
   writer groups them into batches as it does when serving. The bar is at least 0.9x.
2. ``_explain`` p50 against a write's p50: the next records of the dataset, one at a time, each
   explained and then written, on a database already holding the rest (the bar: at most 2x).
3. The time of one unmerge of a person made by 1,000 writes (two profiles merged early through a
   shared device id, then written alternately through each side's own ids), undoing that merge.

In-process (no HTTP): the journal's cost is all in the writer, and the HTTP layer would only add
the same time to both sides. Run: ``python -m bench.journal [--backend sqlite|postgres]
[--writes N] [--threads T]``. The machine is shared: its load is printed before each part.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.alternating import on_off, rounds_note
from bench.backends import fresh_database
from bench.generate import ORG_ID, REGION, records
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.errors import ProfilehubError
from profilehub.lineage import explain, unmerge
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"


def _writes(count: int, skip: int = 0) -> list[ProfileWrite]:
    return [
        ProfileWrite(r["orgId"], r["region"], r["ids"], r["upsert"])
        for r, _, _ in list(records(skip + count, seed=11))[skip:]
    ]


def _service(url: str, journal: bool) -> tuple[Database, ProfileService]:
    setup_org(url)
    db = Database(url)
    return db, ProfileService(db, journal=journal)


def write_round(backend: str, journal: bool, writes: list[ProfileWrite], threads: int) -> float:
    """Writes per second of ``writes``, each sent alone from ``threads`` threads."""
    with fresh_database(backend, OUT) as url:
        db, service = _service(url, journal)
        try:
            service.write_batch(writes[:1], "bench")  # the strategy cached, the writer warm
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(lambda w: service.write_batch([w], "bench")[0], writes[1:]))
            elapsed = time.perf_counter() - start
        finally:
            db.close()
    failed = [r for r in results if isinstance(r, ProfilehubError)]
    if len(failed) > len(results) // 20:
        raise RuntimeError(f"{len(failed)} writes refused: {failed[0]}")
    return (len(writes) - 1) / elapsed


def journal_cost(backend: str, count: int, threads: int) -> dict[str, Any]:
    writes = _writes(count)
    return on_off(lambda journal: write_round(backend, journal, writes, threads))


def _ms(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:.2f} ms"


def explain_latency(backend: str, fill: int, probes: int) -> dict[str, Any]:
    writes = _writes(fill + probes)
    with fresh_database(backend, OUT) as url:
        db, service = _service(url, True)
        try:
            for i in range(0, fill, 500):
                service.write_batch(writes[i : min(i + 500, fill)], "bench")
            explained: list[float] = []
            written: list[float] = []
            for w in writes[fill:]:
                start = time.perf_counter()
                with contextlib.suppress(ProfilehubError):
                    explain(service, w, "bench")
                explained.append(time.perf_counter() - start)
                start = time.perf_counter()
                service.write_batch([w], "bench")
                written.append(time.perf_counter() - start)
        finally:
            db.close()
    return {
        "explain": statistics.median(explained),
        "write": statistics.median(written),
        "ratio": statistics.median(explained) / statistics.median(written),
    }


def person_of(count: int) -> list[ProfileWrite]:
    """One person's ``count`` writes: profiles A (crm_id) and B (fpuid) merged by the third write
    through a shared device (an AdId both sent), then written through A's and B's ids in turn."""
    a, b = {"crm_id": "bench-crm"}, {"fpuid": "bench-fp"}
    out = [
        ProfileWrite(ORG_ID, REGION, {**a, "AdId": "shared-device"}, {"profile": {"side": "a"}}),
        ProfileWrite(ORG_ID, REGION, b, {"profile": {"side": "b"}}),
        ProfileWrite(ORG_ID, REGION, {**b, "AdId": "shared-device"}, {"consent": {"email": "yes"}}),
    ]
    for i in range(3, count):
        side = a if i % 2 else b
        out.append(ProfileWrite(ORG_ID, REGION, side, {"profile": {f"attr{i % 50}": i}}))
    return out


def unmerge_time(backend: str, count: int) -> dict[str, Any]:
    writes = person_of(count)
    with fresh_database(backend, OUT) as url:
        db, service = _service(url, True)
        try:
            # One at a time, as a person's writes arrive: one journal entry each.
            for w in writes:
                [result] = service.write_batch([w], "bench")
                if isinstance(result, ProfilehubError):
                    raise result
            assert not isinstance(result, ProfilehubError)
            ucid = result.profile["ucid"]
            start = time.perf_counter()
            profiles = unmerge(service, ORG_ID, REGION, ucid, {"AdId": ["shared-device"]}, "bench").profiles
            elapsed = time.perf_counter() - start
        finally:
            db.close()
    return {"seconds": elapsed, "profiles": len(profiles)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--writes", type=int, default=4000, help="writes per journal round")
    parser.add_argument("--threads", type=int, default=32, help="concurrent writers")
    parser.add_argument("--fill", type=int, default=5000, help="records before the explain probes")
    parser.add_argument("--probes", type=int, default=300, help="records explained, then written")
    parser.add_argument("--person", type=int, default=1000, help="writes of the unmerged person")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with exclusive_run(command_line()):
        print(f"reproduce: {command_line()}")
        for backend in args.backend or ["sqlite", "postgres"]:
            print(f"== {backend}")
            print(f"  {load_note()}")
            cost = journal_cost(backend, args.writes, args.threads)
            print(
                f"  writes/s, {args.writes} single writes from {args.threads} threads: journal on "
                f"{cost['on']:.0f}, off {cost['off']:.0f}: {cost['ratio']:.2f}x ({rounds_note(cost)})"
            )
            print(f"  {load_note()}")
            lat = explain_latency(backend, args.fill, args.probes)
            print(
                f"  after {args.fill} records, {args.probes} probes: _explain p50 {lat['explain'] * 1000:.2f} ms, "
                f"write p50 {lat['write'] * 1000:.2f} ms: {lat['ratio']:.2f}x"
            )
            print(f"  {load_note()}")
            um = unmerge_time(backend, args.person)
            print(
                f"  unmerge of a person of {args.person} writes: {um['seconds']:.2f} s ({um['profiles']} profiles)"
            )


if __name__ == "__main__":
    main()
