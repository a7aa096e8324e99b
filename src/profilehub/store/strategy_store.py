"""The identity strategy in the database: seeding, loading (cached by version) and editing.

The model and the rules of an edit are ``profilehub.identity.strategy``; this module only reads
and writes its tables, bumps the org's ``strategy_version`` and logs who changed what.
"""

from __future__ import annotations

import hashlib
import json
import threading

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import NotFound
from profilehub.identity.consent import DEFAULT_CONSENT_DENIALS, check_denial_values
from profilehub.identity.strategy import (
    DEFAULT_BLOCKED_VALUES,
    DEFAULT_ID_TYPES,
    IdClass,
    IdType,
    Strategy,
    check_id_type_edit,
    edited_id_type,
)
from profilehub.store.changes import change_row, record
from profilehub.store.suppression_store import load_suppression
from profilehub.store.tables import blocked_values, consent_settings, id_types, org_regions, orgs


def seed_default_strategy(conn: Connection, org_id: int) -> None:
    conn.execute(
        id_types.insert(),
        [
            {
                "org_id": org_id,
                "id_type": t.name,
                "namespace": t.namespace,
                "id_class": t.id_class.value,
                "priority": t.priority,
                "max_per_profile": t.max_per_profile,
            }
            for t in DEFAULT_ID_TYPES
        ],
    )
    conn.execute(
        blocked_values.insert(),
        [{"org_id": org_id, "id_type": "*", "value": v} for v in DEFAULT_BLOCKED_VALUES],
    )


def load_strategy(conn: Connection, org_id: int) -> Strategy:
    org = conn.execute(
        sa.select(orgs.c.strategy_version, orgs.c.keep_raw_ids).where(orgs.c.org_id == org_id)
    ).first()
    if org is None:
        raise NotFound(f"unknown org {org_id}", field="orgId")
    rules = {
        r.id_type: IdType(r.id_type, r.namespace, IdClass(r.id_class), r.priority, r.max_per_profile)
        for r in conn.execute(sa.select(id_types).where(id_types.c.org_id == org_id))
    }
    regions = frozenset(
        conn.execute(sa.select(org_regions.c.region).where(org_regions.c.org_id == org_id)).scalars()
    )
    blocked: dict[str, set[str]] = {}
    for r in conn.execute(sa.select(blocked_values).where(blocked_values.c.org_id == org_id)):
        blocked.setdefault(r.id_type, set()).add(r.value.lower())
    return Strategy(
        org_id=org_id,
        version=org.strategy_version,
        keep_raw_ids=bool(org.keep_raw_ids),
        regions=regions,
        id_types=rules,
        blocked={k: frozenset(v) for k, v in blocked.items()},
        suppression=load_suppression(conn, org_id),
        consent_denials=consent_denials(conn, org_id),
    )


def consent_denials(conn: Connection, org_id: int) -> frozenset[str]:
    """The values that deny consent for the org: its own list, or the defaults."""
    stored = conn.execute(
        sa.select(consent_settings.c.denials).where(consent_settings.c.org_id == org_id)
    ).scalar_one_or_none()
    return frozenset(json.loads(stored)) if stored is not None else frozenset(DEFAULT_CONSENT_DENIALS)


def set_consent_denials(
    conn: Connection, org_id: int, values: list[str] | None, now_ms: int, actor: str = "cli"
) -> frozenset[str]:
    """Replace the org's denial values (None: back to the defaults); they apply to the next merge."""
    chosen = check_denial_values(values) if values is not None else None
    load_strategy(conn, org_id)  # an unknown org is a 404 before anything is written
    conn.execute(consent_settings.delete().where(consent_settings.c.org_id == org_id))
    if chosen is not None:
        conn.execute(
            consent_settings.insert().values(
                org_id=org_id, denials=json.dumps(sorted(chosen)), updated_ts=now_ms
            )
        )
    bump_strategy_version(conn, org_id)
    detail = {"values": sorted(chosen) if chosen is not None else "default"}
    record(conn, [change_row(org_id, actor, "consent_denials", str(org_id), "update", detail)])
    return chosen if chosen is not None else frozenset(DEFAULT_CONSENT_DENIALS)


