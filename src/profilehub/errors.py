"""The one error model.

Every failure the core reports is a ``ProfilehubError`` carrying its HTTP status, a message that
names the offending field, and optionally a per-field ``errors`` map. The HTTP shell renders all
of them with ``error_body``; the CLI turns them into ``click.ClickException``. Nothing else builds
error JSON, so codes and shapes cannot drift between routes.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class ProfilehubError(Exception):
    status = 500

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        errors: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Every message starts with "<field>: " (a message that merely begins with the same letters,
        # like "emails@x.com ..." for field "emails", still gets the prefix).
        if field and not message.startswith(f"{field}: "):
            message = f"{field}: {message}"
        super().__init__(message)
        self.message = message
        self.field = field
        self.errors = errors if errors is not None else ({field: message} if field else None)
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword arguments are not in ``args``: rebuild from the fields, so an error made in a
        # worker process (the importer's) arrives whole.
        return (_rebuild, (type(self), self.message, self.field, self.errors, self.headers))


def _rebuild(
    cls: type[ProfilehubError],
    message: str,
    field: str | None,
    errors: dict[str, str] | None,
    headers: dict[str, str],
) -> ProfilehubError:
    return cls(message, field=field, errors=errors, headers=headers)


def each_or_error(fn: Callable[[In], Out], items: Iterable[In]) -> list[Out | ProfilehubError]:
    """``fn`` of each item, or the ``ProfilehubError`` that refused it: batches report per record."""
    out: list[Out | ProfilehubError] = []
    for item in items:
        try:
            out.append(fn(item))
        except ProfilehubError as exc:
            out.append(exc)
    return out


class BadRequest(ProfilehubError):
    status = 400


class Unauthorized(ProfilehubError):
    status = 401


class Forbidden(ProfilehubError):
    status = 403


class NotFound(ProfilehubError):
    status = 404


class Conflict(ProfilehubError):
    status = 409


class Suppressed(Conflict):
    """A write every id of which is suppressed (an erased person's): it writes nothing.

    ``reason`` names it among an import's rejects (where others are named by their field)."""

    reason = "id_suppressed"


class PayloadTooLarge(ProfilehubError):
    status = 413


class UnsupportedMediaType(ProfilehubError):
    status = 415


class Unprocessable(ProfilehubError):
    status = 422


class TooManyRequests(ProfilehubError):
    status = 429


class ServiceUnavailable(ProfilehubError):
    status = 503


# Messages quote what the client sent (a key, a value, a field path holding a key). Quoted as
# is, a 1 MB key made a 5 MB error (field prefix, quote, and again in ``errors``): so any run of
# text without a space longer than ECHO_LIMIT is cut there, and any whole message at
# MESSAGE_LIMIT, each marked with an ellipsis. profilehub's own words never come near either.
ECHO_LIMIT = 100
MESSAGE_LIMIT = 1000
# A body of many bad fields names the first ERRORS_LIMIT of them in ``errors``.
ERRORS_LIMIT = 100
ELLIPSIS = "\u2026"
_LONG_RUN = re.compile(rf"\S{{{ECHO_LIMIT + 1},}}")


def excerpt(text: str) -> str:
    """``text`` with echoed input capped: runs without a space at ECHO_LIMIT, all at MESSAGE_LIMIT."""
    if len(text) > ECHO_LIMIT:
        text = _LONG_RUN.sub(lambda m: m.group()[:ECHO_LIMIT] + ELLIPSIS, text)
        if len(text) > MESSAGE_LIMIT:
            text = text[:MESSAGE_LIMIT] + ELLIPSIS
    return text


def unknown_field_message(name: str, known: Iterable[str]) -> str:
    """ "unknown field", naming the known field it is close to (``region`` beside ``regions``)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f"unknown field; did you mean {close[0]}?" if close else "unknown field"


def shape_errors(errors: Iterable[Mapping[str, Any]], known: Iterable[str]) -> dict[str, str]:
    """A request model's validation errors (pydantic's ``errors()``) as field path to message, the
    first per field, in the words every shape error of both dialects uses."""
    out: dict[str, str] = {}
    for err in errors:
        kind = str(err.get("type"))
        loc = tuple(err.get("loc", ()))
        msg = {"extra_forbidden": "unknown field", "missing": "field required"}.get(
            kind, str(err.get("msg", "invalid"))
        )
        if kind == "extra_forbidden" and len(loc) == 1:
            msg = unknown_field_message(str(loc[0]), known)
        out.setdefault(".".join(str(p) for p in loc) or "body", msg)
    return out


def printable_key(key: str) -> str:
    """``key`` with control characters and lone surrogates escaped (``\\u0000``, ``\\ud800``)."""
    if key.isprintable():
        return key
    return "".join(
        c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else f"\\u{ord(c):04x}" for c in key
    )


def _printable(text: str) -> str:
    # Messages quote what the client sent; a lone surrogate in it would make the error itself
    # unencodable as UTF-8 JSON, so it is shown escaped instead.
    text = excerpt(text)
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_body(status: int, message: str, errors: dict[str, str] | None = None) -> dict[str, Any]:
    """The single error body shape used by every endpoint of both dialects."""
    body: dict[str, Any] = {"success": False, "status": status, "message": _printable(message)}
    if errors:
        body["errors"] = {_printable(k): _printable(v) for k, v in islice(errors.items(), ERRORS_LIMIT)}
    return body
