"""The equivalence gate's comparator: two orgs' profiles, ids, ``linkedUcid``, change log, journal
and events, field by field, with ucids (and CRM person ids) mapped by content.

Two imports of one file into two orgs mint different ucids (random bits, the wall clock's
millisecond), so no row can be compared as stored. Every ucid is therefore replaced by a *label*
made from the content of the write that created its profile (the journal's ``created`` row:
region, ids as stored, upsert, the ucid it named), numbered in journal order only among creating
writes of identical content; a CRM person by its position among the org's people (``seq``). The
labels are substituted in the rows' JSON text, so a ucid is mapped wherever it appears (a change's
``merged`` list, a notice's message, an event's profile). Ucids that are in no journal (a store
written without one) are labelled by creation order instead.

Used by ``tests/test_bulk_equivalence.py`` (small ugly sets on both databases), ``tests/
test_import_at.py`` (two online imports with one ``--at``) and ``bench.bulk_path`` (a million).

``Watermark.read`` before an import and ``snapshot(..., since=...)`` after it limit the change log,
journal and events to what the import wrote; profiles and ids are compared whole (seed both orgs
alike, e.g. with ``clone_profiles``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.store.database import Database
from profilehub.store.tables import (
    changes,
    crm_records,
    events,
    journal_unattached,
    profile_ids,
    profile_writes,
    profiles,
)

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SECTIONS = ("profiles", "ids", "linkedUcid", "people", "changes", "journal", "unattached", "events")
# Compared in their stored order (the order a feed or an unmerge reads them in); the others are
# sets of rows, compared sorted.
ORDERED = ("changes", "journal", "events")


@dataclass(frozen=True)
class Watermark:
    """Where an org's change log, journal and events stood before an import."""

    change_id: str = ""
    seq: int = -1
    event_id: int = -1

    @staticmethod
    def read(db: Database, org_id: int) -> Watermark:
        with db.read() as conn:
            return Watermark(
                conn.scalar(sa.select(sa.func.max(changes.c.change_id)).where(changes.c.org_id == org_id))
                or "",
                conn.scalar(
                    sa.select(sa.func.max(profile_writes.c.seq)).where(profile_writes.c.org_id == org_id)
                )
                or -1,
                conn.scalar(sa.select(sa.func.max(events.c.event_id)).where(events.c.org_id == org_id)) or -1,
            )


