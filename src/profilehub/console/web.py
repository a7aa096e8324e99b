"""The console's web plumbing: its route class (domain errors as HTML pages, security headers),
the session of a request, scope checks, and reading forms with their CSRF token checked."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from profilehub.console.pages import error_page, secure
from profilehub.console.sessions import ConsoleSession, load_session, same_token
from profilehub.errors import BadRequest, Forbidden, ProfilehubError, Unauthorized, UnsupportedMediaType
from profilehub.http import ACCEPTED_ENCODING, content_codings, unsupported_coding_message
from profilehub.profiles import ProfileService
from profilehub.store.database import Database

SESSION_COOKIE = "profilehub_console"
# The sign-in form's CSRF token, double-submitted (cookie and field): there is no session yet.
SIGN_IN_COOKIE = "profilehub_console_signin"
COOKIE_PATH = "/console"
log = logging.getLogger(__name__)
MAX_FORM_BYTES = 64 * 1024


class SignInRequired(Unauthorized):
    """No live session: pages send the browser to the sign-in form, forms answer 401."""


class ConsoleRoute(APIRoute):
    """Answers a domain or validation error as an HTML page, and adds the console's headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                try:
                    response = await handler(request)
                except RequestValidationError as exc:
                    # FastAPI checks the query (a `page` that is no number) before the route reads
                    # its session, so read it here: the page keeps the signed-in top bar, and a
                    # browser without a session is sent to sign in as on any other page.
                    session = await current_session(request)
                    fields = "; ".join(
                        f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}"
                        for e in exc.errors()
                    )
                    response = error_page(400, fields, session)
            except SignInRequired as exc:
                if request.method in ("GET", "HEAD"):
                    response = RedirectResponse(f"{COOKIE_PATH}/sign-in", status_code=303)
                else:
                    response = error_page(401, exc.message)
            except ProfilehubError as exc:
                response = error_page(exc.status, exc.message, getattr(request.state, "console", None))
                response.headers.update(exc.headers)
            return secure(response)

        return run


router = APIRouter(prefix=COOKIE_PATH, include_in_schema=False, route_class=ConsoleRoute)


# --- plumbing ---


def db_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def profiles_of(request: Request) -> ProfileService:
    service: ProfileService = request.app.state.profiles
    return service


def read(db: Database, query: Callable[[Any], Any]) -> Awaitable[Any]:
    def run() -> Any:
        with db.read() as conn:
            return query(conn)

    return run_in_threadpool(run)


async def _session_of(request: Request) -> ConsoleSession | None:
    """The live session of the request's cookie, or None (without a cookie, read nothing)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session: ConsoleSession | None = await read(db_of(request), lambda c: load_session(c, cookie))
    return session


async def current_session(request: Request) -> ConsoleSession:
    session = await _session_of(request)
    if session is None:
        raise SignInRequired(
            "your session has ended (or you have not signed in); sign in again", field="session"
        )
    request.state.console = session
    return session


async def error_page_of(request: Request, status: int, message: str) -> Response:
    """``error_page`` for a request no console route took (a method an address does not take),
    with the visitor's session when there is one, so the page keeps its signed-in bar."""
    try:
        session = await _session_of(request)
    except sa.exc.SQLAlchemyError:  # the error page itself must not fail on a database that is away
        log.warning("console: the session of an error page could not be read", exc_info=True)
        session = None
    return error_page(status, message, session)


def need(session: ConsoleSession, *scopes: str) -> None:
    """The session's credential must be granted one of ``scopes`` (as its API endpoint needs)."""
    if not session.principal.scopes & set(scopes):
        granted = ", ".join(sorted(session.principal.scopes))
        raise Forbidden(
            f"this needs scope {' or '.join(scopes)}; the credential you signed in with has {granted}",
            field="scopes",
        )


def check_same_origin(request: Request) -> None:
    # Belt and braces beside the SameSite cookie and the token: a browser names the page that sent
    # a form; one from another site is refused before anything else.
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("this form was sent from another site", field="csrf")


async def read_form(request: Request) -> dict[str, str]:
    """The form's fields; a field sent more than once counts with its first value."""
    form: dict[str, str] = {}
    for name, value in await read_form_pairs(request):
        form.setdefault(name, value)
    return form


async def read_form_pairs(request: Request) -> list[tuple[str, str]]:
    """The form's fields in order, repeated ones (checkboxes of one name) included."""
    check_same_origin(request)
    if codings := content_codings(request.headers.raw):
        raise UnsupportedMediaType(
            unsupported_coding_message(codings),
            field="Content-Encoding",
            headers={"Accept-Encoding": ACCEPTED_ENCODING},
        )
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the console takes its own forms only", field="Content-Type")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest(f"a form is at most {MAX_FORM_BYTES} bytes", field="body")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise BadRequest("the form is not UTF-8", field="body") from exc


async def checked_form(request: Request, session: ConsoleSession) -> dict[str, str]:
    """The form, once its CSRF token is the session's (403 otherwise)."""
    form: dict[str, str] = {}
    for name, value in await checked_form_pairs(request, session):
        form.setdefault(name, value)
    return form


async def checked_form_pairs(request: Request, session: ConsoleSession) -> list[tuple[str, str]]:
    pairs = await read_form_pairs(request)
    if not same_token(session.csrf_token, next((v for k, v in pairs if k == "csrf"), None)):
        raise Forbidden(
            "this form is out of date or was not made by this console; go back, reload the page and "
            "send it again",
            field="csrf",
        )
    return pairs


# What a form can be refused for that the person mends by changing what they typed (a value, a
# ucid of no profile): the form comes back with their input and the error beside its field. A
# session's end, a missing scope or a forged form (401, 403) get the error page: retyping mends
# none of them.
_ABOUT_THE_INPUT = frozenset({400, 404, 409, 422})


def about_the_input(exc: ProfilehubError) -> bool:
    return exc.status in _ABOUT_THE_INPUT


def cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def see(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def home_of(session: ConsoleSession) -> str:
    if session.can("profile.read"):
        return f"{COOKIE_PATH}/search"
    if session.principal.scopes & {"crm:read", "crm:write"}:
        return f"{COOKIE_PATH}/people"
    return f"{COOKIE_PATH}/admin"
