"""Per-org request rate limits: the stored setting, its cache, and the counters. Knows no HTTP.

An org may have a per-second and a per-minute limit (``profilehub org rate-limit``); a request is
let through only if it fits in both, and only requests let through are counted. Windows are fixed
and aligned to the wall clock (second ``s`` is ``[s, s+1)``), so every process counts the same
window. Counters live in Redis when ``PROFILEHUB_REDIS_URL`` is set (one budget shared by every
server process), else in the process itself (each process then allows the whole limit: N
processes allow up to N times it). See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest
from profilehub.orgs import get_org
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.tables import rate_limits

log = logging.getLogger(__name__)
Clock = Callable[[], float]
ConnFactory = Callable[[], Any]
MAX_RATE = 1_000_000_000
# The requests an org's limits count: the API's paths (not /healthz, /metrics, the docs).
LIMITED_PREFIXES = ("/cdp/v1/", "/v2/crm/")


@dataclass(frozen=True)
class RateLimit:
    per_second: int | None
    per_minute: int | None

    def windows(self) -> list[tuple[int, int]]:
        """(window length in seconds, limit) of each window that is limited."""
        out = []
        if self.per_second is not None:
            out.append((1, self.per_second))
        if self.per_minute is not None:
            out.append((60, self.per_minute))
        return out

    def describe(self) -> str:
        parts = [f"{n}/{unit}" for n, unit in ((self.per_second, "s"), (self.per_minute, "min")) if n]
        return ", ".join(parts) or "none"


def _check_rate(value: int | None, field: str) -> None:
    if value is not None and not 1 <= value <= MAX_RATE:
        raise BadRequest(f"must be an integer from 1 to {MAX_RATE}", field=field)


def set_rate_limit(
    conn: Connection, org_id: int, per_second: int | None, per_minute: int | None, actor: str = "cli"
) -> RateLimit:
    """Set the org's limits (replacing both); None for both clears them."""
    get_org(conn, org_id)
    _check_rate(per_second, "per-second")
    _check_rate(per_minute, "per-minute")
    conn.execute(rate_limits.delete().where(rate_limits.c.org_id == org_id))
    limit = RateLimit(per_second, per_minute)
    if limit.windows():
        conn.execute(
            rate_limits.insert().values(
                org_id=org_id, per_second=per_second, per_minute=per_minute, updated_ts=now_ms()
            )
        )
    detail = {"per_second": per_second, "per_minute": per_minute}
    record(conn, [change_row(org_id, actor, "org", str(org_id), "rate_limit", detail)])
    return limit


def get_rate_limit(conn: Connection, org_id: int) -> RateLimit | None:
    row = conn.execute(sa.select(rate_limits).where(rate_limits.c.org_id == org_id)).first()
    return RateLimit(row.per_second, row.per_minute) if row else None


def any_rate_limits(conn: Connection) -> bool:
    return conn.execute(sa.select(rate_limits.c.org_id).limit(1)).first() is not None


class LimitCache:
    """Every org's limits, read at most once per ``ttl`` seconds (a change applies within it)."""

    def __init__(self, read: ConnFactory, ttl_seconds: float) -> None:
        self._read = read
        self._ttl = ttl_seconds
        self._loaded_at = -math.inf
        self._limits: dict[int, RateLimit] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._loaded_at = -math.inf

    def _current(self) -> dict[int, RateLimit]:
        now = time.monotonic()
        if now - self._loaded_at >= self._ttl:
            with self._lock:
                # Tried once per ttl even when it fails: with the database down, requests are not
                # each held up by a connection attempt here (the limits last read stay in force).
                self._loaded_at = now
                with self._read() as conn:
                    rows = conn.execute(sa.select(rate_limits)).all()
            self._limits = {r.org_id: RateLimit(r.per_second, r.per_minute) for r in rows}
        return self._limits

    def any(self) -> bool:
        return bool(self._current())

    def get(self, org_id: int) -> RateLimit | None:
        return self._current().get(org_id)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # of the window reported (the tightest, or the one that refused)
    remaining: int
    reset: int  # whole seconds until that window starts again (Retry-After when refused)
    window: int = 1  # that window's length in seconds


class Counters(Protocol):
    async def take(self, org_id: int, windows: list[tuple[int, int, int]]) -> tuple[bool, list[int]]:
        """Count one request in each (length, index, limit) window if it fits in all of them.

        Returns whether it fitted and each window's count afterwards."""


class LocalCounters:
    """Counters in this process. Runs on the event loop: nothing awaits between check and count."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, int], tuple[int, int]] = {}

    async def take(self, org_id: int, windows: list[tuple[int, int, int]]) -> tuple[bool, list[int]]:
        counts = []
        for length, index, _ in windows:
            seen_index, count = self._counts.get((org_id, length), (index, 0))
            counts.append(count if seen_index == index else 0)
        if any(c >= limit for c, (_, _, limit) in zip(counts, windows, strict=True)):
            return False, counts
        for i, (length, index, _) in enumerate(windows):
            counts[i] += 1
            self._counts[(org_id, length)] = (index, counts[i])
        return True, counts


# Take a block of units of every window KEYS[i] in one atomic step on the Redis server, or none
# if any window has nothing left. ARGV per window: its limit, the block wanted, and when its key
# may go (epoch seconds). Answers 1 or 0, then each window's count afterwards,
# then what each was granted.
_LEASE = """
local n = #KEYS
local counts, grants = {}, {}
for i = 1, n do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  local left = tonumber(ARGV[3 * i - 2]) - counts[i]
  if left <= 0 then
    -- The windows after this one are read too: a nil would end the reply's array there.
    for j = i + 1, n do counts[j] = tonumber(redis.call('GET', KEYS[j]) or '0') end
    local out = {0}
    for j = 1, n do out[j + 1] = counts[j]; out[n + j + 1] = 0 end
    return out
  end
  grants[i] = math.min(left, tonumber(ARGV[3 * i - 1]))
