"""What the clickstream should become, computed in plain Python without the platform: the
tests compare silver and gold with it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

EVENT_TYPES = {"page_view", "product_view", "add_to_cart", "checkout_started", "purchase"}
CHANNELS = {"google_ads", "meta_ads", "tiktok_ads", "email", "organic", "direct"}
Message = tuple[bytes, bytes]


def utc_naive(text: str) -> datetime:
    """An ISO-8601 timestamp as a naive UTC datetime (how silver stores ``timestamp``)."""
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


def _decimal_ok(value: object) -> bool:
    if value is None:
        return True
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return False
    return number >= 0 and -number.as_tuple().exponent <= 2 and number.is_finite()


def parse_valid(value: bytes) -> dict | None:
    """The event if this message is a valid clickstream event, else None."""
    try:
        event = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(event, dict):
        return None
    try:
        datetime.fromisoformat(str(event.get("occurred_at")))
    except ValueError:
        return None
    checks = [
        re.fullmatch(r"evt_[0-9a-f]{16}", str(event.get("event_id") or "")),
        event.get("event_type") in EVENT_TYPES,
        event.get("anonymous_id"),
        event.get("channel") in CHANNELS,
        _decimal_ok(event.get("revenue")),
        event.get("event_type") != "purchase"
        or (event.get("order_id") is not None and event.get("revenue") is not None),
    ]
    return event if all(checks) else None


def truth(messages: list[Message]) -> tuple[dict[str, dict], list[bytes]]:
    """First arrival of every distinct valid event, and every malformed message."""
    first: dict[str, dict] = {}
    malformed: list[bytes] = []
    for _key, value in messages:
        event = parse_valid(value)
        if event is None:
            malformed.append(value)
        else:
            first.setdefault(event["event_id"], event)
    return first, malformed


def sessionize(events: list[dict]) -> list[dict]:
    """Sessions the way the business defines them, in plain Python: a visitor's events with
    no gap over 30 minutes (ordered by time, then event_id)."""
    by_visitor: dict[str, list[dict]] = {}
    for event in events:
        event = {**event, "at": utc_naive(event["occurred_at"])}
        by_visitor.setdefault(event["anonymous_id"], []).append(event)
    sessions = []
    for visitor_events in by_visitor.values():
        visitor_events.sort(key=lambda e: (e["at"], e["event_id"]))
        current: list[dict] = []
        for event in visitor_events:
            if current and event["at"] - current[-1]["at"] > timedelta(minutes=30):
                sessions.append(current)
                current = []
            current.append(event)
        sessions.append(current)
    return [
        {
            "date": s[0]["at"].date(),
            "channel": s[0]["channel"],
            "types": {e["event_type"] for e in s},
            "purchases": sum(e["event_type"] == "purchase" for e in s),
            "revenue": sum(
                (Decimal(str(e["revenue"])) for e in s if e["event_type"] == "purchase"),
                Decimal(0),
            ),
        }
        for s in sessions
    ]
