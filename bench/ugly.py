"""An ugly identity set, its expected result from the documented rules, and the store against both.

``python -m bench.ugly [--people N] [--backend sqlite|postgres]`` generates people in small
*episodes*, each one of the ugly cases real feeds have:

- ``clean``: one person by email (in other case and with spaces around it now and then), by phone,
  and by both, on one device: one profile;
- ``family``: two to four people, each with an email and a phone of their own, who also use one
  shared tablet (a family device: one AdId for several people);
- ``glued_crm``: two people with crm ids whose records share one device, one of them also seen by
  email on that device;
- ``recycled_phone``: a phone number that moves from one person to another (the second person's
  records start after the first one's stop);
- ``hoarder``: one person on seven devices, one at a time, over the AdId limit of five, who then
  shows up on the first (evicted) device alone;
- ``dummies``: people sending the shared dummy email and the all-zero AdId beside their own ids.

The *expected* result comes from ``RulesModel``, a plain-Python reading of docs/identity.md
written for this benchmark (it does not call profilehub's resolver): primary limits refuse merges
and refuse ids, secondary ids over their limit evict the oldest, blocked values are dropped, and
the first-created candidate is the master. The store's result is read back from the database after
the same writes went through ``ProfileService.write_batch``. Both are scored against the ground
truth the same way, and the two partitions (which ids each profile holds, whose writes landed in
it) are compared one profile at a time.

Scores, against the truth (a person's own ids: email, own phone, crm id, own devices; the shared
tablet, the glue device and the recycled number belong to no one person):

- *over-merged profiles*: a profile holding the own ids of two or more people;
- *split people*: a person whose own ids are held by two or more profiles;
- *mixed profiles*: a profile that took writes of two or more people (what the rules do when a
  write carries another person's id: it lands on that profile, its own primary ids refused);
- *scattered people*: a person whose writes landed on two or more profiles.

Every record of an episode goes into its own round, and each round is written after the previous
one committed, so the timestamps the rules compare never tie within one profile; the model checks
that (and refuses a set where eviction would depend on a tie).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.backends import fresh_database
from bench.generate import DUMMY_EMAIL, ORG_ID, REGION, ZERO_AD_ID
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult
from profilehub.store.database import Database

ROUNDS = 12  # an episode's records each go into a round of their own, in order
CHUNK = 2000  # records per write_batch within a round (the importer's batch)
KINDS = ("clean", "family", "glued_crm", "recycled_phone", "hoarder", "dummies")

# The default strategy of docs/identity.md, for the idTypes the set sends: (primary, limit).
RULES = {"crm_id": (True, 1), "email": (True, 1), "cellphone": (True, 1), "AdId": (False, 5)}
# Blocked for the benchmark's org: the defaults the set uses and the dummy email setup_org blocks.
BLOCKED = {ZERO_AD_ID, DUMMY_EMAIL}
# How each idType's value is stored, and under which idType the store is compared.
STORED_TYPE = {
    "crm_id": "crm_id",
    "email": "email_sha256_lowercase",
    "cellphone": "cellphone_number_e164_sha256",
    "AdId": "AdId",
}

Key = tuple[str, str]  # (stored idType, stored value)


def stored_key(id_type: str, value: str) -> Key:
    """An id as docs/identity.md says it is stored (emails trimmed and lower-cased, then hashed;
    phones, already E.164 here, hashed; other idTypes trimmed)."""
    value = value.strip()
    if id_type == "email":
        return STORED_TYPE[id_type], hashlib.sha256(value.lower().encode()).hexdigest()
    if id_type == "cellphone":
        return STORED_TYPE[id_type], hashlib.sha256(value.encode()).hexdigest()
    return STORED_TYPE[id_type], value


@dataclass(frozen=True)
class UglyWrite:
    person: int
    kind: str
    ids: dict[str, str]

    def body(self) -> dict[str, Any]:
        # The attribute names who wrote: the store's profile then tells whose writes it took.
        return {"ids": self.ids, "upsert": {"profile": {f"w{self.person}": "1"}}}


@dataclass
class UglySet:
    rounds: list[list[UglyWrite]]
    own: dict[Key, int]  # a person's own ids (stored form) -> that person
    kind_of: dict[int, str]  # person -> episode kind

    @property
    def writes(self) -> int:
        return sum(len(r) for r in self.rounds)


class _People:
    def __init__(self, seed: int) -> None:
        self.next = 0
        self.seed = seed

    def new(self) -> int:
        self.next += 1
        return self.next - 1

    def email(self, p: int, rng: random.Random) -> str:
        address = f"u{p}.s{self.seed}@example{p % 89}.com"
        roll = rng.random()
        if roll < 0.2:
            return address.upper()
        if roll < 0.35:
            return f"  {address.capitalize()} "
        return address

    @staticmethod
    def phone(n: int) -> str:
        return f"+4917{n:09d}"

    def device(self, p: int, k: int) -> str:
        return f"dev-{self.seed}-{p}-{k}"


def _episode(kind: str, people: _People, rng: random.Random, own: dict[Key, int]) -> list[UglyWrite]:
    """One episode's records, in the order they happen."""
    out: list[UglyWrite] = []

    def write(p: int, **ids: str) -> None:
        out.append(UglyWrite(p, kind, ids))

    def mine(p: int, id_type: str, value: str) -> str:
        own[stored_key(id_type, value)] = p
        return value

    if kind == "clean":
        p = people.new()
        device = mine(p, "AdId", people.device(p, 0))
        phone = mine(p, "cellphone", people.phone(p))
        mine(p, "email", people.email(p, rng).strip().lower())
        shapes = [("email",), ("cellphone",), ("email", "cellphone")]
        for _ in range(rng.randint(2, 4)):
            shape = rng.choice(shapes)
            ids = {"AdId": device}
            if "email" in shape:
                ids["email"] = people.email(p, rng)
            if "cellphone" in shape:
                ids["cellphone"] = phone
            write(p, **ids)
    elif kind == "family":
        members = [people.new() for _ in range(rng.randint(2, 4))]
        tablet = people.device(members[0], 99)  # shared: no one person's id
        steps: list[tuple[int, str]] = []
        for p in members:
            mine(p, "email", people.email(p, rng).strip().lower())
            mine(p, "cellphone", people.phone(p))
            mine(p, "AdId", people.device(p, 0))
            steps += [(p, "own"), (p, "tablet")]
        rng.shuffle(steps)
        for p, where in steps:
            if where == "own":
                write(p, email=people.email(p, rng), cellphone=people.phone(p), AdId=people.device(p, 0))
            else:
                write(p, email=people.email(p, rng), AdId=tablet)
    elif kind == "glued_crm":
        x, y = people.new(), people.new()
        glue = people.device(x, 99)  # the one device both use
        for p in (x, y):
            mine(p, "crm_id", f"crm-{people.seed}-{p}")
            mine(p, "AdId", people.device(p, 0))
        mine(y, "email", people.email(y, rng).strip().lower())
        steps2 = [
            (x, {"crm_id": f"crm-{people.seed}-{x}", "AdId": people.device(x, 0)}),
            (y, {"crm_id": f"crm-{people.seed}-{y}", "AdId": people.device(y, 0)}),
            (x, {"crm_id": f"crm-{people.seed}-{x}", "AdId": glue}),
            (y, {"crm_id": f"crm-{people.seed}-{y}", "AdId": glue}),
            (y, {"email": people.email(y, rng), "AdId": glue}),
        ]
        rng.shuffle(steps2)
        for p, ids in steps2:
            write(p, **ids)
    elif kind == "recycled_phone":
        first, second = people.new(), people.new()
        number = people.phone(first)  # first's number, later given to second: no one person's id
        for p in (first, second):
            mine(p, "email", people.email(p, rng).strip().lower())
            mine(p, "AdId", people.device(p, 0))
        for _ in range(rng.randint(1, 2)):
            write(first, email=people.email(first, rng), cellphone=number, AdId=people.device(first, 0))
        later = [
            {"email": people.email(second, rng), "cellphone": number},
            {"email": people.email(second, rng), "AdId": people.device(second, 0)},
        ]
        rng.shuffle(later)
        for ids in later:
            write(second, **ids)
    elif kind == "hoarder":
        p = people.new()
        email = mine(p, "email", people.email(p, rng).strip().lower())
        devices = [mine(p, "AdId", people.device(p, k)) for k in range(7)]
        for device in devices:
            write(p, email=people.email(p, rng) if rng.random() < 0.5 else email, AdId=device)
        write(p, AdId=devices[0])  # evicted long ago: free, so it makes a profile of its own
    elif kind == "dummies":
        for _ in range(rng.randint(2, 3)):
            p = people.new()
            device = mine(p, "AdId", people.device(p, 0))
            phone = mine(p, "cellphone", people.phone(p))
            mine(p, "email", people.email(p, rng).strip().lower())
            write(p, email=DUMMY_EMAIL, AdId=device)
            write(p, email=DUMMY_EMAIL, cellphone=phone)
            write(p, email=people.email(p, rng), AdId=ZERO_AD_ID)
    else:
        raise ValueError(kind)
    return out


