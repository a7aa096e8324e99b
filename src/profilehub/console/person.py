"""What the console shows of one person: the profile as the API answers it, its change history,
its consent ledger, where each merged ucid came from, and the identity graph drawn from them.
Reads only.

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
from profilehub.identity.strategy import CRM_PERSON_ID
from profilehub.profiles import ProfileService
from profilehub.store.changes import now_ms
from profilehub.store.consent_ledger import LedgerEntry, person_consent
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
class HistoryRow:
    when: str
    what: str
    actor: str
    namespaces: str
    id_types: str
    attributes: str
    notices: list[tuple[str, str]]  # (code, message)


@dataclass(frozen=True)
class MergeCause:
    """Why ``ucid`` was merged into the person: the write that matched both (None: not recorded)."""

    ucid: str
    change: Change | None
    # The write's idTypes grouped by namespace: a raw email's five hashes read as "email".
    namespaces: list[str] = field(default_factory=list)

    @property
    def via(self) -> list[str]:
        return linking_id_types(self.change, self.ucid) if self.change else []


@dataclass
class PersonPage:
    profile: dict[str, Any]
    asked_ucid: str
    history: list[Change] = field(default_factory=list)
    merges: list[MergeCause] = field(default_factory=list)
    id_namespaces: dict[str, str] = field(default_factory=dict)  # idType -> namespace
    # The consent ledger of the person's profiles, newest first (the last ``HISTORY_LIMIT``).
    consent_ledger: list[LedgerEntry] = field(default_factory=list)

    def history_rows(self) -> list[HistoryRow]:
        """The history as the page shows it, worked out here rather than in the template: a person
        with many merged profiles has hundreds of cells, and Jinja's per-cell calls add up."""
        rows = []
        for c in self.history:
            what = c.action if c.ucid == self.ucid else f"{c.action} of {short_ucid(c.ucid)}"
            if merged := c.detail.get("merged"):
                what += f" ({len(merged)} merged)"
            id_types = c.detail.get("idTypes") or []
            attributes = "; ".join(
                f"{category}: {', '.join(names) if names else 'cleared'}"
                for category, names in (c.detail.get("attributes") or {}).items()
            )
            notices = [(n.get("code", ""), n.get("message", "")) for n in c.detail.get("notices") or []]
            rows.append(
                HistoryRow(
                    c.when,
                    what,
                    c.actor,
                    ", ".join(self.namespaces(id_types)),
                    ", ".join(id_types),
                    attributes,
                    notices,
                )
            )
        return rows

    def namespaces(self, id_types: list[str]) -> list[str]:
        """``id_types`` as their namespaces, in order, each once (a raw email's hashes: ``email``)."""
        return list(dict.fromkeys(self.id_namespaces.get(t, t) for t in id_types))

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

    def crm_people(self) -> list[str]:
        """The CRM people linked to the person (their ``crm_person_id`` ids): erasing it deletes them."""
        return [value for _, rows in self.ids_by_namespace() for t, value, _ in rows if t == CRM_PERSON_ID]

    def graph(self) -> dict[str, list[dict[str, Any]]]:
        """Nodes and edges for the graph view: the person; the profiles merged into it, each edge
        saying through which namespaces (and when) a write merged it; and the ids it holds, boxed by
        namespace."""
        nodes: list[dict[str, Any]] = [
            {"data": {"id": self.ucid, "label": short_ucid(self.ucid), "kind": "master"}}
        ]
        edges: list[dict[str, Any]] = []
        for cause in self.merges:
            nodes.append({"data": {"id": cause.ucid, "label": short_ucid(cause.ucid), "kind": "merged"}})
            label = f"via {', '.join(cause.namespaces) or 'ucid'}" if cause.change else "cause not recorded"
            when = cause.change.when if cause.change else ""
            edges.append(
                {
                    "data": {
                        "id": f"m:{cause.ucid}",
                        "source": cause.ucid,
                        "target": self.ucid,
                        "label": label,
                        "when": when,
                        "kind": "merge",
                    }
                }
            )
        for namespace, rows in self.ids_by_namespace():
            box = f"ns:{namespace}"
            nodes.append({"data": {"id": box, "label": namespace, "kind": "namespace"}})
            edges.append(
                {"data": {"id": f"h:{namespace}", "source": self.ucid, "target": box, "kind": "holds"}}
            )
            for id_type, value, _ in rows:
                short = value if len(value) <= _LABEL_CHARS else f"{value[:_LABEL_CHARS]}…"
                nodes.append(
                    {
                        "data": {
                            "id": f"id:{id_type}:{value}",
                            "label": f"{id_type}\n{short}",
                            "kind": "id",
                            "parent": box,
                        }
                    }
                )
        return {"nodes": nodes, "edges": edges}


def linking_id_types(change: Change, merged: str) -> list[str]:
    """The idTypes through which ``change`` merged ``merged`` (``ucid`` when the write named it).

    Writes since the journal record exactly that (``mergedVia``); for older ones, the write's own
    idTypes are the closest the change log has."""
    via = (change.detail.get("mergedVia") or {}).get(merged)
    return list(via) if via is not None else list(change.detail.get("idTypes", []))


def short_ucid(ucid: str) -> str:
    """The end of a ucid: ucids are time-ordered (UUIDv7), so those of one person share their start."""
    return f"…{ucid[-12:]}"


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
        ledger = person_consent(conn, org_id, page.ucid, linked, now_ms()).history
    page.consent_ledger = ledger[::-1][:HISTORY_LIMIT]
    merged_by: dict[str, Change] = {}
    for change in reversed(merges):
        for gone in change.detail.get("merged") or []:
            merged_by.setdefault(gone, change)
    page.id_namespaces = {name: rule.namespace for name, rule in strategy.id_types.items()}
    page.merges = []
    for u in linked:
        cause = merged_by.get(u)
        page.merges.append(MergeCause(u, cause, page.namespaces(linking_id_types(cause, u) if cause else [])))
    return page
