"""404 and 405 from the router, in the error shape and saying what would have worked.

A path with a trailing slash is not redirected (Starlette's 307 takes its address from the
``Host`` header and has no body): it is a 404 naming the route without the slash. A 405 names
every method the path has, in its message and its ``Allow`` header (Starlette's names only the
methods of the first route it tried). Under a prefix of pages for people (the console's,
``answer_pages_under``) the 405 is that site's page instead of the API's JSON.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from profilehub.http import error_response

# A site's error page: (request, status, message) -> the page (async: it may read the visitor's
# session to keep the page's signed-in bar).
ErrorPage = Callable[[Request, int, str], Awaitable[Response]]


def _templates(app: FastAPI) -> list[str]:
    documented = list(app.openapi().get("paths", {}))
    return documented + [p for r in app.router.routes if isinstance(p := getattr(r, "path", None), str)]


def _template(app: FastAPI, path: str) -> str | None:
    """The template of a route serving ``path`` with some method, if one does."""
    for template in _templates(app):
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    return None


def allowed_methods(app: FastAPI, template: str) -> list[str]:
    """Every method some route of ``template`` answers (from the OpenAPI paths, plus the route's
    own for undocumented routes such as /docs)."""
    methods = {m.upper() for m in app.openapi().get("paths", {}).get(template, {})}
    if "GET" in methods:
        methods.add("HEAD")  # answered on every GET route (http.HeadAsGetMiddleware)
    return sorted(methods)


def install_routing_errors(app: FastAPI) -> None:
    @app.exception_handler(404)
    async def _not_found(request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        if len(path) > 1 and path.endswith("/"):
            target = _template(app, path.rstrip("/"))
            if target is not None:
                return error_response(
                    404,
                    f"path: no route ends with a slash; send it to {target} (without the trailing slash)",
                    {"path": f"remove the trailing slash: {target}"},
                )
        return error_response(
            404, "path: no such route; the routes are listed at /docs", {"path": "no such route"}
        )

    @app.exception_handler(405)
    async def _method_not_allowed(request: Request, exc: HTTPException) -> Response:
        route = request.scope.get("route")
        template, fallback = getattr(route, "path", None), getattr(route, "methods", None)
        page = _page_of(request)
        if page is None:
            return method_not_allowed(request, template, fallback)
        # A person reads the address they used, not a route template (the console's catch-all).
        allow = ", ".join(_methods(request, template, fallback))
        response = await page(
            request, 405, f"method: {request.method} is not allowed on {request.url.path}; allowed: {allow}"
        )
        response.headers["Allow"] = allow
        return response


def answer_pages_under(app: FastAPI, prefix: str, page: ErrorPage) -> None:
    """The router's 405 for a path under ``prefix`` is ``page`` (HTML for a browser) rather than
    the API's JSON; the router's 404 there is the site's own catch-all route's business."""
    app.state.error_pages = {**getattr(app.state, "error_pages", {}), prefix: page}


def _page_of(request: Request) -> ErrorPage | None:
    path = request.url.path
    pages: dict[str, ErrorPage] = getattr(request.app.state, "error_pages", {})
    return next((p for prefix, p in pages.items() if path == prefix or path.startswith(prefix + "/")), None)


def method_not_allowed(
    request: Request, template: str | None, fallback: Iterable[str] | None = None
) -> Response:
    """A 405 for ``template`` naming every method it takes, in the message and ``Allow``."""
    allow = ", ".join(_methods(request, template, fallback))
    return error_response(
        405,
        f"method: {request.method} is not allowed on {template}; allowed: {allow}",
        {"method": f"allowed: {allow}"},
        headers={"Allow": allow},
    )


def _methods(request: Request, template: str | None, fallback: Iterable[str] | None) -> list[str]:
    """Every method ``template`` takes (those of every route of the path, not only the first's)."""
    methods = allowed_methods(request.app, template) if template else []
    return methods or _answering_methods(request) or sorted(fallback or ())


# The methods a route may take; HEAD follows GET (http.HeadAsGetMiddleware).
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _answering_methods(request: Request) -> list[str]:
    """The methods some route answers at the request's path, asking the routes themselves: for
    undocumented routes (the console's), where a page's GET and its form's POST are two routes
    and the router's 405 knows only the first."""
    found = set()
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            found.add(method)
    if "GET" in found:
        found.add("HEAD")
    return sorted(found)