@dataclass
class Snapshot:
    """An org's state with ucids and person ids replaced by labels; ``sections[name]`` is a list of
    JSON-ready rows."""

    org_id: int
    sections: dict[str, list[Any]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # ucid or person id -> label

    def counts(self) -> dict[str, int]:
        return {name: len(rows) for name, rows in self.sections.items()}


def _labels(conn: Connection, org_id: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    people = conn.execute(
        sa.select(crm_records.c.record_id)
        .where(crm_records.c.org_id == org_id, crm_records.c.object_slug == "people")
        .order_by(crm_records.c.seq)
    )
    for n, (record_id,) in enumerate(people, 1):
        labels[record_id] = f"<person #{n}>"
    # People first: a person's write to the graph carries the person's id (the link idType).
    people_only = dict(labels)
    seen: Counter[bytes] = Counter()
    created = _stream(
        conn,
        sa.select(
            profile_writes.c.ucid,
            profile_writes.c.region,
            profile_writes.c.ids,
            profile_writes.c.upsert,
            profile_writes.c.named_ucid,
        )
        .where(profile_writes.c.org_id == org_id, profile_writes.c.created)
        .order_by(profile_writes.c.seq),
    )
    for ucid, region, ids, upsert, named in created:
        content = orjson.dumps(
            _relabel([region, orjson.loads(ids), orjson.loads(upsert), named], people_only),
            option=orjson.OPT_SORT_KEYS,
        )
        key = hashlib.blake2b(content, digest_size=8).digest()  # a million contents: keep them small
        seen[key] += 1
        labels.setdefault(ucid, f"<ucid {key.hex()[:10]}#{seen[key]}>")
    # Profiles no journal row created (journal off): by creation order.
    rest = _stream(
        conn,
        sa.select(profiles.c.ucid)
        .where(profiles.c.org_id == org_id)
        .order_by(profiles.c.created_ts, profiles.c.ucid),
    )
    n = 0
    for (ucid,) in rest:
        if ucid not in labels:
            n += 1
            labels[ucid] = f"<ucid unjournaled#{n}>"
    return labels


def _stream(conn: Connection, query: Any) -> Iterator[Any]:
    # a server-side cursor on PostgreSQL: a million rows are never all in memory at once
    yield from conn.execution_options(stream_results=True, yield_per=5000).execute(query)


def _sections(conn: Connection, org_id: int, since: Watermark) -> Iterator[tuple[str, Iterator[Any]]]:
    """Each section's rows as stored (ucids not yet labelled), one section after the other."""
    yield (
        "profiles",
        (
            {
                "ucid": r.ucid,
                "region": r.region,
                "created_ts": r.created_ts,
                "updated_ts": r.updated_ts,
                "merged_into": r.merged_into,
                "data": orjson.loads(r.data),
            }
            for r in _stream(conn, sa.select(profiles).where(profiles.c.org_id == org_id))
        ),
    )
    children: dict[str, list[tuple[int, str]]] = {}
    merged = sa.select(profiles.c.merged_into, profiles.c.created_ts, profiles.c.ucid).where(
        profiles.c.org_id == org_id, profiles.c.merged_into.is_not(None)
    )
    for master, created_ts, ucid in conn.execute(merged):
        children.setdefault(master, []).append((created_ts, ucid))
    # As the profile's answer lists them: oldest first, by (created_ts, ucid).
    yield (
        "linkedUcid",
        iter(
            [
                {"ucid": master, "linkedUcid": [u for _, u in sorted(linked)]}
                for master, linked in children.items()
            ]
        ),
    )
    ids = sa.select(
        profile_ids.c.region, profile_ids.c.id_type, profile_ids.c.value, profile_ids.c.ucid, profile_ids.c.ts
    ).where(profile_ids.c.org_id == org_id)
    yield "ids", (list(r) for r in _stream(conn, ids))
    people = sa.select(crm_records).where(
        crm_records.c.org_id == org_id, crm_records.c.object_slug == "people"
    )
    yield (
        "people",
        (
            {
                "id": r.record_id,
                "data": orjson.loads(r.data),
                "created_ts": r.created_ts,
                "updated_ts": r.updated_ts,
            }
            for r in _stream(conn, people)
        ),
    )
    log = (
        sa.select(changes)
        .where(changes.c.org_id == org_id, changes.c.change_id > since.change_id)
        .order_by(changes.c.change_id)
    )
    yield (
        "changes",
        (
            {
                "ts": r.ts,
                "actor": r.actor,
                "entity": r.entity,
                "entity_id": r.entity_id,
                "action": r.action,
                "detail": orjson.loads(r.detail),
            }
            for r in _stream(conn, log)
        ),
    )
    journal = (
        sa.select(profile_writes)
        .where(profile_writes.c.org_id == org_id, profile_writes.c.seq > since.seq)
        .order_by(profile_writes.c.seq)
    )
    yield (
        "journal",
        (
            {
                "ucid": r.ucid,
                "ts": r.ts,
                "region": r.region,
                "actor": r.actor,
                "created": bool(r.created),
                "named_ucid": r.named_ucid,
                "ids": orjson.loads(r.ids),
                "upsert": orjson.loads(r.upsert),
                "merges": orjson.loads(r.merges),
            }
            for r in _stream(conn, journal)
        ),
    )
    # Which journal rows keep ids their profile did not take: a set, without the ``seq`` that
    # differs between the paths (the journal above is compared in order).
    unattached = sa.select(
        journal_unattached.c.ucid,
        journal_unattached.c.ts,
        journal_unattached.c.region,
        journal_unattached.c.id_type,
        journal_unattached.c.value,
    ).where(journal_unattached.c.org_id == org_id, journal_unattached.c.seq > since.seq)
    yield "unattached", (list(r) for r in _stream(conn, unattached))
    outbox = (
        sa.select(events)
        .where(events.c.org_id == org_id, events.c.event_id > since.event_id)
        .order_by(events.c.event_id)
    )
    yield (
        "events",
        (
            {
                "type": r.type,
                "feed": r.feed,
                "region": r.region,
                "ts": r.ts,
                "entity_id": r.entity_id,
                "data": orjson.loads(r.data),
            }
            for r in _stream(conn, outbox)
        ),
    )


def snapshot(db: Database, org_id: int, since: Watermark | None = None) -> Snapshot:
    """Every section in memory, labelled: for sets small enough to show their differences."""
    with db.read() as conn:
        labels = _labels(conn, org_id)
        sections = {
            name: _relabel(list(rows), labels) for name, rows in _sections(conn, org_id, since or Watermark())
        }
    return Snapshot(org_id, sections, labels)


BUCKETS = 256
CHUNK_ROWS = 10_000
_MOD = 1 << 128


@dataclass
class Digest:
    """Each section of an org summed up without holding it: rows per section, a multiset hash per
    bucket (the order-free sum of the rows' hashes) and, for ordered sections, a hash per chunk of
    ``CHUNK_ROWS`` rows in order. For a million records, where ``snapshot`` would not fit."""

    org_id: int
    rows: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, list[int]] = field(default_factory=dict)
    chunks: dict[str, list[bytes]] = field(default_factory=dict)
    labels: int = 0


def digest(db: Database, org_id: int, since: Watermark | None = None) -> Digest:
    """``snapshot``'s comparison in a stream: every row labelled, hashed and dropped."""
    out = Digest(org_id)
    with db.read() as conn:
        labels = _labels(conn, org_id)
        out.labels = len(labels)

        def sub(m: re.Match[str]) -> str:
            return labels.get(m.group(0), m.group(0))

        for name, rows in _sections(conn, org_id, since or Watermark()):
            sums = [0] * BUCKETS
            chunks: list[bytes] = []
            running = hashlib.blake2b(digest_size=16)
            n = 0
            for row in rows:
                text = UUID.sub(sub, orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()).encode()
                h = int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "big")
                sums[h % BUCKETS] = (sums[h % BUCKETS] + h) % _MOD
                running.update(text + b"\n")
                n += 1
                if n % CHUNK_ROWS == 0:
                    chunks.append(running.digest())
                    running = hashlib.blake2b(digest_size=16)
            chunks.append(running.digest())
            out.rows[name], out.buckets[name], out.chunks[name] = n, sums, chunks
    return out


