"""Resolving components that touch nothing stored: in memory, through the identity core.

The writes of a group of whole components are applied in file order to an empty
``MemoryStorage`` by ``apply_write`` itself, at the import's one time and with the profile a
record creates named by its place in the file (``UcidBlock``), so every profile, id, merge,
change log entry, journal entry and event is the one the online path makes. The group's final
rows then go to the spools and the storage is dropped: memory holds one group at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import orjson

from profilehub.bulk.spool import Spool
from profilehub.errors import ProfilehubError
from profilehub.identity.memory import MemoryStorage
from profilehub.identity.resolve import PreparedWrite, apply_write
from profilehub.identity.strategy import Strategy
from profilehub.identity.ucid import UcidBlock
from profilehub.profiles import WriteResult
from profilehub.store.changes import change_row
from profilehub.store.journal_store import journal_row


@dataclass
class Spools:
    """The rows of the writes resolved before the transaction writes them."""

    profiles: Spool
    ids: Spool
    changes: Spool
    journal: Spool  # journal rows with the write's file index in place of ``seq``
    events: Spool  # (file index, type, region, ts, entity_id, data JSON)

    def all(self) -> list[Spool]:
        return [self.profiles, self.ids, self.changes, self.journal, self.events]


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
    for c in storage.changes:
        row = change_row(c.org_id, c.actor, "profile", c.ucid, c.action, c.detail, c.ts)
        spools.changes.append(
            (
                row["org_id"],
                row["change_id"],
                row["ts"],
                row["actor"],
                row["entity"],
                row["entity_id"],
                row["action"],
                row["detail"],
            )
        )
    if journal:
        for (index, _), record in zip(group, storage.writes, strict=True):
            spools.journal.append(journal_row(record, index))
    for (o, ucid), p in storage.profiles.items():
        spools.profiles.append(
            (o, ucid, p.region, p.created_ts, p.updated_ts, p.merged_into, orjson.dumps(p.data).decode())
        )
    for (o, region, ident), (ucid, ts) in storage.owners.items():
        spools.ids.append((o, region, ident.id_type, ident.value, ucid, ts))
    return created, updated
