"""Ugly CRM people files for the bulk equivalence gate (``import people --bulk`` against the online
people import, matched by email).

``people_gate_set(people, seed)`` is a ``GateSet`` whose ``seed`` holds CDP records (profiles
stored before the import, some of them merged), ``seed_people`` people stored before it (written
online into both orgs), and ``main`` the people file, in file order:

- ``new``: a person with one to three emails (case and spaces varied), sometimes a phone number;
- ``returning``: a person written again, matched by an email in another case, with new
  attributes and an added email (the emails join, the first stays the primary);
- ``stored``: a person of ``seed_people`` written again (matched in the store);
- ``moving``: an email of one person given, not first, in another person's record: 409 (the
  email is the first person's), and that person's record written again without it;
- ``phones``: people sharing a phone number (their graph writes meet on one profile: the link's
  limit refuses the merge), spellings of one number, a number the graph's parser refuses;
- ``cdp``: people whose emails are those of stored CDP profiles (their links land there), two
  people naming the emails of one stored profile (the second is not linked), a person joining
  two stored profiles (a merge);
- ``blocked``: the org's blocked dummy email beside a person's own;
- ``junk``: an unreadable line, no name, a bad email, no email at all (matched by email: 400),
  an ``emails`` that is not a list.
"""

from __future__ import annotations

import random
from typing import Any

from bench.gate_set import UNREADABLE, GateSet
from bench.generate import DUMMY_EMAIL

PEOPLE_KINDS = ("new", "returning", "stored", "moving", "phones", "cdp", "blocked", "junk")


def _mail(tag: str, k: int = 0) -> str:
    return f"p{tag}.{k}@people.example"


def _person(rng: random.Random, tag: str, emails: list[str], phone: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"firstName": f"F{tag}", "emails": emails}
    if rng.random() < 0.5:
        body["lastName"] = f"L{tag}"
    if rng.random() < 0.3:
        body["jobTitle"] = rng.choice(["CTO", "Buyer", None])
    if phone is not None:
        body["phoneNumber"] = phone
    return body


def people_gate_set(people: int, seed: int = 20) -> GateSet:
    """About ``people`` people's records."""
    rng = random.Random(seed)
    out = GateSet()
    # CDP profiles stored first: one per email, odd ones also holding a phone, some merged.
    cdp_emails: list[str] = []
    for k in range(max(4, people // 6)):
        email = f"cdp{k}.s{seed}@gate.example"
        cdp_emails.append(email)
        out.seed.append({"ids": {"email": email}, "upsert": {"profile": {"seed": k}}})
        if k % 3 == 1:
            phone = f"+4917{seed:03d}{k:06d}"
            out.seed.append({"ids": {"cellphone": phone}, "upsert": {"profile": {"p": k}}})
            out.seed.append({"ids": {"email": email, "cellphone": phone}, "upsert": {}})
    # People stored first (written online into both orgs).
    stored: list[str] = []
    for k in range(max(2, people // 8)):
        email = f"stored{k}.s{seed}@people.example"
        stored.append(email)
        out.seed_people.append({"firstName": f"S{k}", "emails": [email], "jobTitle": "stored"})
    n = 0
    while n < people:
        kind = PEOPLE_KINDS[n % len(PEOPLE_KINDS)]
        tag = f"{seed}-{n}"
        n += 1
        records: list[Any]
        if kind == "new":
            emails = [_mail(tag, k) for k in range(rng.randint(1, 3))]
            emails = [
                e.upper() if rng.random() < 0.2 else f" {e} " if rng.random() < 0.1 else e for e in emails
            ]
            phone = f"+49151{seed:03d}{n:05d}" if rng.random() < 0.4 else None
            records = [_person(rng, tag, emails, phone)]
        elif kind == "returning":
            first = _person(rng, tag, [_mail(tag, 0)])
            again = {"emails": [_mail(tag, 0).upper(), _mail(tag, 1)], "lastName": f"Again{tag}"}
            if rng.random() < 0.5:
                again["phoneNumber"] = f"+49152{seed:03d}{n:05d}"
            records = [first, {"emails": [_mail(tag, 2)], "firstName": "other"}, again]
        elif kind == "stored" and stored:
            email = rng.choice(stored)
            records = [{"emails": [email.upper(), _mail(tag, 5)], "lastName": f"Back{tag}"}]
        elif kind == "moving":
            a, b = _mail(tag, 0), _mail(tag, 1)
            records = [
                _person(rng, f"{tag}a", [a]),
                _person(rng, f"{tag}b", [b, a]),  # a is the first person's: 409
                _person(rng, f"{tag}b", [b]),
                {"emails": [a, _mail(tag, 2)], "firstName": "A again"},
            ]
        elif kind == "phones":
            number = f"160{seed:03d}{n:05d}"
            records = [
                _person(rng, f"{tag}a", [_mail(tag, 0)], f"+49{number}"),
                _person(rng, f"{tag}b", [_mail(tag, 1)], f"+49 {number[:3]} {number[3:]}"),
                _person(rng, f"{tag}c", [_mail(tag, 2)], f"0049{number}"),
                _person(rng, f"{tag}d", [_mail(tag, 3)], "+49 12"),
            ]
        elif kind == "cdp" and len(cdp_emails) > 2:
            x, y = rng.sample(cdp_emails, 2)
            records = [
                _person(rng, f"{tag}a", [x.upper()]),
                _person(rng, f"{tag}b", [_mail(tag, 0), x]),  # 409: x is the first person's
                _person(rng, f"{tag}c", [y]),
                {"emails": [y, rng.choice(cdp_emails)], "firstName": "joins"},
            ]
        elif kind == "blocked":
            records = [_person(rng, tag, [_mail(tag, 0), DUMMY_EMAIL])]
        else:
            records = [
                UNREADABLE,
                {"emails": [_mail(tag, 0)]},  # no name
                {"firstName": "Bad", "emails": ["not-an-email"]},
                {"firstName": "None"},  # no email to match by
                {"firstName": "Shape", "emails": "a@b.example"},
            ]
        out.kinds[kind] = out.kinds.get(kind, 0) + len(records)
        out.main += records
    return out
