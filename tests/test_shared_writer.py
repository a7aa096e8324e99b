"""An importer beside the server on one SQLite file shares the write lock: a server write that
waits gets in between two import transactions, and the import writes smaller transactions while
server writes wait.

SQLite only: the turns are about one file's lock (PostgreSQL writers queue on row locks).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer, Outcome
from profilehub.store.database import Database


def test_a_waiting_server_write_commits_between_two_import_transactions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    server = Database(url)
    importer = Database(url, yields_to_waiting_writers=True)
    order: list[str] = []
    inside_first = threading.Event()
    finish_first = threading.Event()
    second: list[Future[None]] = []

    def first_import_batch(conn: Connection) -> None:
        inside_first.set()
        finish_first.wait(10)
        order.append("import 1")

    def second_import_batch(conn: Connection) -> None:
        order.append("import 2")

    def server_write(conn: Connection) -> None:
        order.append("server")

    try:
        first = importer.submit(first_import_batch)
        # As the importer does: its next batch is queued the moment the previous one commits.
        first.add_done_callback(lambda _: second.append(importer.submit(second_import_batch)))
        assert inside_first.wait(10)
        waiting = server.submit(server_write)
        time.sleep(0.3)  # the server's write is now waiting for the file (not a timed assertion)
        finish_first.set()
        waiting.result(timeout=30)
        first.result(timeout=30)
        second[0].result(timeout=30)
        assert order == ["import 1", "server", "import 2"]
        # and the importer has been told that writers wait (it then writes smaller batches), and
        # that a server shares the file (which the server itself is not told of the importer)
        assert importer.writers_waiting() and importer.writers_present()
        assert not server.writers_present()
    finally:
        finish_first.set()
        importer.close()
        server.close()


class Sharing:
    """What the importer is told of other writers of its database."""

    def __init__(self, *, waiting: bool = False, present: bool = False) -> None:
        self.waiting, self.present = waiting, present

    def writers_waiting(self) -> bool:
        return self.waiting

    def writers_present(self) -> bool:
        return self.present or self.waiting


def _import(tmp_path: Path, shared: Sharing) -> list[int]:
    """The sizes of the batches a 1,000-record import writes, with --batch-size 100."""
    source = tmp_path / "records.ndjson"
    source.write_text("".join(f'{{"n": {i}}}\n' for i in range(1000)))
    sizes: list[int] = []

    class Written:
        created = True

    def sink(records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        sizes.append(len(records))
        return [Written() for _ in records]

    importer = Importer(
        source,
        lambda offset, line: read_ndjson(source, offset, line),
        sink,
        batch_size=100,
        workers=0,
        shared=shared,
    )
    summary = importer.run()
    assert summary.created == 1000 and sum(sizes) == 1000
    return sizes


def test_the_importer_writes_small_batches_while_other_writers_wait(tmp_path: Path) -> None:
    assert set(_import(tmp_path, Sharing(waiting=True))) == {5}  # a twentieth of --batch-size


def test_beside_a_server_the_importer_starts_small_and_grows_while_nobody_waits(tmp_path: Path) -> None:
    # Small first (the server may wait by the time a large first batch is written), then doubling.
    assert _import(tmp_path, Sharing(present=True))[:7] == [5, 10, 20, 40, 80, 100, 100]


def test_alone_the_importer_writes_batches_of_batch_size(tmp_path: Path) -> None:
    assert set(_import(tmp_path, Sharing())) == {100}
