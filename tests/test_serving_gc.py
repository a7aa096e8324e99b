"""``profilehub serve`` builds its app with the collector tuned for serving (see app.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from profilehub.app import SERVING_GC_THRESHOLD, create_server_app


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_server_app_tunes_the_collector(
    restore_gc: None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    app = create_server_app()
    try:
        assert gc.get_threshold() == SERVING_GC_THRESHOLD
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
    finally:
        app.state.db.close()
