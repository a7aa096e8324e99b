"""What the console shows of one person: the profile as the API answers it, its change history,
where each merged ucid came from, and the identity graph drawn from them. Reads only.

The profile comes from ``ProfileService.get`` (the same read as ``GET /cdp/v1/users/{ucid}``);
history and merge causes come from the change log, where every write records its actor, time,
the idTypes it carried and the ucids it merged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.resolve import CATEGORIES
from profilehub.profiles import ProfileService
from profilehub.store.tables import changes

# The most recent entries shown; a person written to every minute for years has more.
HISTORY_LIMIT = 200
# Hashed values are long; the graph labels them by their start.
_LABEL_CHARS = 14


@dataclass(frozen=True)
class Change:
    ts: int
    actor: str
    ucid: str
    action: str
    detail: dict[str, Any]

    @property
    def when(self) -> str:
        return iso(self.ts)


@dataclass(frozen=True)
class MergeCause:
    """Why ``ucid`` was merged into the person: the write that matched both (None: not recorded)."""

    ucid: str
    change: Change | None
    # The write's idTypes grouped by namespace: a raw email's five hashes read as "email".
    namespaces: list[str] = field(default_factory=list)

    @property
    def via(self) -> list[str]:
        return list(self.change.detail.get("idTypes", [])) if self.change else []


@dataclass
class PersonPage:
    profile: dict[str, Any]
    asked_ucid: str
    history: list[Change] = field(default_factory=list)
    merges: list[MergeCause] = field(default_factory=list)

    @property
    def ucid(self) -> str:
        return str(self.profile["ucid"])

    def categories(self) -> list[tuple[str, dict[str, Any]]]:
        return [(c, self.profile.get(c) or {}) for c in CATEGORIES]

    def ids_by_namespace(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """``[(namespace, [(idType, value, _ts), ...])]`` in the strategy's priority order."""
        out = []
        for namespace, entries in self.profile["ids"].items():
            if namespace == "linkedUcid":
                continue
            rows = []
            for entry in entries:
                ts = str(entry.get("_ts", ""))
                rows += [(k, str(v), ts) for k, v in entry.items() if k != "_ts"]
            out.append((namespace, rows))
        return out

    def graph(self) -> dict[str, list[dict[str, Any]]]:
        """Nodes and edges for the graph view: the person, the profiles merged into it (edges say
        which write merged them, when and through which idTypes) and the ids it holds."""
        nodes: list[dict[str, Any]] = [
            {"data": {"id": self.ucid, "label": f"profile {self.ucid[:8]}", "kind": "master"}}
        ]
        edges: list[dict[str, Any]] = []
        for cause in self.merges:
            nodes.append({"data": {"id": cause.ucid, "label": f"merged {cause.ucid[:8]}", "kind": "merged"}})
            label = (
                f"merged {cause.change.when} via {', '.join(cause.namespaces) or 'ucid'}"
                if cause.change
                else "merged (cause not recorded)"
            )
            edges.append(
                {"data": {"id": f"m:{cause.ucid}", "source": cause.ucid, "target": self.ucid, "label": label}}
            )
        for namespace, rows in self.ids_by_namespace():
            for id_type, value, _ in rows:
                node = f"id:{id_type}:{value}"
                short = value if len(value) <= _LABEL_CHARS else f"{value[:_LABEL_CHARS]}…"
                nodes.append(
                    {"data": {"id": node, "label": f"{id_type}\n{short}", "kind": "id", "ns": namespace}}
                )
                edges.append({"data": {"id": f"e:{node}", "source": self.ucid, "target": node, "label": ""}})
        return {"nodes": nodes, "edges": edges}


def iso(ts: int | str | None) -> str:
    """Epoch ms as a UTC time a person reads; the raw value is kept beside it in the pages."""
    try:
        ms = int(ts)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _changes(conn: Connection, org_id: int, ucids: list[str], action: str | None = None) -> list[Change]:
    """Newest first: the last ``HISTORY_LIMIT`` changes of these ucids (every one of ``action``)."""
    q = sa.select(changes).where(
        changes.c.org_id == org_id, changes.c.entity == "profile", changes.c.entity_id.in_(ucids)
    )
    q = q.where(changes.c.action == action) if action else q.limit(HISTORY_LIMIT)
    rows = conn.execute(q.order_by(changes.c.change_id.desc()))
    return [Change(r.ts, r.actor, r.entity_id, r.action, orjson.loads(r.detail)) for r in rows]


def person_page(service: ProfileService, org_id: int, ucid: str) -> PersonPage:
    """The page of the person ``ucid`` belongs to (a merged-away ucid shows its master)."""
    profile = service.get(org_id, ucid)
    page = PersonPage(profile, ucid)
    linked: list[str] = list(profile["ids"].get("linkedUcid", []))
    with service.db.read() as conn:
        strategy = service.strategies.get(conn, org_id)
        page.history = _changes(conn, org_id, [page.ucid, *linked])
        # Every merge, however old: its cause must not fall out of the shortened history.
        merges = _changes(conn, org_id, [page.ucid, *linked], "merge")
    merged_by: dict[str, Change] = {}
    for change in reversed(merges):
        for gone in change.detail.get("merged") or []:
            merged_by.setdefault(gone, change)
    page.merges = []
    for u in linked:
        cause = merged_by.get(u)
        id_types = cause.detail.get("idTypes", []) if cause else []
        namespaces = list(dict.fromkeys(strategy.namespace_of(t) for t in id_types))
        page.merges.append(MergeCause(u, cause, namespaces))
    return page
