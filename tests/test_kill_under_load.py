"""``kill -9`` of ``profilehub serve`` under write load loses no acknowledged write.

A write is answered 200 only after its transaction committed; a process killed without warning
loses what was queued or in flight (never answered), never what was answered. Concurrent clients
write new people and log every 200; the server is killed mid-load and started again on the same
database, which must hold every acknowledged person, once, with the attributes written.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.serve_process import new_org, serve
from tests.write_load import WriteLoad, missing_acknowledged


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_every_write_acknowledged_before_kill_9_is_found_after_restart(
    database_url: str, tmp_path: Path
) -> None:
    org = new_org(database_url)
    with serve(database_url, tmp_path) as server:
        load = WriteLoad(server.base, org, clients=8).start()
        try:
            load.wait_for_acks(200)  # well under way: writes queued, in flight and committing
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            load.stop()
    acknowledged = load.acknowledged()
    # Writes were still being sent when the kill came (not a server that had gone idle).
    assert [a for a in load.answers if a.status is None], "no write was cut off by the kill"
    assert [a for a in load.answers if not a.acknowledged and a.status is not None] == []
    with serve(database_url, tmp_path) as server:
        assert missing_acknowledged(server.base, org, acknowledged) == []
