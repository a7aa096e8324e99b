"""Properties of random write sequences, on both databases.

1. A batch resolves exactly as the same records one by one: each sequence is written as batches
   into one store and record by record into another, with the same write times (a scripted clock
   with many same-millisecond ties), and the two stores must hold the same rows: profiles
   (attributes, timestamps, merged_into), ids (owner, ``_ts``) and change log, and every write
   the same answer. Ucids are generated, so they are compared by creation order.
2. Both are what the rules of docs/identity.md give, same-millisecond tie rules included: a small
   model of those rules (``_Model``) computes the expected profiles, ids and answers.
3. Either way, no id is owned by two profiles, no id belongs to a merged-away profile, and no
   primary (or secondary) limit is exceeded.

The sequences mix what makes resolution hard: secondary ids over their limit (eviction, with ties
on ``_ts`` broken by value), merges (and merges refused over a primary limit), blocked values,
writes naming a ucid (live, merged-away, or unknown) and same-millisecond writes.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any
from unittest import mock

import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from profilehub.errors import ProfilehubError
from profilehub.identity.normalize import Identifier
from profilehub.identity.resolve import PreparedWrite
from profilehub.identity.strategy import IdClass, Strategy
from profilehub.orgs import create_org
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult, prepare_write
from profilehub.store.database import Database
from profilehub.store.strategy_store import block_value, load_strategy, set_id_type

_org_ids = itertools.count(10_000)
UNKNOWN_UCID = "0191e5a0-0000-7000-8000-000000000000"
T0 = 1_800_000_000_000

id_values = {
    "email": st.sampled_from(["a@x.com", "A@X.com ", "b@x.com", "c@x.com", "null"]),
    "crm_id": st.sampled_from(["1", "2", "3", "0"]),
    "cellphone": st.sampled_from(["+4930123456", "+4930123457"]),
    # secondary, limit 2 in these orgs (see _new_org)
    "AdId": st.sampled_from([f"ad-{i}" for i in range(4)] + ["00000000-0000-0000-0000-000000000000"]),
    # secondary, limit 1 in these orgs, and g9 blocked for ga_clientid only
    "ga_clientid": st.sampled_from(["g1", "g2", "g3", "g9"]),
}
attributes = st.dictionaries(st.sampled_from(["k0", "k1", "k2"]), st.none() | st.integers(0, 9), max_size=2)
upserts = st.fixed_dictionaries({}, optional={"profile": st.none() | attributes, "consent": attributes})
one_id = st.sampled_from(
    ["email", "crm_id", "cellphone", "AdId", "AdId", "ga_clientid", "ga_clientid"]
).flatmap(lambda t: id_values[t].map(lambda v: (t, v)))
one_write = st.fixed_dictionaries(
    {
        # one to three ids (fewer per write means more profiles to merge later)
        "ids": st.lists(one_id, max_size=4).map(dict),
        "region": st.sampled_from(["EU", "EU", "UK"]),
        "upsert": upserts,
        # ms the clock moves before this write: 0 is a same-millisecond tie with the one before
        "tick": st.sampled_from([0, 0, 0, 1, 2]),
        # the n-th profile created before this round (or an unknown ucid), or no ucid
        "ucid": st.none() | st.integers(0, 6),
    }
).filter(lambda w: w["ids"] or w["ucid"] is not None)
rounds = st.lists(st.lists(one_write, min_size=1, max_size=12), min_size=1, max_size=3)


def _w(
    ids: dict[str, str],
    upsert: dict[str, Any] | None = None,
    tick: int = 0,
    region: str = "EU",
    ucid: int | None = None,
) -> dict[str, Any]:
    return {"ids": ids, "region": region, "upsert": upsert or {}, "tick": tick, "ucid": ucid}


# The two same-millisecond tie rules, always among the examples (random sequences hit them less
# often): two profiles written in one millisecond clash on an attribute and merge (the master's
# side wins); a second ga_clientid joins a profile in the millisecond of the first (limit 1: the
# lower value, the new one here, is evicted).
TIED_MERGE = [
    _w({"email": "a@x.com"}, {"profile": {"k0": 1}}),
    _w({"crm_id": "1"}, {"profile": {"k0": 2}}),
    _w({"email": "a@x.com", "crm_id": "1"}, tick=1),
]
# Found by this test: evicting two idTypes in one write listed their notices in the order the
# profile's ids happened to be held, which differs between a profile read from the database and
# one built up in a batch's memory.
EVICTION_NOTICE_ORDER = [
    [
        _w({"email": "a@x.com", "ga_clientid": "g2"}, region="UK"),
        _w({"email": "a@x.com", "AdId": "ad-2"}, region="UK"),
    ],
    [
        _w({"AdId": "ad-1"}, region="UK", ucid=0),
        _w({"email": "a@x.com", "ga_clientid": "g1", "AdId": "ad-0"}, region="UK"),
    ],
]
TIED_EVICTION = [_w({"email": "a@x.com", "ga_clientid": "g2"}), _w({"email": "a@x.com", "ga_clientid": "g1"})]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _new_org(db: Database) -> int:
    org_id = next(_org_ids)

    def setup(conn: sa.Connection) -> None:
        create_org(conn, org_id, "prop", ["EU", "UK"])
        # Low secondary limits make eviction (and its same-millisecond ties) frequent.
        set_id_type(conn, org_id, "AdId", max_per_profile=2)
        set_id_type(conn, org_id, "ga_clientid", max_per_profile=1)
        block_value(conn, org_id, "g9", "ga_clientid")

    db.write(setup)
    return org_id


def _ucids_in_creation_order(db: Database, org_id: int) -> list[str]:
    # ucids are time-ordered and strictly increasing within a process (identity/ucid.py)
    with db.read() as conn:
        return sorted(
            conn.execute(sa.text("SELECT ucid FROM profiles WHERE org_id = :o"), {"o": org_id}).scalars()
        )


class _Clock:
    """The write path's clock, scripted: both stores see the same time for the same write."""

    def __init__(self, times: list[int]) -> None:
        self.times = times
        self.calls = 0

    def __call__(self) -> int:
        now = self.times[min(self.calls, len(self.times) - 1)]
        self.calls += 1
        return now


