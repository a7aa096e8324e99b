"""The CDP sink: records in the ``POST /cdp/v1/users`` body form, written by ``write_batch``.

The sink works in two stages. ``prepare_job`` names the CPU-heavy part of a batch (validating the
records and normalising and hashing their ids) as a picklable function the importer runs in a
worker process, while the writer applies the previous batch; ``write`` then hands the batch and
what was prepared to the one write path. Called as a plain function, the sink does both in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from profilehub.cdp.models import parse_write
from profilehub.errors import ProfilehubError, each_or_error
from profilehub.identity.strategy import Strategy
from profilehub.ingest.runner import Outcome
from profilehub.profiles import Prepared, ProfileService, ProfileWrite, prepare_writes


def profile_write(record: dict[str, Any], org_id: int, region: str) -> ProfileWrite:
    """A record as a write of ``org_id``, read by ``parse_write`` as the HTTP endpoints read their
    bodies; ``orgId`` and ``region`` default to the import's, the rest is as the endpoint wants it
    (``upsert`` is required)."""
    return parse_write({"orgId": org_id, "region": region, **record}, org_id, "import")


def _writes(
    records: Sequence[dict[str, Any]], org_id: int, region: str
) -> tuple[list[ProfileWrite | ProfilehubError], list[ProfileWrite]]:
    """Each record as a write or the error that refuses it, and the writes alone."""
    out = each_or_error(lambda record: profile_write(record, org_id, region), records)
    return out, [w for w in out if isinstance(w, ProfileWrite)]


def prepare_records(
    strategy: Strategy, org_id: int, region: str, actor: str, records: Sequence[dict[str, Any]]
) -> Prepared:
    """The records' writes validated and normalised under ``strategy`` (runs in a worker process)."""
    _, writes = _writes(records, org_id, region)
    return Prepared(org_id, strategy.version, prepare_writes(strategy, writes, actor))


class CdpSink:
    def __init__(self, service: ProfileService, org_id: int, region: str, actor: str) -> None:
        self.service = service
        self.org_id = org_id
        self.region = region
        self.actor = actor

    def prepare_job(
        self, records: Sequence[dict[str, Any]]
    ) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        """``prepare_records`` with the strategy the writer last used; None before the writer has
        loaded one (it then prepares that batch itself)."""
        strategy = self.service.strategies.cached(self.org_id)
        if strategy is None:
            return None
        return prepare_records, (strategy, self.org_id, self.region, self.actor, records)

    def write(self, records: Sequence[dict[str, Any]], prepared: Prepared | None) -> Sequence[Outcome]:
        # The worker made these writes too, but sending them back would cost more than this cheap
        # conversion (the expensive normalising is what ``prepared`` carries).
        out, writes = _writes(records, self.org_id, self.region)
        results = iter(self.service.write_batch(writes, self.actor, prepared))
        return [next(results) if isinstance(o, ProfileWrite) else o for o in out]

    def __call__(self, records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        return self.write(records, None)


def cdp_sink(service: ProfileService, org_id: int, region: str, actor: str) -> CdpSink:
    return CdpSink(service, org_id, region, actor)
