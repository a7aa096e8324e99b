"""Write latency as the store grows: p50 of single writes at a small store and at a large one.

Two ways to grow the store. The default imports generated records through the real importer
(``bench_latency``: about a minute at the small size). For millions of profiles, where importing
would take hours, ``bench_latency_filled`` fills the store with ``bench.fill`` (rows of the same
shapes, written in bulk) and probes it at each size; the small store is filled the same way, so
both sizes are like for like. Either way every probe is a real ``ProfileService.write_batch`` of
one write, timed from the call to its commit.
"""

from __future__ import annotations

import random
import re
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

from bench.backends import fresh_database
from bench.figures import latency_ms, ratio
from bench.fill import FillResult, after_fill, fill, fill_ucid, probe_ids
from bench.generate import ORG_ID, REGION, Dataset, new_person_record, records
from bench.machine import load_note
from bench.run_import import run_worker, setup_org
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult
from profilehub.store.database import Database

PROBES = 1000  # half existing people, half new
# New people in the filled-store probes: filled-profile numbers far past any fill (phones stay
# valid up to 999,999,999), so they are new people of the same shapes as the filled ones.
NEW_PEOPLE_FROM = 900_000_000
# Disk a filled store takes per profile, measured at 1M (PostgreSQL ~3.3 KB, SQLite ~3.6 KB plus
# its staging copy of the ids while it fills), with room to spare.
BYTES_PER_PROFILE = 6_000


def _probe(service: ProfileService, bodies: list[dict[str, Any]]) -> dict[str, float]:
    seconds: list[float] = []
    for body in bodies:
        write = ProfileWrite(ORG_ID, REGION, body["ids"], body["upsert"])
        started = time.perf_counter()
        service.write_batch([write], "bench")
        seconds.append(time.perf_counter() - started)
    return latency_ms(seconds)


def _slice(path: Path, start: int, stop: int) -> Path:
    part = path.with_name(f"{path.stem}-{start}-{stop}.ndjson")
    if not part.exists():
        with path.open("rb") as f, part.open("wb") as out:
            out.writelines(islice(f, start, stop))
    return part


