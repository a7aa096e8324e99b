"""Resolving components that touch nothing stored: in memory, through the identity core.

The writes of a group of whole components are applied in file order to an empty
``MemoryStorage`` by ``apply_write`` itself, at the import's one time and with the profile a
record creates named by its place in the file (``UcidBlock``), so every profile, id, merge,
change log entry, journal entry and event is the one the online path makes. The group's final
rows then go to the spools and the storage is dropped: memory holds one group at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson

from profilehub.bulk.spool import Spool
from profilehub.errors import ProfilehubError
from profilehub.identity.memory import MemoryStorage
from profilehub.identity.normalize import Identifier, Notice
from profilehub.identity.resolve import PreparedWrite, apply_write
from profilehub.identity.storage import ProfileChange, ProfileState, ProfileStorage, WriteRecord
from profilehub.identity.strategy import Strategy
from profilehub.identity.ucid import UcidBlock
from profilehub.profiles import WriteResult
from profilehub.store.consent_ledger import ledger_rows
from profilehub.store.journal_store import journal_row


@dataclass
class Spools:
    """The rows of the writes resolved before the transaction writes them."""

    profiles: Spool
    ids: Spool
    changes: Spool
    journal: Spool  # journal rows with the write's file index in place of ``seq``
    events: Spool  # (file index, type, region, ts, entity_id, data JSON)
    ledger: Spool  # consent ledger rows with the write's file index in place of ``seq``

    @classmethod
    def open(cls, folder: Path, prefix: str) -> Spools:
        return cls(*(Spool(folder / f"{prefix}-{name}.jsonl") for name in SPOOLED))

    def all(self) -> list[Spool]:
        return [self.profiles, self.ids, self.changes, self.journal, self.events, self.ledger]

    def close(self) -> None:
        for spool in self.all():
            spool.close()

    def discard(self) -> None:
        for spool in self.all():
            spool.discard()


SPOOLED = ("profiles", "ids", "changes", "journal", "events", "ledger")
# A write as a worker process gets it: file index, region, ids (idType, value, ...), upsert JSON,
# notices or None. Writes naming a ucid never go to a worker (they replay against the store).
Payload = tuple[int, str, tuple[str, ...], str, list[Notice] | None]


def resolve_payload(
    strategy: Strategy,
    org_id: int,
    actor: str,
    payload: Sequence[Payload],
    at: int,
    block: UcidBlock,
    folder: str,
    prefix: str,
    journal: bool,
    ledger: bool = True,
) -> tuple[int, int, Spools] | None:
    """``resolve_group`` in a worker process, into spools of its own (closed, returned with the
    counts); None when a write was refused (the group then replays against the store)."""
    group = [
        (
            k,
            PreparedWrite(
                org_id,
                region,
                [Identifier(parts[n], parts[n + 1]) for n in range(0, len(parts), 2)],
                orjson.loads(upsert),
                None,
                actor,
                list(notices or ()),
                source="import",
            ),
        )
        for k, region, parts, upsert, notices in payload
    ]
    spools = Spools.open(Path(folder), prefix)
    try:
        created, updated = resolve_group(
            strategy, org_id, group, at, block, spools, journal, lambda: None, ledger
        )
    except Refused:
        spools.discard()
        return None
    spools.close()
    return created, updated, spools


class Refused(Exception):
    """A write of a group was refused while it applied: the group goes to the in-transaction path,
    which handles refusals as the online writer does."""


def resolve_group(
    strategy: Strategy,
    org_id: int,
    group: Sequence[tuple[int, PreparedWrite]],
    at: int,
    block: UcidBlock,
    spools: Spools,
    journal: bool,
    stop: Callable[[], None],
    ledger: bool = True,
) -> tuple[int, int]:
    """Apply ``group`` ((file index, write), in file order) in memory; spool its rows. Returns the
    (created, updated) counts."""
    storage = MemoryStorage()
    created = updated = 0
    events: list[tuple[object, ...]] = []
    for n, (index, write) in enumerate(group):
        if n % 1000 == 0:
            stop()
        try:
            outcome = apply_write(storage, strategy, write, at, new_ucid=partial(block, index))
        except ProfilehubError as exc:
            raise Refused(exc.message) from exc
        result = WriteResult(strategy, outcome)
        if result.created:
            created += 1
        else:
            updated += 1
        e = result.event(org_id)
        events.append((index, e.type, e.region, e.ts, e.entity_id, orjson.dumps(e.data).decode()))
    # Nothing is spooled before every write of the group applied: a refused group spooled nothing.
    for event in events:
        spools.events.append(event)
    spool_log(spools, [k for k, _ in group], storage.changes, storage.writes, journal, ledger)
    for (o, ucid), p in storage.profiles.items():
        spools.profiles.append(
            (o, ucid, p.region, p.created_ts, p.updated_ts, p.merged_into, orjson.dumps(p.data).decode())
        )
    # In key order: inserted so, the primary key's B-tree fills page by page instead of at random
    # places (the id values are hashes).
    for (o, region, ident), (ucid, ts) in sorted(storage.owners.items()):
        spools.ids.append((o, region, ident.id_type, ident.value, ucid, ts))
    return created, updated


def spool_log(
    spools: Spools,
    indices: Sequence[int],
    changes: Sequence[ProfileChange],
    writes: Sequence[WriteRecord],
    journal: bool,
    ledger: bool = True,
) -> None:
    """The change log, journal and consent ledger entries of writes ``indices`` (one each, in that
    order), keyed by the write's file index: the write numbers them (change id, journal ``seq``,
    which the ledger rows share) in file order."""
    for k, c in zip(indices, changes, strict=True):
        detail = orjson.dumps(c.detail or {}).decode()
        spools.changes.append((k, c.org_id, c.ts, c.actor[:100], "profile", c.ucid, c.action, detail))
    if journal:
        for k, record in zip(indices, writes, strict=True):
            spools.journal.append(journal_row(record, k))
    if ledger:
        for k, record in zip(indices, writes, strict=True):
            for entry in ledger_rows(record, k):
                spools.ledger.append(entry)


class Recorded:
    """A ``ProfileStorage`` that passes everything to ``inner`` but keeps the change log and journal
    entries for the bulk import to number and write itself (see ``spool_log``)."""

    def __init__(self, inner: ProfileStorage) -> None:
        self.inner = inner
        self.changes: list[ProfileChange] = []
        self.writes: list[WriteRecord] = []

    def find_owners(self, org_id: int, region: str, ids: Iterable[Identifier]) -> dict[Identifier, str]:
        return self.inner.find_owners(org_id, region, ids)

    def resolve_ucids(self, org_id: int, ucids: Iterable[str]) -> dict[str, tuple[str, str]]:
        return self.inner.resolve_ucids(org_id, ucids)

    def load_profiles(self, org_id: int, ucids: Iterable[str]) -> dict[str, ProfileState]:
        return self.inner.load_profiles(org_id, ucids)

    def linked_ucids(self, org_id: int, masters: Iterable[str]) -> dict[str, list[str]]:
        return self.inner.linked_ucids(org_id, masters)

    def ids_of_type(self, org_id: int, masters: Iterable[str], id_type: str) -> dict[str, list[str]]:
        return self.inner.ids_of_type(org_id, masters, id_type)

    def insert_profile(self, org_id: int, state: ProfileState) -> None:
        self.inner.insert_profile(org_id, state)

    def update_profile(self, org_id: int, state: ProfileState) -> None:
        self.inner.update_profile(org_id, state)

    def mark_merged(self, org_id: int, merged: list[str], master: str, now_ms: int) -> None:
        self.inner.mark_merged(org_id, merged, master, now_ms)

    def insert_ids(self, org_id: int, region: str, ucid: str, ids: dict[Identifier, int]) -> None:
        self.inner.insert_ids(org_id, region, ucid, ids)

    def delete_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        self.inner.delete_ids(org_id, region, ids)

    def touch_ids(self, org_id: int, region: str, ids: Iterable[Identifier], ts: int) -> None:
        self.inner.touch_ids(org_id, region, ids, ts)

    def record_change(self, change: ProfileChange) -> None:
        self.changes.append(change)

    def record_write(self, record: WriteRecord) -> None:
        self.writes.append(record)
