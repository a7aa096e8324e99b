"""API keys (CDP) and bearer tokens (CRM): creation, hashing, verification and scopes.

A secret looks like ``phk_1234_<random>`` (apikey) or ``pht_1234_<random>`` (CRM token). The org
id inside it lets a lookup go straight to that org's rows (``org_id`` leads every key). Only the
sha256 of the whole secret is stored; the secrets are 256-bit random, so a slow password hash
would add latency without adding safety.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest, Forbidden, NotFound, Unauthorized
from profilehub.orgs import MAX_ORG_ID, get_org
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.tables import credentials

ConnFactory = Callable[[], AbstractContextManager[Connection]]


class CredentialKind(StrEnum):
    APIKEY = "apikey"
    TOKEN = "token"
    JWT = "jwt"  # a JWT subject granted to an org; the JWT itself is checked by oidc.py


PREFIX = {CredentialKind.APIKEY: "phk", CredentialKind.TOKEN: "pht"}
CDP_SCOPES = ("profile.read", "profile.write", "profile.delete")
SCOPES = {
    CredentialKind.APIKEY: CDP_SCOPES,
    CredentialKind.TOKEN: ("crm:read", "crm:write"),
    CredentialKind.JWT: CDP_SCOPES,
}


@dataclass(frozen=True)
class Principal:
    org_id: int
    scopes: frozenset[str]
    actor: str  # "apikey:phk_1234_abcd", shown in the change log


@dataclass(frozen=True)
class CreatedCredential:
    secret: str
    prefix: str
    org_id: int
    scopes: tuple[str, ...]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split_scopes(raw: str) -> list[str]:
    """Scopes as listed, comma-separated; a space inside one means the list used spaces."""
    scopes = [s.strip() for s in raw.split(",") if s.strip()]
    if any(len(s.split()) > 1 for s in scopes):
        raise ValueError(f"separate scopes with commas, not spaces: {','.join(raw.split()[:3])}")
    return scopes


def parse_scopes(raw: str, kind: CredentialKind, field: str = "scopes") -> tuple[str, ...]:
    try:
        scopes = tuple(dict.fromkeys(_split_scopes(raw)))
    except ValueError as exc:
        raise BadRequest(str(exc), field=field) from exc
    if not scopes:
        raise BadRequest(f"give at least one of {', '.join(SCOPES[kind])}", field=field)
    unknown = [s for s in scopes if s not in SCOPES[kind]]
    if unknown:
        raise BadRequest(
            f"unknown scope(s) {', '.join(unknown)}; allowed: {', '.join(SCOPES[kind])}", field=field
        )
    return scopes


def create_credential(
    conn: Connection, org_id: int, kind: CredentialKind, scopes: str, name: str = "", actor: str = "cli"
) -> CreatedCredential:
    get_org(conn, org_id)
    granted = parse_scopes(scopes, kind)
    secret = f"{PREFIX[kind]}_{org_id}_{secrets.token_urlsafe(32)}"
    prefix = secret[: len(f"{PREFIX[kind]}_{org_id}_") + 6]
    conn.execute(
        credentials.insert().values(
            org_id=org_id,
            secret_hash=hash_secret(secret),
            kind=kind.value,
            prefix=prefix,
            name=name,
            scopes=",".join(granted),
            created_ts=now_ms(),
            revoked_ts=None,
        )
    )
    record(conn, [change_row(org_id, actor, kind.value, prefix, "create", {"scopes": list(granted)})])
    return CreatedCredential(secret, prefix, org_id, granted)


def jwt_subject_hash(issuer: str, subject: str) -> str:
    return hash_secret(f"{issuer}\n{subject}")


def allow_jwt_subject(
    conn: Connection, org_id: int, issuer: str, subject: str, scopes: str, actor: str = "cli"
) -> str:
    """Let JWTs from ``issuer`` about ``subject`` use this org with ``scopes``; returns its prefix."""
    get_org(conn, org_id)
    if not subject.strip():
        raise BadRequest("must not be empty", field="subject")
    if not issuer.strip():
        raise BadRequest("set PROFILEHUB_JWT_ISSUER (or pass --issuer) first", field="issuer")
    granted = parse_scopes(scopes, CredentialKind.JWT)
    digest = jwt_subject_hash(issuer, subject)
    prefix = f"jwt:{subject[:28]}"
    conn.execute(
        credentials.delete().where(credentials.c.org_id == org_id, credentials.c.secret_hash == digest)
    )
    conn.execute(
        credentials.insert().values(
            org_id=org_id,
            secret_hash=digest,
            kind=CredentialKind.JWT.value,
            prefix=prefix,
            name=subject[:200],
            scopes=",".join(granted),
            created_ts=now_ms(),
            revoked_ts=None,
        )
    )
    record(conn, [change_row(org_id, actor, "jwt", prefix, "allow", {"scopes": list(granted)})])
    return prefix


def list_credentials(conn: Connection, org_id: int) -> list[dict[str, object]]:
    rows = conn.execute(
        sa.select(credentials).where(credentials.c.org_id == org_id).order_by(credentials.c.created_ts)
    )
    return [
        {
            "prefix": r.prefix,
            "kind": r.kind,
            "name": r.name,
            "scopes": r.scopes,
            "created_ts": r.created_ts,
            "revoked": r.revoked_ts is not None,
        }
        for r in rows
    ]


def revoke_credential(conn: Connection, org_id: int, prefix: str, actor: str = "cli") -> None:
    done = conn.execute(
        credentials.update()
        .where(
            credentials.c.org_id == org_id, credentials.c.prefix == prefix, credentials.c.revoked_ts.is_(None)
        )
        .values(revoked_ts=now_ms())
    ).rowcount
    if not done:
        raise NotFound(f"no active key or token {prefix!r} in org {org_id}", field="prefix")
    record(conn, [change_row(org_id, actor, "credential", prefix, "revoke")])


_WHERE = {
    CredentialKind.APIKEY: "a CDP apikey (phk_..., from `profilehub apikey create`) in the apikey header",
    CredentialKind.TOKEN: "a CRM token (pht_..., from `profilehub token create`) as Authorization: Bearer",
}


def wrong_kind_hint(secret: str, expected: CredentialKind) -> str | None:
    """What to send instead when a secret of the other dialect is sent here, else None."""
    for kind, name in ((CredentialKind.APIKEY, "a CDP apikey"), (CredentialKind.TOKEN, "a CRM token")):
        if kind != expected and secret.startswith(f"{PREFIX[kind]}_"):
            return f"this is {name}; this API takes {_WHERE[expected]}"
    return None


def _org_of(secret: str, kind: CredentialKind) -> int | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX[kind] or not parts[1].isdigit() or len(parts[1]) > 19:
        return None
    org_id = int(parts[1])
    return org_id if org_id <= MAX_ORG_ID else None


class CredentialVerifier:
    """Looks secrets up by hash, with a short in-memory cache (revocation applies within ``ttl``)."""

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def _cached(self, key: str, load: Callable[[], Principal | None]) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        principal = load()
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now, principal)
        return principal

    def verify(self, conn_factory: ConnFactory, secret: str, kind: CredentialKind, field: str) -> Principal:
        principal = self._cached(
            f"{kind.value}:{hash_secret(secret)}", lambda: self._lookup(conn_factory, secret, kind)
        )
        if principal is None:
            raise Unauthorized(wrong_kind_hint(secret, kind) or "unknown or revoked credential", field=field)
        return principal

    def verify_jwt_subject(
        self,
        conn_factory: ConnFactory,
        org_id: int,
        issuer: str,
        subject: str,
        token_scopes: frozenset[str] | None,
    ) -> Principal:
        """The grant of a verified JWT's subject in ``org_id``; the token's own scopes narrow it."""
        digest = jwt_subject_hash(issuer, subject)

        def load() -> Principal | None:
            with conn_factory() as conn:
                row = conn.execute(
                    sa.select(credentials.c.scopes, credentials.c.prefix).where(
                        credentials.c.org_id == org_id,
                        credentials.c.secret_hash == digest,
                        credentials.c.kind == CredentialKind.JWT.value,
                        credentials.c.revoked_ts.is_(None),
                    )
                ).first()
            return Principal(org_id, frozenset(row.scopes.split(",")), f"jwt:{row.prefix}") if row else None

        grant = self._cached(f"jwt:{org_id}:{digest}", load)
        if grant is None:
            raise Forbidden(f"this JWT's subject is not allowed in org {org_id}", field="orgId")
        if token_scopes is not None:
            return Principal(org_id, grant.scopes & token_scopes, grant.actor)
        return grant

    @staticmethod
    def _lookup(conn_factory: ConnFactory, secret: str, kind: CredentialKind) -> Principal | None:
        org_id = _org_of(secret, kind)
        if org_id is None:
            return None
        with conn_factory() as conn:
            return principal_of_hash(conn, org_id, hash_secret(secret), kind)


def credential_kind_of(secret: str) -> CredentialKind | None:
    """Which kind of secret this looks like (``phk_``: apikey, ``pht_``: CRM token), if either."""
    for kind, prefix in PREFIX.items():
        if secret.startswith(f"{prefix}_"):
            return kind
    return None


def principal_of_hash(
    conn: Connection, org_id: int, secret_hash: str, kind: CredentialKind
) -> Principal | None:
    """The grant of the active credential whose secret hashes to ``secret_hash`` (None if revoked).

    Console sessions keep only this hash, so a revoked key ends its sessions too.
    """
    row = conn.execute(
        sa.select(credentials.c.scopes, credentials.c.prefix).where(
            credentials.c.org_id == org_id,
            credentials.c.secret_hash == secret_hash,
            credentials.c.kind == kind.value,
            credentials.c.revoked_ts.is_(None),
        )
    ).first()
    if row is None:
        return None
    return Principal(org_id, frozenset(row.scopes.split(",")), f"{kind.value}:{row.prefix}")


def check_cdp_scopes(principal: Principal, header: str | None, needed: str) -> frozenset[str]:
    """The ``scopes`` header must be a subset of the key's grant and include ``needed``."""
    if not header or not header.strip():
        raise Forbidden(f"header is required and must include {needed}", field="scopes")
    try:
        asked = frozenset(_split_scopes(header))
    except ValueError as exc:
        raise Forbidden(str(exc), field="scopes") from exc
    unknown = sorted(asked - set(SCOPES[CredentialKind.APIKEY]))
    if unknown:
        raise Forbidden(f"unknown scope(s) {', '.join(unknown)}", field="scopes")
    not_granted = sorted(asked - principal.scopes)
    if not_granted:
        raise Forbidden(f"scope(s) {', '.join(not_granted)} not granted to this credential", field="scopes")
    if needed not in asked:
        raise Forbidden(f"this endpoint needs scope {needed}", field="scopes")
    return asked


def check_org(principal: Principal, org_id: int, field: str = "orgId") -> None:
    if org_id != principal.org_id:
        raise Forbidden(f"this credential belongs to another org than {org_id}", field=field)


def check_crm_scope(principal: Principal, write: bool) -> None:
    if write and "crm:write" not in principal.scopes:
        raise Forbidden("this token lacks scope crm:write", field="Authorization")
    if not write and not principal.scopes & {"crm:read", "crm:write"}:
        raise Forbidden("this token lacks scope crm:read", field="Authorization")