def ugly_set(people: int, seed: int = 19) -> UglySet:
    """Episodes of every kind in turn until ``people`` people; each episode's records spread over
    rounds in order, one record a round, the rounds' records shuffled."""
    rng = random.Random(seed)
    made = _People(seed)
    own: dict[Key, int] = {}
    kind_of: dict[int, str] = {}
    rounds: list[list[UglyWrite]] = [[] for _ in range(ROUNDS)]
    episode = 0
    while made.next < people:
        kind = KINDS[episode % len(KINDS)]
        episode += 1
        writes = _episode(kind, made, rng, own)
        for w in writes:
            kind_of[w.person] = kind
        slots = sorted(rng.sample(range(ROUNDS), len(writes)))
        for slot, w in zip(slots, writes, strict=True):
            rounds[slot].append(w)
    for r in rounds:
        rng.shuffle(r)
    return UglySet(rounds, own, kind_of)


# --- the expected result: the documented rules, in plain Python ---


class AmbiguousTie(ValueError):
    """Eviction would depend on two ids last seen in the same round (a timestamp tie)."""


@dataclass
class Profile:
    ids: dict[Key, int] = field(default_factory=dict)  # id -> last seen (round)
    writers: set[int] = field(default_factory=set)


class RulesModel:
    """docs/identity.md, "Resolution of one write", for writes of crm ids, emails, phones, AdIds."""

    def __init__(self) -> None:
        self.profiles: dict[int, Profile] = {}  # creation number -> profile (masters only)
        self.owner: dict[Key, int] = {}
        self.created = 0

    def write(self, w: UglyWrite, now: int) -> None:
        # 1. Drop blocked values (checked on the value as given, case-insensitively); normalise.
        keys: dict[Key, str] = {}
        for id_type, value in w.ids.items():
            if value.strip().lower() in BLOCKED:
                continue
            keys[stored_key(id_type, value)] = id_type
        # 2. Candidates: the profiles owning any id.
        owners = {k: self.owner[k] for k in keys if k in self.owner}
        candidates = sorted(set(owners.values()))  # creation order = (created_ts, ucid) order
        refused: set[int] = set()
        if not candidates:  # 3. a new profile
            master = self.created
            self.created += 1
            self.profiles[master] = Profile()
        else:  # 4. first created is the master; others merge unless a primary limit breaks
            master = candidates[0]
            planned = set(self.profiles[master].ids)
            merging = []
            for other in candidates[1:]:
                union = planned | set(self.profiles[other].ids)
                if any(self._breaks(t, sum(1 for k in union if k[0] == t)) for t in {k[0] for k in union}):
                    refused.add(other)
                else:
                    merging.append(other)
                    planned = union
            for other in merging:  # 5. merge: ids and writes move to the master
                gone = self.profiles.pop(other)
                for k in gone.ids:
                    self.owner[k] = master
                self.profiles[master].ids.update(gone.ids)
                self.profiles[master].writers |= gone.writers
        profile = self.profiles[master]
        # 6. attach the write's ids
        for k, id_type in keys.items():
            if owners.get(k) in refused:
                continue  # owned by a profile kept apart
            if k in profile.ids:
                profile.ids[k] = now
                continue
            primary, limit = RULES[id_type]
            if primary and sum(1 for i in profile.ids if i[0] == k[0]) >= limit:
                continue  # over the primary limit: refused
            profile.ids[k] = now
            self.owner[k] = master
        self._evict(profile)
        profile.writers.add(w.person)  # 7. the upsert lands on the master

    @staticmethod
    def _breaks(stored_type: str, count: int) -> bool:
        id_type = next(t for t, s in STORED_TYPE.items() if s == stored_type)
        primary, limit = RULES[id_type]
        return primary and count > limit

    def _evict(self, profile: Profile) -> None:
        for id_type, (primary, limit) in RULES.items():
            values = sorted((ts, k[1], k) for k, ts in profile.ids.items() if k[0] == STORED_TYPE[id_type])
            if primary or len(values) <= limit:
                continue
            drop = len(values) - limit
            if values[drop - 1][0] == values[drop][0]:
                raise AmbiguousTie(f"eviction of {id_type} would depend on a timestamp tie")
            for _, _, k in values[:drop]:
                del profile.ids[k]
                del self.owner[k]

    def partition(self) -> list[Profile]:
        return list(self.profiles.values())


