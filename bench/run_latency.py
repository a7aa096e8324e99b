"""Write latency as the store grows: p50 of single writes at a small store and at a large one."""

from __future__ import annotations

import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

from bench.backends import fresh_database
from bench.figures import latency_ms, ratio
from bench.generate import ORG_ID, REGION, Dataset, records
from bench.run_import import run_worker, setup_org
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database


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


def bench_latency(data: Dataset, small: int, backend: str, out: Path, reproduce: str) -> dict[str, Any]:
    """Import ``small`` records, probe; import the rest of ``data``, probe again with fresh people."""
    probes = 1000
    with fresh_database(backend, out) as url:
        setup_org(url)
        run_worker(Dataset(_slice(data.records, 0, small), data.truth, small, 0), url, False, 3600)
        db = Database(url)
        service = ProfileService(db)
        existing = [b for b, _, _ in islice(records(small), probes // 2)]
        at_small = _probe(
            service, existing + [b for b, _, _ in islice(records(probes // 2, seed=101), probes)]
        )
        db.close()
        rest = _slice(data.records, small, data.count)
        run_worker(Dataset(rest, data.truth, data.count - small, 0), url, False, 3600)
        db = Database(url)
        service = ProfileService(db)
        with db.read() as conn:
            size = conn.exec_driver_sql("SELECT COUNT(*) FROM profiles").scalar_one()
        existing = [b for b, _, _ in islice(records(data.count), data.count - probes // 2, None)]
        at_large = _probe(
            service, existing + [b for b, _, _ in islice(records(probes // 2, seed=202), probes)]
        )
        db.close()
    print(
        f"[latency {backend}] single write p50 {at_small['p50']:.2f} ms at ~{small:,} records -> "
        f"{at_large['p50']:.2f} ms at {size:,} profiles (ratio {ratio(at_large['p50'], at_small['p50'])}); "
        f"p99 {at_small['p99']:.2f} -> {at_large['p99']:.2f} ms"
    )
    print(f"[latency {backend}] reproduce: {reproduce}")
    sys.stdout.flush()
    return {"backend": backend, "small": at_small, "large": at_large, "profiles": size}
