"""SQL reads of profiles and their ids for search and erasure (writes go through BatchStore)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.identity.storage import ProfileState
from profilehub.store.tables import profile_ids, profiles

# Keep IN lists well under SQLite's and psycopg's parameter limits.
_CHUNK = 400


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _by_type(ids: Iterable[Identifier]) -> Iterable[tuple[str, list[str]]]:
    """Ids grouped as (idType, values), in chunks.

    ``id_type = ? AND value IN (...)`` walks the primary key on both backends, where SQLite plans
    a row-value ``(id_type, value) IN (...)`` as a scan of the whole org and region.
    """
    grouped: dict[str, list[str]] = {}
    for i in sorted(set(ids)):
        grouped.setdefault(i.id_type, []).append(i.value)
    for id_type, values in grouped.items():
        for part in _chunks(values):
            yield id_type, part


def find_owners(
    conn: Connection, org_id: int, region: str, ids: Iterable[Identifier]
) -> dict[Identifier, str]:
    owners: dict[Identifier, str] = {}
    for id_type, values in _by_type(ids):
        rows = conn.execute(
            sa.select(profile_ids.c.value, profile_ids.c.ucid).where(
                profile_ids.c.org_id == org_id,
                profile_ids.c.region == region,
                profile_ids.c.id_type == id_type,
                profile_ids.c.value.in_(values),
            )
        )
        for r in rows:
            owners[Identifier(id_type, r.value)] = r.ucid
    return owners


def resolve_ucids(conn: Connection, org_id: int, ucids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Map each known ucid to (master ucid, region); merged-away ucids resolve to their master."""
    out: dict[str, tuple[str, str]] = {}
    for part in _chunks(sorted(set(ucids))):
        rows = conn.execute(
            sa.select(profiles.c.ucid, profiles.c.merged_into, profiles.c.region).where(
                profiles.c.org_id == org_id, profiles.c.ucid.in_(part)
            )
        )
        for r in rows:
            out[r.ucid] = (r.merged_into or r.ucid, r.region)
    return out


def load_profiles(conn: Connection, org_id: int, ucids: Iterable[str]) -> dict[str, ProfileState]:
    wanted = sorted(set(ucids))
    states: dict[str, ProfileState] = {}
    for part in _chunks(wanted):
        for r in conn.execute(
            sa.select(profiles).where(profiles.c.org_id == org_id, profiles.c.ucid.in_(part))
        ):
            states[r.ucid] = ProfileState(
                ucid=r.ucid,
                region=r.region,
                created_ts=r.created_ts,
                updated_ts=r.updated_ts,
                data=orjson.loads(r.data),
            )
        for r in conn.execute(
            sa.select(profile_ids.c.ucid, profile_ids.c.id_type, profile_ids.c.value, profile_ids.c.ts).where(
                profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(part)
            )
        ):
            if r.ucid in states:
                states[r.ucid].ids[Identifier(r.id_type, r.value)] = r.ts
    return states


def linked_ucids(conn: Connection, org_id: int, masters: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in _chunks(sorted(set(masters))):
        rows = conn.execute(
            sa.select(profiles.c.merged_into, profiles.c.ucid)
            .where(profiles.c.org_id == org_id, profiles.c.merged_into.in_(part))
            .order_by(profiles.c.created_ts, profiles.c.ucid)
        )
        for r in rows:
            out.setdefault(r.merged_into, []).append(r.ucid)
    return out


def delete_profiles(conn: Connection, org_id: int, masters: list[str]) -> list[str]:
    """Erase masters, everything merged into them, and their ids; return every erased ucid."""
    erased: list[str] = []
    for part in _chunks(sorted(set(masters))):
        erased += [
            r.ucid
            for r in conn.execute(
                sa.select(profiles.c.ucid).where(
                    profiles.c.org_id == org_id,
                    sa.or_(profiles.c.ucid.in_(part), profiles.c.merged_into.in_(part)),
                )
            )
        ]
        conn.execute(profile_ids.delete().where(profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(part)))
        conn.execute(
            profiles.delete().where(
                profiles.c.org_id == org_id,
                sa.or_(profiles.c.ucid.in_(part), profiles.c.merged_into.in_(part)),
            )
        )
    return erased
