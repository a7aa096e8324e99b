"""Synthetic CDP records with ground truth: which records really are the same person.

Every record carries three ids of one true person. A person first shows up by email or by phone
(with one of their devices and a first-party id or GA client id); later records repeat one of
those shapes or carry email, phone and a device at once, which joins the profiles made so far
(a merge). The ugly cases real feeds have are in: a shared dummy email (``test@test.com``) and the
all-zero ad id in place of real values, emails in other case and with spaces around them, people
with up to three devices.

Everything about a person is derived from its number, so memory stays flat whatever the size.
The ground truth is written as ``person<TAB>idType<TAB>stored value`` lines: the values as
profilehub stores them (hashes of the normalised email and phone), for comparison in SQL.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ORG_ID = 1234
REGION = "EU"
DUMMY_EMAIL = "test@test.com"
ZERO_AD_ID = "00000000-0000-0000-0000-000000000000"
NEW_PERSON_SHARE = 0.6


@dataclass(frozen=True)
class Person:
    number: int
    seed: int

    def _rng(self) -> random.Random:
        return random.Random(self.seed * 1_000_003 + self.number)

    @property
    def email(self) -> str:
        return f"user{self.number}@example{self.number % 97}.com"

    @property
    def phone(self) -> str:
        return f"+4915{self.number:09d}"

    @property
    def devices(self) -> list[str]:
        rng = self._rng()
        count = rng.choice((1, 1, 1, 2, 2, 3))
        return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]

    @property
    def fpuid(self) -> str:
        return f"fp-{self.seed}-{self.number}"

    @property
    def ga_clientid(self) -> str:
        return f"GA1.2.{self.number}.{self.seed}"

    def truth(self) -> Iterator[tuple[str, str]]:
        """(idType, value as stored) of everything that identifies this person."""
        yield "email_sha256_lowercase", hashlib.sha256(self.email.encode()).hexdigest()
        yield "cellphone_number_e164_sha256", hashlib.sha256(self.phone.encode()).hexdigest()
        yield "fpuid", self.fpuid
        yield "ga_clientid", self.ga_clientid
        for device in self.devices:
            yield "AdId", device


def _email_variant(rng: random.Random, email: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        return email.upper()
    if roll < 0.25:
        return f"  {email.capitalize()} "
    return email


def records(count: int, seed: int = 7) -> Iterator[tuple[dict[str, Any], int, bool]]:
    """(CDP write body, true person, whether the person is new) for ``count`` records."""
    rng = random.Random(seed)
    people = 0
    seen: bytearray = bytearray()
    for i in range(count):
        new = people == 0 or rng.random() < NEW_PERSON_SHARE
        if new:
            number = people
            people += 1
            seen.append(0)
        else:
            number = rng.randrange(people)
        person = Person(number, seed)
        devices = person.devices
        device = devices[rng.randrange(len(devices))]
        appearances = seen[number]
        seen[number] = min(appearances + 1, 255)
        shape = rng.random()
        email = _email_variant(rng, person.email)
        if rng.random() < 0.02:
            email = DUMMY_EMAIL
        if rng.random() < 0.01:
            device = ZERO_AD_ID
        if appearances > 0 and shape < 0.4:
            ids = {"email": email, "cellphone": person.phone, "AdId": device}
        elif shape < 0.7:
            ids = {"email": email, "AdId": device, "ga_clientid": person.ga_clientid}
        else:
            ids = {"cellphone": person.phone, "AdId": device, "fpuid": person.fpuid}
        upsert: dict[str, Any] = {"profile": {"first_name": f"F{number}", "last_seen_batch": i // 1000}}
        if rng.random() < 0.3:
            upsert["consent"] = {"gdpr_marketing": rng.choice(("yes", "no"))}
        if rng.random() < 0.2:
            upsert["mkt_preferences"] = {"sms_optin": rng.choice(("yes", "no"))}
        yield {"orgId": ORG_ID, "region": REGION, "ids": ids, "upsert": upsert}, number, new


def new_person_record(number: int, seed: int, rng: random.Random) -> dict[str, Any]:
    """A record of person ``number`` in the shapes ``records`` gives a first appearance (email,
    device and GA client id; or phone, device and first-party id), without dummies. For a number
    past every person of a dataset it is a person that dataset never stored."""
    person = Person(number, seed)
    devices = person.devices
    device = devices[rng.randrange(len(devices))]
    if rng.random() < 0.7:
        ids = {"email": _email_variant(rng, person.email), "AdId": device, "ga_clientid": person.ga_clientid}
    else:
        ids = {"cellphone": person.phone, "AdId": device, "fpuid": person.fpuid}
    upsert = {"profile": {"first_name": f"F{number}", "last_seen_batch": -1}}
    return {"orgId": ORG_ID, "region": REGION, "ids": ids, "upsert": upsert}


@dataclass(frozen=True)
class Dataset:
    records: Path
    truth: Path
    count: int
    people: int


def dataset(out: Path, count: int, seed: int = 7) -> Dataset:
    """Write (or reuse) ``records-<count>-<seed>.ndjson`` and its ground truth under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"records-{count}-{seed}.ndjson"
    truth = out / f"truth-{count}-{seed}.tsv"
    done = out / f"records-{count}-{seed}.done"
    if not done.exists():
        people = 0
        with path.open("wb") as f, truth.open("w") as t:
            for body, number, new in records(count, seed):
                f.write(orjson.dumps(body) + b"\n")
                if new:
                    people += 1
                    for id_type, value in Person(number, seed).truth():
                        t.write(f"{number}\t{id_type}\t{value}\n")
        done.write_text(str(people))
    return Dataset(path, truth, count, int(done.read_text()))
