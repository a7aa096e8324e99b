"""Console sessions: a row per signed-in browser, found by the sha256 of the cookie's secret.

Server-side rows rather than a signed token, so that signing out ends a session at once (a signed
token stays valid until it expires) and every ``profilehub serve`` process sees the same sessions
without sharing a signing secret. A session keeps the hash of the credential it was made from,
never the credential, and reads that credential's grant on every request: revoking the key or
token ends its sessions too. Knows nothing of HTTP.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.auth import CredentialKind, Principal, hash_secret, principal_of_hash
from profilehub.orgs import MAX_ORG_ID
from profilehub.store.changes import now_ms
from profilehub.store.tables import console_sessions

# An absolute lifetime: a console left open signs in again after a working day.
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    kind: CredentialKind
    csrf_token: str
    expires_ts: int

    @property
    def org_id(self) -> int:
        return self.principal.org_id

    def can(self, scope: str) -> bool:
        return scope in self.principal.scopes


def _split(cookie: str) -> tuple[int, str] | None:
    """``<org id>.<secret>``: the org leads, as in every key, so the lookup is by primary key."""
    org_text, _, secret = cookie.partition(".")
    if not org_text.isdigit() or len(org_text) > 19 or not secret or len(secret) > 100:
        return None
    org_id = int(org_text)
    return (org_id, secret) if 1 <= org_id <= MAX_ORG_ID else None


def start_session(
    conn: Connection, principal: Principal, kind: CredentialKind, credential_secret: str
) -> tuple[str, ConsoleSession]:
    """A new session for a verified credential: (the cookie value, the session)."""
    now = now_ms()
    secret = secrets.token_urlsafe(32)
    session = ConsoleSession(principal, kind, secrets.token_urlsafe(32), now + SESSION_SECONDS * 1000)
    # Expired rows of the org go as new ones come, so the table stays the size of its live sessions.
    conn.execute(
        console_sessions.delete().where(
            console_sessions.c.org_id == principal.org_id, console_sessions.c.expires_ts < now
        )
    )
    conn.execute(
        console_sessions.insert().values(
            org_id=principal.org_id,
            session_hash=hash_secret(secret),
            credential_hash=hash_secret(credential_secret),
            credential_kind=kind.value,
            csrf_token=session.csrf_token,
            created_ts=now,
            expires_ts=session.expires_ts,
        )
    )
    return f"{principal.org_id}.{secret}", session


def load_session(conn: Connection, cookie: str | None) -> ConsoleSession | None:
    """The live session of a cookie; None if there is none, it expired, or its credential was revoked."""
    parts = _split(cookie or "")
    if parts is None:
        return None
    org_id, secret = parts
    row = conn.execute(
        sa.select(console_sessions).where(
            console_sessions.c.org_id == org_id,
            console_sessions.c.session_hash == hash_secret(secret),
            console_sessions.c.expires_ts > now_ms(),
        )
    ).first()
    if row is None:
        return None
    kind = CredentialKind(row.credential_kind)
    principal = principal_of_hash(conn, org_id, row.credential_hash, kind)
    if principal is None:
        return None
    console_principal = Principal(principal.org_id, principal.scopes, f"console:{principal.actor}")
    return ConsoleSession(console_principal, kind, row.csrf_token, row.expires_ts)


def end_session(conn: Connection, cookie: str | None) -> None:
    parts = _split(cookie or "")
    if parts is not None:
        org_id, secret = parts
        conn.execute(
            console_sessions.delete().where(
                console_sessions.c.org_id == org_id, console_sessions.c.session_hash == hash_secret(secret)
            )
        )


def same_token(expected: str, sent: str | None) -> bool:
    """Constant-time comparison of a CSRF token (a missing one never matches)."""
    return bool(sent) and hmac.compare_digest(expected.encode(), (sent or "").encode())
