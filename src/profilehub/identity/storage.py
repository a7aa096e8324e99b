"""What the identity rules need from storage: plain data types and one typed interface.

The rules (``resolve``) read and write profiles only through ``ProfileStorage``; they never see
SQL, a connection or a table. The store implements the interface for SQLite and PostgreSQL
(``profilehub.store.profile_storage``); ``identity.memory.MemoryStorage`` implements it in plain
dicts, for unit tests of the rules and for replaying writes without a database.

Every call is scoped by org; id lookups are also scoped by region (identity never crosses
regions). Writes take effect for later reads through the same storage object at once, whatever the
implementation does underneath (the SQL stores keep them in memory until their ``flush``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from profilehub.identity.consent import ConsentEntry
from profilehub.identity.normalize import Identifier

Data = dict[str, dict[str, Any]]  # category -> attribute -> value ("_ts": the category's write time)


@dataclass
class ProfileState:
    """A master profile as the rules see it: attributes by category and the ids it owns."""

    ucid: str
    region: str
    created_ts: int
    updated_ts: int
    data: Data
    ids: dict[Identifier, int] = field(default_factory=dict)  # id -> last seen (epoch ms)

    @property
    def sort_key(self) -> tuple[int, str]:
        """First-created wins a merge; the ucid breaks ties deterministically."""
        return (self.created_ts, self.ucid)


@dataclass(frozen=True)
class ProfileChange:
    """One entry of a profile's history (the change log), as the rules describe a write."""

    org_id: int
    actor: str
    ucid: str
    action: str  # create, update or merge
    detail: dict[str, Any]
    ts: int


@dataclass(frozen=True)
class WriteRecord:
    """One applied write as the journal keeps it: enough to replay it (see ``identity.replay``).

    ``ids`` are the write's normalised and derived ids (a raw email or phone only where the org
    keeps raw ids), ``upsert`` its validated upsert. ``ucid`` is the master the write landed on;
    ``created`` says that the write made it. ``merges`` maps each ucid the write merged into it to
    the idTypes of the write that matched that profile (``ucid`` when the write named it);
    ``released``: the ids it let go of, which a replay lets go of again.
    ``consent`` is what the write did to the master's consent (``identity.consent``); ``source``
    is the path the write came by (api, bulk, import, crm, unmerge).
    """

    org_id: int
    region: str
    ucid: str
    created: bool
    ids: tuple[Identifier, ...]
    upsert: dict[str, dict[str, Any] | None]
    named_ucid: str | None
    actor: str
    ts: int
    merges: dict[str, list[str]] = field(default_factory=dict)
    released: tuple[Identifier, ...] = ()  # ids the write let go of (``PreparedWrite.released``)
    # What the write did to the master's consent (the consent ledger), and the write's path.
    consent: tuple[ConsentEntry, ...] = ()
    source: str = "api"
    # Ids of the write that the profile it landed on did not take (held by another profile, over
    # a limit, evicted at once): the journal row keeps them, and ``journal_unattached`` says so,
    # so an erasure of whoever holds them takes them out of this row. Not a column of the row.
    unattached: tuple[Identifier, ...] = ()


class ProfileReader(Protocol):
    """Reads of the profile graph: what search, get and erasure need, and the first half of a write."""

    def find_owners(self, org_id: int, region: str, ids: Iterable[Identifier]) -> dict[Identifier, str]:
        """The master owning each of ``ids`` that is owned (ids owned by no profile are left out)."""
        ...

    def resolve_ucids(self, org_id: int, ucids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Each known ucid's (master ucid, region); a merged-away ucid resolves to its master."""
        ...

    def load_profiles(self, org_id: int, ucids: Iterable[str]) -> dict[str, ProfileState]:
        """The profiles of ``ucids`` that exist, with their ids; the caller may change the copies."""
        ...

    def linked_ucids(self, org_id: int, masters: Iterable[str]) -> dict[str, list[str]]:
        """Each master's merged-away ucids, oldest first (masters with none are left out)."""
        ...

    def ids_of_type(self, org_id: int, masters: Iterable[str], id_type: str) -> dict[str, list[str]]:
        """The values of ``id_type`` each master holds, sorted (masters with none are left out):
        e.g. the CRM people linked to a profile."""
        ...


class ProfileStorage(ProfileReader, Protocol):
    """Reads and writes of the profile graph, as one write's resolution makes them."""

    def insert_profile(self, org_id: int, state: ProfileState) -> None:
        """A new master (its ids follow through ``insert_ids``). The storage may keep ``state.data``
        itself: the caller does not change it afterwards."""
        ...

    def update_profile(self, org_id: int, state: ProfileState) -> None:
        """A master's new attributes and ``updated_ts`` (ids change through the id calls)."""
        ...

    def mark_merged(self, org_id: int, merged: list[str], master: str, now_ms: int) -> None:
        """Point ``merged`` (and whatever had been merged into them) at ``master``, move their ids
        to it and empty their attributes."""
        ...

    def insert_ids(self, org_id: int, region: str, ucid: str, ids: dict[Identifier, int]) -> None:
        """Ids newly owned by ``ucid``, with their last-seen times."""
        ...

    def delete_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        """Ids that no profile owns any more (evicted)."""
        ...

    def touch_ids(self, org_id: int, region: str, ids: Iterable[Identifier], ts: int) -> None:
        """A new last-seen time for ids that keep their owner."""
        ...

    def record_change(self, change: ProfileChange) -> None:
        """An entry of the change log."""
        ...

    def record_write(self, record: WriteRecord) -> None:
        """An entry of the person's journal (after the write's own changes, in write order)."""
        ...
