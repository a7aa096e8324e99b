"""Suppression: keyed one-way fingerprints of erased ids, so that a later write cannot bring an
erased person back.

A fingerprint is HMAC-SHA256 of an id (its idType and normalised value) under the org's own
secret key: the value itself is never kept, and without the key a fingerprint cannot be checked
against a list of known emails. The rules only; the fingerprints and keys live in the store
(``profilehub.store.suppression_store``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# An id as (idType, normalised value): ``normalize.Identifier`` is such a tuple.
IdPair = tuple[str, str]

# The notice of a write that carried a suppressed id (the id was dropped from the write).
ID_SUPPRESSED = "id_suppressed"


def fingerprint(key: bytes, ident: IdPair) -> bytes:
    """The keyed fingerprint of one normalised id: HMAC-SHA256 (stored as hex)."""
    # The unit separator cannot occur in an idType name, so no two ids share a message.
    return hmac.digest(key, f"{ident[0]}\x1f{ident[1]}".encode(), "sha256")


@dataclass(frozen=True)
class Suppression:
    """An org's suppressed fingerprints by region, and the key that makes them.

    Held as digests (bytes), not hex: every id of every write of an org with suppressed ids is
    fingerprinted and looked up here, and the hex form would cost a conversion each time."""

    key: bytes = field(repr=False)
    by_region: Mapping[str, frozenset[bytes]] = field(default_factory=dict)

    def active(self, region: str) -> bool:
        """Whether anything is suppressed in ``region`` (if not, no id needs a fingerprint)."""
        return bool(self.by_region.get(region))

    def holds(self, region: str, ident: IdPair) -> bool:
        found = self.by_region.get(region)
        return found is not None and fingerprint(self.key, ident) in found

    def any_held(self, region: str, idents: Iterable[IdPair]) -> bool:
        found = self.by_region.get(region)
        if not found:
            return False
        key = self.key
        return any(fingerprint(key, i) in found for i in idents)

    def count(self) -> int:
        return sum(len(v) for v in self.by_region.values())