def _answer(result: WriteResult | ProfilehubError) -> Any:
    if isinstance(result, ProfilehubError):
        return ("error", result.status, result.message, result.errors)
    return ("ok", result.created, result.notices, result.profile)


def _times(plan: list[list[dict[str, Any]]]) -> list[list[int]]:
    """The clock's times for each round: each write moves it by its ``tick`` (0 is a tie)."""
    ticks = itertools.accumulate((w["tick"] for round_ in plan for w in round_), initial=T0)
    flat = list(ticks)[1:]
    out: list[list[int]] = []
    for round_ in plan:
        out.append(flat[: len(round_)])
        flat = flat[len(round_) :]
    return out


def _writes(org_id: int, round_: list[dict[str, Any]], known: list[str]) -> list[ProfileWrite]:
    writes: list[ProfileWrite] = []
    for w in round_:
        ucid = None
        if w["ucid"] is not None:
            ucid = known[w["ucid"]] if w["ucid"] < len(known) else UNKNOWN_UCID
        writes.append(ProfileWrite(org_id, w["region"], w["ids"], w["upsert"], ucid))
    return writes


def _write_rounds(db: Database, org_id: int, plan: list[list[dict[str, Any]]], as_batch: bool) -> list[Any]:
    service = ProfileService(db)
    answers: list[Any] = []
    for round_, times in zip(plan, _times(plan), strict=True):
        writes = _writes(org_id, round_, _ucids_in_creation_order(db, org_id))
        # Refused writes do not ask the clock; both modes refuse the same ones, so they see the
        # same times. Writes that do ask get the times in order.
        with mock.patch("profilehub.profiles.now_ms", _Clock(times)):
            if as_batch:
                results = service.write_batch(writes, "prop")
            else:
                results = [r for w in writes for r in service.write_batch([w], "prop")]
        answers += [_answer(r) for r in results]
    return answers


