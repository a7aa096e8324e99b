"""The identity rules of docs/identity.md, one table per rule, on the pure core: ``apply_write``
over ``MemoryStorage``, no database (SQLite and PostgreSQL are never opened here).

Profiles are set up through the storage interface itself (``_seed``), with chosen ucids, creation
times and id timestamps, so each row states exactly the situation its rule is about.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from hypothesis import example, given, settings

from profilehub.errors import BadRequest, NotFound, ProfilehubError
from profilehub.identity.memory import MemoryStorage
from profilehub.identity.normalize import Identifier, normalise_ids
from profilehub.identity.resolve import PreparedWrite, WriteOutcome, apply_write
from profilehub.identity.storage import ProfileState
from profilehub.identity.strategy import IdClass, Strategy, default_strategy, edited_id_type
from profilehub.identity.ucid import UcidBlock, new_ucid
from profilehub.profiles import prepare_write
from tests.test_identity_properties import (
    EVICTION_NOTICE_ORDER,
    TIED_EVICTION,
    TIED_MERGE,
    UNKNOWN_UCID,
    _Model,
    _times,
    _without_empty_categories,
    _writes,
    rounds,
)

ORG = 7
T = 1_800_000_000_000  # write times are T + n ms
A = "00000000-0000-7000-8000-00000000000a"
B = "00000000-0000-7000-8000-00000000000b"
C = "00000000-0000-7000-8000-00000000000c"
UNKNOWN = "00000000-0000-7000-8000-0000000000ff"


@pytest.fixture(autouse=True)
def _no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the identity rules' unit tests open no database")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    monkeypatch.setattr(psycopg, "connect", refuse)
    monkeypatch.setattr(psycopg.Connection, "connect", refuse)


def _strategy(**limits: int | IdClass) -> Strategy:
    """The default strategy with some idTypes' limit (an int) or class (an IdClass) changed."""
    base = default_strategy(ORG, ["EU", "UK"])
    rules = dict(base.id_types)
    for name, change in limits.items():
        if isinstance(change, IdClass):
            rules[name] = edited_id_type(rules[name], name, id_class=change)
        else:
            rules[name] = edited_id_type(rules[name], name, max_per_profile=change)
    return replace(base, id_types=rules)


