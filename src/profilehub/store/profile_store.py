"""SQL for profiles and their ids. No identity rules live here, only reads and writes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.store.tables import profile_ids, profiles

# Keep IN lists well under SQLite's and psycopg's parameter limits.
_CHUNK = 400


@dataclass
class ProfileState:
    ucid: str
    region: str
    created_ts: int
    updated_ts: int
    data: dict[str, dict[str, Any]]
    ids: dict[Identifier, int] = field(default_factory=dict)  # id -> last seen (epoch ms)

    @property
    def sort_key(self) -> tuple[int, str]:
        """First-created wins a merge; the ucid breaks ties deterministically."""
        return (self.created_ts, self.ucid)


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


def insert_profile(conn: Connection, org_id: int, state: ProfileState) -> None:
    conn.execute(
        profiles.insert().values(
            org_id=org_id,
            ucid=state.ucid,
            region=state.region,
            created_ts=state.created_ts,
            updated_ts=state.updated_ts,
            merged_into=None,
            data=orjson.dumps(state.data).decode(),
        )
    )


def update_profile(conn: Connection, org_id: int, state: ProfileState) -> None:
    conn.execute(
        profiles.update()
        .where(profiles.c.org_id == org_id, profiles.c.ucid == state.ucid)
        .values(updated_ts=state.updated_ts, data=orjson.dumps(state.data).decode())
    )


def mark_merged(conn: Connection, org_id: int, merged: list[str], master: str, now_ms: int) -> None:
    """Point ``merged`` (and whatever had been merged into them) at ``master``; move their ids."""
    conn.execute(
        profiles.update()
        .where(profiles.c.org_id == org_id, profiles.c.merged_into.in_(merged))
        .values(merged_into=master)
    )
    conn.execute(
        profiles.update()
        .where(profiles.c.org_id == org_id, profiles.c.ucid.in_(merged))
        .values(merged_into=master, data="{}", updated_ts=now_ms)
    )
    conn.execute(
        profile_ids.update()
        .where(profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(merged))
        .values(ucid=master)
    )


def insert_ids(conn: Connection, org_id: int, region: str, ucid: str, ids: dict[Identifier, int]) -> None:
    if ids:
        conn.execute(
            profile_ids.insert(),
            [
                {
                    "org_id": org_id,
                    "region": region,
                    "id_type": i.id_type,
                    "value": i.value,
                    "ucid": ucid,
                    "ts": ts,
                }
                for i, ts in ids.items()
            ],
        )


def delete_ids(conn: Connection, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
    for id_type, values in _by_type(ids):
        conn.execute(
            profile_ids.delete().where(
                profile_ids.c.org_id == org_id,
                profile_ids.c.region == region,
                profile_ids.c.id_type == id_type,
                profile_ids.c.value.in_(values),
            )
        )


def touch_ids(conn: Connection, org_id: int, region: str, ids: Iterable[Identifier], ts: int) -> None:
    for id_type, values in _by_type(ids):
        conn.execute(
            profile_ids.update()
            .where(
                profile_ids.c.org_id == org_id,
                profile_ids.c.region == region,
                profile_ids.c.id_type == id_type,
                profile_ids.c.value.in_(values),
            )
            .values(ts=ts)
        )


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