def _expected(db: Database, org_id: int, plan: list[list[dict[str, Any]]]) -> tuple[list[Any], Any]:
    with db.read() as conn:
        model = _Model(load_strategy(conn, org_id))
    answers: list[Any] = []
    for round_, times in zip(plan, _times(plan), strict=True):
        writes = _writes(org_id, round_, [UNKNOWN_UCID] * len(model.profiles))
        answers += model.write_round(list(zip(writes, (w["ucid"] for w in round_), strict=True)), times)
    return answers, model.state()


def _stored(db: Database, org_id: int, answers: list[Any]) -> tuple[list[Any], Any]:
    """The store's answers and rows in the model's terms (profiles named by creation order)."""
    names = {u: f"P{n}" for n, u in enumerate(_ucids_in_creation_order(db, org_id))}
    rows = _rows(db, org_id)
    ids: dict[str, list[tuple[str, str, int]]] = {}
    for _region, id_type, value, ucid, ts in rows["ids"]:
        ids.setdefault(ucid, []).append((id_type, value, ts))
    state = {
        names[ucid]: (
            region,
            created_ts,
            updated_ts,
            json.loads(data),
            sorted(ids.get(ucid, [])),
            names[merged_into] if merged_into else None,
        )
        for ucid, region, created_ts, updated_ts, merged_into, data in rows["profiles"]
    }
    out: list[Any] = []
    for a in answers:
        if a[0] == "error":
            out.append(("error", a[1]))
        else:
            out.append(("ok", a[1], sorted(n["code"] for n in a[2]), names[a[3]["ucid"]]))
    return out, state


def _without_empty_categories(state: Any) -> Any:
    return {name: (*p[:3], {c: a for c, a in p[3].items() if a}, *p[4:]) for name, p in sorted(state.items())}


@dataclass
class _Profile:
    region: str
    created_ts: int
    updated_ts: int
    data: dict[str, dict[str, Any]]
    ids: dict[Identifier, int]
    merged_into: str | None = None