class World:
    def __init__(self, strategy: Strategy | None = None) -> None:
        self.strategy = strategy or _strategy()
        self.storage = MemoryStorage()

    def seed(
        self,
        ucid: str,
        created: int,
        ids: dict[str, Any],
        data: dict[str, dict[str, Any]] | None = None,
        region: str = "EU",
    ) -> None:
        """A master created at T + ``created`` owning ``ids`` ({idType: value} or {idType: (value, ts)})."""
        self.storage.insert_profile(ORG, ProfileState(ucid, region, T + created, T + created, data or {}))
        owned = {
            Identifier(t, v[0] if isinstance(v, tuple) else v): T
            + (v[1] if isinstance(v, tuple) else created)
            for t, v in ids.items()
        }
        self.storage.insert_ids(ORG, region, ucid, owned)

    def write(
        self,
        at: int,
        ids: dict[str, Any],
        upsert: dict[str, dict[str, Any] | None] | None = None,
        ucid: str | None = None,
        region: str = "EU",
    ) -> WriteOutcome:
        found, notices = normalise_ids(self.strategy, ids, region)
        prepared = PreparedWrite(ORG, region, found, upsert or {}, ucid, "test", notices)
        return apply_write(self.storage, self.strategy, prepared, T + at)

    def owner(self, id_type: str, value: str, region: str = "EU") -> str | None:
        return self.storage.find_owners(ORG, region, [Identifier(id_type, value)]).get(
            Identifier(id_type, value)
        )

    def profile(self, ucid: str) -> ProfileState:
        master, _ = self.storage.resolve_ucids(ORG, [ucid])[ucid]
        return self.storage.load_profiles(ORG, [master])[master]

    def ids(self, ucid: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for ident in sorted(self.profile(ucid).ids):
            out.setdefault(ident.id_type, []).append(ident.value)
        return out


def codes(outcome: WriteOutcome) -> list[str]:
    return [n.code for n in outcome.notices]


# --- a write no profile owns an id of ---
def test_a_write_matching_nothing_creates_a_profile_owning_its_ids() -> None:
    w = World()
    out = w.write(0, {"crm_id": "1", "AdId": "ad-1"}, {"profile": {"name": "Ann"}})
    assert out.created and out.merged == [] and out.linked == []
    assert w.owner("crm_id", "1") == w.owner("AdId", "ad-1") == out.master.ucid
    assert w.profile(out.master.ucid).data == {
        "profile": {"name": "Ann", "_ts": str(T)},
        "mkt_preferences": {},
        "consent": {},
    }
    again = w.write(5, {"AdId": "ad-1"})
    assert not again.created and again.master.ucid == out.master.ucid
    assert again.master.ids[Identifier("AdId", "ad-1")] == T + 5  # last seen moves on
    assert again.master.ids[Identifier("crm_id", "1")] == T


def test_identity_never_crosses_regions() -> None:
    w = World()
    eu = w.write(0, {"crm_id": "1"})
    uk = w.write(1, {"crm_id": "1"}, region="UK")
    assert uk.created and uk.master.ucid != eu.master.ucid
    assert w.owner("crm_id", "1", "UK") == uk.master.ucid and w.owner("crm_id", "1") == eu.master.ucid


# --- several candidates: the first created is the master ---
@pytest.mark.parametrize(
    ("a_created", "b_created", "a_ucid", "b_ucid", "master"),
    [
        (1, 2, B, A, "first"),  # older wins, though its ucid is the higher one
        (2, 1, A, B, "second"),
        (1, 1, A, B, "first"),  # same millisecond: the lower ucid wins
        (1, 1, B, A, "second"),
    ],
)
def test_the_first_created_candidate_is_the_master(
    a_created: int, b_created: int, a_ucid: str, b_ucid: str, master: str
) -> None:
    w = World()
    w.seed(a_ucid, a_created, {"crm_id": "1"}, {"profile": {"from_a": 1, "_ts": str(T)}})
    w.seed(b_ucid, b_created, {"fpuid": "f"}, {"profile": {"from_b": 1, "_ts": str(T)}})
    winner, loser = (a_ucid, b_ucid) if master == "first" else (b_ucid, a_ucid)
    out = w.write(10, {"crm_id": "1", "fpuid": "f"})
    assert (out.master.ucid, out.merged, out.linked) == (winner, [loser], [loser])
    assert w.owner("crm_id", "1") == w.owner("fpuid", "f") == winner
    assert w.storage.resolve_ucids(ORG, [loser]) == {loser: (winner, "EU")}
    assert w.profile(winner).data["profile"].keys() >= {"from_a", "from_b"}
    assert w.storage.changes[-1].action == "merge"


def test_profiles_merged_earlier_follow_their_master_and_are_linked_oldest_first() -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"})
    w.seed(B, 2, {"fpuid": "f"})
    w.seed(C, 3, {"AdId": "ad-1"})
    w.write(10, {"fpuid": "f", "AdId": "ad-1"})  # C joins B
    out = w.write(11, {"crm_id": "1", "fpuid": "f"})  # B (with C) joins A
    assert (out.master.ucid, out.merged, out.linked) == (A, [B], [B, C])
    assert w.storage.resolve_ucids(ORG, [B, C]) == {B: (A, "EU"), C: (A, "EU")}
    assert w.ids(A) == {"crm_id": ["1"], "fpuid": ["f"], "AdId": ["ad-1"]}


# --- merges refused over a primary limit ---
@pytest.mark.parametrize(("fpuid_limit", "merged"), [(1, False), (2, True)])
def test_a_merge_over_a_primary_limit_is_refused(fpuid_limit: int, merged: bool) -> None:
    w = World(_strategy(fpuid=fpuid_limit))
    w.seed(A, 1, {"crm_id": "1", "fpuid": "fa"})
    w.seed(B, 2, {"fpuid": "fb"})
    out = w.write(10, {"crm_id": "1", "fpuid": "fb"}, {"profile": {"k": 1}})
    assert out.master.ucid == A
    if merged:
        assert out.merged == [B] and codes(out) == []
        assert w.ids(A) == {"crm_id": ["1"], "fpuid": ["fa", "fb"]}
        return
    assert out.merged == [] and codes(out) == ["merge_refused", "id_owned_elsewhere"]
    refused, elsewhere = (n.as_dict() for n in out.notices)
    assert refused["ucids"] == [A, B] and refused["idTypes"] == ["fpuid"]
    assert elsewhere == {
        "code": "id_owned_elsewhere",
        "message": f"ids.fpuid: belongs to profile {B}; not attached",
        "field": "ids.fpuid",
        "ucid": B,
    }
    assert w.ids(A) == {"crm_id": ["1"], "fpuid": ["fa"]} and w.ids(B) == {"fpuid": ["fb"]}
    assert w.profile(A).data["profile"]["k"] == 1 and "profile" not in w.profile(B).data


def test_a_refused_candidate_stays_apart_while_the_next_one_merges() -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1", "fpuid": "fa"})
    w.seed(B, 2, {"fpuid": "fb"})
    w.seed(C, 3, {"AdId": "ad-1"})
    out = w.write(10, {"crm_id": "1", "fpuid": "fb", "AdId": "ad-1"})
    assert (out.master.ucid, out.merged) == (A, [C])
    assert codes(out) == ["merge_refused", "id_owned_elsewhere"]
    assert w.owner("AdId", "ad-1") == A and w.owner("fpuid", "fb") == B


def test_a_write_naming_the_refused_profile_lands_on_it_and_merges_nothing() -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1", "fpuid": "fa"})
    w.seed(B, 2, {"fpuid": "fb"})
    out = w.write(10, {"crm_id": "1", "fpuid": "fb"}, {"profile": {"k": 1}}, ucid=B)
    assert (out.master.ucid, out.merged) == (B, [])
    assert codes(out) == ["merge_refused", "id_owned_elsewhere"]
    assert out.notices[1].detail == {"ucid": A}  # crm_id 1 stays A's
    assert w.ids(B) == {"fpuid": ["fb"]} and w.ids(A) == {"crm_id": ["1"], "fpuid": ["fa"]}
    assert w.profile(B).data["profile"]["k"] == 1 and "profile" not in w.profile(A).data


def test_a_primary_id_over_the_limit_of_the_master_is_not_attached() -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1", "fpuid": "fa"})
    out = w.write(10, {"crm_id": "1", "fpuid": "fb"})
    assert codes(out) == ["id_limit"] and out.notices[0].field == "ids.fpuid"
    assert w.owner("fpuid", "fb") is None and w.ids(A) == {"crm_id": ["1"], "fpuid": ["fa"]}


# --- secondary ids over their limit: the oldest go, ties by the lowest value ---
@pytest.mark.parametrize(
    ("held", "sent", "kept", "evicted"),
    [
        ([("ad-1", 1), ("ad-2", 2)], "ad-3", ["ad-2", "ad-3"], "ad-1"),
        ([("ad-2", 1), ("ad-1", 2)], "ad-3", ["ad-1", "ad-3"], "ad-2"),  # by age, not by value
        ([("ad-1", 10), ("ad-2", 10)], "ad-3", ["ad-2", "ad-3"], "ad-1"),  # all seen at once
        ([("ad-2", 10), ("ad-3", 10)], "ad-1", ["ad-2", "ad-3"], "ad-1"),  # the new one goes
        ([("ad-1", 1), ("ad-2", 2)], "ad-1", ["ad-1", "ad-2"], None),  # sent again: touched
    ],
)
def test_secondary_ids_over_the_limit_evict_the_oldest(
    held: list[tuple[str, int]], sent: str, kept: list[str], evicted: str | None
) -> None:
    w = World(_strategy(AdId=2))
    w.seed(A, 0, {"crm_id": "1"})
    w.storage.insert_ids(ORG, "EU", A, {Identifier("AdId", v): T + ts for v, ts in held})
    out = w.write(10, {"crm_id": "1", "AdId": sent})
    assert w.ids(A)["AdId"] == kept
    assert codes(out) == ([] if evicted is None else ["id_evicted"])
    if evicted is not None:
        assert w.owner("AdId", evicted) is None  # an evicted id is free for another profile
        assert w.write(11, {"AdId": evicted}).created
    if sent in kept:
        assert w.profile(A).ids[Identifier("AdId", sent)] == T + 10


def test_evictions_are_reported_in_the_strategy_order_and_merged_ids_count() -> None:
    w = World(_strategy(AdId=1, ga_clientid=1))
    w.seed(A, 1, {"crm_id": "1", "ga_clientid": ("g1", 1)})
    w.seed(B, 2, {"fpuid": "f", "AdId": ("ad-1", 2), "ga_clientid": ("g2", 2)})
    out = w.write(10, {"ga_clientid": "g2", "AdId": "ad-2", "crm_id": "1", "fpuid": "f"})
    assert out.merged == [B]
    assert [(n.code, n.field) for n in out.notices] == [
        ("id_evicted", "ids.AdId"),  # priority 5
        ("id_evicted", "ids.ga_clientid"),  # priority 6
    ]
    assert w.ids(A) == {"crm_id": ["1"], "fpuid": ["f"], "AdId": ["ad-2"], "ga_clientid": ["g2"]}


# --- attributes: per category, the newer side wins a merge; the master wins ties ---
@pytest.mark.parametrize(
    ("master_ts", "other_ts", "winner"),
    [(10, 20, "other"), (20, 10, "master"), (15, 15, "master")],
)
def test_a_merge_takes_each_category_from_its_newer_side(master_ts: int, other_ts: int, winner: str) -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"}, {"profile": {"k": "master", "only_master": 1, "_ts": str(T + master_ts)}})
    w.seed(
        B,
        2,
        {"fpuid": "f"},
        {
            "profile": {"k": "other", "only_other": 2, "_ts": str(T + other_ts)},
            "consent": {"email": True, "_ts": str(T + other_ts)},
        },
    )
    w.write(30, {"crm_id": "1", "fpuid": "f"})
    data = w.profile(A).data
    assert data["profile"] == {
        "k": winner,
        "only_master": 1,
        "only_other": 2,
        "_ts": str(T + (master_ts if winner == "master" else other_ts)),
    }
    assert data["consent"] == {"email": True, "_ts": str(T + other_ts)}  # only the other had it


# --- consent on merge: a denial on either side wins over a grant, whichever is newer ---
# (side holding the denial, is that side newer, expected value, notice consent_kept_denied?)
@pytest.mark.parametrize(
    ("master", "other", "want", "notice"),
    [
        # one side denies, the other grants: the denial, whoever is newer and whichever side
        (("no", 10), ("yes", 20), "no", True),  # master's older denial kept over a newer grant
        (("no", 20), ("yes", 10), "no", False),  # master's denial is newer anyway
        (("yes", 10), ("no", 20), "no", False),  # merged-in denial is newer anyway
        (("yes", 20), ("no", 10), "no", True),  # merged-in older denial kept over a newer grant
        (("yes", 15), ("OptOut", 15), "OptOut", True),  # a tie goes to the master, but not here
        # both grant or both deny: the newer side, as for every category
        (("yes", 10), ("granted", 20), "granted", False),
        (("yes", 20), ("granted", 10), "yes", False),
        (("no", 10), ("unsubscribed", 20), "unsubscribed", False),
        (("n", 20), ("denied", 10), "n", False),
    ],
)
def test_a_merge_keeps_a_consent_denial_of_either_side(
    master: tuple[str, int], other: tuple[str, int], want: str, notice: bool
) -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"}, {"consent": {"email": master[0], "_ts": str(T + master[1])}})
    w.seed(B, 2, {"fpuid": "f"}, {"consent": {"email": other[0], "_ts": str(T + other[1])}})
    out = w.write(30, {"crm_id": "1", "fpuid": "f"})
    assert out.merged == [B]
    assert w.profile(A).data["consent"]["email"] == want
    kept = [(n.code, n.field) for n in out.notices]
    assert kept == ([("consent_kept_denied", "consent.email")] if notice else [])


@pytest.mark.parametrize(
    "denial", [False, 0, "0", "FALSE", " No ", "N", "denied", "optout", "Opt-Out", "UNSUBSCRIBED"]
)
def test_every_default_denial_value_is_kept_over_a_grant_in_any_case(denial: Any) -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"}, {"consent": {"sms": denial, "_ts": str(T + 1)}})
    w.seed(B, 2, {"fpuid": "f"}, {"consent": {"sms": True, "_ts": str(T + 20)}})
    out = w.write(30, {"crm_id": "1", "fpuid": "f"})
    assert w.profile(A).data["consent"]["sms"] == denial and codes(out) == ["consent_kept_denied"]


def test_the_denial_values_are_the_orgs() -> None:
    w = World(replace(_strategy(), consent_denials=frozenset({"refused"})))
    w.seed(A, 1, {"crm_id": "1"}, {"consent": {"email": "Refused", "sms": "no", "_ts": str(T + 1)}})
    w.seed(B, 2, {"fpuid": "f"}, {"consent": {"email": "yes", "sms": "yes", "_ts": str(T + 20)}})
    w.write(30, {"crm_id": "1", "fpuid": "f"})
    # "no" is no denial for this org: the newer side wins it as any attribute
    assert w.profile(A).data["consent"] == {"email": "Refused", "sms": "yes", "_ts": str(T + 20)}


@pytest.mark.parametrize("side", ["master", "merged-in"])
def test_a_merging_writes_own_grant_does_not_lift_a_denial(side: str) -> None:
    w = World()
    denied = {"consent": {"email": "no", "_ts": str(T + 1)}}
    w.seed(A, 1, {"crm_id": "1"}, denied if side == "master" else None)
    w.seed(B, 2, {"fpuid": "f"}, denied if side == "merged-in" else None)
    out = w.write(30, {"crm_id": "1", "fpuid": "f"}, {"consent": {"email": "yes", "sms": "yes"}})
    assert codes(out) == ["consent_kept_denied"]
    assert w.profile(A).data["consent"] == {"email": "no", "sms": "yes", "_ts": str(T + 30)}
    # once the profiles are one, the person's next word replaces it (last write wins)
    again = w.write(40, {"crm_id": "1"}, {"consent": {"email": "yes"}})
    assert codes(again) == [] and w.profile(A).data["consent"]["email"] == "yes"


def test_a_write_to_one_profile_replaces_its_consent() -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"}, {"consent": {"email": "no", "_ts": str(T + 1)}})
    out = w.write(30, {"crm_id": "1"}, {"consent": {"email": "yes"}})
    assert codes(out) == [] and w.profile(A).data["consent"]["email"] == "yes"


def test_a_merge_of_three_keeps_a_denial_of_any_of_them() -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"}, {"consent": {"email": "yes", "_ts": str(T + 5)}})
    w.seed(B, 2, {"fpuid": "f"}, {"consent": {"email": "no", "_ts": str(T + 3)}})
    w.seed(C, 3, {"AdId": "ad-1"}, {"consent": {"email": "yes", "_ts": str(T + 9)}})
    out = w.write(30, {"crm_id": "1", "fpuid": "f", "AdId": "ad-1"})
    assert sorted(out.merged) == [B, C] and codes(out) == ["consent_kept_denied"]
    assert w.profile(A).data["consent"]["email"] == "no"


# --- upsert: attribute by attribute; null removes, a null category clears ---
@pytest.mark.parametrize(
    ("upsert", "profile", "consent"),
    [
        ({"profile": {"c": 3}}, {"a": 1, "b": 2, "c": 3, "_ts": "w"}, {"x": 1, "_ts": "s"}),
        ({"profile": {"a": 9}}, {"a": 9, "b": 2, "_ts": "w"}, {"x": 1, "_ts": "s"}),
        ({"profile": {"a": None, "zz": None}}, {"b": 2, "_ts": "w"}, {"x": 1, "_ts": "s"}),
        ({"profile": None}, {"_ts": "w"}, {"x": 1, "_ts": "s"}),
        ({"profile": {}}, {"a": 1, "b": 2, "_ts": "w"}, {"x": 1, "_ts": "s"}),
        ({"consent": {"x": None}}, {"a": 1, "b": 2, "_ts": "s"}, {"_ts": "w"}),
        ({}, {"a": 1, "b": 2, "_ts": "s"}, {"x": 1, "_ts": "s"}),
    ],
)
def test_an_upsert_changes_only_what_it_names(
    upsert: dict[str, dict[str, Any] | None], profile: dict[str, Any], consent: dict[str, Any]
) -> None:
    w = World()
    seeded = str(T + 1)
    w.seed(
        A,
        1,
        {"crm_id": "1"},
        {"profile": {"a": 1, "b": 2, "_ts": seeded}, "consent": {"x": 1, "_ts": seeded}},
    )
    w.write(5, {"crm_id": "1"}, upsert)
    stamps = {"w": str(T + 5), "s": seeded}  # the write's time, or the seeded one
    data = w.profile(A).data
    assert data["profile"] == {**profile, "_ts": stamps[profile["_ts"]]}
    assert data["consent"] == {**consent, "_ts": stamps[consent["_ts"]]}


# --- writes naming a ucid ---
@pytest.mark.parametrize(
    ("ucid", "ids", "lands_on", "notices"),
    [
        (A, {}, A, []),
        (B, {}, A, []),  # merged away: its master
        (A, {"AdId": "ad-9"}, A, []),
        (UNKNOWN, {"AdId": "ad-1"}, "new", ["ucid_not_found"]),  # resolved by its ids
        (UNKNOWN, {"crm_id": "1"}, A, ["ucid_not_found"]),
        (C, {"AdId": "ad-2"}, "new", ["ucid_not_found"]),  # C is in UK, the write in EU
    ],
)
def test_a_named_ucid_is_a_candidate(
    ucid: str, ids: dict[str, str], lands_on: str, notices: list[str]
) -> None:
    w = World()
    w.seed(A, 1, {"crm_id": "1"})
    w.seed(B, 2, {"fpuid": "f"})
    w.seed(C, 3, {"crm_id": "9"}, region="UK")
    w.write(5, {"crm_id": "1", "fpuid": "f"})  # B merges into A
    out = w.write(10, ids, {"profile": {"k": 1}}, ucid=ucid)
    assert codes(out) == notices
    if lands_on == "new":
        assert out.created and out.master.ucid not in (A, B, C)
    else:
        assert (out.created, out.master.ucid) == (False, lands_on)
    assert w.profile(out.master.ucid).data["profile"]["k"] == 1


@pytest.mark.parametrize("ucid", [UNKNOWN, C])
def test_a_ucid_naming_no_profile_of_the_region_without_ids_is_not_found(ucid: str) -> None:
    w = World()
    w.seed(C, 3, {"crm_id": "9"}, region="UK")
    with pytest.raises(NotFound) as caught:
        w.write(10, {}, {"profile": {"k": 1}}, ucid=ucid)
    assert caught.value.field == "ucid"
    assert w.storage.masters(ORG) == [C] and w.storage.changes == []  # nothing written


# --- blocked and disabled ids never match ---
@pytest.mark.parametrize(
    ("strategy", "ids", "notice"),
    [
        (_strategy(), {"crm_id": "0"}, ("blocked", "ids.crm_id")),  # blocked for every idType
        (_strategy(), {"email": "NULL"}, ("blocked", "ids.email")),  # before email validation
        (
            replace(_strategy(), blocked={"fpuid": frozenset({"dummy"})}),
            {"fpuid": "Dummy"},
            ("blocked", "ids.fpuid"),
        ),
        (_strategy(AdId=IdClass.DISABLED), {"AdId": "ad-1"}, ("disabled", "ids.AdId")),
    ],
)
def test_blocked_and_disabled_ids_are_dropped_and_never_match(
    strategy: Strategy, ids: dict[str, str], notice: tuple[str, str]
) -> None:
    w = World(strategy)
    first = w.write(0, {**ids, "ga_clientid": "g1"})
    second = w.write(1, {**ids, "ga_clientid": "g2"})
    assert first.created and second.created  # the shared value joined nothing
    assert [(n.code, n.field) for n in first.notices] == [notice]
    assert {i.id_type for i in first.master.ids} == {"ga_clientid"}


def test_a_value_blocked_for_one_idtype_still_matches_under_another() -> None:
    w = World(replace(_strategy(), blocked={"fpuid": frozenset({"dummy"})}))
    first = w.write(0, {"crm_id": "dummy"})
    assert codes(first) == [] and w.write(1, {"crm_id": "dummy"}).master.ucid == first.master.ucid


# --- the change log: what happened, never an id value ---
def test_each_write_is_logged_without_id_values() -> None:
    w = World()
    made = w.write(
        0, {"email": "ann@example.com", "crm_id": "crm-1"}, {"profile": {"name": "Ann"}}
    ).master.ucid
    w.write(1, {"crm_id": "crm-1"}, {"profile": {"name": None}})
    w.write(2, {"fpuid": "f-1"})
    w.write(3, {"crm_id": "crm-1", "fpuid": "f-1"})
    assert [(c.ucid, c.action, c.actor, c.ts) for c in w.storage.changes][:2] == [
        (made, "create", "test", T),
        (made, "update", "test", T + 1),
    ]
    assert [c.action for c in w.storage.changes] == ["create", "update", "create", "merge"]
    first = w.storage.changes[0].detail
    assert first["region"] == "EU" and first["attributes"] == {"profile": ["name"]}
    assert "crm_id" in first["idTypes"] and "email_sha256_lowercase" in first["idTypes"]
    logged = json.dumps([c.detail for c in w.storage.changes])
    assert "crm-1" not in logged and "ann@example.com" not in logged and "Ann" not in logged


# --- editing the strategy ---
@pytest.mark.parametrize(
    ("name", "change", "want"),
    [
        ("loyalty_id", {}, ("loyalty_id", IdClass.PRIMARY, 100, 1)),  # a new one: its own namespace
        ("loyalty_id", {"namespace": "crm", "max_per_profile": 3}, ("crm", IdClass.PRIMARY, 100, 3)),
        ("AdId", {"priority": 2}, ("maid", IdClass.SECONDARY, 2, 5)),  # the rest stays
        ("AdId", {"id_class": IdClass.DISABLED}, ("maid", IdClass.DISABLED, 5, 5)),
    ],
)
def test_an_idtype_edit_changes_only_what_it_names(
    name: str, change: dict[str, Any], want: tuple[str, IdClass, int, int]
) -> None:
    rule = edited_id_type(_strategy().id_types.get(name), name, **change)
    assert (rule.name, rule.namespace, rule.id_class, rule.priority, rule.max_per_profile) == (name, *want)


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("ucid", {}, "id_type"),  # reserved: it means something else in search and delete
        ("linkedUcid", {}, "id_type"),
        ("1st", {}, "id_type"),
        ("x" * 101, {}, "id_type"),
        ("ok", {"namespace": "no space"}, "namespace"),
        ("ok", {"priority": 0}, "priority"),
        ("ok", {"max_per_profile": 0}, "limit"),
    ],
)
def test_an_idtype_edit_that_can_never_be_valid_is_refused(
    name: str, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        edited_id_type(None, name, **change)
    assert caught.value.field == field


# --- random write sequences: the core on MemoryStorage gives what the documented model gives ---
# The same sequences and model as tests/test_identity_properties.py, which checks SQLite and
# PostgreSQL against that model; here the core runs with no database, so many more examples fit.
def _property_strategy() -> Strategy:
    """What test_identity_properties' orgs hold: low secondary limits, g9 blocked for ga_clientid."""
    base = _strategy(AdId=2, ga_clientid=1)
    return replace(base, blocked={**base.blocked, "ga_clientid": frozenset({"g9"})})


def _replay(storage: MemoryStorage, strategy: Strategy, plan: list[list[dict[str, Any]]]) -> list[Any]:
    answers: list[Any] = []
    for round_, times in zip(plan, _times(plan), strict=True):
        clock = iter(times)
        known = sorted(u for (_, u) in storage.profiles)  # ucids sort in creation order
        for write in _writes(ORG, round_, known):
            try:
                prepared = prepare_write(strategy, write, "prop")
            except ProfilehubError as exc:
                answers.append(("error", exc.status))
                continue
            now = next(clock)  # as the service: a write refused in planning has had its time
            try:
                out = apply_write(storage, strategy, prepared, now)
            except ProfilehubError as exc:
                answers.append(("error", exc.status))
                continue
            answers.append(("ok", out.created, sorted(n.code for n in out.notices), out.master.ucid))
    return answers


def _memory_state(storage: MemoryStorage, answers: list[Any]) -> tuple[list[Any], Any]:
    """Answers and rows in the model's terms: profiles named P0, P1, ... in creation order."""
    names = {u: f"P{n}" for n, u in enumerate(sorted(u for (_, u) in storage.profiles))}
    state = {
        names[u]: (
            p.region,
            p.created_ts,
            p.updated_ts,
            p.data,
            sorted((i.id_type, i.value, ts) for i, ts in p.ids.items()),
            names[p.merged_into] if p.merged_into else None,
        )
        for (_, u), p in storage.profiles.items()
    }
    return [(*a[:3], names[a[3]]) if a[0] == "ok" else a for a in answers], state


@settings(max_examples=200, deadline=None)
@given(plan=rounds)
@example(plan=[TIED_MERGE])
@example(plan=[TIED_EVICTION])
@example(plan=EVICTION_NOTICE_ORDER)
def test_the_core_in_memory_follows_the_documented_model(plan: list[list[dict[str, Any]]]) -> None:
    strategy = _property_strategy()
    storage = MemoryStorage()
    got_answers, got_state = _memory_state(storage, _replay(storage, strategy, plan))
    model = _Model(strategy)
    want_answers: list[Any] = []
    for round_, times in zip(plan, _times(plan), strict=True):
        writes = _writes(ORG, round_, [UNKNOWN_UCID] * len(model.profiles))
        want_answers += model.write_round(list(zip(writes, (w["ucid"] for w in round_), strict=True)), times)
    assert got_answers == want_answers
    assert _without_empty_categories(got_state) == _without_empty_categories(model.state())
    # and no id is owned by anything but a master of its region
    for (_, region, _ident), (owner, _) in storage.owners.items():
        profile = storage.profiles[(ORG, owner)]
        assert profile.merged_into is None and profile.region == region


def test_new_ucids_are_canonical_time_ordered_uuids_increasing_in_a_process() -> None:
    """New profiles and CRM records are named by ``new_ucid``: a canonical UUID (version 7,
    RFC variant) that sorts after every one made before it in the process."""
    made = [new_ucid() for _ in range(2000)]
    for ucid in made:
        parsed = uuid.UUID(ucid)
        assert str(parsed) == ucid and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert made == sorted(made) and len(set(made)) == len(made)
    block = UcidBlock(3)
    assert made[-1] < block(0) < block(2) < new_ucid()
    assert all(str(uuid.UUID(u)) == u for u in block.many([0, 1, 2]))
