"""The bulk path's preparing (``bulk.prepare``) makes of every record exactly what the online
importer's ``profile_write`` and ``prepare_write`` make of it: the same ids in the same order, the
same notices, the same upsert, or the same refusal word for word, whatever the strategy (raw ids
kept, an idType disabled or removed, a hash blocked, ids suppressed), and from a warm memo as from
a cold one. Then the same ugly file through both importers on both databases: the same rejects file
and profiles."""

from __future__ import annotations

import dataclasses
import functools
import random
import unicodedata
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest
from bench.gate_set import UNREADABLE, gate_set

from profilehub.bulk import prepare
from profilehub.bulk.resolve import id_key
from profilehub.errors import BadRequest, ProfilehubError
from profilehub.identity import normalize
from profilehub.identity.normalize import Identifier, Notice, email_hashes, phone_hashes
from profilehub.identity.strategy import IdClass, Strategy, default_strategy
from profilehub.identity.suppression import Suppression, fingerprinter
from profilehub.ingest import checkpoint
from profilehub.ingest.cdp import profile_write
from profilehub.ingest.reader import ndjson_lines
from profilehub.profiles import prepare_write
from profilehub.store.database import Database
from tests.conftest import make_org
from tests.test_bulk_import import BULK, ONLINE, bulk_run, change_log, events, journal, online
from tests.test_import import snapshot, write_ndjson

ORG = 1234
ACTOR = "test-import"
SUPPRESSED_EMAIL = "gone@example.com"
SUPPRESSED_AD = "ad-gone"
BLOCKED_HASH_EMAIL = "hashed-away@example.com"
LINES = 9012  # the org of the bulk import that reads the file's lines where it prepares them


