"""The console's "explain a write" form as the write it describes, for ``lineage.explain`` (the
service behind ``POST /cdp/v1/users/_explain``): a region, up to ``ID_ROWS`` ids and a ucid."""

from __future__ import annotations

from profilehub.errors import BadRequest
from profilehub.profiles import ProfileWrite

ID_ROWS = 4
# The form's fields, which its errors name: shown beside them; any other error above the form.
FIELDS = (
    "region",
    "ucid",
    *(f"{name}_{row}" for row in range(1, ID_ROWS + 1) for name in ("id_type", "value")),
)


def write_from_form(org_id: int, form: dict[str, str]) -> ProfileWrite:
    ids: dict[str, str] = {}
    for row in range(1, ID_ROWS + 1):
        id_type = form.get(f"id_type_{row}", "").strip()
        value = form.get(f"value_{row}", "")
        if not id_type and not value.strip():
            continue
        if not id_type:
            raise BadRequest("choose the idType of this value", field=f"id_type_{row}")
        if not value.strip():
            # Named here: the write would drop it as unusable and the answer blamed blocked ids.
            raise BadRequest(
                f"the {id_type} value is empty; give one, or set the row back to idType… to leave it out",
                field=f"value_{row}",
            )
        if id_type in ids:
            raise BadRequest(
                f"{id_type} is given twice; a write carries one value per idType", field=f"id_type_{row}"
            )
        ids[id_type] = value
    ucid = form.get("ucid", "").strip() or None
    return ProfileWrite(org_id, form.get("region", ""), ids, {}, ucid)
