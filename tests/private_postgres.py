"""A PostgreSQL cluster of the test's own, in a temp folder on a free port, that a test may stop
and restart (the shared server on 5432 is never touched). Needs the server binaries (initdb,
pg_ctl); without them the tests using it are skipped, loudly, and fail under CI=true.

PostgreSQL refuses to run as root: run as root (as in some containers), the cluster is made and
run as the ``postgres`` user, in a folder of its own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import running_in_ci
from tests.serve_process import free_port


def _bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _unavailable(reason: str) -> None:
    reason = f"PRIVATE POSTGRESQL UNAVAILABLE ({reason})"
    if running_in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(f"{reason}, test not run")


class PrivatePostgres:
    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            _unavailable("no initdb on PATH or in /usr/lib/postgresql/*/bin")
        assert bindir is not None
        self._bindir = bindir
        self._as: list[str] = []
        # A short path of its own: the socket's path must stay under 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="phpg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                _unavailable("running as root and there is no postgres user to run it as")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.port = free_port()
        self._log = self.root / "postgres.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/profilehub"

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self._bindir / program), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
            cwd=self.root,
        )
        assert done.returncode == 0, f"{program} {' '.join(args)}: {done.stdout}{done.stderr}{self.log()}"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self._log), "-w", "-t", "60", "-o", options, *args
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        # Fast: sessions are terminated and the server goes down and up again, as an operator's
        # restart or a failover does.
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self._log.read_text() if self._log.exists() else ""