def ugly_records() -> list[Any]:
    """Records of every shape the plain path must take, or hand over, exactly."""
    long_id = "x" * 513
    records: list[Any] = [
        # plain, as the benchmark's generator writes them
        {"orgId": ORG, "region": "EU", "ids": {"email": "a@example.com", "AdId": "ad-1"}, "upsert": {}},
        {
            "ids": {"cellphone": "+4915000000001", "AdId": "ad-2", "fpuid": "fp-2"},
            "upsert": {"profile": {"n": 1}},
        },
        {
            "ids": {"email": "  A@Example.COM ", "ga_clientid": "GA1.2.3.4"},
            "upsert": {"consent": {"x": "yes"}},
        },
        {"ids": {"email": "a@example.com", "cellphone": "+4915000000001", "AdId": "ad-1"}, "upsert": {}},
        # values in other orders, the same values again (the memo)
        {"ids": {"AdId": "ad-1", "email": "a@example.com"}, "upsert": {"profile": {"n": 2}}},
        {"ids": {"fpuid": "fp-2", "cellphone": "+4915000000001"}, "upsert": {}},
        # Unicode case mapping: Python's, as online
        {"ids": {"email": "straße@example.com"}, "upsert": {"profile": {"city": "Köln"}}},
        {"ids": {"email": "STRASSE@example.com"}, "upsert": {}},
        {"ids": {"email": "İstanbul@example.com", "AdId": "İ-ad"}, "upsert": {}},
        {"ids": {"email": "ǅemal@example.com"}, "upsert": {"profile": {"name": "ǅ"}}},
        # nulls and clears
        {"ids": {"email": None}, "upsert": {}},
        {"ids": {"email": "b@example.com", "AdId": None}, "upsert": {"profile": None}},
        {"ids": {"email": "b@example.com"}, "upsert": {"profile": {"a": None, "b": [1, None]}}},
        {"ids": None, "upsert": {}},
        {"ids": {"email": "b@example.com"}, "upsert": None},
        {"ids": {"email": "b@example.com"}, "upsert": {"consent": {"nested": {"deep": [{"x": 1}]}}}},
        # blocked values: dropped with a notice, or the whole record refused
        {"ids": {"email": "test@test.com", "AdId": "ad-3"}, "upsert": {}},
        {
            "ids": {"email": " NULL ", "AdId": "00000000-0000-0000-0000-000000000000", "fpuid": "fp-3"},
            "upsert": {},
        },
        {"ids": {"AdId": "00000000-0000-0000-0000-000000000000"}, "upsert": {}},
        {"ids": {"email": "null", "cellphone": "0"}, "upsert": {}},
        # phones: spellings, national numbers, impossible numbers, national prefixes
        {"ids": {"cellphone": "+49 151 00000001"}, "upsert": {}},
        {"ids": {"cellphone": "015100000001"}, "upsert": {}},
        {"ids": {"cellphone": "+49015100000001"}, "upsert": {}},
        {"ids": {"cellphone": "+4912"}, "upsert": {}},
        {"ids": {"cellphone": "+999123456789"}, "upsert": {}},
        {"ids": {"cellphone": "+12125550123", "AdId": "ad-4"}, "upsert": {}},
        {"ids": {"cellphone": "+112125550123"}, "upsert": {}},
        {"ids": {"cellphone": "+390612345678"}, "upsert": {}},
        {"ids": {"cellphone": "+٤٩١٥١٠٠٠٠٠٠٠١"}, "upsert": {}},
        {"ids": {"cellphone": "not a phone"}, "upsert": {}},
        # explicit hashes beside the raw value: the same, and another one (a notice)
        {
            "ids": {
                "email": "c@example.com",
                "email_sha256_lowercase": email_hashes("c@example.com")["email_sha256_lowercase"],
            },
            "upsert": {},
        },
        {"ids": {"email": "c@example.com", "email_sha256_lowercase": "F" * 64}, "upsert": {}},
        {
            "ids": {
                "cellphone_number_e164_sha1": phone_hashes("+4915000000001")[
                    "cellphone_number_e164_sha1"
                ].upper()
            },
            "upsert": {},
        },
        # ids the model or the core refuses
        {"ids": {"email": 5}, "upsert": {}},
        {"ids": {"AdId": 12345}, "upsert": {}},
        {"ids": {"AdId": True}, "upsert": {}},
        {"ids": {"AdId": ["a"]}, "upsert": {}},
        {"ids": {"AdId": long_id}, "upsert": {}},
        {"ids": {"AdId": "a\x00b"}, "upsert": {}},
        {"ids": {"AdId": "bad\ud800"}, "upsert": {}},
        {"ids": {"email": "not-an-email"}, "upsert": {}},
        {"ids": {"email": "a b@example.com"}, "upsert": {}},
        {"ids": {"email": "a\u200b@example.com"}, "upsert": {}},
        {"ids": {"email": "a\tb@example.com"}, "upsert": {}},
        {"ids": {"email": ("l" * 65) + "@example.com"}, "upsert": {}},
        {"ids": {"nope": "x"}, "upsert": {}},
        {"ids": {"crm_person_id": "p-1"}, "upsert": {}},
        {"ids": {}, "upsert": {}},
        {"upsert": {}},
        # the body's fields
        {"ids": {"AdId": "ad-5"}},
        {"ids": {"AdId": "ad-5"}, "upsert": []},
        {"ids": {"AdId": "ad-5"}, "upsert": {}, "extra": 1},
        {"orgId": 99, "ids": {"AdId": "ad-5"}, "upsert": {}},
        {"orgId": "1234", "ids": {"AdId": "ad-5"}, "upsert": {}},
        {"orgId": True, "ids": {"AdId": "ad-5"}, "upsert": {}},
        {"orgId": 1234.0, "ids": {"AdId": "ad-5"}, "upsert": {}},
        {"region": "eu", "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": " EU ", "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": "UK", "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": "US", "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": "", "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": "E" * 17, "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": 5, "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"region": None, "ids": {"AdId": "ad-6"}, "upsert": {}},
        {"ucid": "0190d5a4-0000-7000-8000-000000000000", "upsert": {}},
        {"ucid": "not-a-ucid", "ids": {"AdId": "ad-7"}, "upsert": {}},
        {"ucid": None, "ids": {"AdId": "ad-7"}, "upsert": {}},
        # upserts: categories, names, values
        {"ids": {"AdId": "ad-8"}, "upsert": {"nope": {}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": "x"}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"_ts": 1}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"": 1}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"n" * 201: 1}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"ñame": "Zoë", "a\x00": 1}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": "b\x00"}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": "b\udc00"}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": 2**64}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": -(2**63) - 1, "b": 2**64 - 1}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": float("nan")}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": float("inf")}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": 1.5, "b": True, "c": False, "d": None}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": {"k\x00": 1}}}},
        {"ids": {"AdId": "ad-8"}, "upsert": {"profile": {"a": _nested(34)}}},
        # suppressed and hashed-away values (the strategies below)
        {"ids": {"email": SUPPRESSED_EMAIL, "AdId": "ad-9"}, "upsert": {}},
        {"ids": {"email": SUPPRESSED_EMAIL}, "upsert": {}},
        {"ids": {"AdId": SUPPRESSED_AD, "fpuid": "fp-9"}, "upsert": {}},
        {"ids": {"email": BLOCKED_HASH_EMAIL, "AdId": "ad-10"}, "upsert": {}},
        {"ids": {"email_md5_uppercase": "ABC", "AdId": "ad-11"}, "upsert": {}},
    ]
    return records


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def strategies() -> dict[str, Strategy]:
    base = default_strategy(ORG, ["EU", "UK"])
    base = dataclasses.replace(base, blocked={**base.blocked, "email": frozenset({"test@test.com"})})
    types = dict(base.id_types)
    disabled = {
        **types,
        "email_md5_uppercase": dataclasses.replace(types["email_md5_uppercase"], id_class=IdClass.DISABLED),
    }
    removed = {t: rule for t, rule in types.items() if t != "email_sha1_lowercase"}
    blocked_hash = email_hashes(BLOCKED_HASH_EMAIL)["email_sha256_lowercase"]
    key = b"k" * 32
    fingerprint = fingerprinter(key)
    prints = frozenset(
        fingerprint(i) for i in (Identifier("email", SUPPRESSED_EMAIL), Identifier("AdId", SUPPRESSED_AD))
    )
    return {
        "default": base,
        "keep_raw_ids": dataclasses.replace(base, keep_raw_ids=True),
        "disabled": dataclasses.replace(base, id_types=disabled),
        "removed": dataclasses.replace(base, id_types=removed),
        "blocked_hash": dataclasses.replace(
            base, blocked={**base.blocked, "*": base.blocked["*"] | {blocked_hash}}
        ),
        "suppressed": dataclasses.replace(base, suppression=Suppression(key, {"EU": prints})),
        "suppressed_elsewhere": dataclasses.replace(base, suppression=Suppression(key, {"UK": prints})),
    }


