"""Every ``profilehub`` command loads only what it uses: the web stack (FastAPI, Starlette,
uvicorn), Alembic and the CRM and bulk modules took ~1 s of start-up (2+ CPU s on a busy machine)
before ``profilehub --help`` or ``org list`` printed anything. Each check runs a fresh process,
as the command does, and reads which modules it loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import migrated_url

# What no administration command needs: the server's stack, migrations (unless the schema is
# behind), the CRM dialect, the bulk path's arrays.
HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "alembic",
    "prometheus_client",
    "numpy",
    "scipy",
    "profilehub.app",
    "profilehub.crm.people",
    "profilehub.crm.models",
    "profilehub.bulk.engine",
)

_REPORT = """
import json, sys
{run}
heavy = {heavy!r}
print(json.dumps([name for name in heavy if name in sys.modules]), file=sys.stderr)
"""


def _loaded(run: str, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The heavy modules a fresh process had loaded after ``run``, and its stdout."""
    code = _REPORT.format(run=run, heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


def test_the_command_line_loads_no_server_migrations_or_crm() -> None:
    loaded, _ = _loaded("import profilehub.cli")
    assert loaded == []


def test_help_loads_no_server_migrations_or_crm() -> None:
    loaded, out = _loaded(
        "from profilehub.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert "org" in out and "serve" in out and "import" in out, out
    assert loaded == []


def test_org_list_on_a_current_schema_loads_no_migrations(database_url: str) -> None:
    # The schema at the newest revision: opening it needs no Alembic (it was ~0.3 s of each run).
    url = migrated_url(database_url)
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
    loaded, out = _loaded(
        "from profilehub.cli import main\nmain.main(['org', 'list'], standalone_mode=False)", env
    )
    assert "org id" in out, out
    assert loaded == []