def compare_digests(a: Digest, b: Digest) -> list[str]:
    """What differs between two digests, per section (empty: the same). Rows that only sort
    differently (sets compared by their order in storage) are not a difference, except in the
    ordered sections, where the first chunk that differs is named."""
    out: list[str] = []
    for name in SECTIONS:
        if a.rows.get(name) != b.rows.get(name):
            out.append(f"{name}: {a.rows.get(name, 0):,} rows against {b.rows.get(name, 0):,}")
            continue
        differing = sum(1 for x, y in zip(a.buckets[name], b.buckets[name], strict=True) if x != y)
        if differing:
            out.append(f"{name}: rows differ (in {differing} of {BUCKETS} hash buckets)")
        elif name in ORDERED and a.chunks[name] != b.chunks[name]:
            first = next(
                i for i, (x, y) in enumerate(zip(a.chunks[name], b.chunks[name], strict=True)) if x != y
            )
            out.append(f"{name}: the same rows in another order (from row ~{first * CHUNK_ROWS:,})")
    return out


def verdict(a: Digest, b: Digest) -> str:
    """One line for a bench run: ``equivalent: the same <counts>`` or what differs."""
    differences = compare_digests(a, b)
    if differences:
        return "NOT equivalent: " + "; ".join(differences)
    return "equivalent: the same " + ", ".join(f"{n:,} {name}" for name, n in a.rows.items())


def _relabel(rows: list[Any], labels: dict[str, str]) -> list[Any]:
    """``rows`` with every known ucid or person id replaced by its label (unknown UUIDs, such as ad
    ids, stay)."""
    text = orjson.dumps(rows).decode()
    mapped = UUID.sub(lambda m: labels.get(m.group(0), m.group(0)), text)
    out: list[Any] = orjson.loads(mapped)
    return out


def _key(row: Any) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def _show(row: Any, width: int = 400) -> str:
    text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= width else text[: width - 3] + "..."


def compare(a: Snapshot, b: Snapshot, limit: int = 10, sections: Iterable[str] = SECTIONS) -> list[str]:
    """The differences between ``a`` and ``b``, at most ``limit`` lines per section (empty: the
    same). Rows are compared whole, every field, after labelling."""
    out: list[str] = []
    for name in sections:
        left, right = a.sections.get(name, []), b.sections.get(name, [])
        if name in ORDERED:
            out += _compare_ordered(name, left, right, limit)
        else:
            out += _compare_sets(name, left, right, limit)
    return out


