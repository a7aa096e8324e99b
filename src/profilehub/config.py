"""Typed settings from the environment (``PROFILEHUB_*``), checked at start-up."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa


def default_database_path() -> Path:
    """Where the database lives when PROFILEHUB_DATABASE_URL is unset: one place per user, whatever
    the current folder (a path relative to it made every folder its own, empty database).

    ``$XDG_DATA_HOME/profilehub/profilehub.db``, or ``~/.local/share/profilehub/profilehub.db``
    when XDG_DATA_HOME is unset or not absolute (as the XDG base directory spec says).
    """
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "profilehub" / "profilehub.db"


def default_database_url() -> str:
    return f"sqlite:///{default_database_path()}"


def describe_database(url: str) -> str:
    """The database URL as shown to people: the password hidden."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


class SettingsError(ValueError):
    """A setting has a value the service cannot start with."""


_URL_FORMS = "use sqlite:////absolute/path/to/file.db or postgresql+psycopg://user@host/db"


def normalise_database_url(url: str) -> str:
    """Accept the URL spellings people paste and map them to the drivers we ship."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith(("sqlite:", "postgresql+psycopg://")):
        raise SettingsError(f"PROFILEHUB_DATABASE_URL: unsupported database URL {url!r}; {_URL_FORMS}")
    _check_database_url(url)
    return url


def _check_database_url(url: str) -> None:
    """Refuse here, in one line, a URL the engine would refuse with a traceback (the URL is not
    quoted: it may hold a password)."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        reason = "its port is not a number" if isinstance(exc, ValueError) else "it cannot be parsed"
        raise SettingsError(f"PROFILEHUB_DATABASE_URL: not a database URL ({reason}); {_URL_FORMS}") from exc
    if parsed.get_backend_name() != "sqlite":
        return
    if parsed.host:  # sqlite://file.db: a host where SQLite takes none
        raise SettingsError(
            f"PROFILEHUB_DATABASE_URL: a SQLite URL has three slashes before a path "
            f"(four before an absolute one), no host; {_URL_FORMS}"
        )
    if not parsed.database or parsed.database == ":memory:":
        # Every connection would have its own empty database, gone at exit.
        raise SettingsError(
            f"PROFILEHUB_DATABASE_URL: an in-memory SQLite database keeps nothing; {_URL_FORMS}"
        )


# The most whole seconds PostgreSQL and libpq take as a timeout: they count milliseconds in a
# 32-bit int, and refused more as a fault of the connection (blamed on PROFILEHUB_DATABASE_URL).
MAX_POSTGRES_TIMEOUT_SECONDS = (2**31 - 1) // 1000


def _check_sqlite_folder(url: str) -> None:
    """A SQLite file named in PROFILEHUB_DATABASE_URL must be in a folder that exists: SQLite
    creates the file, not its folder, so every command would fail with "unable to open database
    file" while ``info`` said it would be created on first use. (The default's folder is made.)"""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database.startswith("file:"):
        return  # a URI filename is SQLite's to read
    folder = Path(parsed.database).parent
    if not folder.is_dir():
        raise SettingsError(
            f"PROFILEHUB_DATABASE_URL: the folder {str(folder)!r} does not exist (SQLite creates the "
            "database file, not its folder): create it, or fix the path"
        )


