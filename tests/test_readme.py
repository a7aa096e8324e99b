"""The README's tour, run as written against a real server (so the docs cannot rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_process import serve

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent


def tour_blocks() -> list[str]:
    """The shell blocks of every section whose heading starts with "Tour" or is "Administering orgs"."""
    blocks: list[str] = []
    for section in re.split(r"^## ", README, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        if heading.startswith("Tour") or heading.startswith("Administering"):
            blocks += re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return blocks


def test_readme_starts_with_the_two_commands() -> None:
    first = re.search(r"```sh\n(.*?)```", README, flags=re.S)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/serve", "scripts/test"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec scripts/test")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    # The tour's commands (profilehub ...) are found on PATH, as after installing.
    path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    with serve(database_url, tmp_path, access_log=True, PATH=path) as served:
        yield served.port, {**os.environ, "PROFILEHUB_DATABASE_URL": database_url, "PATH": path}


def test_the_readme_tour_runs_as_written(server: tuple[int, dict[str, str]]) -> None:
    port, env = server
    blocks = tour_blocks()
    assert blocks, "README has no tour"
    script = "\n".join(blocks).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    # Each curl must succeed (2xx): the wrapper adds --fail-with-body and keeps the README's own flags.
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; echo; }\n'
    # A guard against a hang, not a measure: the tour runs some 20 commands, each loading the CLI
    # (2-3 s of CPU), and on a CI machine busy with other work that passed 120 s.
    result = subprocess.run(
        ["bash", "-c", prelude + script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    assert '"user_gender":"M"' in out  # the vendor example's answer
    assert '"deletedProfiles":1' in out  # the tour erased Jane
    assert '{"changes":[{"id":"' in out and '"type":"profile.' in out  # the change feed's first page
    assert '"price":35' in out  # the custom record as last written
    # The import examples ran on the sample files, every record written.
    assert "4 records" in out and "3 records" in out and " rejected" in out
    assert all(
        line.endswith(" 0 rejected")
        for line in out.splitlines()
        if line.startswith(("3 records", "4 records"))
    ), out
    # The CSV's Dee and Eve are new people, Ann returns from the NDJSON: no row of it lands on a
    # profile the tour left behind (the CRM tour's Jane kept her phone number's profile).
    assert "3 records in " in out and ": 2 created, 1 updated, 0 rejected" in out, out
    for sample in ("profiles.ndjson", "profiles.csv", "people.csv"):
        assert not (ROOT / "examples" / f"{sample}.rejected.ndjson").exists()
        assert not (ROOT / "examples" / f"{sample}.checkpoint.json").exists()


def test_the_readme_shows_lines_of_the_sample_files_it_imports() -> None:
    section = README.split("## Tour: bulk import", 1)[1].split("\n## ", 1)[0]
    samples = {p.name: p.read_text().splitlines() for p in (ROOT / "examples").iterdir()}
    imported = set(re.findall(r"profilehub import \w+ examples/([\w.]+)", section))
    assert imported == set(samples), (imported, set(samples))
    shown = re.findall(r"```(?:json|text)\n(.*?)```", section, flags=re.S)
    assert len(shown) == len(samples)
    for block in shown:
        lines = block.splitlines()
        # Each shown line is a line of a sample file; a CSV's is shown under its header.
        owners = [name for name, content in samples.items() if all(line in content for line in lines)]
        assert owners, f"not a line of any file in examples/: {block}"
        if owners[0].endswith(".csv"):
            assert lines[0] == samples[owners[0]][0]
