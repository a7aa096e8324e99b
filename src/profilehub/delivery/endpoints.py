"""Webhook endpoints: where an org's events are pushed, with the secret their deliveries are
signed with, and their delivery state (cursor, failures, disabled or not).

The CLI (``profilehub webhook``) and the admin HTTP API are shells over these functions.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.delivery.event_types import check_event_types
from profilehub.errors import BadRequest, NotFound
from profilehub.orgs import MAX_ORG_ID, get_org
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.tables import events, webhook_endpoints, webhook_pending

MAX_URL_LENGTH = 2000
# ``next_attempt_ts`` of a pending event queued behind an earlier one of its key: never due by
# itself; it becomes due when the one before it is delivered.
BEHIND = 2**62
_ENDPOINT_ID_RE = re.compile(r"^wh_([0-9]{1,19})_[0-9a-f]{12}$")


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    org_id: int
    url: str
    event_types: tuple[str, ...]  # empty: every type
    created_ts: int
    disabled_ts: int | None
    disabled_reason: str | None
    cursor: int
    failing_since: int | None
    last_error: str | None
    delivered: int
    # Every event still to reach it: handed to it and not yet delivered, or committed after its
    # cursor and not yet handed to it (where a disabled endpoint's events wait).
    pending: int

    @property
    def state(self) -> str:
        if self.disabled_ts is not None:
            return "disabled"
        return "failing" if self.failing_since is not None else "enabled"

    def as_json(self) -> dict[str, Any]:
        """The endpoint as the admin API answers it (never its secret)."""
        return {
            "id": self.endpoint_id,
            "orgId": self.org_id,
            "url": self.url,
            "events": list(self.event_types),
            "state": self.state,
            "createdTs": self.created_ts,
            "disabledTs": self.disabled_ts,
            "disabledReason": self.disabled_reason,
            "cursor": str(self.cursor),
            "failingSince": self.failing_since,
            "lastError": self.last_error,
            "delivered": self.delivered,
            "pending": self.pending,
        }

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: Endpoint
    secret: str


def check_url(url: str, field: str = "url") -> str:
    """An absolute http(s) URL with a host, or a 400 naming ``field``."""
    url = url.strip()
    if not url:
        raise BadRequest("must not be empty", field=field)
    if len(url) > MAX_URL_LENGTH or any(c.isspace() for c in url):
        raise BadRequest(f"not a URL (at most {MAX_URL_LENGTH} characters, no spaces)", field=field)
    import httpx  # here: ``profilehub webhook list`` and the like need no HTTP client

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise BadRequest(f"{url!r} is not a URL: {exc}", field=field) from None
    if parsed.scheme not in ("http", "https"):
        raise BadRequest(f"{url!r} must start with https:// or http://", field=field)
    if not parsed.host:
        raise BadRequest(f"{url!r} has no host", field=field)
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        # httpx takes any number as a port; a connection cannot (an endpoint on port 99999 would
        # never be delivered to, nor fail in a way that disables it).
        raise BadRequest(f"{url!r} has port {parsed.port}: a port is 1 to 65535", field=field)
    return url


def new_secret() -> str:
    # Standard Webhooks secrets are whsec_ + base64 of 24 to 64 random bytes.
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def org_of_endpoint(endpoint_id: str, field: str = "id") -> int:
    found = _ENDPOINT_ID_RE.match(endpoint_id.strip())
    if not found or int(found.group(1)) > MAX_ORG_ID:
        raise NotFound(f"{endpoint_id!r} is not a webhook endpoint id (wh_<orgId>_<12 hex>)", field=field)
    return int(found.group(1))


def _pending_counts(conn: Connection, org_id: int) -> dict[str, int]:
    rows = conn.execute(
        sa.select(webhook_pending.c.endpoint_id, sa.func.count())
        .where(webhook_pending.c.org_id == org_id)
        .group_by(webhook_pending.c.endpoint_id)
    )
    return {r[0]: int(r[1]) for r in rows}


def _unread(conn: Connection, org_id: int, cursor: int, types: tuple[str, ...] = ()) -> int:
    """The org's events committed after ``cursor``: of ``types`` only, or of every type when none
    are given. Not yet handed to the endpoint at that cursor (a disabled endpoint's wait there
    until it is enabled; an enabled one's for a moment)."""
    query = sa.select(sa.func.count()).where(events.c.org_id == org_id, events.c.event_id > cursor)
    if types:
        query = query.where(events.c.type.in_(types))
    return int(conn.execute(query).scalar_one())


def _endpoint(conn: Connection, row: Any, waiting: int) -> Endpoint:
    """``row``'s endpoint; pending: its ``waiting`` rows in webhook_pending and its unread events."""
    types = tuple(t for t in row.event_types.split(",") if t)
    return Endpoint(
        endpoint_id=row.endpoint_id,
        org_id=row.org_id,
        url=row.url,
        event_types=types,
        created_ts=row.created_ts,
        disabled_ts=row.disabled_ts,
        disabled_reason=row.disabled_reason,
        cursor=row.cursor,
        failing_since=row.failing_since,
        last_error=row.last_error,
        delivered=row.delivered,
        pending=waiting + _unread(conn, row.org_id, row.cursor, types),
    )


def list_endpoints(conn: Connection, org_id: int) -> list[Endpoint]:
    get_org(conn, org_id)
    counts = _pending_counts(conn, org_id)
    rows = conn.execute(
        sa.select(webhook_endpoints)
        .where(webhook_endpoints.c.org_id == org_id)
        .order_by(webhook_endpoints.c.created_ts, webhook_endpoints.c.endpoint_id)
    )
    return [_endpoint(conn, r, counts.get(r.endpoint_id, 0)) for r in rows]


def get_endpoint(conn: Connection, endpoint_id: str, org_id: int | None = None) -> Endpoint:
    """The endpoint; 404 when there is none (or it belongs to another org than ``org_id``)."""
    owner = org_of_endpoint(endpoint_id)
    endpoint_id = endpoint_id.strip()
    row = conn.execute(
        sa.select(webhook_endpoints).where(
            webhook_endpoints.c.org_id == owner, webhook_endpoints.c.endpoint_id == endpoint_id
        )
    ).first()
    if row is None or (org_id is not None and owner != org_id):
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", field="id")
    pending = conn.execute(
        sa.select(sa.func.count()).where(
            webhook_pending.c.org_id == owner, webhook_pending.c.endpoint_id == endpoint_id
        )
    ).scalar_one()
    return _endpoint(conn, row, int(pending))


def endpoint_secret(conn: Connection, endpoint: Endpoint) -> str:
    return str(
        conn.execute(
            sa.select(webhook_endpoints.c.secret).where(
                webhook_endpoints.c.org_id == endpoint.org_id,
                webhook_endpoints.c.endpoint_id == endpoint.endpoint_id,
            )
        ).scalar_one()
    )


def create_endpoint(
    conn: Connection,
    org_id: int,
    url: str,
    event_types: list[str] | tuple[str, ...] = (),
    *,
    start_after: int = 0,
    actor: str = "cli",
) -> CreatedEndpoint:
    """A new endpoint, enabled, that gets the events committed after ``start_after`` (the org's
    newest event when it is created: an endpoint is not sent the org's past)."""
    get_org(conn, org_id)
    url = check_url(url)
    types = check_event_types(event_types)
    endpoint_id = f"wh_{org_id}_{secrets.token_hex(6)}"
    secret = new_secret()
    conn.execute(
        webhook_endpoints.insert().values(
            org_id=org_id,
            endpoint_id=endpoint_id,
            url=url,
            event_types=",".join(types),
            secret=secret,
            created_ts=now_ms(),
            cursor=start_after,
            delivered=0,
        )
    )
    record(conn, [change_row(org_id, actor, "webhook", endpoint_id, "create", {"events": list(types)})])
    return CreatedEndpoint(get_endpoint(conn, endpoint_id), secret)


def set_enabled(conn: Connection, endpoint_id: str, enabled: bool, *, actor: str = "cli") -> Endpoint:
    """Disable an endpoint (nothing is sent; its events wait), or enable it again: its waiting
    events are then due at once, in order, and its failure history starts afresh."""
    endpoint = get_endpoint(conn, endpoint_id)
    where = (
        webhook_endpoints.c.org_id == endpoint.org_id,
        webhook_endpoints.c.endpoint_id == endpoint.endpoint_id,
    )
    if enabled:
        conn.execute(
            webhook_endpoints.update()
            .where(*where)
            .values(disabled_ts=None, disabled_reason=None, failing_since=None)
        )
        conn.execute(
            webhook_pending.update()
            .where(
                webhook_pending.c.org_id == endpoint.org_id,
                webhook_pending.c.endpoint_id == endpoint.endpoint_id,
                webhook_pending.c.next_attempt_ts != BEHIND,
            )
            .values(attempts=0, next_attempt_ts=now_ms())
        )
    elif endpoint.disabled_ts is None:
        conn.execute(
            webhook_endpoints.update()
            .where(*where)
            .values(disabled_ts=now_ms(), disabled_reason=f"disabled by {actor}")
        )
    record(
        conn,
        [
            change_row(
                endpoint.org_id, actor, "webhook", endpoint.endpoint_id, "enable" if enabled else "disable"
            )
        ],
    )
    return get_endpoint(conn, endpoint.endpoint_id)


def delete_endpoint(conn: Connection, endpoint_id: str, *, actor: str = "cli") -> None:
    endpoint = get_endpoint(conn, endpoint_id)
    for table in (webhook_pending, webhook_endpoints):
        conn.execute(
            table.delete().where(
                table.c.org_id == endpoint.org_id, table.c.endpoint_id == endpoint.endpoint_id
            )
        )
    record(conn, [change_row(endpoint.org_id, actor, "webhook", endpoint.endpoint_id, "delete")])


def replay_from(conn: Connection, endpoint_id: str, after: int, *, actor: str = "cli") -> Endpoint:
    """Send the endpoint every event after ``after`` (an event id) again, in order, from now.

    Pending events up to ``after`` stay where they are; later ones are dropped from the pending
    list, as they are read again from the feed in their order.

    ``after`` past the endpoint's cursor is refused: the events between would be skipped, never
    sent (and past the org's newest event, every event up to ``after`` committed from now)."""
    endpoint = get_endpoint(conn, endpoint_id)
    if after > endpoint.cursor:
        raise BadRequest(
            f"{after} is past the endpoint's cursor {endpoint.cursor} (the last event it was handed): "
            "a replay sends events again and cannot skip ahead, as the events in between would never "
            "be sent; pass an id up to the cursor",
            field="after",
        )
    conn.execute(
        webhook_pending.delete().where(
            webhook_pending.c.org_id == endpoint.org_id,
            webhook_pending.c.endpoint_id == endpoint.endpoint_id,
            webhook_pending.c.event_id > after,
        )
    )
    conn.execute(
        webhook_endpoints.update()
        .where(
            webhook_endpoints.c.org_id == endpoint.org_id,
            webhook_endpoints.c.endpoint_id == endpoint.endpoint_id,
        )
        # The lease goes too: a round under way (it read from the old cursor) then cannot commit
        # its cursor over this one; the deliverer takes the endpoint again from here.
        .values(cursor=after, lease_owner=None, lease_until=None)
    )
    record(
        conn,
        [change_row(endpoint.org_id, actor, "webhook", endpoint.endpoint_id, "replay", {"after": after})],
    )
    return get_endpoint(conn, endpoint.endpoint_id)


def backlogs(conn: Connection) -> dict[str, int]:
    """Each enabled endpoint's backlog: events committed after its cursor (of the types it takes
    or not: they still have to be read) plus its pending ones. For /metrics."""
    pending: dict[str, int] = dict(
        conn.execute(
            sa.select(webhook_pending.c.endpoint_id, sa.func.count()).group_by(webhook_pending.c.endpoint_id)
        ).all()
    )
    out: dict[str, int] = {}
    rows = conn.execute(
        sa.select(
            webhook_endpoints.c.org_id, webhook_endpoints.c.endpoint_id, webhook_endpoints.c.cursor
        ).where(webhook_endpoints.c.disabled_ts.is_(None))
    ).all()
    for org_id, endpoint_id, cursor in rows:
        # Of every type, not only the endpoint's: they still have to be read.
        out[endpoint_id] = _unread(conn, org_id, cursor) + int(pending.get(endpoint_id, 0))
    return out