def _int_env(name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SettingsError(f"{name}: must be at most {maximum}, got {value}")
    return value


_TRUE = ("1", "on", "true", "yes")
_FALSE = ("0", "off", "false", "no")


def _bool_env(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise SettingsError(f"{name}: expected on or off, got {raw!r}")


def _float_env(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}") from exc
    # float() takes "nan" and "inf": a poll of nan seconds spun the deliverer at full CPU, a
    # timeout of inf waited on a silent endpoint for ever.
    if not math.isfinite(value):
        raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}")
    if value < minimum:
        raise SettingsError(f"{name}: must be at least {minimum}, got {raw}")
    return value


# Seconds to wait after each failed attempt of an event: a first retry within 5 s, then the
# schedule Standard Webhooks' reference implementations use, about 27.5 hours in all. An event
# still failing after the last step disables its endpoint (its events wait; nothing is dropped).
DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


def parse_schedule(raw: str, name: str = "PROFILEHUB_WEBHOOK_RETRY_SCHEDULE") -> tuple[float, ...]:
    try:
        steps = tuple(float(s) for s in raw.split(",") if s.strip())
    except ValueError as exc:
        raise SettingsError(
            f"{name}: expected seconds separated by commas (5,300,1800), got {raw!r}"
        ) from exc
    if not steps or any(s < 0 or not math.isfinite(s) for s in steps):
        raise SettingsError(f"{name}: give at least one delay, none negative (e.g. 5,300,1800), got {raw!r}")
    return steps


@dataclass(frozen=True)
class DeliverySettings:
    """How deliverers (``profilehub deliver``, and ``serve``'s own) retry, wait and batch."""

    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    # Seconds an endpoint has to answer a delivery; past it, the attempt failed.
    timeout_seconds: float = 10.0
    # A deliverer holds an endpoint (or an org's stream) this long without renewing it; one that
    # died is replaced after it, and its unacknowledged events are delivered again.
    lease_seconds: float = 30.0
    # How often an idle deliverer looks for new events (``profilehub serve``'s own deliverer is
    # also woken by the server's writes at once).
    poll_seconds: float = 0.5
    # After a round that delivered something, wait this long before the next: under a steady write
    # load a round then takes dozens of events for its few queries, not the one or two of the
    # last commit (see delivery/runner.py).
    linger_seconds: float = 0.05
    # Events read, and deliveries in flight, per endpoint at a time (one per ordering key).
    batch_size: int = 200
    concurrency: int = 32

    @classmethod
    def from_env(cls) -> DeliverySettings:
        raw = os.environ.get("PROFILEHUB_WEBHOOK_RETRY_SCHEDULE", "").strip()
        return cls(
            retry_schedule=parse_schedule(raw) if raw else DEFAULT_RETRY_SCHEDULE,
            timeout_seconds=_float_env("PROFILEHUB_WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1),
            lease_seconds=_float_env("PROFILEHUB_DELIVERY_LEASE_SECONDS", 30.0, 1.0),
            poll_seconds=_float_env("PROFILEHUB_DELIVERY_POLL_SECONDS", 0.5, 0.01),
            linger_seconds=_float_env("PROFILEHUB_DELIVERY_LINGER_SECONDS", cls.linger_seconds, 0.0),
        )


# Where ``profilehub serve`` delivers webhooks (PROFILEHUB_SERVE_DELIVERS).
SERVE_DELIVERS = ("process", "thread", "off")


def _serve_delivers_env() -> str:
    name = "PROFILEHUB_SERVE_DELIVERS"
    raw = os.environ.get(name, "").strip().lower()
    if raw == "" or raw in _TRUE:
        return "process"
    if raw in _FALSE:
        return "off"
    if raw in SERVE_DELIVERS:
        return raw
    raise SettingsError(f"{name}: expected process, thread or off, got {raw!r}")


# The largest request body the HTTP API reads (``PROFILEHUB_MAX_BODY_BYTES``): a larger one is
# answered 413 before it is parsed, and an import refuses a record larger than it (docs/bulk.md).
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    # Larger bodies are refused with 413 before they are parsed; larger import records rejected.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # How many queued writes the single writer commits in one transaction.
    write_batch_size: int = 256
    # Writes (requests) that may wait for the writer; past it a write is answered 503 at once.
    write_queue_max: int = 1024
    # Seconds a credential lookup is cached in memory; a revoked key stops working within this.
    credential_cache_seconds: int = 5
    # Seconds a new PostgreSQL connection may take to open; past it the request answers 503
    # (a database host that drops packets would otherwise hold requests for minutes).
    db_connect_timeout_seconds: int = 5
    # PostgreSQL ends a transaction of ours left idle this long (0: never), releasing its locks:
    # a server process frozen mid-write cannot hold its org's writes up for good.
    db_idle_in_transaction_timeout_seconds: int = 60
    # A client must send a request's headers within this many seconds (from the connection's
    # start, or the request's first byte) and its body within this many after the headers; else
    # it gets a 408 and the connection is closed. Only ``profilehub serve`` applies them.
    header_timeout_seconds: int = 10
    body_timeout_seconds: int = 30
    # An idle kept-alive connection is closed after this many seconds. Longer than the clients'
    # and proxies' own idle limits (httpx 5 s, AWS load balancers 60 s), so that they let a
    # connection go first: at uvicorn's 5 s, a client reusing a connection as the server closed it
    # got a reset on its request (httpx's ReadError under load). nginx's default.
    keep_alive_seconds: int = 75
    # OIDC/Okta JWTs on the CDP dialect: all three set, or none (JWTs then refused with 401).
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_jwks: str = ""  # a JWKS file path or an https:// URL
    # Browser origins allowed to call the API (CORS); none by default, "*" for any.
    cors_origins: tuple[str, ...] = ()
    # GET /metrics (Prometheus text): on by default, unauthenticated unless a token is set (then
    # scrapers send ``Authorization: Bearer <token>``). See docs/operations.md.
    metrics: bool = True
    metrics_token: str = ""
    # Rate limit counters shared by every server process (redis://host:port/db); unset, each
    # process counts alone. Keys start with the prefix, so several installs can share a server.
    redis_url: str = ""
    redis_prefix: str = "profilehub"
    # The admin HTTP API (/admin/v1: webhook endpoints of any org) takes this as a bearer token;
    # unset, that API answers 401 to everyone and only the CLI manages endpoints.
    admin_token: str = ""
    # Whether the app delivers webhooks itself (see profilehub.delivery): "process", a deliverer
    # process beside each server process (the default of ``profilehub serve``: it takes nothing
    # of the server's interpreter); "thread", one in a thread of each server process; "off", for
    # those who run ``profilehub deliver`` elsewhere. Apps built in code (tests) opt in.
    serve_delivers: str = "off"
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    # Encrypts each org's erasure receipt signing key in the database (docs/privacy.md); unset,
    # the keys are stored in the clear and the database alone lets one sign receipts.
    receipt_key_passphrase: str = field(default="", repr=False)
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "database_url", normalise_database_url(self.database_url))
        if self.serve_delivers not in SERVE_DELIVERS:
            raise SettingsError(
                f"PROFILEHUB_SERVE_DELIVERS: expected process, thread or off, got {self.serve_delivers!r}"
            )
        jwt_parts = {
            "PROFILEHUB_JWT_ISSUER": self.jwt_issuer,
            "PROFILEHUB_JWT_AUDIENCE": self.jwt_audience,
            "PROFILEHUB_JWT_JWKS": self.jwt_jwks,
        }
        missing = [k for k, v in jwt_parts.items() if not v]
        if 0 < len(missing) < len(jwt_parts):
            raise SettingsError(
                f"{', '.join(missing)}: JWT authentication needs issuer, audience and JWKS together"
            )
        is_url = self.jwt_jwks.startswith(("https://", "http://"))
        if self.jwt_jwks and not is_url and not os.path.isfile(self.jwt_jwks):
            raise SettingsError(f"PROFILEHUB_JWT_JWKS: no such file {self.jwt_jwks!r}")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"PROFILEHUB_REDIS_URL: {self.redis_url!r} is not a Redis URL; give redis://host:port/db"
            )
        if self.redis_url:
            # Parsed here, not at the first limited request: a bad port left every org unlimited,
            # with a warning in the log every 10 s (the URL is not quoted: it may hold a password).
            from redis.connection import parse_url

            try:
                parse_url(self.redis_url)  # type: ignore[no-untyped-call]
            except ValueError as exc:
                raise SettingsError(
                    f"PROFILEHUB_REDIS_URL: not a Redis URL ({exc}); give redis://host:port/db"
                ) from exc
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise SettingsError(
                    f"PROFILEHUB_CORS_ORIGINS: {origin!r} is not an origin; "
                    "give scheme://host[:port] (no path), comma-separated, or *"
                )

    @property
    def deliver_in_background(self) -> bool:
        return self.serve_delivers != "off"

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_jwks)

    @property
    def database_is_default(self) -> bool:
        return self.database_url == default_database_url()

    @classmethod
    def from_env(cls) -> Settings:
        database_url = os.environ.get("PROFILEHUB_DATABASE_URL") or ""
        if not database_url:
            database_url = default_database_url()
            # SQLite creates the file but not its folder; only the default's folder is made
            # (a folder named in PROFILEHUB_DATABASE_URL that does not exist is more likely a typo).
            default_database_path().parent.mkdir(parents=True, exist_ok=True)
        else:
            _check_sqlite_folder(normalise_database_url(database_url))
        return cls(
            database_url=database_url,
            max_body_bytes=_int_env("PROFILEHUB_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024),
            write_batch_size=_int_env("PROFILEHUB_WRITE_BATCH_SIZE", 256),
            write_queue_max=_int_env("PROFILEHUB_WRITE_QUEUE_MAX", 1024),
            credential_cache_seconds=_int_env("PROFILEHUB_CREDENTIAL_CACHE_SECONDS", 5, 0),
            db_connect_timeout_seconds=_int_env(
                "PROFILEHUB_DB_CONNECT_TIMEOUT_SECONDS", 5, maximum=MAX_POSTGRES_TIMEOUT_SECONDS
            ),
            db_idle_in_transaction_timeout_seconds=_int_env(
                "PROFILEHUB_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 60, 0, MAX_POSTGRES_TIMEOUT_SECONDS
            ),
            header_timeout_seconds=_int_env("PROFILEHUB_HEADER_TIMEOUT_SECONDS", 10),
            body_timeout_seconds=_int_env("PROFILEHUB_BODY_TIMEOUT_SECONDS", 30),
            keep_alive_seconds=_int_env("PROFILEHUB_KEEP_ALIVE_SECONDS", 75),
            jwt_issuer=os.environ.get("PROFILEHUB_JWT_ISSUER", ""),
            jwt_audience=os.environ.get("PROFILEHUB_JWT_AUDIENCE", ""),
            jwt_jwks=os.environ.get("PROFILEHUB_JWT_JWKS", ""),
            metrics=_bool_env("PROFILEHUB_METRICS", True),
            metrics_token=os.environ.get("PROFILEHUB_METRICS_TOKEN", ""),
            redis_url=os.environ.get("PROFILEHUB_REDIS_URL", "").strip(),
            redis_prefix=os.environ.get("PROFILEHUB_REDIS_PREFIX", "").strip() or "profilehub",
            admin_token=os.environ.get("PROFILEHUB_ADMIN_TOKEN", "").strip(),
            serve_delivers=_serve_delivers_env(),
            delivery=DeliverySettings.from_env(),
            receipt_key_passphrase=os.environ.get("PROFILEHUB_RECEIPT_KEY_PASSPHRASE", ""),
            cors_origins=tuple(
                o.strip() for o in os.environ.get("PROFILEHUB_CORS_ORIGINS", "").split(",") if o.strip()
            ),
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
