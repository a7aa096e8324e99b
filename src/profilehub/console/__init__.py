"""The console at ``/console``: server-rendered pages for people to look at profiles, their
identity graph and history, erase a person, browse CRM people and companies, and see their org.

Thin routes (``routes``) over the services the API uses; templates and static assets (the
vendored graph library among them, with its licence) live beside this file. See docs/console.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from profilehub.console.pages import STATIC
from profilehub.console.routes import router
from profilehub.console.web import COOKIE_PATH, error_page_of
from profilehub.routing_errors import answer_pages_under


def install_console(app: FastAPI) -> None:
    # The assets first: the router ends with a catch-all page for unknown console addresses.
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(router)
    # A method an address does not take (a DELETE, a PUT) is a console page too, not API JSON.
    answer_pages_under(app, COOKIE_PATH, error_page_of)
