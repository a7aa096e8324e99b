"""Suppression of erased ids: what an erasure suppresses, and lifting it. Knows nothing of HTTP.

The rules (fingerprints, which writes drop what) are ``profilehub.identity.suppression`` and
``normalise_ids``; the rows are ``profilehub.store.suppression_store``. See docs/privacy.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest
from profilehub.identity.normalize import (
    Identifier,
    email_hashes,
    normalise_ids,
    normalise_value,
    phone_hashes,
)
from profilehub.identity.strategy import CRM_PERSON_ID, Strategy
from profilehub.identity.suppression import ID_SUPPRESSED
from profilehub.store.changes import change_row, record
from profilehub.store.database import lock_scope
from profilehub.store.suppression_store import suppress, unsuppress
from profilehub.store.tables import profile_ids

MAX_UNSUPPRESS_VALUES = 400


def with_hashes(ids: Sequence[Identifier]) -> list[Identifier]:
    """``ids`` and, for each raw email or phone number, every hash a write derives from it."""
    out: list[Identifier] = []
    for ident in ids:
        out.append(ident)
        if ident.id_type == "email":
            out += [Identifier(t, h) for t, h in email_hashes(ident.value).items()]
        elif ident.id_type == "cellphone":
            out += [Identifier(t, h) for t, h in phone_hashes(ident.value).items()]
    return out


def suppress_erased(conn: Connection, org_id: int, region: str, ucids: Sequence[str]) -> int:
    """Suppress every id the profiles ``ucids`` hold (read before they are erased; the link to a
    CRM person is left out, a new person never has the same id); how many fingerprints are new."""
    held: list[Identifier] = []
    unique = sorted(set(ucids))
    for start in range(0, len(unique), 500):
        rows = conn.execute(
            sa.select(profile_ids.c.id_type, profile_ids.c.value).where(
                profile_ids.c.org_id == org_id,
                profile_ids.c.region == region,
                profile_ids.c.ucid.in_(unique[start : start + 500]),
                profile_ids.c.id_type != CRM_PERSON_ID,
            )
        )
        held += [Identifier(t, v) for t, v in rows]
    return suppress(conn, org_id, region, with_hashes(held))


def suppressed_contact(strategy: Strategy, region: str, id_type: str, value: str) -> bool:
    """Whether a raw email or phone number (as the CRM holds it) is suppressed in ``region``: by
    the same rule as a CDP write's (the raw value or any of its hashes)."""
    found = strategy.suppression
    if found is None or not found.active(region):
        return False
    try:
        _, notices = normalise_ids(strategy, {id_type: value}, region, suppression=found)
    except BadRequest:
        return False  # not an id the graph can hold (the CRM keeps it; prepare_person leaves it out)
    return any(n.code == ID_SUPPRESSED for n in notices)


Lookup = Callable[[str, Any, str], list[Identifier]]  # (key, value, region) -> stored ids


def unsuppress_ids(
    conn: Connection,
    strategy: Strategy,
    region: str,
    ids: Any,
    actor: str,
    lookup: Lookup,
    values: Callable[[Any, str, int], list[Any]],
) -> dict[str, Any]:
    """Lift the suppression of ``{idType or namespace: [values]}`` in ``region`` (already checked);
    a raw email or phone number lifts its hashes too. Answers how many fingerprints were removed."""
    if not isinstance(ids, dict) or not ids:
        raise BadRequest("must name at least one idType (or namespace) with values", field="ids")
    wanted: list[Identifier] = []
    total = 0
    for key, raw in ids.items():
        given = values(raw, f"ids.{key}", MAX_UNSUPPRESS_VALUES)
        total += len(given)
        if total > MAX_UNSUPPRESS_VALUES:
            raise BadRequest(f"at most {MAX_UNSUPPRESS_VALUES} values in one call", field="ids")
        for value in given:
            wanted += lookup(key, value, region)
            if key in ("email", "cellphone") and isinstance(value, str):
                # The raw form too: suppressed while the org kept raw ids, which it may no longer.
                try:
                    raw_id = Identifier(key, normalise_value(strategy, key, value, f"ids.{key}", region))
                except BadRequest:
                    continue
                wanted += with_hashes([raw_id])
    org_id = strategy.org_id
    lock_scope(conn, org_id, f"profiles:{region}")
    removed = unsuppress(conn, org_id, region, wanted)
    record(
        conn,
        [change_row(org_id, actor, "suppression", region, "unsuppress", {"fingerprints": removed})],
    )
    return {"orgId": org_id, "region": region, "removedFingerprints": removed}
