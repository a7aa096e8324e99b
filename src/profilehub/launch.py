"""The ``profilehub`` command's entry point: the CLI (``profilehub.cli``) once its modules are loaded.

Loading them (SQLAlchemy, click, rich; each command loads its own core later) takes a noticeable
time, seconds on a busy machine, before click or any command runs. A Ctrl-C then was Python's traceback of whatever
module was loading; it is one line and status 130, as a Ctrl-C later in a command. This module
loads nothing itself, so that it is in place from the start.
"""

from __future__ import annotations

import sys

# What an import says when Ctrl-C stops it before it began (``cli._interrupted_outside_the_run``).
IMPORT_NOT_BEGUN = "interrupted before the import began: nothing was written; run it again"
# What any other command says (also while it loads its own modules: ``cli.loading_modules``).
STARTING_INTERRUPTED = "interrupted while starting: nothing was done"


def main() -> None:
    try:
        from profilehub.cli import main as cli
    except KeyboardInterrupt:
        said = IMPORT_NOT_BEGUN if sys.argv[1:2] == ["import"] else STARTING_INTERRUPTED
        sys.stderr.write(f"Error: {said}\n")
        sys.exit(130)  # what a shell reports for a command it stopped
    cli()
