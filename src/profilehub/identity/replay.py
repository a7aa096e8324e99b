"""Rebuilding a person from its journal: the core of an unmerge.

``replay`` applies a person's recorded writes, in order, to an empty ``MemoryStorage`` through the
write path's own ``apply_write``, with the ids being unmerged made non-linking: each is attached
only where no other profile holds it, so it stays with the profile it first attached to and
matches nothing else. A write that created a profile creates it again under the same ucid (and
creation time), so profiles merged in only through those ids come back as themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from profilehub.errors import Conflict, ProfilehubError
from profilehub.identity.memory import MemoryStorage
from profilehub.identity.normalize import Identifier
from profilehub.identity.resolve import PreparedWrite, apply_write
from profilehub.identity.storage import ProfileState, WriteRecord
from profilehub.identity.strategy import Strategy
from profilehub.identity.ucid import new_ucid


@dataclass
class Rebuilt:
    """The replay's profiles (masters and merged-away ucids) and its journal, one record per
    replayed write, keyed as the rebuilt person keeps them."""

    storage: MemoryStorage
    records: list[WriteRecord]

    def masters(self, org_id: int) -> list[str]:
        return self.storage.masters(org_id)


def _constant(ucid: str) -> Callable[[], str]:
    return lambda: ucid


def replay(
    strategy: Strategy,
    records: Sequence[WriteRecord],
    non_linking: frozenset[Identifier],
    fresh_ucid: Callable[[], str] = new_ucid,
    taken: frozenset[Identifier] = frozenset(),
) -> Rebuilt:
    """Apply ``records`` (one person's journal, oldest first) as if ``non_linking`` never linked.

    ``taken``: ids of these writes that are not the person's to have (another person holds them
    now). The replay leaves them where they are: they link nothing and are attached to no rebuilt
    profile.

    A write that originally created a profile gives it its original ucid; one that now creates a
    profile it did not create before gets ``fresh_ucid()``. A profile whose first write now lands
    on another profile joins that one as a merged-away ucid, so it keeps resolving.
    """
    storage = MemoryStorage()
    replayed: list[WriteRecord] = []
    for record in records:
        org_id = record.org_id
        born = record.ucid if record.created and not storage.resolve_ucids(org_id, [record.ucid]) else None
        write = PreparedWrite(
            org_id,
            record.region,
            list(record.ids),
            record.upsert,
            record.named_ucid,
            record.actor,
            released=list(record.released),
            source=record.source,
        )
        name_new = fresh_ucid if born is None else _constant(born)
        try:
            outcome = apply_write(storage, strategy, write, record.ts, non_linking, name_new, taken)
        except ProfilehubError as exc:  # the journal holds writes that were applied once
            raise Conflict(
                f"the journal cannot be replayed: its write of {record.ts} by {record.actor} fails "
                f"({exc.message})"
            ) from exc
        landed = storage.writes[-1]
        if born is not None and outcome.master.ucid != born:
            # The profile this write created is now found by it: it joins it, and the record stays
            # its birth, so a later unmerge still finds where every ucid of the person began.
            storage.insert_profile(org_id, ProfileState(born, record.region, record.ts, record.ts, {}))
            storage.mark_merged(org_id, [born], outcome.master.ucid, record.ts)
            landed = replace(landed, ucid=born, created=True)
        replayed.append(landed)
    return Rebuilt(storage, replayed)