def online_item(strategy: Strategy, record: dict[str, Any]) -> Any:
    """What the online importer makes of ``record``, in terms a test can compare."""
    try:
        w = prepare_write(strategy, profile_write(record, ORG, "EU"), ACTOR)
    except ProfilehubError as exc:
        return ("refused", type(exc).__name__, exc.status, exc.message, exc.errors)
    codes = {name: t for t, name in enumerate(sorted(strategy.id_types))}
    return (
        w.region,
        [tuple(i) for i in w.ids],
        w.upsert,
        w.ucid,
        [n.as_dict() for n in w.notices],
        [id_key(w.region, i.id_type, i.value) for i in w.ids],
        [codes[i.id_type] for i in w.ids],
    )


def bulk_item(item: prepare.Compact | ProfilehubError) -> Any:
    if isinstance(item, ProfilehubError):
        return ("refused", type(item).__name__, item.status, item.message, item.errors)
    region, parts, upsert, ucid, notices, keys, types = item
    return (
        region,
        [(parts[n], parts[n + 1]) for n in range(0, len(parts), 2)],
        orjson.loads(upsert),
        ucid,
        [n.as_dict() for n in notices or []],
        list(keys),
        list(types),
    )


def _records() -> list[dict[str, Any]]:
    gate = gate_set(30, seed=5)
    return [r for r in ugly_records() + gate.seed + gate.main if isinstance(r, dict)]


@pytest.mark.parametrize("name", list(strategies()))
def test_each_record_is_prepared_as_online(name: str) -> None:
    strategy = strategies()[name]
    records = _records()
    expected = [online_item(strategy, r) for r in records]
    preparer = prepare.Preparer(strategy, ORG, "EU", ACTOR)
    # twice: the second time every value comes from the memo
    for _ in range(2):
        assert [bulk_item(preparer.prepare(r)) for r in records] == expected
    # in another order, in chunks, as the importer hands them out (a fresh memo per import)
    order = list(range(len(records)))
    random.Random(7).shuffle(order)
    shuffled = [records[k] for k in order]
    chunk = prepare.prepare_chunk(f"import-{name}", strategy, ORG, "EU", ACTOR, [*shuffled, None])
    assert chunk.refused[len(shuffled)] is None  # an unreadable line
    assert _items(chunk, len(shuffled)) == [expected[k] for k in order]


