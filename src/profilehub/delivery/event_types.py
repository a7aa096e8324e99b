"""Which events an endpoint subscribes to, and what keeps an endpoint's events in order."""

from __future__ import annotations

from collections.abc import Iterable

from profilehub.errors import BadRequest
from profilehub.store.events import EVENT_TYPES, Event


def check_event_types(types: Iterable[str], field: str = "events") -> tuple[str, ...]:
    """The types, each known, duplicates dropped; a 400 naming ``field`` and the unknown ones."""
    wanted = tuple(dict.fromkeys(t.strip() for t in types if t.strip()))
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        raise BadRequest(
            f"unknown event type(s) {', '.join(repr(t) for t in unknown)}; known: {', '.join(EVENT_TYPES)}",
            field=field,
        )
    return wanted


def ordering_key(event: Event) -> str:
    """What an endpoint receives in order: one profile's events (by the ucid the event is about),
    one person's, one company's, one record's (ids are UUIDs: one namespace serves them all).
    Events of different keys may overtake each other."""
    return event.entity_id
