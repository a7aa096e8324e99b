"""``create_app(settings)``: the ASGI app. No module-level engine or settings."""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi_offline import FastAPIOffline

from profilehub import __version__, collector
from profilehub.auth import CredentialVerifier
from profilehub.cdp.bulk import router as cdp_bulk_router
from profilehub.cdp.bulk_turns import BulkTurns
from profilehub.cdp.consent_routes import router as cdp_consent_router
from profilehub.cdp.lineage_routes import router as cdp_lineage_router
from profilehub.cdp.models import WriteUserRequest
from profilehub.cdp.routes import FastWriteUser
from profilehub.cdp.routes import router as cdp_router
from profilehub.config import Settings
from profilehub.console import install_console
from profilehub.crm.fast import FastUpsertPerson
from profilehub.crm.routes import router as crm_router
from profilehub.delivery import endpoints
from profilehub.delivery.process import DelivererProcess
from profilehub.delivery.routes import router as admin_router
from profilehub.delivery.runner import BackgroundDeliverer, Deliverer
from profilehub.delivery.settings import DeliverySettings
from profilehub.errors import ServiceUnavailable, Unauthorized
from profilehub.gate import CredentialGate
from profilehub.http import (
    BodyLimitMiddleware,
    HeadAsGetMiddleware,
    JSONResponse,
    install_error_handlers,
    install_openapi_errors,
)
from profilehub.idempotency import IdempotencyKeys
from profilehub.idempotency_gate import IdempotencyMiddleware
from profilehub.ingest import progress as import_progress
from profilehub.metrics import CONTENT_TYPE, Metrics
from profilehub.oidc import JwtVerifier
from profilehub.openapi_extras import ERROR_SCHEMA, install_openapi_extras
from profilehub.profiles import ProfileService
from profilehub.ratelimit import make_rate_limiter
from profilehub.ratelimit_http import RateLimitMiddleware
from profilehub.request_log import RequestLogMiddleware, RouteNoteMiddleware
from profilehub.routing_errors import install_routing_errors
from profilehub.store.database import Database, head_revision, schema_problem
from profilehub.store.receipt_store import ReceiptKeys
from profilehub.store.turns import POSTGRES_TURNS_ENV

# What a browser client may send and read; everything else a browser sends on its own.
CORS_REQUEST_HEADERS = [
    "apikey",
    "scopes",
    "orgId",
    "Authorization",
    "Content-Type",
    "X-Request-Id",
    "Idempotency-Key",
]
CORS_EXPOSED_HEADERS = [
    "X-Request-Id",
    "X-Profilehub-Notices",
    "X-Profilehub-Matches",
    "Retry-After",
    "Allow",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
]