def _compare_sets(name: str, left: Sequence[Any], right: Sequence[Any], limit: int) -> list[str]:
    lc, rc = Counter(map(_key, left)), Counter(map(_key, right))
    if lc == rc:
        return []
    only_left = sorted((lc - rc).elements())
    only_right = sorted((rc - lc).elements())
    out = [f"{name}: {len(only_left)} row(s) only in the first, {len(only_right)} only in the second"]
    for k in only_left[:limit]:
        out.append(f"  - {_show(orjson.loads(k))}")
    for k in only_right[:limit]:
        out.append(f"  + {_show(orjson.loads(k))}")
    return out


def _compare_ordered(name: str, left: Sequence[Any], right: Sequence[Any], limit: int) -> list[str]:
    lk, rk = [_key(r) for r in left], [_key(r) for r in right]
    if lk == rk:
        return []
    if Counter(lk) == Counter(rk):
        first = next(i for i, (x, y) in enumerate(zip(lk, rk, strict=True)) if x != y)
        own = "the same" if _per_entity(left) == _per_entity(right) else "NOT the same"
        return [
            f"{name}: the same {len(lk)} rows in another order (first difference at row {first}; "
            f"each profile's or person's own rows in {own} order)",
            f"  - row {first}: {_show(left[first], 300)}",
            f"  + row {first}: {_show(right[first], 300)}",
        ]
    out = _compare_sets(name, left, right, limit)
    if len(lk) != len(rk):
        out.append(f"  ({name}: {len(lk)} rows against {len(rk)})")
    return out


def _per_entity(rows: Sequence[Any]) -> dict[str, list[bytes]]:
    """Each entity's rows in their order (journal rows by ``ucid``, changes and events by
    ``entity_id``): the order a reader of one profile's history sees."""
    out: dict[str, list[bytes]] = {}
    for row in rows:
        entity = row.get("entity_id", row.get("ucid")) if isinstance(row, dict) else None
        out.setdefault(str(entity), []).append(_key(row))
    return out


def clone_profiles(db: Database, source: int, target: int) -> None:
    """Copy ``source``'s profiles, ids and journal to ``target`` (an org made alike, with none of
    its own), ucids kept: two orgs that start from the same store, so a file naming those ucids
    means the same profiles in both."""

    def job(conn: Connection) -> None:
        for table in (profiles, profile_ids, profile_writes, journal_unattached):
            cols = [c for c in table.c if c.name != "org_id"]
            select = sa.select(sa.literal(target, sa.BigInteger), *cols).where(table.c.org_id == source)
            conn.execute(table.insert().from_select(["org_id", *(c.name for c in cols)], select))

    db.write(job)


def ucid_map(a: Snapshot, b: Snapshot) -> dict[str, str]:
    """``a``'s ucids to ``b``'s of the same label (for a reader who wants to look at both)."""
    by_label = {label: u for u, label in b.labels.items()}
    return {u: by_label[label] for u, label in a.labels.items() if label in by_label}


# --- the gate: one file through both paths ---

ONLINE_ORG, BULK_ORG = 7001, 7002
# The summary's counts, those said only when not 0 included (``cli._run_import``).
COUNTS = re.compile(
    r"([\d,]+) records in .*?: ([\d,]+) created, ([\d,]+) updated, ([\d,]+) rejected"
    r"(?:, [\d,]+ carried a suppressed id)?(?:, [\d,]+ written without ids over a profile's limit)?"
)
Importer = Callable[[str, Path, int, str, int, bool], tuple[int, str]]


def cli_import(url: str, path: Path, org_id: int, region: str, at: int, bulk: bool) -> tuple[int, str]:
    """``profilehub import cdp`` in this process (exit status, output): the command a user runs."""
    from click.testing import CliRunner

    from profilehub.cli import main

    args = ["import", "cdp", str(path), "--org-id", str(org_id), "--region", region, "--at", str(at)]
    args += ["--quiet", "--workers", "0", "--max-rejects", "1000000000", *(["--bulk"] if bulk else [])]
    result = CliRunner().invoke(main, args, env={"PROFILEHUB_DATABASE_URL": url})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def cli_import_people(
    url: str,
    path: Path,
    org_id: int,
    region: str,
    at: int,
    bulk: bool,
    batch_size: int = 2000,
    matching: str = "email",
) -> tuple[int, str]:
    """``profilehub import people --matching-attribute email`` in this process (exit status, output);
    ``region`` is the org's home region (people resolve there, whatever the file says)."""
    from click.testing import CliRunner

    from profilehub.cli import main

    args = ["import", "people", str(path), "--org-id", str(org_id), "--matching-attribute", matching]
    args += ["--at", str(at), "--quiet", "--max-rejects", "1000000000", "--batch-size", str(batch_size)]
    args += ["--workers", "1"]  # the bulk path's bodies prepared in a worker process (online: unused)
    result = CliRunner().invoke(
        main, [*args, *(["--bulk"] if bulk else [])], env={"PROFILEHUB_DATABASE_URL": url}
    )
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def make_orgs(url: str, org_ids: Iterable[int], region: str = "EU") -> None:
    """Orgs alike: the default strategy, the shared dummy email blocked (as ``bench.run_import``)."""
    from bench.generate import DUMMY_EMAIL
    from profilehub.orgs import create_org
    from profilehub.store.strategy_store import block_value

    db = Database(url)
    try:
        for org_id in org_ids:
            db.write(lambda c, o=org_id: create_org(c, o, f"Gate {o}", [region]))
            db.write(lambda c, o=org_id: block_value(c, o, DUMMY_EMAIL))
    finally:
        db.close()