def expected(data: UglySet) -> list[Profile]:
    model = RulesModel()
    for now, round_ in enumerate(data.rounds):
        for w in round_:
            model.write(w, now)
    return model.partition()


# --- the store's result ---


def write_to_store(db: Database, data: UglySet) -> None:
    """Every round after the previous one committed, in chunks of the importer's batch size."""
    service = ProfileService(db)
    for round_ in data.rounds:
        for start in range(0, len(round_), CHUNK):
            chunk = round_[start : start + CHUNK]
            results = service.write_batch(
                [ProfileWrite(ORG_ID, REGION, w.ids, w.body()["upsert"]) for w in chunk], "bench.ugly"
            )
            bad = [r for r in results if not isinstance(r, WriteResult)]
            if bad:
                raise RuntimeError(f"the store refused {len(bad)} writes, first: {bad[0]}")
        time.sleep(0.003)  # the next round's timestamps are later than this one's


def stored(db: Database) -> list[Profile]:
    """The store's master profiles: the compared ids each holds, and whose writes it took."""
    types = tuple(STORED_TYPE.values())
    profiles: dict[str, Profile] = {}
    with db.read() as conn:
        for ucid, data in conn.exec_driver_sql(
            f"SELECT ucid, data FROM profiles WHERE org_id = {ORG_ID} AND merged_into IS NULL"
        ):
            attrs = orjson.loads(data).get("profile", {})
            profiles[ucid] = Profile(writers={int(a[1:]) for a in attrs if a.startswith("w")})
        for ucid, id_type, value in conn.exec_driver_sql(
            f"SELECT ucid, id_type, value FROM profile_ids WHERE org_id = {ORG_ID} AND region = '{REGION}'"
        ):
            if id_type in types:
                profiles[ucid].ids[(id_type, value)] = 0
    return list(profiles.values())


