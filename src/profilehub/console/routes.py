"""``/console``: thin routes over the same services and scopes as the API.

Every page reads its session (a cookie naming a server-side row, see ``sessions``), checks the
scope the matching API endpoint needs, calls the service the API calls and renders a template.
Every form carries the session's CSRF token; a domain error becomes an HTML page with its status.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from profilehub.auth import credential_kind_of
from profilehub.console import admin, crm
from profilehub.console.explaining import ID_ROWS, write_from_form
from profilehub.console.finder import find_people
from profilehub.console.pages import error_page, render, secure
from profilehub.console.person import person_page
from profilehub.console.sessions import (
    SESSION_SECONDS,
    ConsoleSession,
    end_session,
    load_session,
    same_token,
    start_session,
)
from profilehub.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ProfilehubError,
    Unauthorized,
    UnsupportedMediaType,
)
from profilehub.lineage import explain
from profilehub.profiles import ProfileService
from profilehub.store.database import Database
from profilehub.store.strategy_store import block_value, unblock_value

SESSION_COOKIE = "profilehub_console"
# The sign-in form's CSRF token, double-submitted (cookie and field): there is no session yet.
SIGN_IN_COOKIE = "profilehub_console_signin"
COOKIE_PATH = "/console"
MAX_FORM_BYTES = 64 * 1024


class SignInRequired(Unauthorized):
    """No live session: pages send the browser to the sign-in form, forms answer 401."""


class ConsoleRoute(APIRoute):
    """Answers a domain or validation error as an HTML page, and adds the console's headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                if request.method in ("GET", "HEAD"):
                    response = RedirectResponse(f"{COOKIE_PATH}/sign-in", status_code=303)
                else:
                    response = error_page(401, exc.message)
            except ProfilehubError as exc:
                response = error_page(exc.status, exc.message, getattr(request.state, "console", None))
            except RequestValidationError as exc:
                fields = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors()
                )
                response = error_page(400, fields, getattr(request.state, "console", None))
            return secure(response)

        return run


router = APIRouter(prefix=COOKIE_PATH, include_in_schema=False, route_class=ConsoleRoute)


# --- plumbing ---


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _profiles(request: Request) -> ProfileService:
    service: ProfileService = request.app.state.profiles
    return service


def _read(db: Database, query: Callable[[Any], Any]) -> Awaitable[Any]:
    def run() -> Any:
        with db.read() as conn:
            return query(conn)

    return run_in_threadpool(run)


async def _session(request: Request) -> ConsoleSession:
    cookie = request.cookies.get(SESSION_COOKIE)
    session: ConsoleSession | None = await _read(_db(request), lambda c: load_session(c, cookie))
    if session is None:
        raise SignInRequired(
            "your session has ended (or you have not signed in); sign in again", field="session"
        )
    request.state.console = session
    return session


def _need(session: ConsoleSession, *scopes: str) -> None:
    """The session's credential must be granted one of ``scopes`` (as its API endpoint needs)."""
    if not session.principal.scopes & set(scopes):
        granted = ", ".join(sorted(session.principal.scopes))
        raise Forbidden(
            f"this needs scope {' or '.join(scopes)}; the credential you signed in with has {granted}",
            field="scopes",
        )


def _same_origin(request: Request) -> None:
    # Belt and braces beside the SameSite cookie and the token: a browser names the page that sent
    # a form; one from another site is refused before anything else.
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("this form was sent from another site", field="csrf")


