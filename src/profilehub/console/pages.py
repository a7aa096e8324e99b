"""Rendering: the Jinja2 templates, the headers every console answer carries, the error page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import orjson
from starlette.responses import HTMLResponse, Response

from profilehub.console.person import iso, short_ucid

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# Every script, style and image comes from profilehub itself; nothing inline, no eval, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages show personal data: never kept by the browser or a proxy.
    "Cache-Control": "no-store",
}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["iso"] = iso


def iso_text(text: Any) -> str:
    """A CRM time (ISO 8601, ``2026-12-03T07:54:06.899+00:00``) as the CDP pages show theirs
    (``2026-12-03 07:54:06 UTC``); the raw value is kept beside it, in a title."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text or "")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_env.filters["iso_text"] = iso_text
_env.filters["short_ucid"] = short_ucid


def show(value: Any) -> str:
    """An attribute value as text: scalars as they are, lists and objects as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return orjson.dumps(value).decode()


_env.filters["show"] = show


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(template: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("session", None)
    # A form page shows its fields empty and no error, unless it comes back refused (``refused``).
    context.setdefault("error", None)
    context.setdefault("form", {})
    html = _env.get_template(template).render(**context)
    return secure(HTMLResponse(html, status_code=status))


TITLES = {
    400: "That did not work",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not done this way",
    409: "Conflict",
    413: "Too large",
    429: "Slow down",
    503: "Try again shortly",
}


def error_page(status: int, message: str, session: Any = None) -> Response:
    return render(
        "error.html",
        status,
        title=TITLES.get(status, "Something went wrong"),
        message=message,
        session=session,
    )
