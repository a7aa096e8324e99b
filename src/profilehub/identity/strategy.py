"""Per-org identity strategy: which idTypes exist, their namespace, class, priority and limit.

The model and its rules only; loading and editing it in the database is
``profilehub.store.strategy_store``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from profilehub.errors import BadRequest
from profilehub.identity.consent import DEFAULT_CONSENT_DENIALS
from profilehub.identity.suppression import Suppression


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
CRM_PERSON_ID = "crm_person_id"
DEFAULT_ID_TYPES: tuple[IdType, ...] = (
    _id("crm_id", "crm", P, 1, 1),
    # The link to a CRM person, written only by the CRM dialect (docs/crm.md): one person per profile.
    _id(CRM_PERSON_ID, "crm", P, 1, 1),
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
    # Fingerprints of erased ids that writes drop (None: the org has never suppressed any).
    suppression: Suppression | None = None
    # Consent values that deny (trimmed, lower-cased): on a merge they win over a grant.
    consent_denials: frozenset[str] = frozenset(DEFAULT_CONSENT_DENIALS)

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

    def blocked_values(self, id_type: str) -> frozenset[str]:
        """The values blocked for ``id_type`` (its own and the "*" ones), lower-cased: a value is
        blocked when its ``lower()`` is one of them."""
        values = self._blocked_by_type.get(id_type)
        if values is None:
            values = self.blocked.get("*", frozenset()) | self.blocked.get(id_type, frozenset())
        return values

    def is_blocked(self, id_type: str, value: str) -> bool:
        return value.lower() in self.blocked_values(id_type)

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


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
# Words the API gives a meaning of their own: `ucid` in search and delete, `linkedUcid` in ids.
RESERVED_NAMES = frozenset({"ucid", "linkedUcid"})


def check_name(name: str, field: str) -> None:
    if not _NAME_RE.match(name):
        raise BadRequest(f"{name!r}: a letter, then up to 99 letters, digits, '_', '.' or '-'", field=field)
    if name in RESERVED_NAMES:
        raise BadRequest(f"{name!r} is reserved", field=field)


def check_id_type_edit(
    name: str, *, namespace: str | None, priority: int | None, max_per_profile: int | None
) -> None:
    """Refuse an idType edit whose names or numbers can never be valid, whatever the org holds."""
    check_name(name, "id_type")
    if namespace is not None:
        check_name(namespace, "namespace")
    if priority is not None and priority < 1:
        raise BadRequest("must be 1 or more (1 is the highest)", field="priority")
    if max_per_profile is not None and max_per_profile < 1:
        raise BadRequest("must be 1 or more", field="limit")


def edited_id_type(
    current: IdType | None,
    name: str,
    *,
    namespace: str | None = None,
    id_class: IdClass | None = None,
    priority: int | None = None,
    max_per_profile: int | None = None,
) -> IdType:
    """The idType ``name`` after an edit: ``current`` with the given fields changed, or a new one
    (its own namespace, primary, priority 100, limit 1, unless given)."""
    check_id_type_edit(name, namespace=namespace, priority=priority, max_per_profile=max_per_profile)
    if current is None:
        return IdType(
            name=name,
            namespace=namespace or name,
            id_class=id_class or IdClass.PRIMARY,
            priority=priority or 100,
            max_per_profile=max_per_profile or 1,
        )
    return IdType(
        name=name,
        namespace=namespace or current.namespace,
        id_class=id_class or current.id_class,
        priority=priority or current.priority,
        max_per_profile=max_per_profile or current.max_per_profile,
    )


def default_strategy(org_id: int, regions: Iterable[str], *, keep_raw_ids: bool = False) -> Strategy:
    """The strategy every new org starts with (what the store seeds), without a database."""
    return Strategy(
        org_id=org_id,
        version=1,
        keep_raw_ids=keep_raw_ids,
        regions=frozenset(regions),
        id_types={t.name: t for t in DEFAULT_ID_TYPES},
        blocked={"*": frozenset(v.lower() for v in DEFAULT_BLOCKED_VALUES)},
    )
