"""Which profiles carried an erased person's values before an unmerge parted them from it.

While two people were one profile, that profile's events (``profile.updated``, ``profile.merged``…)
and the saved answers of keyed writes to it held both people's values. An unmerge leaves those as
they were; an erasure of one of the parted people must delete them too (docs/privacy.md). Each
unmerge names, in the change-log row of every profile it results in, the person it rebuilt:
``from`` (its master) and ``fromUcids`` (the master and every ucid merged into it; rows written
before that field existed name the master only). The journal of the parted profiles' writes
held the erased person's ids and ucids too, where a write carried both people's ids.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.store.journal_store import scrub_journal
from profilehub.store.tables import changes, profile_ids, profiles

# A bound past every timestamp: an erased ucid's own events and answers go whatever their time.
_ALWAYS = 2**62


def parted_from(conn: Connection, org_id: int, ucids: Iterable[str]) -> dict[str, int]:
    """The ucids that were one person with any of ``ucids`` until an unmerge parted them, each with
    the time (epoch ms) of the latest such unmerge: what they held up to then may be the erased
    person's. Followed back through earlier unmerges, since the person rebuilt by one may itself
    have been parted from another before. ``ucids`` themselves are not in the answer."""
    erased = set(ucids)
    bounds: dict[str, int] = {}
    frontier = dict.fromkeys(erased, _ALWAYS)
    while frontier:
        reached: dict[str, int] = {}
        names = sorted(frontier)
        for start in range(0, len(names), 500):
            rows = conn.execute(
                sa.select(changes.c.entity_id, changes.c.ts, changes.c.detail).where(
                    changes.c.org_id == org_id,
                    changes.c.entity == "profile",
                    changes.c.entity_id.in_(names[start : start + 500]),
                    changes.c.action == "unmerge",
                )
            )
            for entity_id, ts, detail in rows:
                if ts > frontier[entity_id]:
                    continue  # an unmerge after this profile stopped carrying the erased values
                parsed = orjson.loads(detail)
                for ucid in parsed.get("fromUcids") or [parsed["from"]]:
                    if ucid not in erased and ts > max(bounds.get(ucid, -1), reached.get(ucid, -1)):
                        reached[ucid] = ts
        bounds.update(reached)
        frontier = reached
    return bounds


def ids_held(conn: Connection, org_id: int, ucids: Iterable[str]) -> set[Identifier]:
    """The ids the profiles ``ucids`` hold (an erasure reads them before they go)."""
    held: set[Identifier] = set()
    names = sorted(set(ucids))
    for start in range(0, len(names), 500):
        rows = conn.execute(
            sa.select(profile_ids.c.id_type, profile_ids.c.value).where(
                profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(names[start : start + 500])
            )
        )
        held |= {Identifier(t, v) for t, v in rows}
    return held


def scrub_parted_journals(
    conn: Connection, org_id: int, parted: Iterable[str], erased: Iterable[str], held: set[Identifier]
) -> None:
    """Take the ids ``held`` by the ``erased`` profiles (``ids_held``) and their ucids out of the
    journal of the people the ``parted`` ucids belong to now: a write that linked both people
    stayed with the survivor, with the erased person's ids in it."""
    gone = set(erased)
    wanted = sorted(set(parted))
    if not wanted:
        return
    masters: set[str] = set()
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            sa.select(profiles.c.ucid, profiles.c.merged_into).where(
                profiles.c.org_id == org_id, profiles.c.ucid.in_(wanted[start : start + 500])
            )
        )
        masters |= {merged_into or ucid for ucid, merged_into in rows}
    people = set(masters)
    found = sorted(masters)
    for start in range(0, len(found), 500):
        people |= set(
            conn.execute(
                sa.select(profiles.c.ucid).where(
                    profiles.c.org_id == org_id, profiles.c.merged_into.in_(found[start : start + 500])
                )
            ).scalars()
        )
    scrub_journal(conn, org_id, people - gone, held, gone)
