"""``import people --bulk`` against the online people import, side by side in one run.

``python -m bench.bulk_people --records 100000 [--backend sqlite|postgres]`` generates a file of
CRM people (NDJSON, ``PUT /v2/crm/people`` bodies: one to three emails a person, a phone number for
two in five, one record in five a returning person matched by email in another case with an email
added, one in fifty naming an email of another person: a 409), then imports it twice with one
``--at``: with ``profilehub import people --matching-attribute email`` (the online import, the
baseline) into one fresh database and with ``--bulk`` into another, each a process of its own. For
each: records/s, wall time, peak RSS (as ``bench.bulk_path``); then whether both databases hold the
same people, profiles, ids, ``linkedUcid``, change log, journal and events
(``bench.bulk_equivalence.digest``), the load average and the command that reproduces the figures.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import orjson

from bench.backends import fresh_database
from bench.bulk_equivalence import Watermark, digest, verdict
from bench.bulk_path import MB, ImportFailed, Run, run_import
from bench.generate import ORG_ID
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"


# ``profilehub import people FILE --matching-attribute email``
PEOPLE = ("people", "--matching-attribute", "email")


def people_file(folder: Path, records: int, seed: int) -> Path:
    """The benchmark's people file (cached by size and seed)."""
    path = folder / f"people-{records}-{seed}.ndjson"
    if path.exists():
        return path
    rng = random.Random(seed)
    written: list[str] = []  # first emails of people written so far
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for k in range(records):
            roll = rng.random()
            if written and roll < 0.2:
                email = rng.choice(written)
                body: dict[str, object] = {"emails": [email.upper(), f"more{k}@people.example"]}
                body["jobTitle"] = rng.choice(["CTO", "Buyer", "Founder"])
            elif len(written) > 1 and roll < 0.22:
                a, b = rng.sample(written, 2)
                body = {"firstName": f"X{k}", "emails": [a, b]}  # b is another person's: 409
            else:
                emails = [f"p{k}.{n}@people.example" for n in range(rng.randint(1, 3))]
                written.append(emails[0])
                body = {"firstName": f"F{k}", "lastName": f"L{k}", "emails": emails}
                if rng.random() < 0.4:
                    body["phoneNumber"] = f"+49151{k:08d}"
            f.write(orjson.dumps(body) + b"\n")
    tmp.rename(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_people", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    backends = args.backend or ["sqlite"]
    reproduce = f".venv/bin/python -m bench.bulk_people --records {args.records}" + "".join(
        f" --backend {b}" for b in backends
    )
    with exclusive_run(command_line()):
        OUT.mkdir(parents=True, exist_ok=True)
        path = people_file(OUT, args.records, args.seed)
        for backend in backends:
            tag = f"[bulk_people {backend}]"
            runs: list[Run] = []
            for bulk in (False, True):
                with fresh_database(backend, OUT) as url:
                    setup_org(url)
                    db = Database(url)
                    mark = Watermark.read(db, ORG_ID)
                    db.close()
                    try:
                        run = run_import(url, path, bulk, args.records, dialect=PEOPLE)
                    except ImportFailed as exc:
                        print(f"{tag} FAILED: {exc}; {load_note()}", flush=True)
                        return
                    db = Database(url)
                    try:
                        run.digest = digest(db, ORG_ID, mark)
                    finally:
                        db.close()
                runs.append(run)
                print(f"{tag} {run.line()}; {load_note()}", flush=True)
            online, bulk_run = runs
            print(
                f"{tag} bulk / online: {bulk_run.rate / online.rate:.2f}x records/s, "
                f"{bulk_run.peak_tree_rss / max(online.peak_tree_rss, 1):.2f}x peak RSS "
                f"(process tree {bulk_run.peak_tree_rss / MB:,.0f} MB)",
                flush=True,
            )
            assert online.digest is not None and bulk_run.digest is not None
            print(f"{tag} {verdict(online.digest, bulk_run.digest)}", flush=True)
            print(f"{tag} reproduce: {reproduce}", flush=True)


if __name__ == "__main__":
    main()
