"""``profilehub``: serve the API and administer orgs, credentials and identity strategies.

Each command parses its options and calls the core; domain errors become ``ClickException``.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from profilehub import __version__
from profilehub.auth import (
    CredentialKind,
    allow_jwt_subject,
    create_credential,
    list_credentials,
    revoke_credential,
)
from profilehub.config import Settings, SettingsError, describe_database
from profilehub.errors import ProfilehubError
from profilehub.identity.strategy import IdClass
from profilehub.ingest import checkpoint as ingest_checkpoint
from profilehub.launch import IMPORT_NOT_BEGUN, STARTING_INTERRUPTED
from profilehub.orgs import (
    MAX_ORG_ID,
    Org,
    add_region,
    create_org,
    get_org,
    list_orgs,
    normalise_region,
    set_keep_raw_ids,
)
from profilehub.ratelimit import MAX_RATE, RateLimit, any_rate_limits, get_rate_limit, set_rate_limit
from profilehub.request_log import LOG_LEVELS, configure_logging
from profilehub.store import strategy_store as strategies
from profilehub.store.backup import backup
from profilehub.store.changes import history, now_ms
from profilehub.store.database import (
    Database,
    SchemaAhead,
    database_missing,
    head_revision,
    revision_known,
    schema_revision,
)
from profilehub.store.faults import classify
from profilehub.store.statistics import autovacuum_warning
from profilehub.store.turns import POSTGRES_TURNS_ENV
from profilehub.workers import APP, own_sockets_available, run_workers, uvicorn_options

if TYPE_CHECKING:
    from profilehub.bulk.engine import BulkImporter
    from profilehub.bulk.people import PeopleBulkImporter
    from profilehub.ingest import reader as ingest_reader
    from profilehub.ingest import runner as ingest_runner
    from profilehub.store.receipt_store import ReceiptKeys

# Each command imports the core it runs: loading every command's (the HTTP models, the CRM, the
# import path, Prometheus) took ~1 s of each one's start-up, ``--help``'s too (bench/NOTES-ci.md;
# tests/test_cli_startup.py).

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
# What serve warns of at start-up, before the server runs.
serve_log = logging.getLogger("profilehub.serve")


@contextmanager
def open_db(*, bulk: bool = False) -> Iterator[Database]:
    """``bulk``: for an import, which lets a server's writes to the same SQLite file go first."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    db = _connect(settings, bulk)
    try:
        yield db
    finally:
        db.close()


@contextmanager
def open_org_db(org_id: int, region: str | None = None, *, bulk: bool = False) -> Iterator[Database]:
    """The database, once ``org_id`` is known to exist (and ``region`` to be one of its regions):
    a command about an org that does not exist is refused before it reads or writes anything."""
    with open_db(bulk=bulk) as db:
        check_org(db, org_id, region)
        yield db


@contextmanager
def loading_modules() -> Iterator[None]:
    """A command loading the core it runs, before it has done anything: a Ctrl-C meanwhile is said
    as one while the CLI loads (``profilehub.launch``), with status 130, instead of click's bare
    "Aborted!" and status 1. Those modules loaded with the CLI until each command took its own."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"Error: {STARTING_INTERRUPTED}", err=True)
        sys.exit(130)


def receipt_keys() -> ReceiptKeys:
    """What signs erasure receipts, with the passphrase from the environment (docs/privacy.md)."""
    with loading_modules():
        from profilehub.store.receipt_store import ReceiptKeys

    try:
        return ReceiptKeys(Settings.from_env().receipt_key_passphrase)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


def check_org(db: Database, org_id: int, region: str | None = None) -> str | None:
    """Raise unless the org exists and has ``region``; the region as stored (upper case)."""
    try:
        with db.read() as conn:
            found = get_org(conn, org_id)
        if region is None:
            return None
        wanted = normalise_region(region)
    except ProfilehubError as exc:
        raise click.ClickException(_said_for_cli(exc)) from exc
    if wanted not in found.regions:
        raise click.ClickException(
            f"--region: org {org_id} has no region {wanted!r} (its regions: {', '.join(found.regions)})"
        )
    return wanted


def _connect(settings: Settings, bulk: bool = False) -> Database:
    try:
        return Database(
            settings.database_url,
            yields_to_waiting_writers=bulk,
            connect_timeout=settings.db_connect_timeout_seconds,
            idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
        )
    except sa.exc.DBAPIError as exc:  # unreachable, or a missing database that could not be created
        raise _unreachable(exc) from exc
    except SchemaAhead as exc:  # a newer profilehub's schema: this version must not touch it
        raise click.ClickException(exc.message) from exc


def _unreachable(exc: sa.exc.DBAPIError) -> click.ClickException:
    reason = str(exc.orig or exc).strip().splitlines()[0]
    return click.ClickException(f"PROFILEHUB_DATABASE_URL: cannot open the database: {reason}")


def _said_for_cli(exc: ProfilehubError) -> str:
    """The core's message with its field (``id_type``, ``orgId``) named as the running command's
    option the user typed (``--id-type``, ``--org-id``); a field no option sets stays as it is."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not exc.field or not exc.message.startswith(f"{exc.field}: "):
        return exc.message
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", exc.field).lower()
    for param in ctx.command.params:
        long_names = [o for o in param.opts if o.startswith("--")]
        if isinstance(param, click.Option) and param.name == name and long_names:
            return f"{long_names[0]}: {exc.message.removeprefix(f'{exc.field}: ')}"
    return exc.message


def domain_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProfilehubError as exc:
            raise click.ClickException(_said_for_cli(exc)) from exc

    return wrapper  # type: ignore[return-value]


org_id_option = click.option(
    "--org-id", type=click.IntRange(1, MAX_ORG_ID), required=True, help="Organisation id."
)


@click.group()
@click.version_option(__version__, prog_name="profilehub")
def main() -> None:
    """profilehub: a self-hosted customer profile hub.

    The database comes from PROFILEHUB_DATABASE_URL (default: the SQLite file
    $XDG_DATA_HOME/profilehub/profilehub.db, i.e. ~/.local/share/profilehub/profilehub.db);
    use postgresql+psycopg://user@host/db for PostgreSQL. The schema is created and upgraded
    automatically. `profilehub info` says which database is used.
    """


