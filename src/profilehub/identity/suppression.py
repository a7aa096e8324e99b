"""Suppression: keyed one-way fingerprints of erased ids, so that a later write cannot bring an
erased person back.

A fingerprint is HMAC-SHA256 of an id (its idType and normalised value) under the org's own
secret key: the value itself is never kept, and without the key a fingerprint cannot be checked
against a list of known emails. The rules only; the fingerprints and keys live in the store
(``profilehub.store.suppression_store``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# An id as (idType, normalised value): ``normalize.Identifier`` is such a tuple.
IdPair = tuple[str, str]

# The notice of a write that carried a suppressed id (the id was dropped from the write).
ID_SUPPRESSED = "id_suppressed"


def fingerprinter(key: bytes) -> Callable[[IdPair], bytes]:
    """The keyed fingerprint of a normalised id under ``key``: HMAC-SHA256 (stored as hex).

    Made once per key and copied for each id, never with ``hmac.digest``: that one-shot releases
    the GIL around OpenSSL's HMAC, and every id of every write checked in the callers' threads then
    queued again for the GIL behind the writer thread and forced it to hand the GIL over, 10 times a
    write. On SQLite (writer in-process) that cost CDP writes 22% of their rate, though the HMACs
    themselves are about 2% of a write (bench/NOTES-privacy.md). A copy of a keyed state keeps the
    GIL (short messages) and skips setting the key up each time.
    """
    keyed = hmac.new(key, digestmod="sha256")

    def fingerprint(ident: IdPair) -> bytes:
        h = keyed.copy()
        # The unit separator cannot occur in an idType name, so no two ids share a message.
        h.update(f"{ident[0]}\x1f{ident[1]}".encode())
        return h.digest()

    return fingerprint


def fingerprint(key: bytes, ident: IdPair) -> bytes:
    """The keyed fingerprint of one normalised id (``fingerprinter`` for many under one key)."""
    return fingerprinter(key)(ident)


@dataclass(frozen=True)
class Suppression:
    """An org's suppressed fingerprints by region, and the key that makes them.

    Held as digests (bytes), not hex: every id of every write of an org with suppressed ids is
    fingerprinted and looked up here, and the hex form would cost a conversion each time."""

    key: bytes = field(repr=False)
    by_region: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    _fingerprint: Callable[[IdPair], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fingerprint", fingerprinter(self.key))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled with the strategy to the importer's worker processes: the keyed HMAC state is
        # not picklable, and is made again from the key.
        return Suppression, (self.key, self.by_region)

    def active(self, region: str) -> bool:
        """Whether anything is suppressed in ``region`` (if not, no id needs a fingerprint)."""
        return bool(self.by_region.get(region))

    def holds(self, region: str, ident: IdPair) -> bool:
        found = self.by_region.get(region)
        return found is not None and self._fingerprint(ident) in found

    def any_held(self, region: str, idents: Iterable[IdPair]) -> bool:
        found = self.by_region.get(region)
        if not found:
            return False
        prints = self._fingerprint
        return any(prints(i) in found for i in idents)

    def count(self) -> int:
        return sum(len(v) for v in self.by_region.values())
