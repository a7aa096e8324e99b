"""What the console's search box asks the profile service: the one search ``_search`` runs.

A person types an email address, a phone number or a ucid into one box, or picks an idType (or
namespace) and gives its value. Raw emails and phone numbers are normalised and hashed by the
service exactly as writes are, so a raw address finds a profile that only holds its hashes.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from profilehub.errors import BadRequest
from profilehub.profiles import ProfileService

_PHONE = re.compile(r"\+?[0-9][0-9 ().\-]{4,}")


def search_terms(text: str, id_type: str = "") -> dict[str, list[str]]:
    """The ``search`` object of ``_search`` for what was typed (``id_type`` empty: guess it)."""
    value = text.strip()
    if not value:
        raise BadRequest("type an email address, a phone number, a ucid or another id", field="q")
    chosen = id_type.strip()
    if chosen:
        return {chosen: [value]}
    try:
        return {"ucid": [str(uuid.UUID(value))]}
    except ValueError:
        pass
    if "@" in value:
        return {"email": [value]}
    if _PHONE.fullmatch(value):
        return {"cellphone": [value]}
    raise BadRequest(
        "not an email address, a phone number (+<country code><number>) or a ucid; "
        "to look up another id, choose its idType",
        field="q",
    )


def find_people(service: ProfileService, org_id: int, text: str, id_type: str = "") -> list[dict[str, Any]]:
    return service.search(org_id, None, search_terms(text, id_type))
