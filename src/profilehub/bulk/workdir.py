"""A bulk import's temporary folder: removed however the import ends, stale ones found and removed.

A bulk import keeps its prepared writes and resolved rows in a folder under the temporary
directory (``TMPDIR``): about 3.5 KB a record, 35 GB at ten million records. The folder is
removed when the import ends, by an error, Ctrl-C or SIGTERM included (``ingest.runner.stop_on_terminate``).
What no process can do is clean up after itself when killed outright (SIGKILL, the kernel's
out-of-memory killer, a power cut): so each folder holds an ``owner`` file, locked
(``fcntl.flock``) for as long as its import runs and naming its process, and every bulk import
first removes the folders whose owner file nobody holds any more. The lock, not the pid, says
whether the owner is alive: the kernel drops it when the process ends however it ends, and a pid
may have been given to another process since. Folders without an owner file (made by an older
version, or by an import still starting) are left alone.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from profilehub.bulk.interrupted import WorkFolderFull

log = logging.getLogger(__name__)

OWNER = "owner"
# An error of "no space" with less than this free where the folder is: the folder's disk is full
# (the same error from another disk, the rejects file's beside the source, is left as it is).
_NEARLY_FULL = 64 << 20


def remove_stale(parent: Path, prefix: str = "profilehub-bulk-") -> list[Path]:
    """Remove the folders ``parent/prefix*`` of bulk imports that ended without removing them
    (their ``owner`` file not locked); the folders removed."""
    removed: list[Path] = []
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for folder in candidates:
        try:
            with (folder / OWNER).open("rb") as owner:
                try:
                    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its import is running
                who = owner.read().decode(errors="replace").strip()
                # removed while locked: another import looking at it meanwhile leaves it alone
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # no owner file, not a folder, another user's, gone meanwhile
            continue
        log.warning("removed %s, left by a bulk import that did not end (%s)", folder, who)
        removed.append(folder)
    return removed


@contextmanager
def work_folder(prefix: str = "profilehub-bulk-", parent: Path | None = None) -> Iterator[Path]:
    """A new folder ``parent/prefix…`` (default: the system's temporary directory) owned by this
    process until the block ends, then removed; stale folders of dead imports removed first. The
    block's "no space left on device" where the folder's disk is full is raised as
    ``WorkFolderFull``, which names the folder's place and what to do."""
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    remove_stale(base, "profilehub-bulk-")
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    except OSError as exc:
        if _no_room(exc, base):
            raise WorkFolderFull(base / prefix, exc) from exc
        raise
    owner: BinaryIO | None = None
    try:
        # Locked before it gets its name, so that no other import ever sees it unlocked.
        pending = folder / f".{OWNER}"
        owner = pending.open("wb")
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        owner.write(f"pid {os.getpid()}\n".encode())
        owner.flush()
        pending.rename(folder / OWNER)
        try:
            yield folder
        except OSError as exc:
            if _no_room(exc, folder):
                raise WorkFolderFull(folder, exc) from exc
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # still locked: nobody else removes it meanwhile
        if owner is not None:
            owner.close()


def _no_room(exc: OSError, where: Path) -> bool:
    """Whether ``exc`` says that ``where``'s disk (or the user's quota) is full."""
    # A quota is the user's wherever the folder is, and ``disk_usage`` does not see it.
    return exc.errno == errno.EDQUOT or (
        exc.errno == errno.ENOSPC and shutil.disk_usage(where).free < _NEARLY_FULL
    )