class _Model:
    """The resolution rules as docs/identity.md states them, over plain dicts: the expectation.

    Profiles are named P0, P1, ... in creation order, as ``_canonical`` names the store's. Ids
    are normalised by the product's own ``prepare_write`` (normalising is not what is modelled).
    """

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy
        self.profiles: dict[str, _Profile] = {}
        self.owner: dict[tuple[str, Identifier], str] = {}

    def rule(self, id_type: str) -> tuple[IdClass, int]:
        r = self.strategy.id_types[id_type]
        return r.id_class, r.max_per_profile

    def write_round(self, writes: list[tuple[ProfileWrite, int | None]], times: list[int]) -> list[Any]:
        clock = iter(times)
        names = list(self.profiles)  # profiles created before this round, in creation order
        answers: list[Any] = []
        for write, ref in writes:
            try:
                prepared = prepare_write(self.strategy, write, "prop")
            except ProfilehubError as exc:
                answers.append(("error", exc.status))
                continue
            now = next(clock)
            named = (names[ref] if ref < len(names) else "unknown") if ref is not None else None
            answers.append(self.write(prepared, named, now))
        return answers

    def write(self, w: PreparedWrite, named_ref: str | None, now: int) -> Any:
        codes = [n.code for n in w.notices]
        owners = {i: self.owner[(w.region, i)] for i in w.ids if (w.region, i) in self.owner}
        candidates = set(owners.values())
        named = None
        if named_ref is not None:
            target = self.profiles.get(named_ref)
            if target is not None and target.region == w.region:
                named = target.merged_into or named_ref  # a merged-away ucid resolves to its master
                candidates.add(named)
            elif not w.ids:
                return ("error", 404)
            else:
                codes.append("ucid_not_found")
        refused: set[str] = set()
        merged: list[str] = []
        if not candidates:
            master = f"P{len(self.profiles)}"
            self.profiles[master] = _Profile(w.region, now, now, {}, {})
            created = True
        else:
            created = False
            # first created is the master (ties: the ucid, which is creation order)
            ordered = sorted(candidates, key=lambda u: (self.profiles[u].created_ts, int(u[1:])))
            master = ordered[0]
            planned = set(self.profiles[master].ids)
            for other in ordered[1:]:
                union = planned | set(self.profiles[other].ids)
                over = Counter(i.id_type for i in union)
                if any(self.rule(t)[0] is IdClass.PRIMARY and n > self.rule(t)[1] for t, n in over.items()):
                    refused.add(other)
                    codes.append("merge_refused")
                else:
                    merged.append(other)
                    planned = union
            if named is not None and named in refused:
                master, merged, refused = named, [], set(ordered) - {named}
        m = self.profiles[master]
        kept: set[str] = set()
        for other in merged:
            o = self.profiles[other]
            for i, ts in o.ids.items():
                m.ids[i] = ts
                self.owner[(w.region, i)] = master
            for category, attrs in o.data.items():
                mine = m.data.get(category, {})
                # the newer category wins clashes; written in the same millisecond, the master's side
                newer = int(attrs.get("_ts", "0")) > int(mine.get("_ts", "0"))
                m.data[category] = {**mine, **attrs} if newer else {**attrs, **mine}
                if category == "consent":
                    # except that a denial on either side wins over a grant
                    for name in (mine.keys() & attrs.keys()) - {"_ts"}:
                        old, new = (mine[name], attrs[name]) if newer else (attrs[name], mine[name])
                        if self.denies(old) and not self.denies(new):
                            m.data[category][name] = old
                            kept.add(name)
            o.ids, o.data, o.merged_into, o.updated_ts = {}, {}, master, now
            for p in self.profiles.values():
                if p.merged_into == other:
                    p.merged_into = master  # profiles merged into it earlier follow
        for i in w.ids:
            if owners.get(i) in refused:
                codes.append("id_owned_elsewhere")
                continue
            cls, limit = self.rule(i.id_type)
            held_of_type = sum(1 for j in m.ids if j.id_type == i.id_type)
            if i not in m.ids and cls is IdClass.PRIMARY and held_of_type >= limit:
                codes.append("id_limit")
                continue
            m.ids[i] = now  # attached, or already held: last seen now
            self.owner[(w.region, i)] = master
        for id_type in sorted({i.id_type for i in m.ids}):
            cls, limit = self.rule(id_type)
            held = sorted((ts, i.value) for i, ts in m.ids.items() if i.id_type == id_type)
            if cls is IdClass.SECONDARY:
                # the oldest over the limit go; same millisecond: the lowest value first
                for _, value in held[: max(0, len(held) - limit)]:
                    del m.ids[Identifier(id_type, value)]
                    del self.owner[(w.region, Identifier(id_type, value))]
                    codes.append("id_evicted")
        for category, upsert in w.upsert.items():
            if upsert is None:
                m.data[category] = {"_ts": str(now)}
                continue
            current = m.data.setdefault(category, {})
            for name, value in upsert.items():
                if value is None:
                    current.pop(name, None)
                elif (
                    category == "consent"
                    and merged
                    and self.denies(current.get(name))
                    and not self.denies(value)
                ):
                    kept.add(name)  # a merging write's grant does not lift a denial either
                else:
                    current[name] = value
            current["_ts"] = str(now)
        codes += ["consent_kept_denied" for name in kept if name in m.data.get("consent", {})]
        m.updated_ts = now
        return ("ok", created, sorted(codes), master)

    def denies(self, value: Any) -> bool:
        return value is not None and str(value) in self.strategy.consent_denials

    def state(self) -> Any:
        return {
            name: (
                p.region,
                p.created_ts,
                p.updated_ts,
                {c: a for c, a in p.data.items()},
                sorted((i.id_type, i.value, ts) for i, ts in p.ids.items()),
                p.merged_into,
            )
            for name, p in self.profiles.items()
        }