# --- scores ---


@dataclass(frozen=True)
class Score:
    people: int
    profiles: int
    over_merged_profiles: int
    split_people: int
    mixed_profiles: int
    scattered_people: int

    def line(self) -> str:
        return (
            f"{self.people:,} people -> {self.profiles:,} profiles; over-merged profiles "
            f"{self.over_merged_profiles:,}, split people {self.split_people:,}; profiles with writes "
            f"of several people {self.mixed_profiles:,}, people whose writes are on several profiles "
            f"{self.scattered_people:,}"
        )


def score(profiles: Iterable[Profile], data: UglySet, kind: str | None = None) -> Score:
    """The partition against the truth; with ``kind``, only that kind's people and profiles."""
    people = {p for p, k in data.kind_of.items() if kind is None or k == kind}
    held_by: defaultdict[int, int] = defaultdict(int)  # person -> profiles holding own ids
    wrote_to: defaultdict[int, int] = defaultdict(int)  # person -> profiles with their writes
    count = over = mixed = 0
    for profile in profiles:
        owners = {data.own[k] for k in profile.ids if k in data.own}
        touched = (owners | profile.writers) & people
        if not touched:
            continue
        count += 1
        over += len(owners) > 1
        mixed += len(profile.writers) > 1
        for p in owners & people:
            held_by[p] += 1
        for p in profile.writers & people:
            wrote_to[p] += 1
    return Score(
        people=len(people),
        profiles=count,
        over_merged_profiles=over,
        split_people=sum(n > 1 for n in held_by.values()),
        mixed_profiles=mixed,
        scattered_people=sum(n > 1 for n in wrote_to.values()),
    )


