"""bench.fill makes the rows the write path makes: written people resolve to their filled profiles."""

from __future__ import annotations

from typing import Any

import orjson
from bench.fill import _data, after_fill, fill, fill_identifiers, fill_ucid, fill_writes, probe_ids
from bench.generate import ORG_ID, REGION
from bench.run_import import setup_org

from profilehub.identity.normalize import Identifier
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult
from profilehub.store.database import Database

FILLED = 100


def _write(service: ProfileService, ids: dict[str, Any], upsert: dict[str, Any]) -> WriteResult:
    (result,) = service.write_batch([ProfileWrite(ORG_ID, REGION, ids, upsert)], "test")
    assert isinstance(result, WriteResult), result
    return result


def _ids_of(db: Database, ucid: str) -> set[Identifier]:
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id_type, value FROM profile_ids WHERE ucid = '%s'" % ucid  # noqa: UP031 (a ucid we made)
        ).all()
    return {Identifier(t, v) for t, v in rows}


def _count(db: Database, table: str) -> int:
    with db.read() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar_one())


def test_filled_people_resolve_to_their_profiles(database_url: str) -> None:
    Database(database_url).close()
    setup_org(database_url)
    result = fill(database_url, FILLED)
    assert (result.profiles, result.merged, result.changes) == (FILLED, 1, FILLED)
    db = Database(database_url)
    try:
        if db.dialect == "sqlite":
            with db.read() as conn:  # the fill left WAL mode for the load only
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        profiles = _count(db, "profiles")
        assert profiles == FILLED + 1
        assert _count(db, "profile_ids") == result.id_rows
        # The rows filled for profile i are the ones the normaliser derives from its raw ids.
        for i in (0, 3, 5, 7, 50, 99):
            assert _ids_of(db, fill_ucid(i)) == {ident for ident, _ in fill_identifiers(i)}
        service = ProfileService(db)
        # A write of filled person 6 by raw email (as a feed sends it) lands on profile 7.
        written = _write(service, {"email": "  FILL6@Example6.com", "AdId": "dev-new"}, {"profile": {"x": 1}})
        assert not written.created and written.profile["ucid"] == fill_ucid(6)
        assert written.profile["profile"]["first_name"] == "F6"
        for i, shape in ((0, 0), (3, 2), (5, 1), (98, 0)):  # every probe shape
            written = _write(service, probe_ids(i, shape), {"profile": {"x": 2}})
            assert not written.created and written.profile["ucid"] == fill_ucid(i)
        # Profile 50 has a profile merged into it, which a write of person 50 reports.
        written = _write(service, probe_ids(50, 0), {})
        assert written.profile["ids"]["linkedUcid"] == [fill_ucid(50, merged=True)]
        assert _count(db, "profiles") == profiles
        # The same people written through the write path, past the filled ones, make the rows the
        # fill makes for them: the same ids and the same attributes.
        for i in range(FILLED, FILLED + 13):
            upsert = {c: {k: v for k, v in attrs.items() if k != "_ts"} for c, attrs in _data(i).items()}
            first, *rest = fill_writes(i)
            written = _write(service, first, upsert)
            assert written.created
            for ids in rest:
                assert not _write(service, ids, {}).created
            ucid = written.profile["ucid"]
            assert _ids_of(db, ucid) == {ident for ident, _ in fill_identifiers(i)}
            with db.read() as conn:
                data = orjson.loads(
                    conn.exec_driver_sql("SELECT data FROM profiles WHERE ucid = '%s'" % ucid).scalar_one()  # noqa: UP031
                )
            strip = {c: {k: v for k, v in a.items() if k != "_ts"} for c, a in data.items() if a}
            assert strip == upsert
            assert ucid > after_fill(FILLED)  # writes' ucids sort after every filled one
    finally:
        db.close()
