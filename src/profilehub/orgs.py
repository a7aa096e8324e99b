"""Organisations and their regions."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest, Conflict, NotFound
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.strategy_store import bump_strategy_version, seed_default_strategy
from profilehub.store.suppression_store import create_key
from profilehub.store.tables import org_regions, orgs

_REGION_RE = re.compile(r"^[A-Z]{2,16}$")
MAX_ORG_ID = 2**63 - 1  # BIGINT on both databases


@dataclass(frozen=True)
class Org:
    org_id: int
    name: str
    regions: tuple[str, ...]
    keep_raw_ids: bool
    # The region where the org's CRM people resolve in the identity graph (docs/crm.md).
    home_region: str


def normalise_region(region: str, field: str = "region") -> str:
    r = region.strip().upper()
    if not _REGION_RE.match(r):
        raise BadRequest(f"{region!r} is not a region code (2-16 letters, e.g. EU, UK, US)", field=field)
    return r


def create_org(
    conn: Connection,
    org_id: int,
    name: str,
    regions: list[str],
    *,
    keep_raw_ids: bool = False,
    home_region: str | None = None,
    actor: str = "cli",
) -> Org:
    """``home_region`` defaults to the first of ``regions`` as given."""
    if not 1 <= org_id <= MAX_ORG_ID:
        raise BadRequest(f"must be an integer from 1 to {MAX_ORG_ID}", field="orgId")
    if not name.strip():
        raise BadRequest("must not be empty", field="name")
    if not regions:
        raise BadRequest("an org needs at least one region", field="region")
    clean = tuple(dict.fromkeys(normalise_region(r) for r in regions))
    home = clean[0] if home_region is None else normalise_region(home_region, "homeRegion")
    if home not in clean:
        raise BadRequest(
            f"home region {home} must be one of the org's regions ({', '.join(clean)})", field="homeRegion"
        )
    if conn.execute(sa.select(orgs.c.org_id).where(orgs.c.org_id == org_id)).first():
        raise Conflict(f"org {org_id} already exists", field="orgId")
    ts = now_ms()
    conn.execute(
        orgs.insert().values(
            org_id=org_id,
            name=name.strip(),
            keep_raw_ids=keep_raw_ids,
            strategy_version=1,
            created_ts=ts,
            home_region=home,
        )
    )
    conn.execute(org_regions.insert(), [{"org_id": org_id, "region": r} for r in clean])
    seed_default_strategy(conn, org_id)
    create_key(conn, org_id)
    record(
        conn,
        [
            change_row(
                org_id,
                actor,
                "org",
                str(org_id),
                "create",
                {"name": name, "regions": list(clean), "homeRegion": home},
                ts,
            )
        ],
    )
    return Org(org_id, name.strip(), clean, keep_raw_ids, home)


def get_org(conn: Connection, org_id: int) -> Org:
    row = conn.execute(sa.select(orgs).where(orgs.c.org_id == org_id)).first()
    if row is None:
        raise NotFound(f"unknown org {org_id}", field="orgId")
    regions = tuple(
        conn.execute(
            sa.select(org_regions.c.region)
            .where(org_regions.c.org_id == org_id)
            .order_by(org_regions.c.region)
        ).scalars()
    )
    # Migration 0008 gave every org its home region; an org row written since by an older
    # process still running beside this one has none: its first region, as the migration chose.
    home = row.home_region or (regions[0] if regions else "")
    return Org(row.org_id, row.name, regions, bool(row.keep_raw_ids), home)


def home_region(conn: Connection, org_id: int) -> str:
    """The org's home region: where its CRM people resolve in the identity graph."""
    row = conn.execute(sa.select(orgs.c.home_region).where(orgs.c.org_id == org_id)).first()
    if row is None:
        raise NotFound(f"unknown org {org_id}", field="orgId")
    return str(row.home_region) if row.home_region else get_org(conn, org_id).home_region


def list_orgs(conn: Connection) -> list[Org]:
    ids = conn.execute(sa.select(orgs.c.org_id).order_by(orgs.c.org_id)).scalars().all()
    return [get_org(conn, i) for i in ids]


def add_region(conn: Connection, org_id: int, region: str, actor: str = "cli") -> Org:
    org = get_org(conn, org_id)
    r = normalise_region(region)
    if r not in org.regions:
        conn.execute(org_regions.insert().values(org_id=org_id, region=r))
        bump_strategy_version(conn, org_id)
        record(conn, [change_row(org_id, actor, "org", str(org_id), "add_region", {"region": r})])
    return get_org(conn, org_id)


def set_keep_raw_ids(conn: Connection, org_id: int, keep: bool, actor: str = "cli") -> Org:
    get_org(conn, org_id)
    conn.execute(orgs.update().where(orgs.c.org_id == org_id).values(keep_raw_ids=keep))
    bump_strategy_version(conn, org_id)
    record(conn, [change_row(org_id, actor, "org", str(org_id), "keep_raw_ids", {"keep": keep})])
    return get_org(conn, org_id)