async def _form(request: Request) -> dict[str, str]:
    _same_origin(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the console takes its own forms only", field="Content-Type")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest(f"a form is at most {MAX_FORM_BYTES} bytes", field="body")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise BadRequest("the form is not UTF-8", field="body") from exc
    return {k: v[0] for k, v in parsed.items()}


async def _checked_form(request: Request, session: ConsoleSession) -> dict[str, str]:
    form = await _form(request)
    if not same_token(session.csrf_token, form.get("csrf")):
        raise Forbidden(
            "this form is out of date or was not made by this console; go back, reload the page and "
            "send it again",
            field="csrf",
        )
    return form


def _cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _see(path: str) -> Response:
    return RedirectResponse(path, status_code=303)


def _home(session: ConsoleSession) -> str:
    if session.can("profile.read"):
        return f"{COOKIE_PATH}/search"
    if session.principal.scopes & {"crm:read", "crm:write"}:
        return f"{COOKIE_PATH}/people"
    return f"{COOKIE_PATH}/admin"


# --- signing in and out ---


@router.get("")
async def console_home(request: Request) -> Response:
    return _see(_home(await _session(request)))


@router.get("/sign-in")
async def sign_in_form(request: Request, bye: int = 0) -> Response:
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    response = render("sign_in.html", csrf=token, signed_out=bool(bye))
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await _form(request)
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if not expected or not same_token(expected, form.get("csrf")):
        raise Forbidden(
            "this sign-in form is out of date or was not made by this console; reload it", field="csrf"
        )
    secret = form.get("credential", "").strip()
    kind = credential_kind_of(secret)
    if kind is None:
        raise Unauthorized(
            "give a CDP apikey (phk_...) or a CRM token (pht_...) of your org", field="credential"
        )
    state = request.app.state
    principal = await run_in_threadpool(state.verifier.verify, state.db.read, secret, kind, "credential")
    previous = request.cookies.get(SESSION_COOKIE)

    def switch(conn: Connection) -> tuple[str, ConsoleSession]:
        # Signing in again (with another key, say) replaces the browser's session.
        end_session(conn, previous)
        return start_session(conn, principal, kind, secret)

    cookie, session = await _db(request).awrite(switch)
    response = _see(_home(session))
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_cookie_secure(request),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = await _session(request)
    await _checked_form(request, session)
    cookie = request.cookies.get(SESSION_COOKIE)
    await _db(request).awrite(lambda c: end_session(c, cookie))
    response = _see(f"{COOKIE_PATH}/sign-in?bye=1")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- people: search, profile, graph, erase (the CDP profile service and scopes) ---


@router.get("/search")
async def search_form(request: Request) -> Response:
    session = await _session(request)
    _need(session, "profile.read")
    strategy = await _read(_db(request), lambda c: _profiles(request).strategies.get(c, session.org_id))
    return render(
        "search.html", session=session, id_types=sorted(strategy.id_types), results=None, q="", id_type=""
    )


@router.post("/search")
async def search(request: Request) -> Response:
    # A POST, so emails and phone numbers stay out of URLs, browser history and access logs.
    session = await _session(request)
    _need(session, "profile.read")
    form = await _checked_form(request, session)
    q, id_type = form.get("q", ""), form.get("id_type", "")
    service = _profiles(request)
    found = await run_in_threadpool(find_people, service, session.org_id, q, id_type)
    strategy = await _read(_db(request), lambda c: service.strategies.get(c, session.org_id))
    return render(
        "search.html",
        session=session,
        id_types=sorted(strategy.id_types),
        results=found,
        q=q,
        id_type=id_type,
    )


async def _person(request: Request, session: ConsoleSession, ucid: str) -> Any:
    _need(session, "profile.read")
    return await run_in_threadpool(person_page, _profiles(request), session.org_id, ucid)


@router.get("/profiles/{ucid}")
async def profile(request: Request, ucid: str) -> Response:
    session = await _session(request)
    page = await _person(request, session, ucid)
    return render("profile.html", session=session, page=page)


@router.get("/profiles/{ucid}/graph")
async def graph(request: Request, ucid: str) -> Response:
    session = await _session(request)
    page = await _person(request, session, ucid)
    return render("graph.html", session=session, page=page, graph=page.graph())


@router.get("/profiles/{ucid}/erase")
async def erase_form(request: Request, ucid: str) -> Response:
    session = await _session(request)
    _need(session, "profile.delete")
    page = await _person(request, session, ucid)
    return render("erase.html", session=session, page=page)


@router.post("/profiles/{ucid}/erase")
async def erase(request: Request, ucid: str) -> Response:
    session = await _session(request)
    _need(session, "profile.delete")
    form = await _checked_form(request, session)
    service = _profiles(request)
    profile = await run_in_threadpool(service.get, session.org_id, ucid)
    if form.get("confirm", "").strip() != profile["ucid"]:
        raise BadRequest(f"type the ucid {profile['ucid']} exactly to erase this person", field="confirm")
    result = await service.adelete(
        session.org_id, profile["region"], {"ucid": [profile["ucid"]]}, session.principal.actor
    )
    return render("erased.html", session=session, result=result)


@router.get("/explain")
async def explain_form(request: Request) -> Response:
    session = await _session(request)
    _need(session, "profile.read")
    return await _explain_page(request, session, {}, None)


@router.post("/explain")
async def explain_write(request: Request) -> Response:
    session = await _session(request)
    _need(session, "profile.read")
    form = await _checked_form(request, session)
    write = write_from_form(session.org_id, form)
    answer = await run_in_threadpool(explain, _profiles(request), write, session.principal.actor)
    return await _explain_page(request, session, form, answer)


async def _explain_page(
    request: Request, session: ConsoleSession, form: dict[str, str], answer: dict[str, Any] | None
) -> Response:
    strategy = await _read(_db(request), lambda c: _profiles(request).strategies.get(c, session.org_id))
    return render(
        "explain.html",
        session=session,
        form=form,
        answer=answer,
        refused={r["ucid"] for r in answer["refused"]} if answer else set(),
        regions=sorted(strategy.regions),
        id_types=sorted(strategy.id_types),
        rows=ID_ROWS,
    )


# --- CRM people and companies (the CRM services and scopes) ---


@router.get("/people")
async def people(request: Request, page: int = 1, q: str = "") -> Response:
    session = await _session(request)
    _need(session, "crm:read", "crm:write")
    listing = await _read(_db(request), lambda c: crm.people_page(c, session.org_id, page, q))
    return render("people.html", session=session, listing=listing, q=q)


@router.get("/people/{person_id}")
async def person(request: Request, person_id: str) -> Response:
    session = await _session(request)
    _need(session, "crm:read", "crm:write")
    found = await _read(_db(request), lambda c: crm.person(c, session.org_id, person_id))
    return render("person.html", session=session, person=found)


@router.get("/companies")
async def companies(request: Request, page: int = 1, q: str = "") -> Response:
    session = await _session(request)
    _need(session, "crm:read", "crm:write")
    listing = await _read(_db(request), lambda c: crm.companies_page(c, session.org_id, page, q))
    return render("companies.html", session=session, listing=listing, q=q)


@router.get("/companies/{company_id}")
async def company(request: Request, company_id: str) -> Response:
    session = await _session(request)
    _need(session, "crm:read", "crm:write")
    found = await _read(_db(request), lambda c: crm.company(c, session.org_id, company_id))
    return render("company.html", session=session, company=found)


# --- org admin ---


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    session = await _session(request)
    service = _profiles(request)
    view = await _read(_db(request), lambda c: admin.org_admin(c, service, session.org_id))
    return render("admin.html", session=session, admin=view, keys=view.keys)


@router.post("/admin/blocked")
async def admin_block(request: Request) -> Response:
    session = await _session(request)
    _need(session, "profile.write")
    form = await _checked_form(request, session)
    value, id_type = form.get("value", ""), form.get("id_type", "").strip() or "*"
    actor = session.principal.actor
    if form.get("action") == "unblock":
        await _db(request).awrite(lambda c: unblock_value(c, session.org_id, value, id_type, actor))
    elif not value.strip():
        raise BadRequest("give the value to block", field="value")
    else:
        await _db(request).awrite(lambda c: block_value(c, session.org_id, value, id_type, actor))
    return _see(f"{COOKIE_PATH}/admin")


@router.get("/{anything:path}")
async def no_such_page(request: Request, anything: str) -> Response:
    # Last: a mistyped console address gets a console page, not the API's JSON 404.
    if not anything:
        return _see(COOKIE_PATH)  # /console/
    raise NotFound(f"no console page {anything!r}; start at /console", field="path")
