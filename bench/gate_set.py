"""Ugly CDP files for the bulk equivalence gate: what could make ``--bulk`` resolve differently from
the online importer.

``gate_set(people, seed)`` is a *seed* file (imported first: the profiles that already exist) and
a *main* file, both lists of CDP records in file order. The main file holds:

- the episodes of ``bench.ugly`` (clean people, families on a shared tablet, two crm ids glued by a
  device, a recycled phone, a hoarder over the AdId limit of five, the blocked dummy email and
  zero AdId), their bodies made uglier: attributes set to null, categories cleared, attribute
  clashes between profiles that later merge (every record is written at one time, so these tie);
- ``unicode``: emails whose case mapping differs between tools (``straße``/``STRASSE``,
  ``İstanbul``/``istanbul``, ``ǅ``), spaces around them;
- ``chain``: five profiles (one per primary idType, and a device) joined pair by pair in a random
  order: merges of merges, their attributes clashing at one time;
- ``unblocked_dummy``: a shared address (``noemail@example.com``) nobody blocked, sent by several
  people beside their own phone;
- ``phones``: raw phone numbers in several spellings of one number, a number that is not
  possible (refused) and one without its country code;
- ``existing``: records about people of the seed file (they land on, or merge, stored profiles);
- ``ucids``: records naming a seed profile's ucid (with ids, without, with another person's ids),
  a merged-away ucid, an unknown ucid with ids (a notice) and without (refused);
- ``junk``: an unreadable line, a record without ``upsert``, an id of the wrong type: rejects.

A record naming a seed profile holds a *marker* in place of its ucid (``{"seed_email": ...}`` or
``{"merged": n}``); ``materialise`` replaces it with the ucid found in the org the seed went to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench.generate import DUMMY_EMAIL, ZERO_AD_ID
from bench.ugly import KINDS, UglyWrite, _episode, _People, stored_key
from profilehub.store.database import Database
from profilehub.store.tables import profile_ids, profiles

UNKNOWN_UCID = "0190d5a4-0000-7000-8000-00000000abcd"
UNBLOCKED_DUMMY = "noemail@example.com"
GATE_KINDS = (*KINDS, "unicode", "chain", "unblocked_dummy", "phones", "existing", "ucids", "junk")
UNREADABLE = "{not json"


@dataclass
class GateSet:
    seed: list[Any] = field(default_factory=list)  # records (dicts)
    main: list[Any] = field(default_factory=list)  # records, markers for ucids, or UNREADABLE
    seed_people: list[Any] = field(default_factory=list)  # CRM people stored first (bench.gate_people)
    kinds: dict[str, int] = field(default_factory=dict)  # records per kind of the main file


def _uglier(body: dict[str, Any], rng: random.Random, person: int) -> dict[str, Any]:
    """An episode's body with nulls, clears and clashing attributes now and then."""
    upsert: dict[str, Any] = dict(body["upsert"])
    roll = rng.random()
    if roll < 0.15:
        upsert["profile"] = {**upsert["profile"], "city": None}  # null: removes the attribute
    elif roll < 0.25:
        upsert["consent"] = None  # clears the category
    elif roll < 0.5:
        # the same attribute written by different people: a merge's clash (tied in time)
        upsert["profile"] = {**upsert["profile"], "city": f"c{person % 7}", "tier": rng.choice([1, 2, None])}
    if rng.random() < 0.2:
        upsert["mkt_preferences"] = {"sms": rng.choice(["yes", "no", None])}
    return {"ids": body["ids"], "upsert": upsert}


def _email(p: int, seed: int) -> str:
    return f"g{p}.s{seed}@gate.example"