def create_app(
    settings: Settings | None = None,
    delivery: DeliverySettings | None = None,
    postgres_turns: Path | None = None,
) -> FastAPI:
    """``delivery``: how the background deliverer retries and polls (default:
    ``settings.delivery``); only used with ``settings.serve_delivers`` set to thread.
    ``postgres_turns``: the folder where the workers of one server take turns at the writer
    (``Database``'s; set by ``serve --workers N`` on PostgreSQL)."""
    settings = settings or Settings.from_env()
    delivery = delivery or settings.delivery
    metrics = Metrics()
    db = Database(
        settings.database_url,
        write_batch_size=settings.write_batch_size,
        write_queue_max=settings.write_queue_max,
        on_batch=metrics.batch if settings.metrics else None,
        connect_timeout=settings.db_connect_timeout_seconds,
        idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
        # The WAL's checkpoints (every few hundred writes) held up every write queued behind them.
        background_checkpoints=True,
        postgres_turns=postgres_turns,
    )
    metrics.watch_queue(db.write_queue_depth)
    metrics.watch_imports(lambda: import_progress.runs_to_show(db))

    def webhook_backlogs() -> dict[str, int]:
        with db.read() as conn:
            return endpoints.backlogs(conn)

    metrics.watch_backlog(webhook_backlogs)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Webhooks go out from a process beside this one (by default: see delivery/process.py) or
        # a thread of this one, each with its own loop and HTTP connections, so a slow or
        # unreachable endpoint never holds up a request; several workers' deliverers share the
        # work through the endpoints' leases.
        delivering: BackgroundDeliverer | DelivererProcess | None = None
        if settings.serve_delivers == "thread":
            delivering = BackgroundDeliverer(Deliverer(db, delivery))
        elif settings.serve_delivers == "process":
            delivering = DelivererProcess(db.event_bell, delivery.timeout_seconds + 10)
        if delivering is not None:
            delivering.start()
        yield
        if delivering is not None:
            delivering.stop()
        db.close()
        Metrics.process_exited(os.getpid())

    # Docs assets are served from the package, not a CDN: self-hosted installs are often offline.
    app = FastAPIOffline(
        title="profilehub",
        version=__version__,
        description="Self-hosted customer profile hub: a CDP profile API and a CRM people/companies API "
        "over one identity-resolution core.",
        default_response_class=JSONResponse,
        lifespan=lifespan,
        # A trailing slash is a 404 naming the route (routing_errors), not a bodiless 307 whose
        # address comes from the Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = metrics
    receipt_keys = ReceiptKeys(settings.receipt_key_passphrase)
    app.state.profiles = ProfileService(db, metrics if settings.metrics else None, receipt_keys=receipt_keys)
    app.state.verifier = CredentialVerifier(settings.credential_cache_seconds)
    app.state.idempotency = IdempotencyKeys()
    app.state.rate_limiter = make_rate_limiter(
        db.read, settings.credential_cache_seconds, settings.redis_url, settings.redis_prefix
    )
    app.state.jwt = (
        JwtVerifier(settings.jwt_issuer, settings.jwt_audience, settings.jwt_jwks)
        if settings.jwt_enabled
        else None
    )
    install_error_handlers(app)
    install_openapi_errors(app)
    install_routing_errors(app)
    # Read by parse_write rather than as a parameter's type, so declared here.
    install_openapi_extras(app, models=[WriteUserRequest])
    # Added later is outer. Innermost, the route template is noted for the access log; the fast
    # path sits inside the body limit, so it sees only bodies the limit allows; outermost, every
    # answer (a 413 too) gets its request id and access log line.
    app.add_middleware(RouteNoteMiddleware)
    app.add_middleware(FastWriteUser)
    app.add_middleware(FastUpsertPerson)  # the CRM's hot route, likewise
    # Outside the fast path, so a replayed answer never reaches it; inside the body limit.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Outside the body limit (which reads a chunked body), inside the gate and the rate limiter, so
    # only admitted _bulk requests wait for a turn, with their bodies unread.
    app.add_middleware(BulkTurns)
    # Just inside the credential gate (which hands it the principal): over-limit bodies go unread.
    app.add_middleware(RateLimitMiddleware)
    # Outside the body limit, which reads a chunked body: no body is read before the credential.
    app.add_middleware(CredentialGate)
    app.add_middleware(HeadAsGetMiddleware)
    if settings.cors_origins:
        # Outside the body limit and the credential gate, so a browser can read a 413, 415 or 401 too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(RequestLogMiddleware, metrics=metrics if settings.metrics else None)
    app.include_router(cdp_bulk_router)
    app.include_router(cdp_lineage_router)
    app.include_router(cdp_consent_router)
    app.include_router(cdp_router)
    app.include_router(crm_router)
    install_console(app)
    app.include_router(admin_router)

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        # Never the database: a liveness probe failing while the database is down would have the
        # orchestrator restart every server process, which cannot bring the database back.
        return {"status": "ok"}

    @app.get(
        "/readyz", tags=["service"], summary="Readiness: the database answers, takes writes, schema current"
    )
    def readyz() -> dict[str, str]:
        # A database that does not answer raises here, answered 503 by the database-down handler.
        with db.read() as conn:
            problem = schema_problem(conn)
            # A process that cannot open the receipt keys would refuse every erasure (serve
            # refuses to start so; this says so of a server started otherwise, or after a key was
            # made with another passphrase).
            locked = receipt_keys.problem(conn) if problem is None else None
        if problem is not None:
            raise ServiceUnavailable(problem, headers={"Retry-After": "10"})
        if locked is not None:
            raise ServiceUnavailable(f"cannot sign erasure receipts: {locked}", headers={"Retry-After": "10"})
        # Reads alone are not readiness: a database that refuses writes (a full disk) answers 503.
        if (fault := db.write_fault()) is not None:
            raise ServiceUnavailable(fault.message, headers={"Retry-After": "1"})
        return {"status": "ready", "database": db.dialect, "schema": head_revision()}

    if settings.metrics:
        install_metrics_route(app, metrics, settings.metrics_token)
    return app


def install_metrics_route(app: FastAPI, metrics: Metrics, token: str) -> None:
    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (text format)",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE: {}}},
            401: {
                "description": "PROFILEHUB_METRICS_TOKEN is set and the request did not send it",
                "content": ERROR_SCHEMA,
            },
        },
    )
    def metrics_route(request: Request) -> Response:
        # Compared in constant time: the token is a secret, and a scraper's header is not.
        sent = request.headers.get("authorization", "")
        if token and not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            raise Unauthorized(
                "Authorization: send 'Bearer <PROFILEHUB_METRICS_TOKEN>' to read /metrics",
                field="Authorization",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(metrics.render(), media_type=CONTENT_TYPE)


# Kept under this name for the serving test and the bench's baseline server.
SERVING_GC_THRESHOLD = collector.THRESHOLD


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector off the request path of a long-running server (see
    ``profilehub.collector``)."""
    collector.tune()


def create_server_app() -> FastAPI:
    """``create_app`` for ``profilehub serve`` (one call in each worker process), GC tuned."""
    turns = os.environ.get(POSTGRES_TURNS_ENV)
    app = create_app(postgres_turns=Path(turns) if turns else None)
    tune_gc_for_serving()
    return app
