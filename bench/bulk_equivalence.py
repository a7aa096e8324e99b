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

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.store.database import Database
from profilehub.store.tables import changes, crm_records, events, profile_ids, profile_writes, profiles

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SECTIONS = ("profiles", "ids", "linkedUcid", "people", "changes", "journal", "events")
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
    created = conn.execute(
        sa.select(
            profile_writes.c.ucid,
            profile_writes.c.region,
            profile_writes.c.ids,
            profile_writes.c.upsert,
            profile_writes.c.named_ucid,
        )
        .where(profile_writes.c.org_id == org_id, profile_writes.c.created)
        .order_by(profile_writes.c.seq)
    )
    for ucid, region, ids, upsert, named in created:
        content = orjson.dumps(
            _relabel([region, orjson.loads(ids), orjson.loads(upsert), named], people_only),
            option=orjson.OPT_SORT_KEYS,
        )
        seen[content] += 1
        digest = _digest(content)
        labels.setdefault(ucid, f"<ucid {digest}#{seen[content]}>")
    # Profiles no journal row created (journal off): by creation order.
    rest = conn.execute(
        sa.select(profiles.c.ucid)
        .where(profiles.c.org_id == org_id)
        .order_by(profiles.c.created_ts, profiles.c.ucid)
    )
    n = 0
    for (ucid,) in rest:
        if ucid not in labels:
            n += 1
            labels[ucid] = f"<ucid unjournaled#{n}>"
    return labels


def _digest(content: bytes) -> str:
    import hashlib

    return hashlib.sha1(content).hexdigest()[:10]


def snapshot(db: Database, org_id: int, since: Watermark | None = None) -> Snapshot:
    since = since or Watermark()
    with db.read() as conn:
        labels = _labels(conn, org_id)
        raw: dict[str, list[Any]] = {}
        rows = conn.execute(
            sa.select(
                profiles.c.ucid,
                profiles.c.region,
                profiles.c.created_ts,
                profiles.c.updated_ts,
                profiles.c.merged_into,
                profiles.c.data,
            ).where(profiles.c.org_id == org_id)
        ).all()
        raw["profiles"] = [
            {
                "ucid": r.ucid,
                "region": r.region,
                "created_ts": r.created_ts,
                "updated_ts": r.updated_ts,
                "merged_into": r.merged_into,
                "data": orjson.loads(r.data),
            }
            for r in rows
        ]
        children: dict[str, list[tuple[int, str]]] = {}
        for r in rows:
            if r.merged_into is not None:
                children.setdefault(r.merged_into, []).append((r.created_ts, r.ucid))
        # As the profile's answer lists them: oldest first, by (created_ts, ucid).
        raw["linkedUcid"] = [
            {"ucid": master, "linkedUcid": [u for _, u in sorted(linked)]}
            for master, linked in children.items()
        ]
        raw["ids"] = [
            list(r)
            for r in conn.execute(
                sa.select(
                    profile_ids.c.region,
                    profile_ids.c.id_type,
                    profile_ids.c.value,
                    profile_ids.c.ucid,
                    profile_ids.c.ts,
                ).where(profile_ids.c.org_id == org_id)
            )
        ]
        raw["people"] = [
            {
                "id": r.record_id,
                "data": orjson.loads(r.data),
                "created_ts": r.created_ts,
                "updated_ts": r.updated_ts,
            }
            for r in conn.execute(
                sa.select(crm_records).where(
                    crm_records.c.org_id == org_id, crm_records.c.object_slug == "people"
                )
            )
        ]
        raw["changes"] = [
            {
                "ts": r.ts,
                "actor": r.actor,
                "entity": r.entity,
                "entity_id": r.entity_id,
                "action": r.action,
                "detail": orjson.loads(r.detail),
            }
            for r in conn.execute(
                sa.select(changes)
                .where(changes.c.org_id == org_id, changes.c.change_id > since.change_id)
                .order_by(changes.c.change_id)
            )
        ]
        raw["journal"] = [
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
            for r in conn.execute(
                sa.select(profile_writes)
                .where(profile_writes.c.org_id == org_id, profile_writes.c.seq > since.seq)
                .order_by(profile_writes.c.seq)
            )
        ]
        raw["events"] = [
            {
                "type": r.type,
                "feed": r.feed,
                "region": r.region,
                "ts": r.ts,
                "entity_id": r.entity_id,
                "data": orjson.loads(r.data),
            }
            for r in conn.execute(
                sa.select(events)
                .where(events.c.org_id == org_id, events.c.event_id > since.event_id)
                .order_by(events.c.event_id)
            )
        ]
    return Snapshot(org_id, {name: _relabel(rows, labels) for name, rows in raw.items()}, labels)


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
        return [f"{name}: the same {len(lk)} rows in another order (first difference at row {first})"]
    out = _compare_sets(name, left, right, limit)
    if len(lk) != len(rk):
        out.append(f"  ({name}: {len(lk)} rows against {len(rk)})")
    return out


def clone_profiles(db: Database, source: int, target: int) -> None:
    """Copy ``source``'s profiles, ids and journal to ``target`` (an org made alike, with none of
    its own), ucids kept: two orgs that start from the same store, so a file naming those ucids
    means the same profiles in both."""

    def job(conn: Connection) -> None:
        for table in (profiles, profile_ids, profile_writes):
            cols = [c for c in table.c if c.name != "org_id"]
            select = sa.select(sa.literal(target, sa.BigInteger), *cols).where(table.c.org_id == source)
            conn.execute(table.insert().from_select(["org_id", *(c.name for c in cols)], select))

    db.write(job)


def ucid_map(a: Snapshot, b: Snapshot) -> dict[str, str]:
    """``a``'s ucids to ``b``'s of the same label (for a reader who wants to look at both)."""
    by_label = {label: u for u, label in b.labels.items()}
    return {u: by_label[label] for u, label in a.labels.items() if label in by_label}