@dataclass
class GateResult:
    differences: list[str]
    online: str  # the summary line of each run
    bulk: str
    counts: dict[str, int]  # rows per section (the online org's)
    lines: list[str] = field(default_factory=list)  # each import's summary line, as printed

    @property
    def same(self) -> bool:
        return not self.differences

    def line(self) -> str:
        if self.same:
            what = ", ".join(f"{n:,} {name}" for name, n in self.counts.items())
            return f"equivalent: the same {what}"
        return f"NOT equivalent: {len(self.differences)} difference line(s); first: {self.differences[0]}"


def _counts_of(output: str) -> str:
    found = COUNTS.search(output)
    return found.group(0).split(": ", 1)[1] if found else f"(no summary: {output.strip()[-300:]})"


def run_gate(
    url: str,
    main_records: list[Any],
    folder: Path,
    at: int,
    *,
    seed_records: Sequence[Any] = (),
    region: str = "EU",
    importer: Importer = cli_import,
    orgs: tuple[int, int] = (ONLINE_ORG, BULK_ORG),
    limit: int = 10,
    full: bool = True,
    seed_people: Sequence[Any] = (),
    seed_importer: Importer | None = None,
    people_importer: Importer | None = None,
) -> GateResult:
    """Import ``main_records`` with ``--at at`` through the online importer into ``orgs[0]`` and
    through ``--bulk`` into ``orgs[1]`` (both made here, after ``seed_records`` went online into
    the first at ``at - 1000`` and its profiles were cloned into the second), and compare.

    Ucid markers in ``main_records`` (``bench.gate_set``) are replaced by the seeded ucids, which
    both orgs share. The two runs read files of the same name in two folders, so the actor the
    change log names is the same. ``full=False`` compares streamed digests only (for sets too big
    to hold: differences are then named by section, not row).

    People (``bench.gate_people``): ``seed_people`` go online into each org at ``at - 500`` (after
    the profiles were cloned) through ``people_importer``, and ``importer`` is then a people import
    too (``cli_import_people``); ``seed_importer`` writes the CDP seed (default: ``importer``)."""
    from bench.gate_set import materialise, write_file

    online_org, bulk_org = orgs
    make_orgs(url, orgs, region)
    db = Database(url)
    try:
        if seed_records:
            seed = write_file(list(seed_records), _folder(folder / "seed") / "seed.ndjson")
            status, output = (seed_importer or importer)(url, seed, online_org, region, at - 1000, False)
            if status not in (0, 1):
                raise RuntimeError(f"seeding failed ({status}): {output}")
            clone_profiles(db, online_org, bulk_org)
        if seed_people:
            assert people_importer is not None, "seed_people needs a people_importer"
            for org in orgs:
                path = write_file(list(seed_people), _folder(folder / f"people-seed-{org}") / "people.ndjson")
                status, output = people_importer(url, path, org, region, at - 500, False)
                if status not in (0, 1):
                    raise RuntimeError(f"seeding people failed ({status}): {output}")
        records = materialise(main_records, db, online_org, region)
        paths = [write_file(records, _folder(folder / side) / "gate.ndjson") for side in ("online", "bulk")]
        marks = [Watermark.read(db, org) for org in orgs]
        # Closed while the imports run: an open writer of a SQLite file is one the online importer
        # takes turns with, and it would then write small batches first (docs/bulk.md); the people
        # import's order of people and profiles in the change log and events follows its batches.
        db.close()
        outputs = []
        for path, org, bulk in zip(paths, orgs, (False, True), strict=True):
            status, output = importer(url, path, org, region, at, bulk)
            if status not in (0, 1):  # 1: records rejected, as expected of an ugly file
                raise RuntimeError(f"{'bulk' if bulk else 'online'} import failed ({status}): {output}")
            outputs.append(output)
        db = Database(url)
        labels = [_labels_of(db, org) for org in orgs]
        # The streamed comparison a million records go through must agree with the full one.
        sums = [digest(db, org, mark) for org, mark in zip(orgs, marks, strict=True)]
        differences: list[str] = []
        if full:
            one, two = (snapshot(db, org, mark) for org, mark in zip(orgs, marks, strict=True))
            differences = compare(one, two, limit)
    finally:
        db.close()
    differences += [f"digest: {line}" for line in compare_digests(*sums)]
    online, bulk = (_counts_of(o) for o in outputs)
    if online != bulk:
        differences.insert(0, f"summary: online {online!r}, bulk {bulk!r}")
    # A 409 names the person who holds the email: compared by label, as the rows are.
    rejects = [_relabel(_rejects(p), found) for p, found in zip(paths, labels, strict=True)]
    if rejects[0] != rejects[1]:
        differences.insert(0, f"rejects: online {len(rejects[0])} line(s), bulk {len(rejects[1])}")
        differences += _compare_ordered("rejects", rejects[0], rejects[1], limit)
    return GateResult(differences, online, bulk, sums[0].rows, [_summary_line(o) for o in outputs])