class StrategyCache:
    """Strategies by org, reloaded when the org's ``strategy_version`` moves.

    The version check is one primary-key read, so a change made from the CLI in another process
    takes effect on the next write.
    """

    def __init__(self) -> None:
        self._by_org: dict[int, Strategy] = {}
        self._lock = threading.Lock()

    def cached(self, org_id: int) -> Strategy | None:
        """The strategy last loaded for ``org_id``, without asking the database if it is current."""
        with self._lock:
            return self._by_org.get(org_id)

    def get(self, conn: Connection, org_id: int) -> Strategy:
        version = conn.execute(
            sa.select(orgs.c.strategy_version).where(orgs.c.org_id == org_id)
        ).scalar_one_or_none()
        if version is None:
            raise NotFound(f"unknown org {org_id}", field="orgId")
        with self._lock:
            cached = self._by_org.get(org_id)
        if cached is not None and cached.version == version:
            return cached
        fresh = load_strategy(conn, org_id)
        with self._lock:
            self._by_org[org_id] = fresh
        return fresh


def bump_strategy_version(conn: Connection, org_id: int) -> None:
    conn.execute(
        orgs.update().where(orgs.c.org_id == org_id).values(strategy_version=orgs.c.strategy_version + 1)
    )


def set_id_type(
    conn: Connection,
    org_id: int,
    name: str,
    *,
    namespace: str | None = None,
    id_class: IdClass | None = None,
    priority: int | None = None,
    max_per_profile: int | None = None,
    actor: str = "cli",
) -> IdType:
    """Add an idType or change an existing one's namespace, class, priority or limit."""
    # A bad name is a 400 before the org is even looked up, as it always was.
    check_id_type_edit(name, namespace=namespace, priority=priority, max_per_profile=max_per_profile)
    current = load_strategy(conn, org_id).id_types.get(name)
    rule = edited_id_type(
        current,
        name,
        namespace=namespace,
        id_class=id_class,
        priority=priority,
        max_per_profile=max_per_profile,
    )
    columns = {
        "namespace": rule.namespace,
        "id_class": rule.id_class.value,
        "priority": rule.priority,
        "max_per_profile": rule.max_per_profile,
    }
    if current is None:
        conn.execute(id_types.insert().values(org_id=org_id, id_type=rule.name, **columns))
    else:
        conn.execute(
            id_types.update().where(id_types.c.org_id == org_id, id_types.c.id_type == name).values(**columns)
        )
    bump_strategy_version(conn, org_id)
    # Strategy changes decide what matches from now on: the change log says who made them, when.
    detail = {
        "namespace": rule.namespace,
        "class": rule.id_class.value,
        "priority": rule.priority,
        "limit": rule.max_per_profile,
    }
    action = "create" if current is None else "update"
    record(conn, [change_row(org_id, actor, "id_type", name, action, detail)])
    return rule


def _blocked_detail(value: str) -> dict[str, str]:
    # A blocked value may be a real person's address: the change log keeps no id values (it
    # outlives erasures), only the value's digest, which `block list` values can be checked against.
    return {"valueSha256": hashlib.sha256(value.lower().encode()).hexdigest()}


def block_value(conn: Connection, org_id: int, value: str, id_type: str = "*", actor: str = "cli") -> None:
    strategy = load_strategy(conn, org_id)
    if id_type != "*":
        strategy.id_type(id_type, "id_type")
    if value.lower() in strategy.blocked.get(id_type, frozenset()):
        return
    conn.execute(blocked_values.insert().values(org_id=org_id, id_type=id_type, value=value.lower()))
    bump_strategy_version(conn, org_id)
    record(conn, [change_row(org_id, actor, "blocked_value", id_type, "add", _blocked_detail(value))])


def unblock_value(conn: Connection, org_id: int, value: str, id_type: str = "*", actor: str = "cli") -> bool:
    deleted = conn.execute(
        blocked_values.delete().where(
            blocked_values.c.org_id == org_id,
            blocked_values.c.id_type == id_type,
            blocked_values.c.value == value.lower(),
        )
    ).rowcount
    if deleted:
        bump_strategy_version(conn, org_id)
        record(conn, [change_row(org_id, actor, "blocked_value", id_type, "remove", _blocked_detail(value))])
    return bool(deleted)