end
local out = {1}
for i = 1, n do
  counts[i] = redis.call('INCRBY', KEYS[i], grants[i])
  if counts[i] == grants[i] then redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[3 * i])) end
  out[i + 1] = counts[i]; out[n + i + 1] = grants[i]
end
return out
"""
# Each process takes budget from Redis in blocks of this share of the limit (at least 1), so a
# limit far above the load costs one Redis round trip per block, not one per request. Small
# limits are counted request by request, exactly.
LEASE_SHARE = 1000


class _Lease:
    """This process's share of one window: units granted by Redis, units used, Redis's count."""

    __slots__ = ("granted", "index", "total", "used")

    def __init__(self, index: int) -> None:
        self.index = index
        self.granted = self.used = self.total = 0


class RedisCounters:
    """Counters in Redis, shared by every process using the same URL and prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._prefix = prefix
        self._scripts: dict[int, Any] = {}  # per event loop: a client's connections belong to one
        self._leases: dict[tuple[int, int], _Lease] = {}
        self.share = LEASE_SHARE
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}

    def _script(self) -> Any:
        import redis.asyncio as aioredis

        loop = id(asyncio.get_running_loop())
        script = self._scripts.get(loop)
        if script is None:
            client = aioredis.Redis.from_url(self._url, socket_timeout=1, socket_connect_timeout=1)
            script = self._scripts[loop] = client.register_script(_LEASE)
        return script

    def _lease(self, org_id: int, length: int, index: int) -> _Lease:
        lease = self._leases.get((org_id, length))
        if lease is None or lease.index != index:
            lease = self._leases[(org_id, length)] = _Lease(index)
        return lease

    async def take(self, org_id: int, windows: list[tuple[int, int, int]]) -> tuple[bool, list[int]]:
        for _ in range(8):  # other requests may use a block while this one waits for it
            leases = [self._lease(org_id, length, index) for length, index, _ in windows]
            short = [i for i, lease in enumerate(leases) if lease.used >= lease.granted]
            if not short:
                for lease in leases:
                    lease.used += 1
                # As counted: Redis's count, less what this process holds unused.
                return True, [lease.total - (lease.granted - lease.used) for lease in leases]
            # One block request per org at a time: the requests arriving meanwhile (all of them, at
            # each new second) use the block it brings instead of each asking Redis.
            async with self._lock(org_id):
                leases = [self._lease(org_id, length, index) for length, index, _ in windows]
                short = [i for i, lease in enumerate(leases) if lease.used >= lease.granted]
                if not short:
                    continue
                wanted = [windows[i] for i in short]
                keys = [f"{self._prefix}:rl:{org_id}:{length}:{index}" for length, index, _ in wanted]
                args = [
                    v
                    for length, index, limit in wanted
                    # A key outlives its window by one more window: room for clocks a little apart.
                    for v in (limit, max(1, limit // self.share), (index + 2) * length)
                ]
                answer = [int(v) for v in await self._script()(keys=keys, args=args)]
                counts, grants = answer[1 : len(keys) + 1], answer[len(keys) + 1 :]
                for i, count, grant in zip(short, counts, grants, strict=True):
                    lease = self._lease(org_id, windows[i][0], windows[i][1])
                    lease.granted += grant
                    lease.total = max(lease.total, count)
                if not answer[0]:
                    seen = dict(zip(short, counts, strict=True))
                    return False, [seen.get(i, lease.used) for i, lease in enumerate(leases)]
        return False, [limit for _, _, limit in windows]

    def _lock(self, org_id: int) -> asyncio.Lock:
        key = (id(asyncio.get_running_loop()), org_id)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


class RateLimiter:
    """Decides, per request of an org, whether it is let through, and what headers to send."""

    def __init__(self, limits: LimitCache, counters: Counters, clock: Clock = time.time) -> None:
        self.limits = limits
        self.counters = counters
        self.clock = clock
        self._warned_at = -math.inf

    async def check(self, org_id: int) -> Decision | None:
        """None when the org has no limit (or the counters cannot be reached)."""
        limit = self.limits.get(org_id)
        if limit is None:
            return None
        now = self.clock()
        windows = [(length, int(now // length), n) for length, n in limit.windows()]
        try:
            allowed, counts = await self.counters.take(org_id, windows)
        except Exception as exc:  # Redis down: serve unlimited rather than not at all
            if time.monotonic() - self._warned_at > 10:
                self._warned_at = time.monotonic()
                log.warning("rate limit counters unavailable, requests are not limited: %s", exc)
            return None

        def reset(length: int, index: int) -> int:
            return max(1, math.ceil((index + 1) * length - now))

        rows = [
            (n - c, reset(length, index), n, length)
            for (length, index, n), c in zip(windows, counts, strict=True)
        ]
        if not allowed:
            # Retry-After: when every full window has started again.
            full = [r for r in rows if r[0] <= 0]
            _, after, n, length = max(full, key=lambda r: r[1])
            return Decision(False, n, 0, after, length)
        remaining, after, n, length = min(rows, key=lambda r: (r[0], r[1]))
        return Decision(True, n, remaining, after, length)


def make_rate_limiter(read: ConnFactory, ttl_seconds: float, redis_url: str, prefix: str) -> RateLimiter:
    counters: Counters = RedisCounters(redis_url, prefix) if redis_url else LocalCounters()
    return RateLimiter(LimitCache(read, ttl_seconds), counters)
