"""The CRM's errors: ``profilehub.errors`` classes whose message always starts with ``<field>: ``.

``ProfilehubError`` leaves a message alone when it already starts with the field's name, which
also skips the prefix when the text merely begins with the same letters (a custom attribute
``e`` and the message "expected a string", an email ``emails@x.com`` and the field ``emails``).
Every CRM message must start with the field it is about, so these check for ``<field>: ``.
"""

from __future__ import annotations

from typing import Any

from profilehub import errors


def _named(message: str, field: str | None) -> str:
    return f"{field}: {message}" if field and not message.startswith(f"{field}: ") else message


class BadRequest(errors.BadRequest):
    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(_named(message, field), field=field, **kwargs)


class Conflict(errors.Conflict):
    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(_named(message, field), field=field, **kwargs)


class NotFound(errors.NotFound):
    def __init__(self, message: str, *, field: str | None = None, **kwargs: Any) -> None:
        super().__init__(_named(message, field), field=field, **kwargs)