def _rows(db: Database, org_id: int) -> dict[str, Any]:
    with db.read() as conn:

        def rows(sql: str) -> list[Any]:
            return [tuple(r) for r in conn.execute(sa.text(sql), {"o": org_id})]

        return {
            "profiles": rows(
                "SELECT ucid, region, created_ts, updated_ts, merged_into, data FROM profiles WHERE org_id = :o"
            ),
            "ids": rows("SELECT region, id_type, value, ucid, ts FROM profile_ids WHERE org_id = :o"),
            "changes": rows(
                "SELECT ts, actor, entity, entity_id, action, detail FROM changes WHERE org_id = :o AND entity = 'profile'"
            ),
        }


def _canonical(db: Database, org_id: int, answers: list[Any]) -> Any:
    """Everything the store holds and answered, with each ucid named by its creation order."""
    names = {u: f"P{n}" for n, u in enumerate(_ucids_in_creation_order(db, org_id))}
    rows = _rows(db, org_id)
    text = json.dumps(
        {
            "answers": answers,
            # Row order is the database's; change ids are random within a millisecond.
            "profiles": sorted([[*r[:5], json.loads(r[5])] for r in rows["profiles"]], key=json.dumps),
            "ids": sorted(map(list, rows["ids"])),
            "changes": sorted(
                [[*r[:5], json.loads(r[5])] for r in rows["changes"]], key=lambda r: json.dumps(r)
            ),
        },
        sort_keys=True,
        default=str,
    )
    return json.loads(_UUID.sub(lambda m: names.get(m.group(0), m.group(0)), text))


def _check_invariants(db: Database, org_id: int) -> None:
    with db.read() as conn:
        strategy = load_strategy(conn, org_id)
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
        rule = strategy.id_types[id_type]
        assert rule.id_class is not IdClass.DISABLED
        assert n <= rule.max_per_profile, (
            f"{n} values of {id_type} in one profile (limit {rule.max_per_profile})"
        )


def _examples(db: Database) -> int:
    # The hypothesis body runs mostly on SQLite; PostgreSQL gets a smaller run of the same property.
    return 80 if db.dialect == "sqlite" else 20


def test_a_batch_resolves_exactly_as_the_same_records_one_by_one(db: Database) -> None:
    @settings(max_examples=_examples(db), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plan=rounds)
    @example(plan=[TIED_MERGE])
    @example(plan=[TIED_EVICTION])
    @example(plan=EVICTION_NOTICE_ORDER)
    def check(plan: list[list[dict[str, Any]]]) -> None:
        note(f"plan: {plan!r}")
        batched, single = _new_org(db), _new_org(db)
        batch_answers = _write_rounds(db, batched, plan, as_batch=True)
        single_answers = _write_rounds(db, single, plan, as_batch=False)
        for org_id in (batched, single):
            _check_invariants(db, org_id)
        for answer in single_answers:
            if answer[0] == "error":
                # Refused: every id blocked (400), or a named ucid that is unknown with no usable id (404).
                assert answer[1] in (400, 404), answer
        assert _canonical(db, batched, batch_answers) == _canonical(db, single, single_answers)
        # And both are what the documented rules, tie rules included, give.
        want_answers, want_state = _expected(db, single, plan)
        got_answers, got_state = _stored(db, single, single_answers)
        assert got_answers == want_answers
        assert _without_empty_categories(got_state) == _without_empty_categories(want_state)

    check()
