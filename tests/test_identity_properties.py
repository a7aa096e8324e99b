"""Property: random sequences of writes never leave an id owned by two profiles, never leave an id
with a merged-away profile, and never exceed a primary (or secondary) limit."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profilehub.identity.strategy import DEFAULT_ID_TYPES, IdClass
from profilehub.orgs import create_org
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database

LIMITS = {t.name: (t.id_class, t.max_per_profile) for t in DEFAULT_ID_TYPES}
_org_ids = itertools.count(10_000)

id_values = {
    "email": st.sampled_from(["a@x.com", "A@X.com ", "b@x.com", "c@x.com", "null"]),
    "crm_id": st.sampled_from(["1", "2", "3", "0"]),
    "cellphone": st.sampled_from(["+4930123456", "+4930123457"]),
    "AdId": st.sampled_from([f"ad-{i}" for i in range(8)] + ["00000000-0000-0000-0000-000000000000"]),
    "ga_clientid": st.sampled_from(["g1", "g2", "g3"]),
}
one_write = st.fixed_dictionaries(
    {},
    optional={k: v for k, v in id_values.items()},
).filter(bool)
writes = st.lists(
    st.tuples(one_write, st.sampled_from(["EU", "UK"]), st.integers(0, 3)), min_size=1, max_size=25
)


def _check_invariants(db: Database, org_id: int) -> None:
    with db.read() as conn:
        ids = conn.execute(
            sa.text("SELECT region, id_type, value, ucid FROM profile_ids WHERE org_id = :o"), {"o": org_id}
        ).all()
        masters = {
            r.ucid: r.region
            for r in conn.execute(
                sa.text("SELECT ucid, region FROM profiles WHERE org_id = :o AND merged_into IS NULL"),
                {"o": org_id},
            )
        }
        merged = conn.execute(
            sa.text("SELECT ucid, merged_into FROM profiles WHERE org_id = :o AND merged_into IS NOT NULL"),
            {"o": org_id},
        ).all()
    owners = Counter((r.region, r.id_type, r.value) for r in ids)
    assert max(owners.values(), default=1) == 1, "an id is owned twice"
    for r in ids:
        assert r.ucid in masters, f"id {r.id_type} belongs to a merged-away or missing profile"
        assert masters[r.ucid] == r.region, "an id crossed regions"
    for ucid, master in merged:
        assert master in masters, f"{ucid} resolves to {master}, which is not a master"
    per_profile = Counter((r.ucid, r.id_type) for r in ids)
    for (_, id_type), n in per_profile.items():
        cls, limit = LIMITS[id_type]
        assert cls is not IdClass.DISABLED
        assert n <= limit, f"{n} values of {id_type} in one profile (limit {limit})"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=writes)
def test_random_write_sequences_keep_identity_invariants(db: Database, sequence: list[Any]) -> None:
    org_id = next(_org_ids)
    db.write(lambda c: create_org(c, org_id, "prop", ["EU", "UK"]))
    service = ProfileService(db)
    batch = [ProfileWrite(org_id, region, ids, {"profile": {f"k{n}": n}}) for ids, region, n in sequence]
    # Half the time as one batch, half one by one: both must keep the invariants.
    if len(sequence) % 2:
        results = service.write_batch(batch, "prop")
    else:
        results = [r for w in batch for r in service.write_batch([w], "prop")]
    for ids, result in zip(sequence, results, strict=True):
        if isinstance(result, Exception):
            # Only a write whose every id is blocked may be refused.
            assert getattr(result, "status", None) == 400 and "usable id" in str(result), (ids, result)
    _check_invariants(db, org_id)
