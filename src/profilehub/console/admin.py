"""The org admin page's reads: the org, its keys and tokens (prefixes only), its identity strategy,
blocked values and webhook endpoints with their delivery state. Changes go through the functions the CLI uses (``profilehub block``...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.auth import list_credentials
from profilehub.delivery.endpoints import Endpoint, list_endpoints
from profilehub.identity.strategy import IdType
from profilehub.orgs import Org, get_org
from profilehub.profiles import ProfileService


@dataclass(frozen=True)
class OrgAdmin:
    org: Org
    keys: list[dict[str, Any]]
    id_types: list[IdType]
    blocked: list[tuple[str, str]]  # (idType or "*", value)
    consent_denials: list[str]  # the values that deny consent (on a merge a denial wins)
    webhooks: list[Endpoint]


def org_admin(conn: Connection, service: ProfileService, org_id: int) -> OrgAdmin:
    strategy = service.strategies.get(conn, org_id)
    return OrgAdmin(
        org=get_org(conn, org_id),
        keys=list_credentials(conn, org_id),
        id_types=sorted(strategy.id_types.values(), key=lambda t: (t.priority, t.name)),
        blocked=sorted((t, v) for t, values in strategy.blocked.items() for v in values),
        consent_denials=sorted(strategy.consent_denials),
        webhooks=list_endpoints(conn, org_id),
    )
