"""``profilehub webhook …`` and ``profilehub deliver``: shells over ``profilehub.delivery``."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from profilehub.cli import (
    domain_errors,
    loading_modules,
    log_level_option,
    open_db,
    open_org_db,
    org_id_option,
)
from profilehub.config import Settings, SettingsError
from profilehub.delivery import endpoints
from profilehub.delivery.settings import DEFAULT_STREAM
from profilehub.errors import ProfilehubError
from profilehub.store.events import EVENT_TYPES, last_event_id, parse_cursor

if TYPE_CHECKING:
    from profilehub.delivery.endpoints import Endpoint
    from profilehub.delivery.runner import Deliverer


@click.group()
def webhook() -> None:
    """Webhook endpoints: where an org's events are POSTed, signed (Standard Webhooks).

    Deliveries are made by `profilehub serve` (in the background) or `profilehub deliver`.
    See docs/delivery.md.
    """


id_option = click.option("--id", "endpoint_id", required=True, help="The endpoint's id (wh_<orgId>_...).")


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _state(e: Endpoint) -> str:
    if e.state == "disabled":
        return f"disabled since {_when(e.disabled_ts)}: {e.disabled_reason}"
    if e.state == "failing":
        return f"failing since {_when(e.failing_since)}, retrying"
    return "enabled"


@webhook.command("create")
@org_id_option
@click.option("--url", required=True, help="An http(s) URL the events are POSTed to.")
@click.option(
    "--event",
    "event_types",
    multiple=True,
    metavar="TYPE",
    help=f"Only this event type (repeat for more; default: all): {', '.join(EVENT_TYPES)}.",
)
@domain_errors
def webhook_create(org_id: int, url: str, event_types: tuple[str, ...]) -> None:
    """Add an endpoint; it gets the events committed from now on. Prints its id, then, as the last
    line, its signing secret (whsec_...), which is not shown again."""
    with open_org_db(org_id) as db:
        made = db.write(
            lambda c: endpoints.create_endpoint(
                c, org_id, url, list(event_types), start_after=last_event_id(c)
            )
        )
    e = made.endpoint
    click.echo(e.endpoint_id)
    click.echo(
        f"# endpoint for org {org_id}: {e.url} ({', '.join(e.event_types) or 'all events'}); "
        "its signing secret, shown once:",
        err=True,
    )
    click.echo(made.secret)


@webhook.command("list")
@org_id_option
@domain_errors
def webhook_list(org_id: int) -> None:
    """List the org's endpoints and their delivery state (enabled, failing, disabled and why)."""
    with open_org_db(org_id) as db, db.read() as conn:
        found = endpoints.list_endpoints(conn, org_id)
    # One block per endpoint rather than a table: URLs and reasons are long, and a table would
    # wrap them (ids included) at the terminal's width.
    for e in found:
        click.echo(f"{e.endpoint_id} {e.url}")
        click.echo(f"  events: {', '.join(e.event_types) or 'all'}")
        click.echo(f"  state: {_state(e)}")
        click.echo(f"  delivered: {e.delivered}, pending: {e.pending}, cursor: {e.cursor}")
        if e.last_error:
            click.echo(f"  last error: {e.last_error}")
    if not found:
        click.echo(f"org {org_id} has no webhook endpoints", err=True)


def _change_state(endpoint_id: str, enabled: bool) -> Endpoint:
    with open_db() as db:
        return db.write(lambda c: endpoints.set_enabled(c, endpoint_id, enabled))


@webhook.command("disable")
@id_option
@domain_errors
def webhook_disable(endpoint_id: str) -> None:
    """Stop delivering to an endpoint; its events wait for it (nothing is dropped)."""
    e = _change_state(endpoint_id, False)
    click.echo(f"{e.endpoint_id}: disabled ({e.pending} events waiting)")


@webhook.command("enable")
@id_option
@domain_errors
def webhook_enable(endpoint_id: str) -> None:
    """Deliver to an endpoint again: the events that waited first, in order, then new ones."""
    e = _change_state(endpoint_id, True)
    click.echo(f"{e.endpoint_id}: enabled ({e.pending} events waiting)")


@webhook.command("delete")
@id_option
@domain_errors
def webhook_delete(endpoint_id: str) -> None:
    """Delete an endpoint and the events waiting for it."""
    with open_db() as db:
        db.write(lambda c: endpoints.delete_endpoint(c, endpoint_id))
    click.echo(f"deleted {endpoint_id.strip()}")


@webhook.command("replay")
@id_option
@click.option("--after", required=True, metavar="EVENT_ID", help="An event id (0: from the first event).")
@domain_errors
def webhook_replay(endpoint_id: str, after: str) -> None:
    """Send every event after EVENT_ID to the endpoint again, in order (then carry on as usual)."""
    try:
        cursor = parse_cursor(after.strip(), field="--after")
    except ProfilehubError as exc:
        raise click.BadParameter(exc.message, param_hint="--after") from exc
    with open_db() as db:
        e = db.write(lambda c: endpoints.replay_from(c, endpoint_id, cursor))
    click.echo(f"{e.endpoint_id}: replaying the events after {cursor}")


@click.command()
@click.option(
    "--nats",
    "nats_url",
    metavar="nats://HOST:4222",
    help="Also publish every event of every org to this NATS server's JetStream.",
)
@click.option(
    "--stream",
    default=DEFAULT_STREAM,
    show_default=True,
    help="The JetStream stream (created when missing, subjects profilehub.>).",
)
@click.option("--no-webhooks", is_flag=True, help="Only publish to NATS; leave webhooks to other deliverers.")
@log_level_option
def deliver(nats_url: str | None, stream: str, no_webhooks: bool, log_level: str) -> None:
    """Deliver events until stopped (Ctrl-C, SIGTERM): webhooks, and with --nats, NATS JetStream.

    Runs beside or instead of `profilehub serve`'s own delivery, on any host that reaches the
    database; several may run: each endpoint (and each org's stream) is worked by one at a time.
    """
    # The deliverer (the NATS client, the webhook sender) loaded by this command only.
    with loading_modules():
        from profilehub.delivery.runner import Deliverer
        from profilehub.delivery.stream import StreamUnavailable

    if nats_url is not None and not nats_url.startswith(("nats://", "tls://")):
        raise click.BadParameter(f"{nats_url!r} is not a NATS URL (nats://HOST:4222)", param_hint="--nats")
    if no_webhooks and not nats_url:
        raise click.UsageError("--no-webhooks: give --nats too, or there is nothing to deliver")
    try:
        settings = Settings.from_env().delivery
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    # Warnings (an endpoint's round failing, the database away) as lines on stderr, never a URL
    # or a secret (the endpoint is named by its id).
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Alembic's INFO lines on opening the store ("Context impl SQLiteImpl.") say nothing to an
    # operator; its warnings and errors still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with open_db() as db:
        deliverer = Deliverer(db, settings, nats_url=nats_url, nats_stream=stream, webhooks=not no_webhooks)
        click.echo(
            f"delivering {'webhooks' if not no_webhooks else ''}"
            f"{' and ' if nats_url and not no_webhooks else ''}{f'to NATS {nats_url}' if nats_url else ''}"
            f" as {deliverer.owner}; Ctrl-C stops",
            err=True,
        )
        try:
            asyncio.run(_until_signalled(deliverer))
        except StreamUnavailable as exc:
            raise click.ClickException(exc.message) from exc


async def _until_signalled(deliverer: Deliverer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await deliverer.run(stop)
