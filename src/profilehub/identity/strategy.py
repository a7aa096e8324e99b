"""Per-org identity strategy: which idTypes exist, their namespace, class, priority and limit."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest, NotFound
from profilehub.store.changes import change_row, record
from profilehub.store.tables import blocked_values, id_types, org_regions, orgs


class IdClass(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    DISABLED = "disabled"


@dataclass(frozen=True)
class IdType:
    name: str
    namespace: str
    id_class: IdClass
    priority: int  # 1 is the highest
    max_per_profile: int


def _id(name: str, namespace: str, cls: IdClass, priority: int, limit: int) -> IdType:
    return IdType(name, namespace, cls, priority, limit)


P, S = IdClass.PRIMARY, IdClass.SECONDARY
EMAIL_HASH_TYPES = (
    "email_sha256_lowercase",
    "email_sha256_uppercase",
    "email_md5_lowercase",
    "email_md5_uppercase",
    "email_sha1_lowercase",
)
CELLPHONE_HASH_TYPES = (
    "cellphone_number_e164_sha256",
    "cellphone_number_e164_md5",
    "cellphone_number_e164_sha1",
)
DEFAULT_ID_TYPES: tuple[IdType, ...] = (
    _id("crm_id", "crm", P, 1, 1),
    _id("email", "email", P, 2, 1),
    *(_id(t, "email", P, 2, 1) for t in EMAIL_HASH_TYPES),
    _id("cellphone", "cellphone", P, 3, 1),
    *(_id(t, "cellphone", P, 3, 1) for t in CELLPHONE_HASH_TYPES),
    _id("fpuid", "fpuid", P, 4, 1),
    _id("AdId", "maid", S, 5, 5),
    _id("ga_clientid", "ga_clientid", S, 6, 5),
)

# Values that many unrelated records share: never used to match, for any idType.
_EMPTY = b""
DEFAULT_BLOCKED_VALUES: tuple[str, ...] = (
    "",
    "null",
    "undefined",
    "none",
    "nan",
    "0",
    "-1",
    "00000000-0000-0000-0000-000000000000",
    hashlib.sha256(_EMPTY).hexdigest(),
    hashlib.md5(_EMPTY).hexdigest(),
    hashlib.sha1(_EMPTY).hexdigest(),
)


@dataclass(frozen=True)
class Strategy:
    org_id: int
    version: int
    keep_raw_ids: bool
    regions: frozenset[str]
    id_types: dict[str, IdType]
    # Lower-cased blocked values per idType; "*" applies to all.
    blocked: dict[str, frozenset[str]]

    def id_type(self, name: str, field: str) -> IdType:
        rule = self.id_types.get(name)
        if rule is None:
            known = ", ".join(sorted(self.id_types))
            raise BadRequest(f"unknown idType {name!r}; known idTypes: {known}", field=field)
        return rule

    def check_region(self, region: str, field: str = "region") -> str:
        """The region as stored: codes are case-insensitive on input (``eu`` is ``EU``), as the CLI
        takes them, and answers always use the stored upper-case form."""
        wanted = region.strip().upper()
        if wanted not in self.regions:
            known = ", ".join(sorted(self.regions))
            raise BadRequest(f"region {region!r} is not one of this org's regions ({known})", field=field)
        return wanted

    @cached_property
    def _blocked_by_type(self) -> dict[str, frozenset[str]]:
        # Per idType with the "*" values folded in: one set lookup per id on the import path.
        everywhere = self.blocked.get("*", frozenset())
        return {name: everywhere | self.blocked.get(name, frozenset()) for name in self.id_types}

    def is_blocked(self, id_type: str, value: str) -> bool:
        values = self._blocked_by_type.get(id_type)
        if values is None:
            values = self.blocked.get("*", frozenset()) | self.blocked.get(id_type, frozenset())
        return value.lower() in values

    def namespaces(self) -> set[str]:
        return {t.namespace for t in self.id_types.values()}

    def types_in_namespace(self, namespace: str) -> list[IdType]:
        return [t for t in self.id_types.values() if t.namespace == namespace]

    def namespace_of(self, id_type: str) -> str:
        rule = self.id_types.get(id_type)
        return rule.namespace if rule else id_type

    @cached_property
    def _sort_keys(self) -> dict[str, tuple[int, str]]:
        return {name: (rule.priority, name) for name, rule in self.id_types.items()}

    def sort_key(self, id_type: str) -> tuple[int, str]:
        key = self._sort_keys.get(id_type)
        return key if key is not None else (1_000_000, id_type)


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
    )


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


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
# Words the API gives a meaning of their own: `ucid` in search and delete, `linkedUcid` in ids.
RESERVED_NAMES = frozenset({"ucid", "linkedUcid"})


def _check_name(name: str, field: str) -> None:
    if not _NAME_RE.match(name):
        raise BadRequest(f"{name!r}: a letter, then up to 99 letters, digits, '_', '.' or '-'", field=field)
    if name in RESERVED_NAMES:
        raise BadRequest(f"{name!r} is reserved", field=field)


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
    _check_name(name, "id_type")
    if namespace is not None:
        _check_name(namespace, "namespace")
    if priority is not None and priority < 1:
        raise BadRequest("priority must be 1 or more (1 is the highest)", field="priority")
    if max_per_profile is not None and max_per_profile < 1:
        raise BadRequest("limit must be 1 or more", field="limit")
    current = load_strategy(conn, org_id).id_types.get(name)
    if current is None:
        rule = IdType(
            name=name,
            namespace=namespace or name,
            id_class=id_class or IdClass.PRIMARY,
            priority=priority or 100,
            max_per_profile=max_per_profile or 1,
        )
        conn.execute(
            id_types.insert().values(
                org_id=org_id,
                id_type=rule.name,
                namespace=rule.namespace,
                id_class=rule.id_class.value,
                priority=rule.priority,
                max_per_profile=rule.max_per_profile,
            )
        )
    else:
        rule = IdType(
            name=name,
            namespace=namespace or current.namespace,
            id_class=id_class or current.id_class,
            priority=priority or current.priority,
            max_per_profile=max_per_profile or current.max_per_profile,
        )
        conn.execute(
            id_types.update()
            .where(id_types.c.org_id == org_id, id_types.c.id_type == name)
            .values(
                namespace=rule.namespace,
                id_class=rule.id_class.value,
                priority=rule.priority,
                max_per_profile=rule.max_per_profile,
            )
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