def _labels_of(db: Database, org_id: int) -> dict[str, str]:
    with db.read() as conn:
        return _labels(conn, org_id)


def _summary_line(output: str) -> str:
    found = re.search(r"[\d,]+ records in .*", output)
    return found.group(0) if found else output.strip()[-300:]


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _rejects(path: Path) -> list[Any]:
    from profilehub.ingest.checkpoint import rejects_path

    found = rejects_path(path)
    return [orjson.loads(line) for line in found.read_bytes().splitlines()] if found.exists() else []


# --- the gate at scale: python -m bench.bulk_equivalence ---

_IMPORT = "import sys; from profilehub.cli import main; sys.argv[0] = 'profilehub'; main()"


def process_import(url: str, path: Path, org_id: int, region: str, at: int, bulk: bool) -> tuple[int, str]:
    """``profilehub import cdp`` in a process of its own, with its default worker processes."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _IMPORT, "import", "cdp", str(path), "--org-id", str(org_id)]
    cmd += ["--region", region, "--at", str(at), "--quiet", "--max-rejects", "1000000000"]
    cmd += ["--bulk"] if bulk else []
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.bulk_equivalence --people 200000 [--backend sqlite|postgres]``: an ugly set
    of ``bench.gate_set`` (about four records a person) through both paths, compared by digest."""
    import argparse
    import tempfile
    import time

    from bench.backends import fresh_database
    from bench.gate_set import gate_set
    from bench.machine import command_line, exclusive_run, load_note

    parser = argparse.ArgumentParser(prog="python -m bench.bulk_equivalence", description=main.__doc__)
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    parser.add_argument("--full", action="store_true", help="Also compare row by row in memory (small sets).")
    args = parser.parse_args(argv)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_run(command_line()):
        data = gate_set(args.people, args.seed)
        for backend in args.backend or ["sqlite"]:
            tag = f"[bulk_equivalence {backend}]"
            started = time.monotonic()
            with fresh_database(backend, out) as url, tempfile.TemporaryDirectory(dir=out) as folder:
                result = run_gate(
                    url,
                    data.main,
                    Path(folder),
                    1_780_000_000_000,
                    seed_records=data.seed,
                    importer=process_import,
                    full=args.full,
                )
            print(
                f"{tag} {len(data.main):,} records ({len(data.seed):,} seeded first), {args.people:,} people"
            )
            for side, line in zip(("online", "bulk"), result.lines, strict=True):
                print(f"{tag} {side:>6}: {line}")
            print(f"{tag} {result.line()}")
            for line in result.differences[1:40]:
                print(f"{tag}   {line}")
            print(f"{tag} {time.monotonic() - started:.0f} s in all; {load_note()}")
            print(
                f"{tag} reproduce: .venv/bin/python -m bench.bulk_equivalence --people {args.people} "
                f"--seed {args.seed} --backend {backend}" + (" --full" if args.full else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