class EnvOption(click.Option):
    """An option also set by an environment variable. A bad value that came from the variable is
    one error line naming the variable, exit status 1, as every other bad setting (Settings):
    click's usage error named the option, which nobody typed, and exited 2."""

    def __init__(self, *args: Any, expected: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expected = expected

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.BadParameter as exc:
            if ctx.get_parameter_source(self.name or "") is not click.core.ParameterSource.ENVIRONMENT:
                raise
            raise click.ClickException(f"{self.envvar}: expected {self.expected}, got {value!r}") from exc


# ``serve``'s and ``deliver``'s: one variable sets the level of every long-running process's log.
log_level_option = click.option(
    "--log-level",
    cls=EnvOption,
    expected=f"{', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="PROFILEHUB_LOG_LEVEL",
    help="Level of the log lines on stderr (env PROFILEHUB_LOG_LEVEL).",
)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on."
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@log_level_option
@click.option(
    "--access-log/--no-access-log",
    cls=EnvOption,
    expected="on or off",
    default=True,
    show_default=True,
    envvar="PROFILEHUB_ACCESS_LOG",
    help="One JSON line per request on stderr, whatever the level (env PROFILEHUB_ACCESS_LOG=0 turns it off).",
)
def serve(host: str, port: int, workers: int, log_level: str, access_log: bool) -> None:
    """Run the HTTP API (docs at /docs, OpenAPI at /openapi.json)."""
    with loading_modules():
        import uvicorn

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    # From here on stderr is the log, so what serve warns of at start-up reaches whatever reads the
    # log in its format (uvicorn and the workers configure the same again).
    configure_logging(log_level, access_log)
    # Before the database is opened: a taken port is the one line said, nothing created or upgraded.
    _check_port_free(host, port)
    _clear_own_metrics_folder()
    with loading_modules():
        from profilehub.store.receipt_store import ReceiptKeys

    # Create or upgrade the schema once, before any worker starts.
    db = _connect(settings)
    try:
        with db.read() as conn:
            limited = any_rate_limits(conn)
            # Refused here rather than found by an erasure (docs/privacy.md#the-receipt-key).
            locked = ReceiptKeys(settings.receipt_key_passphrase).problem(conn)
            unanalysed = autovacuum_warning(conn)
    finally:
        db.close()
    if locked is not None:
        raise click.ClickException(f"cannot sign erasure receipts: {locked}")
    if unanalysed:
        serve_log.warning("%s", unanalysed)
    if workers > 1 and limited and not settings.redis_url:
        serve_log.warning(
            "rate limits are counted per process without PROFILEHUB_REDIS_URL: "
            "%d workers allow up to %dx each org's limit",
            workers,
            workers,
        )
    url = f"http://{host}:{port}"
    console.print(
        f"profilehub {__version__} on {url} (database: {describe_database(settings.database_url)})",
        style="bold",
        highlight=False,
        soft_wrap=True,  # one line in a log, whatever its length
    )
    click.echo(f"API docs: {url}/docs (OpenAPI: {url}/openapi.json)")
    with _metrics_shared(workers), _writer_turns_shared(workers, settings.database_url):
        if workers > 1 and own_sockets_available():
            # A listening socket a worker, so that connections spread over them (profilehub.workers).
            status = run_workers(workers, host, port, log_level, access_log)
            if status:
                raise SystemExit(status)
            return
        _run_uvicorn(uvicorn, host, port, workers, log_level, access_log)


def _clear_own_metrics_folder() -> None:
    """An operator's own PROMETHEUS_MULTIPROC_DIR, cleared of earlier runs' files (whatever
    ``--workers``: one process writes its values there too), or refused with one line."""
    with loading_modules():
        from profilehub.metrics import MULTIPROC_ENV, clear_multiprocess_dir, foreign_files, multiprocess_dir

    folder = multiprocess_dir()
    if folder is None:
        return
    try:
        removed = clear_multiprocess_dir(Path(folder))
    except OSError as exc:
        raise click.ClickException(
            f"{MULTIPROC_ENV}: cannot keep /metrics' files in {folder}: {exc.strerror or exc}"
        ) from exc
    if removed:
        serve_log.info("removed %d metrics files of an earlier run from %s", removed, folder)
    # Not prometheus-client's, so perhaps the operator's: kept, and said, since /metrics leaves
    # them out (a folder shared with something else is likely a mistake).
    if stray := foreign_files(Path(folder)):
        serve_log.warning(
            "%s: ignoring %s: not prometheus-client's files, so left out of /metrics",
            MULTIPROC_ENV,
            ", ".join(str(f) for f in stray),
        )


@contextmanager
def _metrics_shared(workers: int) -> Iterator[None]:
    """With several workers, /metrics sums them all (prometheus-client's multiprocess mode, in a
    fresh folder per run, removed at exit); an operator's own PROMETHEUS_MULTIPROC_DIR is used
    instead, cleared at start-up (``_clear_own_metrics_folder``)."""
    from profilehub.metrics import MULTIPROC_ENV

    if workers == 1 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    with _folder_in_environment(MULTIPROC_ENV, "profilehub-metrics-"):
        yield


@contextmanager
def _folder_in_environment(name: str, prefix: str) -> Iterator[None]:
    """A fresh folder, named in the environment variable ``name`` while the block runs (the server's
    workers are spawned with this environment) and removed at exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        os.environ[name] = folder
        try:
            yield
        finally:
            os.environ.pop(name, None)


@contextmanager
def _writer_turns_shared(workers: int, database_url: str) -> Iterator[None]:
    """On PostgreSQL, the workers take turns at writing (one batch each, as one process's writer
    would batch them; see ``Database``), through lock files in a fresh folder removed at exit.
    SQLite's writers take turns at the database file's lock files already."""
    if workers == 1 or not database_url.startswith("postgresql"):
        yield
        return
    with _folder_in_environment(POSTGRES_TURNS_ENV, "profilehub-writer-"):
        yield


def _run_uvicorn(uvicorn: Any, host: str, port: int, workers: int, log_level: str, access_log: bool) -> None:
    uvicorn.run(APP, host=host, port=port, workers=workers, **uvicorn_options(log_level, access_log))


def _check_port_free(host: str, port: int) -> None:
    """Refuse a taken port with one clear line before printing the URL (uvicorn would print the URL
    and then a bind error). Bound as uvicorn binds, so what passes here binds there."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(f"port {port} is in use; choose another with --port") from exc
            raise click.ClickException(
                f"--host/--port: cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc


@main.command()
def info() -> None:
    """Say which version runs, which database it uses and the database's schema revision."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"profilehub {__version__}")
    origin = (
        "the default location; set PROFILEHUB_DATABASE_URL to use another"
        if settings.database_is_default
        else "from PROFILEHUB_DATABASE_URL"
    )
    click.echo(f"database: {describe_database(settings.database_url)} ({origin})")
    try:
        revision = schema_revision(settings.database_url)
    except sa.exc.DBAPIError as exc:  # unreachable, or a file that is not a SQLite database
        if not database_missing(exc):
            raise _unreachable(exc) from exc
        revision = None  # a PostgreSQL database is created on first use, as a SQLite file is
    head = head_revision()
    if revision is None:
        state = f"none yet (created on first use, at revision {head})"
    elif revision == head:
        state = f"{revision} (current)"
    elif not revision_known(revision):
        state = (
            f"{revision} (ahead of this version's {head}: a newer profilehub upgraded it; run that version)"
        )
    else:
        state = f"{revision} (this version upgrades it to {head} on first use, or now: profilehub db upgrade)"
    click.echo(f"schema revision: {state}")


# --- orgs ---
@main.group()
def org() -> None:
    """Create and list organisations and their regions."""


@org.command("create")
@org_id_option
@click.option("--name", required=True, help="Display name.")
@click.option("--region", "regions", multiple=True, required=True, help="A region (repeat for more).")
@click.option("--keep-raw-ids", is_flag=True, help="Keep raw emails and phone numbers besides their hashes.")
@click.option(
    "--home-region",
    help="The region where the org's CRM people resolve in the identity graph (default: the first --region).",
)
@domain_errors
def org_create(
    org_id: int, name: str, regions: tuple[str, ...], keep_raw_ids: bool, home_region: str | None
) -> None:
    """Create an org with the default identity strategy and its erasure receipt key."""
    keys = receipt_keys()

    def job(c: sa.Connection) -> Org:
        made = create_org(c, org_id, name, list(regions), keep_raw_ids=keep_raw_ids, home_region=home_region)
        keys.signing_key(c, org_id)
        return made

    with open_db() as db:
        created = db.write(job)
    click.echo(
        f"created org {created.org_id} ({created.name}), regions {', '.join(created.regions)}, "
        f"home region {created.home_region}"
    )


@org.command("list")
def org_list() -> None:
    """List orgs."""
    with open_db() as db, db.read() as conn:
        rows = list_orgs(conn)
    table = Table("org id", "name", "regions", "home region", "keeps raw ids")
    for o in rows:
        table.add_row(
            str(o.org_id), o.name, ", ".join(o.regions), o.home_region, "yes" if o.keep_raw_ids else "no"
        )
    console.print(table)


@org.command("link-people")
@org_id_option
@domain_errors
def org_link_people(org_id: int) -> None:
    """Link the org's CRM people to the identity graph (people written before links existed;
    later writes link by themselves). Safe to run again: linked people are left as they are."""
    with loading_modules():
        from profilehub.crm.people import link_people_job
        from profilehub.profiles import ProfileService

    with open_org_db(org_id) as db:
        profiles = ProfileService(db)
        total, after = 0, 0
        while True:
            linked, last = db.write(link_people_job(profiles, org_id, after, "cli:link-people"))
            total += linked
            if last is None:
                break
            after = last
    click.echo(f"linked {total} people of org {org_id}")


@org.command("add-region")
@org_id_option
@click.option("--region", required=True)
@domain_errors
def org_add_region(org_id: int, region: str) -> None:
    """Add a region to an org."""
    with open_org_db(org_id) as db:
        o = db.write(lambda c: add_region(c, org_id, region))
    click.echo(f"org {o.org_id} regions: {', '.join(o.regions)}")


@org.command("keep-raw-ids")
@org_id_option
@click.argument("choice", type=click.Choice(["on", "off"]))
@domain_errors
def org_keep_raw_ids(org_id: int, choice: str) -> None:
    """Opt in (on) or out (off) of keeping raw emails and phone numbers."""
    with open_org_db(org_id) as db:
        o = db.write(lambda c: set_keep_raw_ids(c, org_id, choice == "on"))
    click.echo(f"org {o.org_id} keeps raw ids: {'yes' if o.keep_raw_ids else 'no'}")


@org.command("rate-limit")
@org_id_option
@click.option(
    "--per-second",
    type=click.IntRange(1, MAX_RATE),
    help="Requests per second (all of the org's credentials).",
)
@click.option("--per-minute", type=click.IntRange(1, MAX_RATE), help="Requests per minute.")
@click.option("--off", is_flag=True, help="Remove the org's limits.")
@domain_errors
def org_rate_limit(org_id: int, per_second: int | None, per_minute: int | None, off: bool) -> None:
    """Set (replacing both), remove (--off) or show (no option) the org's request rate limits.

    Over a limit, requests get 429 with Retry-After. Running servers apply a change within
    PROFILEHUB_CREDENTIAL_CACHE_SECONDS. See docs/operations.md.
    """
    if off and (per_second or per_minute):
        raise click.UsageError("--off: give either --off or --per-second/--per-minute, not both")
    with open_org_db(org_id) as db:
        if off or per_second or per_minute:
            limit: RateLimit | None = db.write(lambda c: set_rate_limit(c, org_id, per_second, per_minute))
        else:
            with db.read() as conn:
                limit = get_rate_limit(conn, org_id)
    click.echo(f"org {org_id} rate limit: {limit.describe() if limit else 'none'}")


@org.command("consent-denials")
@org_id_option
@click.option(
    "--value",
    "values",
    multiple=True,
    metavar="VALUE",
    help="A consent value that denies (repeat it; replaces the whole list; any case).",
)
@click.option("--default", "to_default", is_flag=True, help="Back to the default list.")
@domain_errors
def org_consent_denials(org_id: int, values: tuple[str, ...], to_default: bool) -> None:
    """Set (--value ..., replacing the list), reset (--default) or show the org's consent denials.

    When profiles merge, a consent attribute holding one of these on either side keeps it over a
    grant. Writes apply a change at once. See docs/privacy.md.
    """
    if values and to_default:
        raise click.UsageError("give --value or --default, not both")
    with open_org_db(org_id) as db:
        if values or to_default:
            chosen = db.write(
                lambda c: strategies.set_consent_denials(
                    c, org_id, list(values) if values else None, now_ms()
                )
            )
        else:
            with db.read() as conn:
                chosen = strategies.consent_denials(conn, org_id)
    click.echo(f"org {org_id} consent denials: {', '.join(sorted(chosen))}")


# --- credentials ---
def _add_list_and_revoke(group: click.Group, kind: CredentialKind) -> None:
    @group.command("list")
    @org_id_option
    def listing(org_id: int) -> None:
        """List them (prefixes only)."""
        with open_org_db(org_id) as db, db.read() as conn:
            rows = [r for r in list_credentials(conn, org_id) if r["kind"] == kind.value]
        table = Table("prefix", "name", "scopes", "revoked")
        for r in rows:
            table.add_row(str(r["prefix"]), str(r["name"]), str(r["scopes"]), "yes" if r["revoked"] else "no")
        console.print(table)

    @group.command("revoke")
    @org_id_option
    @click.option("--prefix", required=True, help="The prefix shown by list.")
    @domain_errors
    def revoke(org_id: int, prefix: str) -> None:
        """Revoke one (takes effect within PROFILEHUB_CREDENTIAL_CACHE_SECONDS)."""
        with open_org_db(org_id) as db:
            db.write(lambda c: revoke_credential(c, org_id, prefix))
        click.echo(f"revoked {prefix}")


def _credential_group(kind: CredentialKind, name: str, help_text: str, example: str) -> click.Group:
    group = click.Group(name, help=help_text)

    @group.command("create")
    @org_id_option
    @click.option("--scopes", required=True, help=f"Comma-separated, e.g. {example}.")
    @click.option("--name", default="", help="A label for listings.")
    @domain_errors
    def create(org_id: int, scopes: str, name: str) -> None:
        """Create one; the secret is printed once, as the last line, and stored only as a hash."""
        with open_org_db(org_id) as db:
            made = db.write(lambda c: create_credential(c, org_id, kind, scopes, name))
        click.echo(
            f"# {kind.value} for org {made.org_id}, scopes {','.join(made.scopes)}; shown once:", err=True
        )
        click.echo(made.secret)

    _add_list_and_revoke(group, kind)
    return group


main.add_command(
    _credential_group(
        CredentialKind.APIKEY,
        "apikey",
        "CDP API keys (header `apikey`).",
        "profile.read,profile.write,profile.delete",
    )
)
main.add_command(
    _credential_group(
        CredentialKind.TOKEN, "token", "CRM bearer tokens (Authorization: Bearer).", "crm:read,crm:write"
    )
)


@main.group("jwt")
def jwt_group() -> None:
    """OIDC/Okta JWT subjects allowed to use an org through the CDP dialect.

    The server checks JWTs against PROFILEHUB_JWT_ISSUER, PROFILEHUB_JWT_AUDIENCE and
    PROFILEHUB_JWT_JWKS (a JWKS file or URL).
    """


@jwt_group.command("allow")
@org_id_option
@click.option("--subject", required=True, help="The JWT `sub` (an Okta client or user id).")
@click.option("--scopes", required=True, help="Comma-separated, e.g. profile.read,profile.write.")
@click.option(
    "--issuer", envvar="PROFILEHUB_JWT_ISSUER", required=True, help="JWT `iss` [PROFILEHUB_JWT_ISSUER]."
)
@domain_errors
def jwt_allow(org_id: int, subject: str, scopes: str, issuer: str) -> None:
    """Allow a JWT subject to use this org with these scopes (replaces an earlier grant)."""
    with open_org_db(org_id) as db:
        prefix = db.write(lambda c: allow_jwt_subject(c, org_id, issuer, subject, scopes))
    click.echo(f"allowed {subject} ({prefix}) in org {org_id}")


_add_list_and_revoke(jwt_group, CredentialKind.JWT)


# --- identity strategy ---
@main.group()
def idtype() -> None:
    """Show and change an org's identity strategy."""


@idtype.command("list")
@org_id_option
@domain_errors
def idtype_list(org_id: int) -> None:
    """List idTypes with namespace, class, priority and limit."""
    with open_org_db(org_id) as db, db.read() as conn:
        s = strategies.load_strategy(conn, org_id)
    table = Table("idType", "namespace", "class", "priority", "limit")
    for t in sorted(s.id_types.values(), key=lambda t: (t.priority, t.name)):
        table.add_row(t.name, t.namespace, t.id_class.value, str(t.priority), str(t.max_per_profile))
    console.print(table)


@idtype.command("set")
@org_id_option
@click.option("--id-type", required=True, help="idType name (added when new).")
@click.option("--namespace", help="Namespace (default: the idType's name for a new one).")
@click.option("--class", "id_class", type=click.Choice([c.value for c in IdClass]), help="Class.")
@click.option("--priority", type=int, help="Priority; 1 is the highest.")
@click.option("--limit", type=int, help="Distinct values of this idType one profile may hold.")
@domain_errors
def idtype_set(
    org_id: int,
    id_type: str,
    namespace: str | None,
    id_class: str | None,
    priority: int | None,
    limit: int | None,
) -> None:
    """Add an idType, or change its namespace, class, priority or limit."""
    with open_org_db(org_id) as db:
        rule = db.write(
            lambda c: strategies.set_id_type(
                c,
                org_id,
                id_type,
                namespace=namespace,
                id_class=IdClass(id_class) if id_class else None,
                priority=priority,
                max_per_profile=limit,
            )
        )
    click.echo(
        f"{rule.name}: namespace {rule.namespace}, {rule.id_class.value}, "
        f"priority {rule.priority}, limit {rule.max_per_profile}"
    )


@main.group()
def block() -> None:
    """Values never used to match (dummy emails, zero ad ids, ...)."""


@block.command("add")
@org_id_option
@click.option("--value", required=True)
@click.option("--id-type", default="*", show_default=True, help="Only for this idType ('*': all).")
@domain_errors
def block_add(org_id: int, value: str, id_type: str) -> None:
    """Block a value."""
    with open_org_db(org_id) as db:
        db.write(lambda c: strategies.block_value(c, org_id, value, id_type))
    click.echo(f"blocked {value!r} for {id_type}")


@block.command("remove")
@org_id_option
@click.option("--value", required=True)
@click.option("--id-type", default="*", show_default=True)
@domain_errors
def block_remove(org_id: int, value: str, id_type: str) -> None:
    """Unblock a value."""
    with open_org_db(org_id) as db:
        removed = db.write(lambda c: strategies.unblock_value(c, org_id, value, id_type))
    if not removed:
        raise click.ClickException(f"{value!r} was not blocked for {id_type}")
    click.echo(f"unblocked {value!r} for {id_type}")


@block.command("list")
@org_id_option
@domain_errors
def block_list(org_id: int) -> None:
    """List blocked values."""
    with open_org_db(org_id) as db, db.read() as conn:
        s = strategies.load_strategy(conn, org_id)
    table = Table("idType", "value")
    for t, values in sorted(s.blocked.items()):
        for v in sorted(values):
            table.add_row(t, repr(v))
    console.print(table)


_CHANGE_ID_RE = re.compile(r"^[0-9a-f]{28}$")


def _change_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _CHANGE_ID_RE.match(value.strip().lower()):
        raise click.BadParameter(f"{value!r} is not a change id (28 hex digits, a changeId printed earlier)")
    return value.strip().lower() if value is not None else None


def _uuid(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a UUID (e.g. d7a6bc75-2c87-4650-91dc-c212771866c9)"
        ) from None


@main.command()
@org_id_option
@click.option("--ucid", callback=_uuid, help="Only this CDP profile's history.")
@click.option("--person", callback=_uuid, metavar="ID", help="Only this CRM person's history (their id).")
@click.option("--after", callback=_change_id, help="Change id to continue after (the feed's cursor).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
def changes(org_id: int, ucid: str | None, person: str | None, after: str | None, limit: int) -> None:
    """Print the change log as JSON lines, oldest first.

    When more entries follow, a last line on stderr says so and gives the command for the next page.
    """
    if ucid and person:
        raise click.UsageError("give --ucid or --person, not both")
    entity = "profile" if ucid else "crm_person" if person else None
    with open_org_db(org_id) as db, db.read() as conn:
        rows = history(conn, org_id, entity=entity, entity_id=ucid or person, after=after, limit=limit + 1)
    for r in rows[:limit]:
        click.echo(json.dumps(r))
    if len(rows) > limit:
        last = rows[limit - 1]["changeId"]
        scope = f" --ucid {ucid}" if ucid else f" --person {person}" if person else ""
        click.echo(
            f"# more entries follow; next page: profilehub changes --org-id {org_id}{scope} "
            f"--after {last} --limit {limit}",
            err=True,
        )


@org.command("journal-retention")
@org_id_option
@click.option("--days", type=click.IntRange(1, 365_000), help="Keep the journal this many days.")
@click.option("--forever", is_flag=True, help="Keep the journal for ever (the default).")
@domain_errors
def org_journal_retention(org_id: int, days: int | None, forever: bool) -> None:
    """Set (--days or --forever) or show how long the org keeps the journal of its profile writes.

    Writes drop rows past it (within 10 minutes); an unmerge needs a person's whole journal. See
    docs/unmerge.md.
    """
    with loading_modules():
        from profilehub.store.journal_store import prune_journal, retention_days, set_retention_days

    if days and forever:
        raise click.UsageError("give --days or --forever, not both")
    with open_org_db(org_id) as db:
        if days or forever:
            db.write(lambda c: set_retention_days(c, org_id, days, now_ms()))
            if days:
                dropped = db.write(lambda c: prune_journal(c, now_ms(), org_id)).get(org_id, 0)
                click.echo(f"dropped {dropped} journal entries older than {days} days")
        with db.read() as conn:
            kept = retention_days(conn, org_id)
    click.echo(f"org {org_id} keeps its journal: {f'{kept} days' if kept else 'for ever'}")


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema now (otherwise done on first use)."""
    with open_db() as database:
        click.echo(f"{database.schema_change.describe()} ({database.dialect})")


@db.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@domain_errors
def db_backup(file: Path) -> None:
    """Copy the database to FILE while it serves: SQLite's online backup (one file), or
    pg_dump's custom format on PostgreSQL (restore with pg_restore). FILE must not exist."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    size = backup(settings.database_url, file)
    click.echo(f"backed up {describe_database(settings.database_url)} to {file} ({size / 1e6:,.1f} MB)")


# --- bulk import ---
@main.group("import")
def import_group() -> None:
    """Import records from NDJSON or CSV files, streamed in batches, resumable."""


CDP_MAP_EXAMPLE = "email=ids.email"
MAX_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
PEOPLE_MAP_EXAMPLE = "Email=emails"


def _import_options(map_metavar: str, map_help: str) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        options = [
            click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
            org_id_option,
            click.option(
                "--format",
                "file_format",
                type=click.Choice(["auto", "ndjson", "csv"]),
                default="auto",
                show_default=True,
                help="auto: by the file's extension (.csv is CSV, anything else NDJSON).",
            ),
            click.option("--map", "mappings", multiple=True, metavar=map_metavar, help=map_help),
            click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1, 20000)),
            click.option(
                "--max-rejects",
                default=0,
                show_default=True,
                type=click.IntRange(0),
                help="Rejected records the import may have and still succeed (exit status 0); more "
                "make it exit with status 1. The records that pass are written either way.",
            ),
            click.option(
                "--workers",
                type=click.IntRange(0, 64),
                default=None,
                help="Processes that validate and normalise the next batch while this one is written "
                "(CDP imports, and people imports with --bulk). Default: the cores the writer leaves free, at most 4; 0 does it "
                "all in the writer.",
            ),
            click.option(
                "--at",
                "at_ms",
                type=click.IntRange(0, MAX_AT_MS),
                default=None,
                metavar="MS",
                help="Write every record at this time (epoch milliseconds) instead of the clock's "
                "time as each is written, so two imports of the same file write the same profiles "
                "(records tie in time; the rules' tie-breaks then follow file order). Give the same "
                "--at again with --resume. With --bulk the default is the run's start time.",
            ),
            click.option("--resume", is_flag=True, help="Continue after the last committed batch."),
            click.option("--quiet", is_flag=True, help="No progress bar, only the summary."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _run_import(
    file: Path,
    file_format: str,
    mappings: tuple[str, ...],
    batch_size: int,
    workers: int | None,
    resume: bool,
    quiet: bool,
    max_rejects: int,
    map_example: str,
    sink: ingest_runner.Sink,
    database: Database,
    org_id: int,
    kind: str,
    csv_objects: tuple[str, ...] = (),
    csv_lists: tuple[str, ...] = (),
    bulk: bool = False,
    at: int | None = None,
    people_bulk: tuple[str, str] | None = None,
    stage: ImportStage | None = None,
) -> None:
    """``people_bulk``: (matching attribute, actor) of an ``import people --bulk``; ``stage``: marked
    once the run begins (``_interrupted_outside_the_run``)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from profilehub.bulk.interrupted import BulkInterrupted, WorkFolderFull
    from profilehub.ingest import progress as import_progress
    from profilehub.ingest import reader as ingest_reader
    from profilehub.ingest import runner as ingest_runner
    from profilehub.ingest.cdp import CdpSink
    from profilehub.store.backfill_journal import ROLLBACK

    is_csv = file_format == "csv" or (file_format == "auto" and file.suffix.lower() == ".csv")
    try:
        mapping = ingest_reader.ColumnMapping.parse(mappings, map_example, csv_objects, csv_lists)
        ingest_reader.refuse_compressed(file)
        if not os.access(file.parent, os.W_OK):  # refused before anything is read or written
            raise ingest_reader.SourceError(
                f"{file.parent}: cannot write in this folder (read-only, or not yours): an import "
                f"writes its rejects ({ingest_checkpoint.rejects_path(file).name}) and its checkpoint "
                "beside the file; copy the file to a folder you can write in and import it from there"
            )
        if is_csv:  # a bad --map is a usage error, said before any progress is drawn
            ingest_reader.csv_columns(file, mapping)
    except ingest_reader.SourceError as exc:
        raise click.ClickException(str(exc)) from exc

    # A record larger than the API's body limit is refused at its line, as the API answers 413.
    max_bytes = Settings.from_env().max_body_bytes  # checked by ``open_db`` already

    def records(offset: int, line: int) -> Iterator[ingest_reader.SourceRecord]:
        if is_csv:
            return ingest_reader.read_csv(file, mapping, offset, line, max_bytes)
        return ingest_reader.read_ndjson(file, offset, line, max_bytes)

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rate]:>8,.0f} rec/s"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
    )
    task = bar.add_task(file.name, total=file.stat().st_size, rate=0.0)

    # The run's progress in the database, for the servers' /metrics (profilehub.ingest.progress).
    recorder = import_progress.ProgressRecorder(database, org_id, kind, file)

    def progress(summary: ingest_runner.ImportSummary) -> None:
        # A --bulk import's phase beside the file's name (a BulkSummary, typed loosely here: the
        # bulk modules load numpy and scipy): once the file is read, the bar stands full while
        # the phases after reading run for minutes.
        running = getattr(summary, "running", "")
        description = f"{file.name} · {running}" if running else file.name
        bar.update(task, completed=summary.offset, rate=summary.rate, description=description)
        if running not in _BULK_TRANSACTION:
            # The recorder writes through the database's writer, which the bulk import's own
            # transaction holds until it commits: this thread would wait there, the bar frozen.
            recorder(summary)

    importer = ingest_runner.Importer(
        file,
        records,
        sink,
        batch_size=batch_size,
        progress=progress,
        workers=workers,
        shared=database,
        at=at,
    )
    bulk_importer: BulkImporter | PeopleBulkImporter | None = None
    if bulk:
        # numpy and scipy: imported here so that only a bulk import pays for them
        from profilehub.bulk.engine import BulkImporter

        if resume:
            raise click.ClickException(
                "--resume: a --bulk import is all or nothing (an interrupted one wrote nothing); "
                "run it again without --resume"
            )
        if people_bulk is not None:
            from profilehub.bulk.people import PeopleBulkImporter

            matching_attribute, actor = people_bulk
            bulk_importer = PeopleBulkImporter(
                file,
                records,
                database,
                org_id,
                matching_attribute,
                actor,
                batch_size=batch_size,
                progress=progress,
                at=at,
                workers=workers,
            )
        elif isinstance(sink, CdpSink):
            # an NDJSON file's lines are parsed where they are prepared (``BulkImporter``'s ``lines``)
            lines = (
                None if is_csv else functools.partial(ingest_reader.ndjson_lines, file, max_bytes=max_bytes)
            )
            bulk_importer = BulkImporter(
                file, records, sink, progress=progress, workers=workers, at=at, lines=lines
            )
        else:
            raise click.ClickException("--bulk: this import has no bulk path")
    interrupted = terminated = False
    stopped: ingest_runner.ImportStopped | None = None
    if stage is not None:
        stage.began = True
    try:
        recorder.start()
        try:
            with bar:
                summary = bulk_importer.run() if bulk_importer else importer.run(resume=resume)
        except BaseException as exc:
            ended = getattr(exc, "summary", None) or (bulk_importer or importer).summary
            state = {
                ingest_runner.ImportInterrupted: "interrupted",
                BulkInterrupted: "interrupted",
                KeyboardInterrupt: "interrupted",
                ingest_runner.ImportStopped: "stopped",
            }.get(type(exc), "failed")
            with suppress(Exception):  # the database may be what failed
                recorder.finish(ended or ingest_runner.ImportSummary(file, file.stat().st_size), state)
            if isinstance(exc, KeyboardInterrupt):
                # A second Ctrl-C: the import stopped at once, as a crash would (docs/bulk.md), with
                # what it wrote unknown here; not ``_interrupted_outside_the_run``'s words.
                raise click.Abort from exc
            raise
        recorder.finish(summary, "done")
    except ingest_runner.ImportInterrupted as exc:
        summary, interrupted, terminated = exc.summary, True, exc.terminated
    except BulkInterrupted as exc:
        rolled_back = (
            "interrupted: the --bulk import was rolled back, nothing of it was written; run it again"
        )
        if exc.terminated:  # SIGTERM: status 1, as for any other stop
            raise click.ClickException(rolled_back) from exc
        click.echo(f"Error: {rolled_back}", err=True)
        sys.exit(130)  # Ctrl-C: what a shell reports for a command it stopped, as online
    except WorkFolderFull as exc:
        raise click.ClickException(str(exc)) from exc
    except ingest_runner.ImportStopped as exc:
        summary, stopped = exc.summary, exc
    except (ingest_reader.SourceError, ingest_checkpoint.CheckpointMismatch) as exc:
        raise click.ClickException(str(exc)) from exc
    except sa.exc.OperationalError as exc:
        raise click.ClickException(_database_stopped_import(file, exc)) from exc
    console.print(
        f"{summary.read:,} records in {summary.seconds:.1f}s ({summary.rate:,.0f}/s): "
        f"{summary.created:,} created, {summary.updated:,} updated, {summary.rejected:,} rejected"
        + (f", {summary.suppressed:,} carried a suppressed id" if summary.suppressed else "")
        + (
            f", {summary.over_id_limit:,} written without ids over a profile's limit"
            if summary.over_id_limit
            else ""
        )
        + (f" (resumed after line {summary.resumed_from_line:,})" if summary.resumed_from_line else ""),
        highlight=False,
        soft_wrap=True,
    )
    if bulk_importer is not None and not interrupted:
        # a BulkSummary (typed loosely here: the bulk modules load numpy and scipy)
        peak, workers_peak = (
            getattr(summary, "peak_rss_bytes", 0),
            getattr(summary, "peak_rss_workers_bytes", 0),
        )
        # The importer's peak as it stood at the end of each phase: which phase grew it.
        by_phase: dict[str, int] = getattr(summary, "peak_rss_by_phase", {})
        grown = ", ".join(
            f"{name} {by_phase[name] / 2**20:,.0f}"
            for name in ("prepare", "link", "resolve", "write")
            if name in by_phase
        )
        console.print(
            f"peak memory (RSS): importer {peak / 2**20:,.0f} MB"
            + (f" (by the end of {grown})" if grown else "")
            + (f", largest worker process {workers_peak / 2**20:,.0f} MB" if workers_peak else ""),
            highlight=False,
            soft_wrap=True,
        )
        # Where the time went, phase by phase (docs/bulk.md names them): what to look at first
        # when a backfill is slower than expected.
        phases: dict[str, float] = getattr(summary, "phases", {})
        if phases:
            console.print(
                "phases: "
                + ", ".join(
                    f"{name} {phases[name]:,.1f}s"
                    for name in ("prepare", "link", "resolve", "write", "commit")
                    if name in phases
                ),
                highlight=False,
                soft_wrap=True,
            )
        # SQLite: whether the pages were written once (store.backfill_journal), the commit's time.
        journal = getattr(summary, "journal", None)
        if journal is not None:
            console.print(
                f"written through SQLite's {journal}"
                + (
                    " (a first backfill with the file to itself: written once)"
                    if journal == ROLLBACK
                    else " (the store held profiles, or another process had the file open)"
                ),
                highlight=False,
                soft_wrap=True,
            )
    if summary.rejected:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in sorted(summary.reject_reasons.items()))
        console.print(
            f"rejected records and their reasons: {ingest_checkpoint.rejects_path(file)} ({reasons})",
            highlight=False,
            soft_wrap=True,
        )
        for reason, example in sorted(summary.reject_examples.items()):
            console.print(
                f"  first {reason} reject: {example}", highlight=False, soft_wrap=True, markup=False
            )
    if interrupted:
        console.print(
            f"interrupted: written and checkpointed up to line {summary.line:,}, nothing after it; "
            "run the same command with --resume to go on",
            highlight=False,
            soft_wrap=True,
        )
        # Ctrl-C: what a shell reports for a command it stopped; SIGTERM: 1, as for --bulk
        sys.exit(1 if terminated else 130)
    if stopped is not None:
        raise click.ClickException(str(stopped))
    if summary.rejected > max_rejects:
        raise click.ClickException(
            f"{summary.rejected:,} records rejected, more than --max-rejects {max_rejects:,} allows"
        )


# The phases of a --bulk import run in its one transaction (``bulk.engine.BulkSummary.running``;
# ``import people --bulk`` reads its file in it too).
_BULK_TRANSACTION = frozenset({"read", "resolve", "write", "commit"})


@dataclass
class ImportStage:
    """Whether an import's run has begun (``_run_import``): what a Ctrl-C outside the run says."""

    began: bool = False


# After the run, whose own lines said what it wrote (or that it wrote nothing).
IMPORT_RAN = "interrupted after the import ran: what it wrote stays written (the lines above say what)"


@contextmanager
def _interrupted_outside_the_run() -> Iterator[ImportStage]:
    """A Ctrl-C while the importer has not taken Ctrl-C over is said as one during the run is, with
    status 130, instead of click's bare "Aborted!" and status 1: before the run (while the command
    opens the database, checks the org and the file, loads the --bulk modules: seconds on a busy
    machine) nothing of the import is written; after it (the command closing the database, waiting
    for its last ANALYZE) its records are committed, and saying "nothing was written; run it again"
    under its summary was false. A KeyboardInterrupt from the run itself reaches here as
    ``click.Abort``."""
    stage = ImportStage()
    try:
        yield stage
    except KeyboardInterrupt:
        click.echo(f"Error: {IMPORT_RAN if stage.began else IMPORT_NOT_BEGUN}", err=True)
        sys.exit(130)


def _fixed_clock(at_ms: int | None) -> Callable[[], int] | None:
    """``--at``: every write of the import at that time; None keeps the wall clock."""
    return None if at_ms is None else lambda: at_ms


def _database_stopped_import(file: Path, exc: sa.exc.OperationalError) -> str:
    """One line for an import the database stopped (a full disk): the cause, and where it stands."""
    saved = ingest_checkpoint.load(file)
    where = (
        f"written and checkpointed up to line {saved.line:,}, nothing after it; once fixed, run the "
        "same command with --resume to go on"
        if saved is not None
        else "nothing was written; once fixed, run the same command again"
    )
    return f"import stopped: database {classify(exc).cause}: {where}"


@import_group.command("cdp")
@_import_options(
    "COLUMN=PATH",
    f"CSV column to a path of the POST /cdp/v1/users body, e.g. {CDP_MAP_EXAMPLE} or "
    "first_name=upsert.profile.first_name (repeat). Columns already named as paths (ids.email) map "
    "themselves.",
)
@click.option("--region", required=True, help="Region of records that name none (any case: eu is EU).")
@click.option("--actor", default="import", show_default=True, help="Who the change log names.")
@click.option(
    "--bulk",
    is_flag=True,
    help="Resolve the whole file at once and write it in one transaction (a backfill): faster, "
    "all or nothing, the same profiles as without it. See docs/bulk.md.",
)
@domain_errors
def import_cdp(
    file: Path,
    org_id: int,
    file_format: str,
    mappings: tuple[str, ...],
    batch_size: int,
    max_rejects: int,
    workers: int | None,
    at_ms: int | None,
    resume: bool,
    quiet: bool,
    region: str,
    actor: str,
    bulk: bool,
) -> None:
    """Write CDP profiles: each record is a POST /cdp/v1/users body; its orgId and region may be left
    out (they default to --org-id and --region, which the command needs)."""
    with _interrupted_outside_the_run() as stage, open_db(bulk=True) as database:
        from profilehub.ingest.cdp import cdp_sink
        from profilehub.profiles import ProfileService

        region = check_org(database, org_id, region) or region
        service = ProfileService(database, clock=_fixed_clock(at_ms))
        sink = cdp_sink(service, org_id, region, f"{actor}:{file.name}")
        _run_import(
            file,
            file_format,
            mappings,
            batch_size,
            workers,
            resume,
            quiet,
            max_rejects,
            CDP_MAP_EXAMPLE,
            sink,
            database,
            org_id,
            "cdp",
            # upsert is required; a row whose upsert cells are all empty writes its ids only
            csv_objects=("upsert",),
            bulk=bulk,
            at=at_ms,
            stage=stage,
        )


@import_group.command("people")
@_import_options(
    "COLUMN=FIELD",
    f"CSV column to a field of the PUT /v2/crm/people body, e.g. {PEOPLE_MAP_EXAMPLE}, "
    "First=firstName, Phone=phoneNumber, or a custom attribute's key (repeat). A column mapped to "
    "emails holds one address.",
)
@click.option(
    "--matching-attribute", required=True, help="Attribute slug to match existing people by (e.g. email)."
)
@click.option("--actor", default="import", show_default=True, help="Who the change log names.")
@click.option(
    "--bulk",
    is_flag=True,
    help="Write the whole file in one transaction holding the org's CRM and home-region profile "
    "locks: all or nothing, the same people and profiles as without it (given the same --at and "
    "--batch-size). See docs/bulk.md.",
)
@domain_errors
def import_people(
    file: Path,
    org_id: int,
    file_format: str,
    mappings: tuple[str, ...],
    batch_size: int,
    max_rejects: int,
    workers: int | None,
    at_ms: int | None,
    resume: bool,
    quiet: bool,
    matching_attribute: str,
    actor: str,
    bulk: bool,
) -> None:
    """Upsert CRM people: each record is a PUT /v2/crm/people body (CSV: map columns to its fields)."""
    with _interrupted_outside_the_run() as stage, open_org_db(org_id, bulk=True) as database:
        from profilehub.ingest.people import check_matching_attribute, people_sink

        check_matching_attribute(database, org_id, matching_attribute)
        actor = f"{actor}:{file.name}"
        sink = people_sink(database, org_id, matching_attribute, actor, _fixed_clock(at_ms))
        _run_import(
            file,
            file_format,
            mappings,
            batch_size,
            workers,
            resume,
            quiet,
            max_rejects,
            PEOPLE_MAP_EXAMPLE,
            sink,
            database,
            org_id,
            "people",
            csv_lists=("emails",),  # a column mapped to emails holds one address
            bulk=bulk,
            at=at_ms,
            people_bulk=(matching_attribute, actor),
            stage=stage,
        )


def _add_delivery_commands() -> None:
    # Push delivery's commands live beside their core and use the helpers above: imported once
    # this module is complete.
    from profilehub.delivery.commands import deliver, webhook
    from profilehub.receipt_commands import receipt

    main.add_command(webhook)
    main.add_command(deliver)
    main.add_command(receipt)


_add_delivery_commands()