def _special(kind: str, n: int, seed: int, rng: random.Random, seeded: list[str]) -> list[Any]:
    """One episode of the gate's own kinds (``n`` numbers it; ``seeded``: emails of seed people)."""
    tag = f"{seed}-{n}"
    if kind == "unicode":
        return [
            {"ids": {"email": f"STRASSE{tag}@example.com"}, "upsert": {"profile": {"city": "Köln"}}},
            {"ids": {"email": f"straße{tag}@example.com", "AdId": f"u-{tag}"}, "upsert": {"consent": None}},
            {"ids": {"email": f"strasse{tag}@example.com", "AdId": f"u-{tag}"}, "upsert": {"profile": {}}},
            {"ids": {"email": f" İstanbul{tag}@example.com "}, "upsert": {"profile": {"name": "İ"}}},
            {"ids": {"email": f"istanbul{tag}@example.com", "cellphone": f"+4917{n:09d}"}, "upsert": {}},
            {"ids": {"email": f"ǅemal{tag}@example.com"}, "upsert": {"profile": {"name": "ǅ"}}},
        ]
    if kind == "chain":
        # five profiles, one per primary idType (and a device), then records that each join two
        # of them, in a random order: merges of merges, attributes clashing at one time
        ids = [
            {"email": f"chain{tag}@example.com"},
            {"cellphone": f"+4914{n:09d}"},
            {"crm_id": f"chain-{tag}"},
            {"fpuid": f"fp-{tag}"},
            {"AdId": f"ch-{tag}"},
        ]
        out: list[Any] = [
            {"ids": i, "upsert": {"profile": {"name": f"n{k}", f"own{k}": k}}} for k, i in enumerate(ids)
        ]
        links = [{**ids[k], **ids[k + 1]} for k in range(len(ids) - 1)]
        rng.shuffle(links)
        out += [
            {"ids": link, "upsert": {"profile": {"name": "link"}} if rng.random() < 0.3 else {}}
            for link in links
        ]
        return out
    if kind == "unblocked_dummy":
        out = []
        for k in range(rng.randint(2, 4)):
            phone = f"+4916{n:05d}{k:04d}"
            out.append(
                {"ids": {"email": UNBLOCKED_DUMMY, "cellphone": phone}, "upsert": {"profile": {"k": k}}}
            )
        return out
    if kind == "phones":
        number = f"15{n:08d}"
        return [
            {"ids": {"cellphone": f"+49{number}"}, "upsert": {"profile": {"p": 1}}},
            {"ids": {"cellphone": f"+49 {number[:3]} {number[3:]}"}, "upsert": {"profile": {"p": 2}}},
            {"ids": {"cellphone": f"0049{number}", "email": f"ph{tag}@example.com"}, "upsert": {}},
            {"ids": {"cellphone": f"+49 (0){number}"}, "upsert": {}},
            {"ids": {"cellphone": "+49 12"}, "upsert": {}},  # not a possible number: refused
            {"ids": {"cellphone": number}, "upsert": {}},  # no country code: refused
        ]
    if kind == "existing" and seeded:
        email = rng.choice(seeded)
        return [
            {"ids": {"email": email.upper(), "AdId": f"ex-{tag}"}, "upsert": {"profile": {"seen": n}}},
            {"ids": {"AdId": f"ex-{tag}", "cellphone": f"+4918{n:09d}"}, "upsert": {"consent": {"x": n}}},
        ]
    if kind == "ucids" and seeded:
        a, b = rng.sample(seeded, 2) if len(seeded) > 1 else (seeded[0], seeded[0])
        return [
            {"ucid": {"seed_email": a}, "upsert": {"profile": {"named": n}}},
            {"ucid": {"seed_email": a}, "ids": {"AdId": f"uc-{tag}"}, "upsert": {}},
            {"ucid": {"seed_email": a}, "ids": {"email": b}, "upsert": {"profile": {"clash": n}}},
            {"ucid": {"merged": n}, "ids": {"AdId": f"um-{tag}"}, "upsert": {"profile": {"m": 1}}},
            {"ucid": UNKNOWN_UCID, "ids": {"AdId": f"uu-{tag}"}, "upsert": {}},
            {"ucid": UNKNOWN_UCID, "upsert": {"profile": {"lost": 1}}},  # 404: refused
        ]
    if kind == "junk":
        return [
            UNREADABLE,
            {"ids": {"email": f"j{tag}@example.com"}},  # no upsert
            {"ids": {"email": ["list"]}, "upsert": {}},  # not a value
            {"ids": {"nonsense": "x"}, "upsert": {}},  # unknown idType
            {"ids": {"email": "not-an-email"}, "upsert": {}},
            {"ids": {"AdId": ZERO_AD_ID, "email": DUMMY_EMAIL}, "upsert": {}},  # blocked only
        ]
    return []


def gate_set(people: int, seed: int = 20) -> GateSet:
    """About ``people`` people's records (a main file of some 4 records per person)."""
    rng = random.Random(seed)
    made = _People(seed)
    own: dict[Any, int] = {}
    out = GateSet()
    # The seed: people already in the store, some of them merged (a merged-away ucid to name).
    seeded: list[str] = []
    for k in range(max(2, people // 8)):
        email = _email(k, seed)
        seeded.append(email)
        out.seed.append({"ids": {"email": email}, "upsert": {"profile": {"seed": k, "city": "s"}}})
        if k % 2:
            out.seed.append({"ids": {"cellphone": f"+4919{k:09d}"}, "upsert": {"profile": {"city": "t"}}})
            out.seed.append({"ids": {"email": email, "cellphone": f"+4919{k:09d}"}, "upsert": {}})
    episode = 0
    while made.next < people:
        kind = GATE_KINDS[episode % len(GATE_KINDS)]
        episode += 1
        if kind in KINDS:
            writes: list[UglyWrite] = _episode(kind, made, rng, own)
            records: list[Any] = [_uglier(w.body(), rng, w.person) for w in writes]
        else:
            made.next += 1
            records = _special(kind, episode, seed, rng, seeded)
        out.kinds[kind] = out.kinds.get(kind, 0) + len(records)
        out.main += records
    return out


def _ucid_of(db: Database, org_id: int, region: str, marker: dict[str, Any]) -> str:
    with db.read() as conn:
        if "seed_email" in marker:
            id_type, value = stored_key("email", marker["seed_email"])
            ucid = conn.scalar(
                sa.select(profile_ids.c.ucid).where(
                    profile_ids.c.org_id == org_id,
                    profile_ids.c.region == region,
                    profile_ids.c.id_type == id_type,
                    profile_ids.c.value == value,
                )
            )
        else:
            merged = conn.scalars(
                sa.select(profiles.c.ucid)
                .where(profiles.c.org_id == org_id, profiles.c.merged_into.is_not(None))
                .order_by(profiles.c.created_ts, profiles.c.ucid)
            ).all()
            ucid = merged[marker["merged"] % len(merged)] if merged else UNKNOWN_UCID
    if ucid is None:
        raise LookupError(f"no seed profile for {marker}")
    return str(ucid)


def materialise(records: list[Any], db: Database, org_id: int, region: str) -> list[Any]:
    """``records`` with ucid markers replaced by the ucids of org ``org_id`` (seeded already)."""
    out: list[Any] = []
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("ucid"), dict):
            record = {**record, "ucid": _ucid_of(db, org_id, region, record["ucid"])}
        out.append(record)
    return out


def write_file(records: list[Any], path: Path) -> Path:
    """NDJSON, one record a line (an ``UNREADABLE`` string as it is)."""
    with path.open("wb") as f:
        for record in records:
            f.write((record.encode() if isinstance(record, str) else orjson.dumps(record)) + b"\n")
    return path
