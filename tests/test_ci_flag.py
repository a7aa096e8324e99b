"""What counts as CI: the banner announces what the PostgreSQL fixture then does.

Under CI a missing PostgreSQL must fail the run (so a CI job cannot pass on SQLite alone); outside
it the PostgreSQL tests skip loudly. Both the banner and the fixture ask ``running_in_ci``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import running_in_ci

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("no", False),
        ("1", True),
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
    ],
)
def test_running_in_ci(value: str | None, expected: bool) -> None:
    environ = {} if value is None else {"CI": value}
    assert running_in_ci(environ) is expected


PROBE = """
def test_probe(database_url):
    assert database_url
"""


# CI value -> what the run must announce and then do with the PostgreSQL test, and how pytest
# runs: CI's run spreads tests over pytest-xdist workers (scripts/test), whose own output the
# terminal never shows, so there the banner must come from the controller.
CASES = {
    "true": ("FAIL", "1 error", ["-n", "1"]),  # the fixture fails the test: an error
    "false": ("BE SKIPPED", "1 skipped", ["-n", "0"]),
}


def test_banner_and_fixture_agree_when_postgres_is_down(tmp_path: Path) -> None:
    # Real pytest runs of the suite's conftest against a port where nothing listens, one per CI
    # value, side by side (each spends most of its time importing).
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (probe_dir / "test_probe.py").write_text(PROBE)
    runs = {
        ci: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                "-q",
                "-rs",
                "-k",
                "postgres",
                *CASES[ci][2],
                str(probe_dir),
            ],
            cwd=tmp_path,
            env={**os.environ, "CI": ci, "PROFILEHUB_TEST_PG": "postgresql://postgres@127.0.0.1:1/postgres"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for ci in CASES
    }
    for ci, proc in runs.items():
        out, _ = proc.communicate(timeout=300)  # generous: a loaded machine
        banner, outcome, _ = CASES[ci]
        assert f"POSTGRESQL TESTS WILL {banner}:" in out, (ci, out)
        summary = out.strip().splitlines()[-1]  # not "port 1 failed" in the banner's reason
        assert outcome in summary and "passed" not in summary, (ci, out)


def test_ci_run_sets_ci_itself(tmp_path: Path) -> None:
    # .ci/run, copied beside a stand-in scripts/test that reports what it was given; the runner
    # here sets no CI variable at all.
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (tmp_path / "scripts" / "test").write_text('#!/usr/bin/env bash\necho "CI=${CI-unset} $#"\n')
    (tmp_path / "scripts" / "test").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    run = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert running_in_ci({"CI": run.stdout.split()[0].removeprefix("CI=")})
    assert run.stdout.split()[1] == "0"  # the README's test command, with no extra arguments
