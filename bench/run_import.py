"""Bulk import benchmark: ``profilehub``'s importer against raw upserts of the same rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.backends import fresh_database
from bench.figures import ratio
from bench.generate import DUMMY_EMAIL, ORG_ID, REGION, Dataset
from bench.identity_check import check_identity
from bench.machine import load_note
from profilehub.orgs import create_org
from profilehub.store.database import Database
from profilehub.store.strategy_store import block_value


def setup_org(url: str) -> None:
    """The org as a real deployment runs it: the shared dummy email is blocked."""
    db = Database(url)
    db.write(lambda c: create_org(c, ORG_ID, "Bench", [REGION]))
    db.write(lambda c: block_value(c, ORG_ID, DUMMY_EMAIL))
    db.close()


def run_worker(data: Dataset, url: str, baseline: bool, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.import_worker", str(data.records), "--url", url]
    if baseline:
        cmd.append("--baseline")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_import(data: Dataset, backend: str, out: Path, reproduce: str, timeout: float) -> dict[str, Any]:
    with fresh_database(backend, out) as url:
        setup_org(url)
        ours = run_worker(data, url, baseline=False, timeout=timeout)
        base = run_worker(data, url, baseline=True, timeout=timeout)
        db = Database(url)
        identity = check_identity(db, data.truth)
        db.close()
    b = ours["batch_ms"]
    print(
        f"[import {backend}] {ours['records']:,} records in {ours['seconds']:.1f}s = "
        f"{ours['rate']:,.0f} records/s (raw upsert baseline {base['rate']:,.0f}/s, "
        f"ratio {ratio(ours['rate'], base['rate'])}); batch of 2000 p50/p95/p99 "
        f"{b['p50']:.0f}/{b['p95']:.0f}/{b['p99']:.0f} ms; peak RSS {ours['peak_rss_mb']:.0f} MB "
        f"(baseline {base['peak_rss_mb']:.0f} MB); created {ours['created']:,}, updated "
        f"{ours['updated']:,}, rejected {ours['rejected']:,}; {load_note()}"
    )
    print(f"[import {backend}] {identity.line()}")
    print(f"[import {backend}] reproduce: {reproduce}")
    sys.stdout.flush()
    return {"backend": backend, "ours": ours, "baseline": base, "identity": identity.__dict__}
