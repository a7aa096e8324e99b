"""bench.ugly: shared devices, glued crm ids, recycled phones and email variants, against the rules."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from bench.generate import DUMMY_EMAIL, ZERO_AD_ID
from bench.machine import LOCK_ENV
from bench.ugly import KINDS, AmbiguousTie, RulesModel, UglyWrite, main, run_ugly, stored_key, ugly_set


def test_the_set_has_every_ugly_case() -> None:
    data = ugly_set(120, seed=3)
    writes = [(r, w) for r, round_ in enumerate(data.rounds) for w in round_]
    assert {w.kind for _, w in writes} == set(KINDS)
    people_of: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    rounds_of: defaultdict[tuple[str, str], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for r, w in writes:
        for id_type, value in w.ids.items():
            key = stored_key(id_type, value)
            people_of[key].add(w.person)
            rounds_of[key][w.person].append(r)
    shared = {k: p for k, p in people_of.items() if len(p) > 1 and k[1] not in (ZERO_AD_ID,)}
    dummy = stored_key("email", DUMMY_EMAIL)
    # A family tablet: one AdId written by three or more people.
    assert any(k[0] == "AdId" and len(p) >= 3 for k, p in shared.items())
    # Two crm ids glued by one device: a device written with two different crm ids.
    crm_by_device: defaultdict[str, set[str]] = defaultdict(set)
    for _, w in writes:
        if "crm_id" in w.ids:
            crm_by_device[w.ids["AdId"]].add(w.ids["crm_id"])
    assert any(len(c) == 2 for c in crm_by_device.values())
    # A recycled number: written by two people, all the first's records before the second's.
    recycled = [k for k, p in shared.items() if k[0] == "cellphone_number_e164_sha256"]
    assert recycled
    for k in recycled:
        first, second = sorted(rounds_of[k].items(), key=lambda kv: min(kv[1]))
        assert max(first[1]) < min(second[1])
    # Emails in other case and with spaces, of people who also send them plain.
    raw = [w.ids["email"] for _, w in writes if "email" in w.ids and w.ids["email"] != DUMMY_EMAIL]
    assert any(e != e.strip() for e in raw) and any(e.isupper() for e in raw)
    assert dummy in people_of and len(people_of[dummy]) > 1
    # Nobody's own id is shared with another person (the shared ones are no one's own).
    assert not set(shared) & set(data.own)


def _w(person: int, **ids: str) -> UglyWrite:
    return UglyWrite(person, "test", ids)


def test_the_model_reads_the_documented_rules() -> None:
    model = RulesModel()
    model.write(_w(1, email="a@x.io", AdId="tablet"), 0)
    # The shared tablet brings B's write to A's profile; B's email is refused (primary limit 1).
    model.write(_w(2, email=" B@X.io", AdId="tablet"), 1)
    [a] = model.partition()
    assert a.writers == {1, 2} and stored_key("email", "b@x.io") not in a.ids
    # B on a device of their own: a new profile; then both ids together: the merge is refused.
    model.write(_w(2, email="b@x.io", AdId="phone-b"), 2)
    model.write(_w(2, email="b@x.io", AdId="tablet"), 3)
    assert len(model.partition()) == 2
    assert a.ids[stored_key("AdId", "tablet")] == 3  # seen again, on A's profile
    # Blocked values never join anything.
    model.write(_w(3, email=DUMMY_EMAIL, AdId="c1"), 4)
    model.write(_w(4, email=DUMMY_EMAIL, AdId=ZERO_AD_ID, cellphone="+4917000000001"), 5)
    assert len(model.partition()) == 4
    # Over five AdIds the oldest is evicted and freed.
    for k in range(6):
        model.write(_w(5, email="h@x.io", AdId=f"h{k}"), 10 + k)
    hoarder = next(p for p in model.partition() if 5 in p.writers)
    assert sorted(v for t, v in hoarder.ids if t == "AdId") == [f"h{k}" for k in range(1, 6)]
    model.write(_w(5, AdId="h0"), 20)
    assert len(model.partition()) == 6
    # Eviction that would hinge on two ids last seen at the same time is refused, not guessed.
    model.write(_w(6, email="t@x.io", AdId="t0"), 30)
    model.write(_w(6, email="t@x.io", AdId="t1", cellphone="+4917000000002"), 30)
    for k in range(2, 5):
        model.write(_w(6, email="t@x.io", AdId=f"t{k}"), 31 + k)
    with pytest.raises(AmbiguousTie):
        model.write(_w(6, email="t@x.io", AdId="t5"), 40)


def test_the_store_matches_the_rules_on_the_ugly_set(database_url: str) -> None:
    data = ugly_set(150, seed=5)
    report = run_ugly(database_url, data)
    assert report.profiles_only_expected == report.profiles_only_stored == 0
    assert report.actual == report.expected
    # Where the rules refuse merges, no profile holds two people's own ids.
    for kind in ("clean", "family", "recycled_phone", "hoarder", "dummies"):
        assert report.actual[kind].over_merged_profiles == 0, kind
    clean = report.actual["clean"]
    assert clean.profiles == clean.people and clean.split_people == clean.scattered_people == 0
    # Where they do not (a device glues a crm id's profile to another person's email), the
    # benchmark shows it rather than hiding it.
    assert report.actual["glued_crm"].over_merged_profiles > 0
    # Shared devices and recycled numbers send people's writes to other people's profiles.
    assert report.actual["family"].mixed_profiles > 0 and report.actual["recycled_phone"].mixed_profiles > 0
    # The evicted device, free again, makes a second profile of its hoarder.
    assert report.actual["hoarder"].split_people == report.actual["hoarder"].people


def test_the_bench_command_prints_the_figures_and_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "bench.lock"))
    main(["--people", "40", "--backend", "sqlite"])
    lines = capsys.readouterr().out.splitlines()
    assert "the store MATCHES the rules' expected result" in lines[0] and "machine load" in lines[0]
    assert any("glued_crm" in line and "over-merged profiles" in line for line in lines)
    assert (
        lines[-1]
        == "[ugly sqlite] reproduce: .venv/bin/python -m bench.ugly --people 40 --seed 19 --backend sqlite"
    )
