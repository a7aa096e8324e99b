"""What the suppression check costs CDP writes (docs/privacy.md), in one run, on SQLite and
PostgreSQL:

1. CDP writes/s for an org holding ``--fingerprints`` suppressed fingerprints (default 10,000, in
   the region written) against the same writes for an org holding none, in alternating rounds
   (with, without, without, with, with, without), a fresh database each: single writes sent by
   concurrent threads as the HTTP route sends them (``write_job``: prepared ahead in the caller's
   thread, grouped into batches by the writer). No write carries a suppressed id, so both sides do
   the same work but the check: every id of every write is fingerprinted (HMAC-SHA256) and looked
   up. The bar (issue 14): at least 0.9x. Beside each side's rate, the process's context switches
   per write (voluntary and not): the check once doubled them by handing the GIL over at every
   HMAC (bench/NOTES-privacy.md), and unlike writes/s that count barely moves with the machine's
   load.
2. The check alone: microseconds to prepare one write (``prepare_write``) with and without the
   fingerprints, over the same records.
3. What holding them costs: the strategy's reload after an erasure (every process reloads it at
   its next write) and its memory, with and without the fingerprints.

In-process (no HTTP): the check runs in ``prepare_write``, and the HTTP layer would only add the
same time to both sides. Run: ``python -m bench.suppression [--backend sqlite|postgres]
[--writes N] [--threads T] [--fingerprints F]``. The machine is shared: its load is printed before
each part.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.alternating import on_off
from bench.backends import fresh_database
from bench.generate import ORG_ID, REGION, records
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.errors import ProfilehubError
from profilehub.identity.normalize import Identifier
from profilehub.profiles import ProfileService, ProfileWrite, prepare_write
from profilehub.store.database import Database
from profilehub.store.strategy_store import load_strategy
from profilehub.store.suppression_store import suppress

OUT = Path(__file__).resolve().parent / "out"


def _writes(count: int) -> list[ProfileWrite]:
    return [
        ProfileWrite(r["orgId"], r["region"], r["ids"], r["upsert"]) for r, _, _ in records(count, seed=11)
    ]


def _suppressed(count: int) -> list[Identifier]:
    """``count`` ids of people erased before the run, none of whom the writes carry (the ids are
    of an idType every write could carry; only their fingerprints are kept)."""
    return [Identifier("crm_id", f"erased-{i}") for i in range(count)]


def _service(url: str, fingerprints: int) -> tuple[Database, ProfileService]:
    setup_org(url)
    db = Database(url)
    if fingerprints:
        ids = _suppressed(fingerprints)
        for start in range(0, len(ids), 5000):
            db.write(lambda c, part=ids[start : start + 5000]: suppress(c, ORG_ID, REGION, part))
    return db, ProfileService(db)


def _switches() -> int:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_nvcsw + used.ru_nivcsw


def write_round(
    backend: str, fingerprints: int, writes: list[ProfileWrite], threads: int
) -> tuple[float, float]:
    """Writes per second of ``writes``, each sent alone from ``threads`` threads, and the process's
    context switches per write meanwhile."""
    with fresh_database(backend, OUT) as url:
        db, service = _service(url, fingerprints)
        try:
            service.write_batch(writes[:1], "bench")  # the strategy cached, the writer warm
            strategy = service.strategies.cached(ORG_ID)
            held = strategy.suppression.count() if strategy and strategy.suppression else 0
            if held != fingerprints:
                raise RuntimeError(f"the org holds {held} fingerprints, not {fingerprints}")

            def one(w: ProfileWrite) -> Any:
                return db.write(service.write_job([w], "bench"))[0]

            switches = _switches()
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(one, writes[1:]))
            elapsed = time.perf_counter() - start
            switches = _switches() - switches
        finally:
            db.close()
    failed = [r for r in results if isinstance(r, ProfilehubError)]
    if len(failed) > len(results) // 20:
        raise RuntimeError(f"{len(failed)} writes refused: {failed[0]}")
    if any(
        n.get("code") == "id_suppressed"
        for r in results
        if not isinstance(r, ProfilehubError)
        for n in r.notices
    ):
        raise RuntimeError("a write carried a suppressed id: the two sides would not do the same work")
    return (len(writes) - 1) / elapsed, switches / (len(writes) - 1)


def write_cost(backend: str, count: int, threads: int, fingerprints: int) -> dict[str, Any]:
    writes = _writes(count)
    switches: dict[bool, list[float]] = {True: [], False: []}

    def one_round(held: bool) -> float:
        rate, per_write = write_round(backend, fingerprints if held else 0, writes, threads)
        switches[held].append(per_write)
        return rate

    cost = on_off(one_round)
    return {**cost, "switches": {held: statistics.mean(v) for held, v in switches.items()}}


def check_cost(backend: str, count: int, fingerprints: int) -> dict[str, Any]:
    """Microseconds per ``prepare_write`` with and without the fingerprints (best of 5 passes),
    and the strategy's reload time and size."""
    writes = _writes(count)
    out: dict[str, Any] = {}
    for held in (0, fingerprints):
        with fresh_database(backend, OUT) as url:
            db, _ = _service(url, held)
            try:
                reloads = []
                for _ in range(5):
                    with db.read() as conn:
                        start = time.perf_counter()
                        strategy = load_strategy(conn, ORG_ID)
                        reloads.append(time.perf_counter() - start)
            finally:
                db.close()
        passes = []
        for _ in range(5):
            start = time.perf_counter()
            for w in writes:
                with contextlib.suppress(ProfilehubError):
                    prepare_write(strategy, w, "bench")
            passes.append((time.perf_counter() - start) / len(writes))
        out[held] = {
            "prepare_us": min(passes) * 1e6,
            "reload_ms": statistics.median(reloads) * 1000,
            "pickled_kb": len(pickle.dumps(strategy)) / 1024,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--writes", type=int, default=3000, help="writes per round")
    parser.add_argument("--threads", type=int, default=32, help="concurrent writers")
    parser.add_argument("--fingerprints", type=int, default=10_000, help="suppressed fingerprints held")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with exclusive_run(command_line()):
        print(f"reproduce: {command_line()}")
        for backend in args.backend or ["sqlite", "postgres"]:
            print(f"== {backend}")
            print(f"  {load_note()}")
            cost = write_cost(backend, args.writes, args.threads, args.fingerprints)
            on_rounds = ", ".join(f"{r:.0f}" for r in cost["rounds"][True])
            off_rounds = ", ".join(f"{r:.0f}" for r in cost["rounds"][False])
            print(
                f"  writes/s, {args.writes} single writes from {args.threads} threads: "
                f"{args.fingerprints} fingerprints held {cost['on']:.0f}, none {cost['off']:.0f}: "
                f"{cost['ratio']:.2f}x (rounds held: {on_rounds}; none: {off_rounds})"
            )
            print(
                f"  context switches a write: {cost['switches'][True]:.1f} held, "
                f"{cost['switches'][False]:.1f} none"
            )
            print(f"  {load_note()}")
            check = check_cost(backend, args.writes, args.fingerprints)
            none, held = check[0], check[args.fingerprints]
            print(
                f"  prepare_write: {held['prepare_us']:.1f} us with {args.fingerprints} fingerprints, "
                f"{none['prepare_us']:.1f} us without (+{held['prepare_us'] - none['prepare_us']:.1f} us a write)"
            )
            print(
                f"  strategy reload: {held['reload_ms']:.1f} ms with, {none['reload_ms']:.1f} ms without; "
                f"pickled {held['pickled_kb']:.0f} KiB with, {none['pickled_kb']:.0f} KiB without"
            )
            print(f"  {load_note()}")


if __name__ == "__main__":
    main()
