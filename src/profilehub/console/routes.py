"""``/console``: thin routes over the same services and scopes as the API (plumbing in ``web``).

Every page reads its session (a cookie naming a server-side row, see ``sessions``), checks the
scope the matching API endpoint needs, calls the service the API calls and renders a template.
Every form carries the session's CSRF token. A form refused for what was typed in it comes back
with the input kept and the error beside its field (``web.about_the_input``); any other domain
error becomes an HTML page with its status.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote, unquote, urlencode

from fastapi import Request
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from profilehub.auth import credential_kind_of
from profilehub.console import admin, crm
from profilehub.console.explaining import FIELDS, ID_ROWS, write_from_form
from profilehub.console.finder import find_people
from profilehub.console.pages import render
from profilehub.console.person import person_page
from profilehub.console.sessions import (
    SESSION_SECONDS,
    ConsoleSession,
    end_session,
    same_token,
    start_session,
)
from profilehub.console.web import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    about_the_input,
    checked_form,
    checked_form_pairs,
    cookie_secure,
    current_session,
    db_of,
    home_of,
    need,
    profiles_of,
    read,
    read_form,
    router,
    see,
)
from profilehub.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    ProfilehubError,
    Unauthorized,
)
from profilehub.identity.normalize import MAX_ID_LENGTH
from profilehub.lineage import aunmerge, explain
from profilehub.store.strategy_store import block_value, unblock_value

# The org page's one-time message after a block or unblock (``_done``).
FLASH_COOKIE = "profilehub_console_flash"
FLASH_CHARS = 1024

# The router the routes below register on (it is made in ``web``, with the console's route class).
__all__ = ["router"]

# --- signing in and out ---


@router.get("")
async def console_home(request: Request) -> Response:
    return see(home_of(await current_session(request)))


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
        secure=cookie_secure(request),
    )
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    expected = request.cookies.get(SIGN_IN_COOKIE)
    if not expected or not same_token(expected, form.get("csrf")):
        raise Forbidden(
            "this sign-in form is out of date or was not made by this console; reload it", field="csrf"
        )
    secret = form.get("credential", "").strip()
    kind = credential_kind_of(secret)
    state = request.app.state
    try:
        if kind is None:
            raise Unauthorized(
                "give a CDP apikey (phk_...) or a CRM token (pht_...) of your org", field="credential"
            )
        principal = await run_in_threadpool(state.verifier.verify, state.db.read, secret, kind, "credential")
    except Unauthorized as exc:
        # The form again, the error beside the box; the credential is not written back into the
        # page (a secret), so it is the one input not kept.
        return render("sign_in.html", exc.status, csrf=expected, signed_out=False, error=exc)
    previous = request.cookies.get(SESSION_COOKIE)

    def switch(conn: Connection) -> tuple[str, ConsoleSession]:
        # Signing in again (with another key, say) replaces the browser's session.
        end_session(conn, previous)
        return start_session(conn, principal, kind, secret)

    cookie, session = await db_of(request).awrite(switch)
    response = see(home_of(session))
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/sign-out")
async def sign_out_form(request: Request) -> Response:
    # A typed or bookmarked address: signing out is the form's POST (with the CSRF token), so a
    # link cannot end a session; without a session this is the sign-in form (``ConsoleRoute``).
    session = await current_session(request)
    return render("sign_out.html", session=session)


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = await current_session(request)
    await checked_form(request, session)
    cookie = request.cookies.get(SESSION_COOKIE)
    await db_of(request).awrite(lambda c: end_session(c, cookie))
    response = see(f"{COOKIE_PATH}/sign-in?bye=1")
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- people: search, profile, graph, erase (the CDP profile service and scopes) ---


@router.get("/search")
async def search_form(request: Request) -> Response:
    session = await current_session(request)
    need(session, "profile.read")
    strategy = await read(db_of(request), lambda c: profiles_of(request).strategies.get(c, session.org_id))
    return render(
        "search.html",
        session=session,
        id_types=sorted(strategy.id_types),
        results=None,
        how=[],
        unread=[],
        q="",
        id_type="",
    )


@router.post("/search")
async def search(request: Request) -> Response:
    # A POST, so emails and phone numbers stay out of URLs, browser history and access logs.
    session = await current_session(request)
    need(session, "profile.read")
    form = await checked_form(request, session)
    q, id_type = form.get("q", ""), form.get("id_type", "")
    service = profiles_of(request)
    strategy = await read(db_of(request), lambda c: service.strategies.get(c, session.org_id))
    page: dict[str, Any] = {
        "session": session,
        "id_types": sorted(strategy.id_types),
        "q": q,
        "id_type": id_type,
    }
    try:
        found = await run_in_threadpool(find_people, service, session.org_id, q, id_type)
    except ProfilehubError as exc:
        if not about_the_input(exc):
            raise
        return render("search.html", exc.status, results=None, how=[], unread=[], error=exc, **page)
    return render("search.html", results=found.results, how=found.how, unread=found.unread, **page)


async def _person(request: Request, session: ConsoleSession, ucid: str) -> Any:
    need(session, "profile.read")
    return await run_in_threadpool(person_page, profiles_of(request), session.org_id, ucid)


@router.get("/profiles/{ucid}")
async def profile(request: Request, ucid: str) -> Response:
    session = await current_session(request)
    page = await _person(request, session, ucid)
    return render("profile.html", session=session, page=page)


@router.get("/profiles/{ucid}/graph")
async def graph(request: Request, ucid: str) -> Response:
    session = await current_session(request)
    page = await _person(request, session, ucid)
    return render("graph.html", session=session, page=page, graph=page.graph())


@router.get("/profiles/{ucid}/erase")
async def erase_form(request: Request, ucid: str) -> Response:
    session = await current_session(request)
    need(session, "profile.delete")
    page = await _person(request, session, ucid)
    return render("erase.html", session=session, page=page)


@router.post("/profiles/{ucid}/erase")
async def erase(request: Request, ucid: str) -> Response:
    session = await current_session(request)
    need(session, "profile.delete")
    form = await checked_form(request, session)
    service = profiles_of(request)
    profile = await run_in_threadpool(service.get, session.org_id, ucid)
    if form.get("confirm", "").strip() != profile["ucid"]:
        mistyped = BadRequest(
            f"type the ucid {profile['ucid']} exactly to erase this person", field="confirm"
        )
        page = await _person(request, session, ucid)
        return render("erase.html", mistyped.status, session=session, page=page, form=form, error=mistyped)
    result = await service.adelete(
        session.org_id, profile["region"], {"ucid": [profile["ucid"]]}, session.principal.actor
    )
    return render("erased.html", session=session, result=result)


@router.get("/profiles/{ucid}/unmerge")
async def unmerge_form(request: Request, ucid: str) -> Response:
    session = await current_session(request)
    need(session, "profile.write")
    page = await _person(request, session, ucid)
    strategy = await read(db_of(request), lambda c: profiles_of(request).strategies.get(c, session.org_id))
    return render(
        "unmerge.html", session=session, page=page, id_types=sorted(strategy.id_types), ticked=set()
    )


@router.post("/profiles/{ucid}/unmerge")
async def unmerge(request: Request, ucid: str) -> Response:
    session = await current_session(request)
    need(session, "profile.write")
    pairs = await checked_form_pairs(request, session)
    ids: dict[str, list[str]] = {}
    for name, value in pairs:
        if name == "id":
            # "<idType>=<value>": idType names never hold "=".
            id_type, _, id_value = value.partition("=")
            ids.setdefault(id_type, []).append(id_value)
    form = dict(pairs)
    if (extra := form.get("extra_type", "").strip()) and form.get("extra_value", "").strip():
        ids.setdefault(extra, []).append(form["extra_value"])
    service = profiles_of(request)
    before = await run_in_threadpool(person_page, service, session.org_id, ucid)
    try:
        if not ids:
            raise BadRequest("tick at least one id that should not have linked anything", field="ids")
        done = await aunmerge(
            service, session.org_id, before.profile["region"], before.ucid, ids, session.principal.actor
        )
    except ProfilehubError as exc:
        if not about_the_input(exc):
            raise
        strategy = await read(db_of(request), lambda c: service.strategies.get(c, session.org_id))
        return render(
            "unmerge.html",
            exc.status,
            session=session,
            page=before,
            id_types=sorted(strategy.id_types),
            ticked={value for name, value in pairs if name == "id"},
            form=form,
            error=exc,
        )
    # The API answers the rebuilt person even when the rebuild merged everything again (other ids
    # of the same phone or email still link, say): the page must not call that a split.
    profiles = done.profiles
    was = {m.ucid for m in before.merges}
    unchanged = len(profiles) == 1 and set(profiles[0]["ids"].get("linkedUcid", [])) == was
    still = sorted({t for m in before.merges for t in m.via} - set(ids)) if unchanged else []
    return render(
        "unmerged.html",
        session=session,
        profiles=profiles,
        unchanged=unchanged and bool(was),
        changed=done.changed,
        ticked=sorted(ids),
        still=still,
    )


@router.get("/explain")
async def explain_form(request: Request) -> Response:
    session = await current_session(request)
    need(session, "profile.read")
    return await _explain_page(request, session, {}, None)


@router.post("/explain")
async def explain_write(request: Request) -> Response:
    session = await current_session(request)
    need(session, "profile.read")
    form = await checked_form(request, session)
    try:
        write = write_from_form(session.org_id, form)
        answer = await run_in_threadpool(explain, profiles_of(request), write, session.principal.actor)
    except ProfilehubError as exc:
        if not about_the_input(exc):
            raise
        return await _explain_page(request, session, form, None, exc)
    return await _explain_page(request, session, form, answer)


async def _explain_page(
    request: Request,
    session: ConsoleSession,
    form: dict[str, str],
    answer: dict[str, Any] | None,
    error: ProfilehubError | None = None,
) -> Response:
    strategy = await read(db_of(request), lambda c: profiles_of(request).strategies.get(c, session.org_id))
    return render(
        "explain.html",
        error.status if error else 200,
        session=session,
        form=form,
        error=error,
        fields=FIELDS,
        answer=answer,
        refused={r["ucid"] for r in answer["refused"]} if answer else set(),
        regions=sorted(strategy.regions),
        id_types=sorted(strategy.id_types),
        rows=ID_ROWS,
    )


# --- CRM people and companies (the CRM services and scopes) ---


@router.get("/people")
async def people(request: Request, page: int = 1, q: str = "") -> Response:
    session = await current_session(request)
    need(session, "crm:read", "crm:write")
    listing = await read(db_of(request), lambda c: crm.people_page(c, session.org_id, page, q))
    # A page past the end (an old link, a list that shrank) opens the last one, under its own
    # address, rather than "page 5 of 2" with nothing on it.
    if (last := listing.past_the_end) is not None:
        return see(f"{COOKIE_PATH}/people?{urlencode({'page': last, 'q': q})}")
    return render("people.html", session=session, listing=listing, q=q)


@router.get("/people/{person_id}")
async def person(request: Request, person_id: str) -> Response:
    session = await current_session(request)
    need(session, "crm:read", "crm:write")
    found = await read(db_of(request), lambda c: crm.person(c, session.org_id, person_id))
    return render("person.html", session=session, person=found)


@router.get("/companies")
async def companies(request: Request, page: int = 1, q: str = "") -> Response:
    session = await current_session(request)
    need(session, "crm:read", "crm:write")
    listing = await read(db_of(request), lambda c: crm.companies_page(c, session.org_id, page, q))
    if (last := listing.past_the_end) is not None:
        return see(f"{COOKIE_PATH}/companies?{urlencode({'page': last, 'q': q})}")
    return render("companies.html", session=session, listing=listing, q=q)


@router.get("/companies/{company_id}")
async def company(request: Request, company_id: str, page: int = 1) -> Response:
    session = await current_session(request)
    need(session, "crm:read", "crm:write")
    if (canonical := crm.canonical_id(company_id)) != company_id:
        # Typed in capitals, say: the company's own address, as the API reads a ``companyId``.
        query = f"?{request.url.query}" if request.url.query else ""
        return see(f"{COOKIE_PATH}/companies/{quote(canonical)}{query}")

    def company_and_people(c: Connection) -> tuple[dict[str, Any], crm.Listing]:
        found = crm.company(c, session.org_id, company_id)
        return found, crm.company_people_page(c, session.org_id, found["id"], page)

    found, listing = await read(db_of(request), company_and_people)
    if (last := listing.past_the_end) is not None:
        return see(f"{COOKIE_PATH}/companies/{quote(found['id'])}?{urlencode({'page': last})}")
    return render("company.html", session=session, company=found, listing=listing, q="")


# --- org admin ---


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    session = await current_session(request)
    # What the last block or unblock did, shown once (see ``_done``).
    flash = unquote(request.cookies.get(FLASH_COOKIE, ""))[:FLASH_CHARS]
    response = await _admin_page(request, session, flash=flash)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH)
    return response


async def _admin_page(
    request: Request,
    session: ConsoleSession,
    flash: str = "",
    form: dict[str, str] | None = None,
    error: ProfilehubError | None = None,
) -> Response:
    service = profiles_of(request)
    view = await read(db_of(request), lambda c: admin.org_admin(c, service, session.org_id))
    return render(
        "admin.html",
        error.status if error else 200,
        session=session,
        admin=view,
        keys=view.keys,
        flash=flash,
        form=form or {},
        error=error,
    )


def _done(request: Request, message: str) -> Response:
    """Back to the org page, which says ``message`` once. A cookie rather than the address: the
    value may be an email address, which must stay out of URLs, history and access logs."""
    response = see(f"{COOKIE_PATH}/admin")
    response.set_cookie(
        FLASH_COOKIE,
        quote(message[:FLASH_CHARS]),
        max_age=60,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request),
    )
    return response


def _what(value: str, id_type: str) -> str:
    return f"“{value.lower()}” ({'every idType' if id_type == '*' else f'idType {id_type}'})"


@router.post("/admin/blocked")
async def admin_block(request: Request) -> Response:
    session = await current_session(request)
    need(session, "profile.write")
    form = await checked_form(request, session)
    value, id_type = form.get("value", ""), form.get("id_type", "").strip() or "*"
    actor = session.principal.actor
    action = form.get("action", "block")
    if action not in ("block", "unblock"):
        # Not a form of this console's (the block form sends no action): block nothing.
        raise BadRequest(f"{action!r} is neither block nor unblock", field="action")
    if action == "unblock":
        if form.get("confirm") != "yes":
            # Unblocking lets the value link profiles again: one more step, naming it.
            return render("unblock.html", session=session, value=value, id_type=id_type)
        removed = await db_of(request).awrite(
            lambda c: unblock_value(c, session.org_id, value, id_type, actor)
        )
        if not removed:
            return _done(request, f"{_what(value, id_type)} was not blocked; nothing changed.")
        return _done(
            request, f"Unblocked {_what(value, id_type)}: writes carrying it match through it again."
        )
    try:
        if not value.strip():
            raise BadRequest("give the value to block", field="value")
        if len(value) > MAX_ID_LENGTH:
            # No id can hold it, so blocking it would block nothing.
            raise BadRequest(
                f"an id value is at most {MAX_ID_LENGTH} characters; this is {len(value)}", field="value"
            )
        await db_of(request).awrite(lambda c: block_value(c, session.org_id, value, id_type, actor))
    except ProfilehubError as exc:
        if not about_the_input(exc):
            raise
        return await _admin_page(request, session, form=form, error=exc)
    return _done(request, f"Blocked {_what(value, id_type)}: it is never used to match.")


@router.get("/{anything:path}")
async def no_such_page(request: Request, anything: str) -> Response:
    # Last: a mistyped console address gets a console page, not the API's JSON 404.
    if not anything:
        return see(COOKIE_PATH)  # /console/
    raise NotFound(f"no console page {anything!r}; start at /console", field="path")