def _items(chunk: prepare.PreparedChunk, count: int) -> list[Any]:
    """The chunk's records as ``online_item`` has them, read back from its lines and arrays."""
    out: list[Any] = []
    bodies = iter(chunk.bodies)
    sizes = iter(chunk.counts)
    at = 0
    for n in range(count):
        error = chunk.refused.get(n)
        if error is not None:
            out.append(("refused", type(error).__name__, error.status, error.message, error.errors))
            continue
        _, region, parts, upsert, ucid, kept = orjson.loads(b"[0," + next(bodies))
        size = next(sizes)
        notices = [Notice(*x) for x in kept or []]
        assert (n in chunk.suppressed) == any(x.code == "id_suppressed" for x in notices)
        assert chunk.ucids.get(n) == ucid and region in chunk.regions
        out.append(
            (
                region,
                [(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)],
                upsert,
                ucid,
                [x.as_dict() for x in notices],
                list(chunk.keys[at : at + size]),
                list(chunk.types[at : at + size]),
            )
        )
        at += size
    return out


def test_the_set_takes_both_paths() -> None:
    """Most records take the plain path, and the ugly ones the online functions (else the test
    above would compare one path with itself)."""
    preparer = prepare.Preparer(strategies()["default"], ORG, "EU", ACTOR)
    records = _records()
    plain = [r for r in records if preparer._plain(r) is not None]
    assert len(records) > 150 and len(records) * 0.4 < len(plain) < len(records) * 0.95


def test_a_memo_that_fills_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "MEMO_VALUES", 5)
    strategy = strategies()["default"]
    records = _records()
    preparer = prepare.Preparer(strategy, ORG, "EU", ACTOR)
    assert [bulk_item(preparer.prepare(r)) for r in records] == [online_item(strategy, r) for r in records]
    assert len(preparer._memo) <= 5


def test_plain_phone_numbers_read_as_phonenumbers_reads_them() -> None:
    """``+<digits>`` without parsing: the same E.164 form, or the same refusal, as ``phonenumbers``
    gives, across every country code, national prefixes, leading zeros and lengths."""
    rng = random.Random(11)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    fast = 0
    for _ in range(4000):
        digits = str(rng.choice(codes)) + rng.choice(("", "0", "1", "00", "8"))
        digits += "".join(rng.choice("0123456789") for _ in range(rng.randrange(0, 16)))
        value = "+" + digits
        if normalize._PLAIN_E164.fullmatch(value) and normalize._plain_e164(value) is not None:
            fast += 1
        for hint in (None, "DE", "US"):
            assert normalize._e164(value, hint) == normalize._parsed_e164.__wrapped__(value, hint), value
    assert fast > 2000


def test_ascii_emails_are_checked_as_unicode_says() -> None:
    """The ASCII shortcut of ``check_email`` refuses exactly the characters in Unicode's C and Z
    categories, and names the first one."""
    for code in range(128):
        text = f"a{chr(code)}b{chr(code)}@example.com"
        bad = next((c for c in text if unicodedata.category(c)[0] in "CZ"), None)
        try:
            normalize.check_email(text, "ids.email")
            message = ""
        except BadRequest as exc:
            message = exc.message
        if bad is None:
            assert "must not contain" not in message, text
        else:
            what = "a space" if bad == " " else f"the character U+{ord(bad):04X}"
            assert message.endswith(f"an email address must not contain {what}"), text


def test_an_ugly_file_gives_the_same_rejects_and_profiles(db: Database, tmp_path: Path) -> None:
    for org_id in (ONLINE, BULK, LINES):
        make_org(db, org_id)
    gate = gate_set(20, seed=9)
    records = (
        [r for r in ugly_records() if _json_safe(r) and "orgId" not in r]  # two orgs here
        + [UNREADABLE]
        + [r for r in gate.seed + gate.main if isinstance(r, dict) and not isinstance(r.get("ucid"), dict)]
    )
    path = write_ndjson(tmp_path / "ugly.ndjson", records)
    one_by_one = online(db, path)
    online_rejects = checkpoint.rejects_path(path).read_text()
    # records read by the importer's reader, and lines read where they are prepared
    for org_id, lines in ((BULK, None), (LINES, functools.partial(ndjson_lines, path))):
        summary = bulk_run(db, path, org_id, lines=lines)
        assert summary.rejected == one_by_one.rejected > 40
        assert summary.reject_reasons == one_by_one.reject_reasons
        assert checkpoint.rejects_path(path).read_text() == online_rejects
        assert (summary.created, summary.updated) == (one_by_one.created, one_by_one.updated)
        assert snapshot(db, org_id) == snapshot(db, ONLINE)
        assert change_log(db, org_id) == change_log(db, ONLINE)
        assert journal(db, org_id) == journal(db, ONLINE)
        assert events(db, org_id) == events(db, ONLINE)


def _json_safe(record: Any) -> bool:
    try:
        orjson.dumps(record)
    except orjson.JSONEncodeError:
        return False
    return True