def probe_writes(
    data: Dataset, imported: int, stage: int, seed: int = 7
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """The probes after importing the first ``imported`` records of ``data`` (made with ``seed``):
    PROBES // 2 existing people drawn uniformly from every person those records made, each sending
    one of their own imported records again (picked at random among theirs); and PROBES // 2 new
    people, numbered past every person of the whole dataset, so that none of their ids is stored.
    Returns (existing bodies, new bodies, the existing people's numbers)."""
    rng = random.Random(1000 + stage)
    made = sum(new for _, _, new in records(imported, seed))
    people = sorted(rng.sample(range(made), min(PROBES // 2, made)))
    wanted = set(people)
    seen: dict[int, int] = {}
    chosen: dict[int, dict[str, Any]] = {}
    for body, number, _ in records(imported, seed):
        if number in wanted:
            seen[number] = seen.get(number, 0) + 1
            if rng.randrange(seen[number]) == 0:  # one record of theirs, uniformly (reservoir)
                chosen[number] = body
    existing = [chosen[n] for n in people]
    rng.shuffle(existing)
    first_new = data.people + stage * PROBES
    new = [new_person_record(first_new + k, seed, rng) for k in range(PROBES // 2)]
    return existing, new, people


def bench_latency(data: Dataset, small: int, backend: str, out: Path, reproduce: str) -> dict[str, Any]:
    """Import ``small`` records, probe; import the rest of ``data``, probe again with fresh people."""
    with fresh_database(backend, out) as url:
        setup_org(url)
        run_worker(Dataset(_slice(data.records, 0, small), data.truth, small, 0), url, False, 3600)
        db = Database(url)
        service = ProfileService(db)
        existing, new, _ = probe_writes(data, small, 0)
        at_small = _probe(service, existing + new)
        db.close()
        rest = _slice(data.records, small, data.count)
        run_worker(Dataset(rest, data.truth, data.count - small, 0), url, False, 3600)
        db = Database(url)
        service = ProfileService(db)
        with db.read() as conn:
            size = conn.exec_driver_sql("SELECT COUNT(*) FROM profiles").scalar_one()
        existing, new, _ = probe_writes(data, data.count, 1)
        at_large = _probe(service, existing + new)
        db.close()
    print(
        f"[latency {backend}] single write p50 {at_small['p50']:.2f} ms at ~{small:,} records -> "
        f"{at_large['p50']:.2f} ms at {size:,} profiles (ratio {ratio(at_large['p50'], at_small['p50'])}); "
        f"p99 {at_small['p99']:.2f} -> {at_large['p99']:.2f} ms; probes: {PROBES // 2} stored people "
        f"drawn uniformly from all of them, {PROBES // 2} people never stored; {load_note()}"
    )
    print(f"[latency {backend}] reproduce: {reproduce}")
    sys.stdout.flush()
    return {"backend": backend, "small": at_small, "large": at_large, "profiles": size}


# --- the filled store ---


def _upsert(i: int, rng: random.Random) -> dict[str, Any]:
    # What bench.generate's records update: the profile category always, consent now and then.
    upsert: dict[str, Any] = {"profile": {"first_name": f"F{i}", "last_seen_batch": 99_999}}
    if rng.random() < 0.3:
        upsert["consent"] = {"gdpr_marketing": rng.choice(("yes", "no"))}
    return upsert


def _timed(service: ProfileService, ids: dict[str, Any], upsert: dict[str, Any]) -> tuple[float, WriteResult]:
    write = ProfileWrite(ORG_ID, REGION, ids, upsert)
    started = time.perf_counter()
    (result,) = service.write_batch([write], "bench")
    took = time.perf_counter() - started
    if not isinstance(result, WriteResult):
        raise RuntimeError(f"probe write {ids} failed: {result}")
    return took, result


_DISK = re.compile(r"(sd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+)")


def _disk_read_mb() -> float:
    """MB read from the machine's disks so far (/proc/diskstats; 0 where there is none): a probe
    that finds its pages in memory reads nothing, one that misses the cache shows here."""
    try:
        lines = Path("/proc/diskstats").read_text().splitlines()
    except OSError:
        return 0.0
    sectors = sum(int(f[5]) for f in (line.split() for line in lines) if _DISK.fullmatch(f[2]))
    return sectors * 512 / 1e6


def _new_since_fill(db: Database, size: int) -> int:
    """Profiles not made by the fill: a range of the primary key past the last filled ucid, so the
    check reads a few pages instead of counting (and caching) the whole table before the probes."""
    with db.read() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT COUNT(*) FROM profiles WHERE org_id = ? AND ucid > ?".replace(
                    "?", "%s" if db.dialect == "postgresql" else "?"
                ),
                (ORG_ID, after_fill(size)),
            ).scalar_one()
        )


def _probe_filled(db: Database, size: int, stage: int) -> dict[str, Any]:
    """PROBES single writes: existing people picked at random over the whole store (cold pages at
    10M), then as many new people. Each existing-person write must land on its filled profile."""
    service = ProfileService(db)
    rng = random.Random(1000 + stage)
    people = rng.sample(range(size), PROBES // 2)
    before = _new_since_fill(db, size)
    disk_before = _disk_read_mb()
    existing: list[float] = []
    wrong: list[int] = []
    for i in people:
        took, result = _timed(service, probe_ids(i, rng.randrange(3)), _upsert(i, rng))
        existing.append(took)
        if result.created or result.profile["ucid"] != fill_ucid(i):
            wrong.append(i)
    grew = _new_since_fill(db, size) - before
    new: list[float] = []
    created = 0
    for k in range(PROBES // 2):
        i = NEW_PEOPLE_FROM + stage * PROBES + k
        took, result = _timed(service, probe_ids(i, rng.randrange(3)), _upsert(i, rng))
        new.append(took)
        created += result.created
    return {
        "disk_read_mb": _disk_read_mb() - disk_before,
        "all": latency_ms(existing + new),
        "existing": latency_ms(existing),
        "new": latency_ms(new),
        "existing_probes": len(people),
        "existing_resolved": len(people) - len(wrong),
        "profiles_grown_by_existing": grew,
        "new_created": created,
    }


def _store_size(db: Database) -> tuple[int, int]:
    with db.read() as conn:
        profiles = int(conn.exec_driver_sql("SELECT COUNT(*) FROM profiles").scalar_one())
        ids = int(conn.exec_driver_sql("SELECT COUNT(*) FROM profile_ids").scalar_one())
    return profiles, ids


def _check_disk(backend: str, out: Path, profiles: int) -> None:
    need = profiles * BYTES_PER_PROFILE
    free = shutil.disk_usage(out).free  # PostgreSQL's data directory is on the same disk here
    if free < need:
        raise RuntimeError(
            f"a {backend} store of {profiles:,} profiles needs about {need / 1e9:.0f} GB, "
            f"{free / 1e9:.0f} GB free under {out}"
        )


def bench_latency_filled(
    small: int, large: list[int], backend: str, out: Path, reproduce: str
) -> dict[str, Any]:
    """Fill ``small`` profiles and probe; fill on to each size in ``large`` and probe again."""
    sizes = [small, *sorted(large)]
    _check_disk(backend, out, sizes[-1])
    stages: list[dict[str, Any]] = []
    tag = f"[latency {backend}]"
    with fresh_database(backend, out) as url:
        Database(url).close()  # migrates; the fill needs the database to itself
        setup_org(url)
        filled = 0
        fills: list[FillResult] = []
        for stage, size in enumerate(sizes):
            result = fill(url, size - filled, start=filled)
            fills.append(result)
            filled = size
            print(f"{tag} {result.line()}")
            sys.stdout.flush()
            db = Database(url)
            try:
                probe = _probe_filled(db, size, stage)
                profiles, id_rows = _store_size(db)
            finally:
                db.close()
            probe.update(
                size=size, profiles=profiles, id_rows=id_rows, fill_seconds=sum(f.seconds for f in fills)
            )
            stages.append(probe)
            a, e, n = probe["all"], probe["existing"], probe["new"]
            print(
                f"{tag} at {size:,} filled profiles ({profiles:,} profile rows, {id_rows:,} id rows; "
                f"filled in {probe['fill_seconds']:.0f}s): single write p50/p95/p99 "
                f"{a['p50']:.2f} / {a['p95']:.2f} / {a['p99']:.2f} ms (existing people p50 "
                f"{e['p50']:.2f}, new {n['p50']:.2f}); disk read during the probes "
                f"{probe['disk_read_mb']:,.0f} MB (whole machine); {load_note()}"
            )
            print(
                f"{tag} identity: {probe['existing_resolved']}/{probe['existing_probes']} writes of filled "
                f"people (raw ids, random over the store) landed on their filled profile; profiles "
                f"grown by them: {probe['profiles_grown_by_existing']}; new people created "
                f"{probe['new_created']}/{PROBES // 2}"
            )
            sys.stdout.flush()
            if probe["existing_resolved"] != probe["existing_probes"] or probe["profiles_grown_by_existing"]:
                raise RuntimeError(f"{tag} filled people did not resolve to their profiles: {probe}")
    first = stages[0]["all"]
    for later in stages[1:]:
        last = later["all"]
        print(
            f"{tag} single write p50 {first['p50']:.2f} ms at {sizes[0]:,} profiles -> {last['p50']:.2f} ms "
            f"at {later['size']:,} (ratio {ratio(last['p50'], first['p50'])}); p95 {first['p95']:.2f} -> "
            f"{last['p95']:.2f}, p99 {first['p99']:.2f} -> {last['p99']:.2f} ms; {load_note()}"
        )
    print(f"{tag} reproduce: {reproduce}")
    sys.stdout.flush()
    return {"backend": backend, "filled": True, "stages": stages}