def _canonical(profiles: Iterable[Profile]) -> Counter[tuple[frozenset[Key], frozenset[int]]]:
    return Counter((frozenset(p.ids), frozenset(p.writers)) for p in profiles)


@dataclass(frozen=True)
class UglyReport:
    writes: int
    expected: dict[str, Score]  # "all" and each kind
    actual: dict[str, Score]
    profiles_only_expected: int  # profiles (ids and writers) the model has and the store lacks
    profiles_only_stored: int
    seconds: float

    @property
    def matches(self) -> bool:
        return (
            self.expected == self.actual and not self.profiles_only_expected and not self.profiles_only_stored
        )


def run_ugly(url: str, data: UglySet) -> UglyReport:
    want = expected(data)
    setup_org(url)
    db = Database(url)
    try:
        started = time.perf_counter()
        write_to_store(db, data)
        seconds = time.perf_counter() - started
        got = stored(db)
    finally:
        db.close()
    a, b = _canonical(want), _canonical(got)
    return UglyReport(
        data.writes,
        {k: score(want, data, None if k == "all" else k) for k in ("all", *KINDS)},
        {k: score(got, data, None if k == "all" else k) for k in ("all", *KINDS)},
        sum((a - b).values()),
        sum((b - a).values()),
        seconds,
    )


def report_lines(report: UglyReport, backend: str) -> Iterator[str]:
    tag = f"[ugly {backend}]"
    yield (
        f"{tag} {report.writes:,} writes in {report.seconds:.1f}s; the store "
        f"{'MATCHES' if report.matches else 'DIFFERS FROM'} the rules' expected result "
        f"(profiles only expected {report.profiles_only_expected:,}, only stored "
        f"{report.profiles_only_stored:,}); {load_note()}"
    )
    for kind in ("all", *KINDS):
        e, a = report.expected[kind], report.actual[kind]
        yield f"{tag} {kind:14s} expected: {e.line()}"
        if a != e:
            yield f"{tag} {kind:14s} stored:   {a.line()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ugly", description=__doc__)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        data = ugly_set(args.people, args.seed)
        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        failed = False
        for backend in args.backend or ["sqlite", "postgres"]:
            with fresh_database(backend, out) as url:
                report = run_ugly(url, data)
            for line in report_lines(report, backend):
                print(line, flush=True)
            print(
                f"[ugly {backend}] reproduce: .venv/bin/python -m bench.ugly --people {args.people} "
                f"--seed {args.seed} --backend {backend}",
                flush=True,
            )
            failed |= not report.matches
    if failed:
        sys.exit("the store differs from the rules' expected result")


if __name__ == "__main__":
    main()
