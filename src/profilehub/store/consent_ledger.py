"""The consent ledger: every value a write put in a profile's consent, kept with the person.

``BatchStore`` appends the rows of each applied write at ``flush`` (``ledger_rows``), in the
write's transaction and in the same bulk insert discipline as the journal (COPY on PostgreSQL,
one executemany on SQLite). Rows are keyed by the master the write landed on and the write's
``seq`` (the journal's); a person's ledger is the rows of its master and of every ucid merged
into it, read through the merge lineage (``person_consent``), never re-keyed. Erasure deletes
them (``delete_ledger``); an unmerge writes them again from the rebuilt writes
(``replace_ledger``). The journal's retention does not apply: the ledger is the evidence of a
person's consent, and the current consent is folded from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.consent import MERGE, ConsentEntry, consent_as_of
from profilehub.identity.storage import WriteRecord
from profilehub.store.rows import insert_rows
from profilehub.store.tables import consent_ledger

LEDGER_COLUMNS = ("org_id", "ucid", "seq", "n", "ts", "attribute", "value", "actor", "source")
_CHUNK = 400


def ledger_rows(record: WriteRecord, seq: int) -> list[tuple[Any, ...]]:
    """The rows of ``record``'s consent entries in ``LEDGER_COLUMNS`` order."""
    return entry_rows(record.org_id, record.ucid, seq, record.ts, record.actor, record.consent)


def entry_rows(
    org_id: int, ucid: str, seq: int, ts: int, actor: str, consent: Iterable[ConsentEntry]
) -> list[tuple[Any, ...]]:
    """``ledger_rows`` of a write given by its fields (the bulk import's closed form makes no
    ``WriteRecord``)."""
    actor = actor[:100]
    return [
        (
            org_id,
            ucid,
            seq,
            n,
            ts,
            e.attribute,
            None if e.value is None else orjson.dumps(e.value).decode(),
            actor,
            e.source[:16],
        )
        for n, e in enumerate(consent)
    ]


@dataclass(frozen=True)
class LedgerEntry:
    ucid: str
    seq: int
    n: int
    ts: int
    attribute: str
    value: Any
    actor: str
    source: str


def _entries(conn: Connection, org_id: int, ucids: Iterable[str]) -> list[LedgerEntry]:
    found: list[LedgerEntry] = []
    wanted = sorted(set(ucids))
    for i in range(0, len(wanted), _CHUNK):
        q = sa.select(consent_ledger).where(
            consent_ledger.c.org_id == org_id, consent_ledger.c.ucid.in_(wanted[i : i + _CHUNK])
        )
        found += [
            LedgerEntry(
                r.ucid,
                r.seq,
                r.n,
                r.ts,
                r.attribute,
                None if r.value is None else orjson.loads(r.value),
                r.actor,
                r.source,
            )
            for r in conn.execute(q)
        ]
    found.sort(key=lambda e: (e.seq, e.n))
    return found


@dataclass(frozen=True)
class PersonConsent:
    ucid: str  # the person's master
    consent: dict[str, Any]
    history: list[LedgerEntry]


def person_consent(
    conn: Connection, org_id: int, master: str, linked: Sequence[str], at: int
) -> PersonConsent:
    """The consent of the person whose master is ``master`` as of ``at`` (epoch ms), and the
    ledger of the person's profiles up to ``at``, oldest first.

    The consent is folded from the master's own entries: a merge wrote on the master the values
    the merged profiles brought or kept, so before a merge it is what the master held then. The
    history lists the entries of every profile of the person (the merged ones' from before their
    merge included).
    """
    entries = [e for e in _entries(conn, org_id, [master, *linked]) if e.ts <= at]
    mine = [ConsentEntry(e.attribute, e.value, e.source) for e in entries if e.ucid == master]
    return PersonConsent(master, consent_as_of(mine), entries)


def delete_ledger(conn: Connection, org_id: int, ucids: list[str]) -> None:
    """Erase the ledger of ``ucids`` (erasure: the ledger is part of the person)."""
    for i in range(0, len(ucids), _CHUNK):
        conn.execute(
            consent_ledger.delete().where(
                consent_ledger.c.org_id == org_id, consent_ledger.c.ucid.in_(ucids[i : i + _CHUNK])
            )
        )


def replace_ledger(
    conn: Connection, org_id: int, ucids: list[str], journal: Sequence[tuple[int, WriteRecord]]
) -> None:
    """Replace the ledger of ``ucids`` (one person) with the entries of its rebuilt writes
    (an unmerge), each write keeping the source its entries had (``unmerge`` when it had none)."""
    sources = {e.seq: e.source for e in _entries(conn, org_id, ucids) if e.source != MERGE}
    delete_ledger(conn, org_id, sorted(set(ucids)))
    rows = [
        row
        for seq, record in journal
        for row in ledger_rows(
            replace(
                record,
                consent=tuple(
                    e if e.source == MERGE else e._replace(source=sources.get(seq, "unmerge"))
                    for e in record.consent
                ),
            ),
            seq,
        )
    ]
    insert_rows(conn, "consent_ledger", LEDGER_COLUMNS, rows)
