"""CRM search text is case-folded (``str.casefold``), as search terms now are, rather than lowercased,
so a search finds text in any case: ``STRASSE`` finds ``Straße`` (docs/crm.md).

The stored text is folded in place rather than rebuilt from each record's values: folding the
lowercased text gives the folded text of the values (``casefold(lower(s)) == casefold(s)`` for
every code point and for lower()'s one context rule, the final sigma, whose ``ς`` folds to the medial one),
and it needs neither the custom objects' attribute types nor the code that picks each object's
fields, which change with later versions. Rows are read in key order, a batch at a time, so memory
stays flat on a store of millions of records; the whole runs in the migration's one transaction.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

BATCH = 1000

records = sa.table(
    "crm_records",
    sa.column("org_id", sa.BigInteger),
    sa.column("object_slug", sa.String),
    sa.column("record_id", sa.String),
    sa.column("search_text", sa.Text),
)
KEY = (records.c.org_id, records.c.object_slug, records.c.record_id)


def upgrade() -> None:
    conn = op.get_bind()
    refold = (
        records.update()
        .where(
            records.c.org_id == sa.bindparam("k_org"),
            records.c.object_slug == sa.bindparam("k_slug"),
            records.c.record_id == sa.bindparam("k_id"),
        )
        .values(search_text=sa.bindparam("folded"))
    )
    after: tuple[object, ...] | None = None
    while True:
        batch = sa.select(*KEY, records.c.search_text).order_by(*KEY).limit(BATCH)
        if after is not None:
            batch = batch.where(sa.tuple_(*KEY) > sa.tuple_(*after))
        rows = conn.execute(batch).all()
        if not rows:
            return
        changed = [
            {"k_org": org_id, "k_slug": slug, "k_id": record_id, "folded": text.casefold()}
            for org_id, slug, record_id, text in rows
            if text.casefold() != text
        ]
        if changed:
            conn.execute(refold, changed)
        after = tuple(rows[-1][:3])


def downgrade() -> None:
    # Nothing to undo, and nothing could: folding lost which "ss" was an "ß". The older version
    # lowercases its terms, which finds folded text wherever lower() and casefold() agree (all but
    # ß, ẞ, final sigma, ligatures and a few others); a record's next write rebuilds its text.
    pass
