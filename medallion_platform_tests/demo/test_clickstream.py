"""The demo clickstream is the stream fixture of the platform, so its promises are checked here.

Every count of the manifest is recounted from the messages alone, with this file's own reading of
the payload format.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from medallion_platform.devkit.demo.clickstream import (
    ClickstreamManifest,
    clickstream_manifest,
    generate_clickstream,
    iter_clickstream,
)

START = date(2026, 11, 1)
DAYS = 14
EVENTS = 20_000

FIELDS = [
    "event_id",
    "event_type",
    "occurred_at",
    "anonymous_id",
    "customer_id",
    "channel",
    "page",
    "sku",
    "order_id",
    "revenue",
    "currency",
]
EVENT_TYPES = {"page_view", "product_view", "add_to_cart", "checkout_started", "purchase"}
CHANNELS = {"google_ads", "meta_ads", "tiktok_ads", "email", "organic", "direct"}
EVENT_ID = re.compile(r"evt_[0-9a-f]{16}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PAGE = re.compile(r"/|/c/[a-z_]+|/p/SKU-\d{6}|/cart|/checkout|/checkout/complete")
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def _event(value: bytes) -> dict[str, Any] | None:
    """The event in a message value, or None if the value breaks the payload format."""
    try:
        event = json.loads(value)
    except ValueError:
        return None
    if not isinstance(event, dict) or list(event) != FIELDS:
        return None
    checks = (
        isinstance(event["event_id"], str) and EVENT_ID.fullmatch(event["event_id"]),
        event["event_type"] in EVENT_TYPES,
        isinstance(event["occurred_at"], str) and TIMESTAMP.fullmatch(event["occurred_at"]),
        isinstance(event["anonymous_id"], str)
        and re.fullmatch(r"anon_\d{6}", event["anonymous_id"]),
        event["customer_id"] is None or re.fullmatch(r"cus_\d{6}", str(event["customer_id"])),
        event["channel"] in CHANNELS,
        isinstance(event["page"], str) and PAGE.fullmatch(event["page"]),
        event["sku"] is None or re.fullmatch(r"SKU-\d{6}", str(event["sku"])),
        event["order_id"] is None or re.fullmatch(r"ord_\d{8}", str(event["order_id"])),
        event["revenue"] is None
        or (isinstance(event["revenue"], int | float) and not isinstance(event["revenue"], bool)),
        event["currency"] == "USD",
    )
    if not all(checks):
        return None
    event["occurred"] = datetime.strptime(event["occurred_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=UTC
    )
    return event


Parsed = list[tuple[bytes, bytes, dict[str, Any] | None]]


@pytest.fixture(scope="module")
def stream() -> tuple[Parsed, ClickstreamManifest]:
    messages, manifest = generate_clickstream(EVENTS, seed=7, start_date=START, days=DAYS)
    return [(key, value, _event(value)) for key, value in messages], manifest


def _first_occurrences(parsed: Parsed) -> list[dict[str, Any]]:
    """Well-formed events in publish order, each at its first publication."""
    seen: set[str] = set()
    firsts = []
    for _, _, event in parsed:
        if event is not None and event["event_id"] not in seen:
            seen.add(event["event_id"])
            firsts.append(event)
    return firsts


def _late_ids(parsed: Parsed) -> set[str]:
    """Events first published after an event that occurred more than a day after them."""
    watermark = None
    late = set()
    for event in _first_occurrences(parsed):
        if watermark is not None and event["occurred"] < watermark - DAY:
            late.add(event["event_id"])
        watermark = event["occurred"] if watermark is None else max(watermark, event["occurred"])
    return late


def test_same_arguments_give_identical_messages() -> None:
    first, manifest = generate_clickstream(3_000, seed=7)
    second, _ = generate_clickstream(3_000, seed=7)
    assert first == second
    assert list(iter_clickstream(3_000, seed=7)) == first
    assert clickstream_manifest(3_000, seed=7) == manifest


def test_different_seed_gives_different_messages() -> None:
    first, _ = generate_clickstream(3_000, seed=7)
    second, _ = generate_clickstream(3_000, seed=8)
    assert first != second
    assert {v for _, v in first}.isdisjoint({v for _, v in second})


def test_manifest_matches_a_recount(stream: tuple[Parsed, ClickstreamManifest]) -> None:
    parsed, manifest = stream
    values = Counter(value for _, value, _ in parsed)
    good_ids = {event["event_id"] for _, _, event in parsed if event is not None}
    assert manifest.messages == len(parsed)
    assert manifest.events == len(good_ids) == EVENTS
    assert manifest.duplicates == sum(n - 1 for n in values.values())
    assert manifest.malformed == sum(1 for _, _, event in parsed if event is None)
    assert manifest.late == len(_late_ids(parsed))
    assert manifest.messages == manifest.events + manifest.duplicates + manifest.malformed
    assert (manifest.start_date, manifest.days) == (START, DAYS)


def test_warts_come_at_the_promised_rates(stream: tuple[Parsed, ClickstreamManifest]) -> None:
    _, manifest = stream
    assert 0.015 <= manifest.duplicates / manifest.events <= 0.025
    assert 0.007 <= manifest.late / manifest.events <= 0.013
    assert manifest.malformed == round(EVENTS * 0.002)


def test_every_malformed_kind_appears_once_per_value(
    stream: tuple[Parsed, ClickstreamManifest],
) -> None:
    parsed, _ = stream
    bad = [value for _, value, event in parsed if event is None]
    assert len(set(bad)) == len(bad)  # distinct, and never re-published
    kinds: Counter[str] = Counter()
    for value in bad:
        try:
            obj = json.loads(value)
        except ValueError:
            kinds["not json"] += 1
            continue
        if "event_id" not in obj:
            kinds["no event_id"] += 1
        elif obj["occurred_at"] == "yesterday":
            kinds["bad timestamp"] += 1
        elif obj["event_type"] == "hover":
            kinds["unknown type"] += 1
        elif isinstance(obj["revenue"], str) and "," in obj["revenue"]:
            kinds["revenue string"] += 1
        else:
            kinds[f"unexpected: {value!r}"] += 1
    assert set(kinds) == {
        "not json",
        "no event_id",
        "bad timestamp",
        "unknown type",
        "revenue string",
    }


def test_at_least_one_malformed_message_from_500_events() -> None:
    messages, manifest = generate_clickstream(500, seed=3)
    assert manifest.malformed >= 1
    assert sum(1 for _, value in messages if _event(value) is None) == manifest.malformed


def test_duplicates_are_byte_identical_and_follow_shortly(
    stream: tuple[Parsed, ClickstreamManifest],
) -> None:
    parsed, _ = stream
    positions: dict[tuple[bytes, bytes], list[int]] = defaultdict(list)
    for i, (key, value, _) in enumerate(parsed):
        positions[key, value].append(i)
    copies = [p for p in positions.values() if len(p) > 1]
    assert copies
    for first, *later in copies:
        assert len(later) == 1
        assert 0 < later[0] - first <= 200
    # The same event never appears with two different values.
    by_id = Counter(event["event_id"] for (_, _, event) in parsed if event is not None)
    assert sum(by_id.values()) == len(by_id) + sum(len(p) - 1 for p in copies)


def test_messages_are_well_formed_events(stream: tuple[Parsed, ClickstreamManifest]) -> None:
    parsed, _ = stream
    begin = datetime(START.year, START.month, START.day, tzinfo=UTC)
    end = begin + DAYS * DAY
    orders = []
    for key, value, event in parsed:
        if event is None:
            continue
        assert key == event["anonymous_id"].encode()
        assert b" " not in value  # compact JSON
        assert begin <= event["occurred"] < end
        customer = event["customer_id"]
        assert customer is None or 1 <= int(customer[4:]) <= max(50, EVENTS // 40)
        if event["event_type"] in ("product_view", "add_to_cart"):
            assert event["sku"] is not None and event["page"] == f"/p/{event['sku']}"
            assert 1 <= int(event["sku"][4:]) <= 500
        else:
            assert event["sku"] is None
        if event["event_type"] == "purchase":
            assert event["order_id"] is not None and event["page"] == "/checkout/complete"
            assert 15.0 <= event["revenue"] <= 900.0
            assert round(event["revenue"], 2) == event["revenue"]
            orders.append((event["event_id"], event["order_id"]))
        else:
            assert event["order_id"] is None and event["revenue"] is None
    distinct = set(orders)
    assert distinct and len({order for _, order in distinct}) == len(distinct)


def test_sessionizing_by_30_minutes_recovers_the_sessions(
    stream: tuple[Parsed, ClickstreamManifest],
) -> None:
    parsed, _ = stream
    by_visitor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in _first_occurrences(parsed):
        by_visitor[event["anonymous_id"]].append(event)
    funnel: Counter[str] = Counter()
    for events in by_visitor.values():
        events.sort(key=lambda e: e["occurred"])
        assert len({e["customer_id"] for e in events}) == 1  # one visitor, one identity
        session = [events[0]]
        for before, after in pairwise(events):
            gap = after["occurred"] - before["occurred"]
            if gap < 30 * MINUTE:
                assert 5_000 <= gap / timedelta(milliseconds=1) < 10 * 60_000
                session.append(after)
            else:
                assert gap > 45 * MINUTE
                funnel.update(_check_session(session))
                session = [after]
        funnel.update(_check_session(session))
    assert funnel["session"] > 1_000
    # The funnel narrows roughly as specified.
    assert 0.5 < funnel["product_view"] / funnel["session"] < 0.7
    assert 0.15 < funnel["add_to_cart"] / funnel["product_view"] < 0.35
    assert 0.35 < funnel["checkout_started"] / funnel["add_to_cart"] < 0.65
    assert 0.45 < funnel["purchase"] / funnel["checkout_started"] < 0.75
    known = sum(1 for events in by_visitor.values() if events[0]["customer_id"] is not None)
    assert 0.25 < known / len(by_visitor) < 0.45


def _check_session(session: list[dict[str, Any]]) -> set[str]:
    """Check one session's shape; return the funnel steps it reached, plus "session"."""
    assert session[0]["event_type"] == "page_view"
    assert len({e["channel"] for e in session}) == 1
    types = [e["event_type"] for e in session]
    for step, needs in (
        ("add_to_cart", "product_view"),
        ("checkout_started", "add_to_cart"),
        ("purchase", "checkout_started"),
    ):
        if step in types:
            assert needs in types[: types.index(step)]
    return {"session", *types}


def test_publish_order_is_arrival_order(stream: tuple[Parsed, ClickstreamManifest]) -> None:
    parsed, _ = stream
    late = _late_ids(parsed)
    watermark = None
    swapped = 0
    for event in _first_occurrences(parsed):
        if event["event_id"] in late:
            assert event["occurred"].date() < watermark.date()  # among a later day's events
            continue
        if watermark is not None:
            # On time: at most the 5 s network delay behind what was published before.
            assert event["occurred"] >= watermark - timedelta(seconds=5)
            swapped += event["occurred"] < watermark
        watermark = event["occurred"] if watermark is None else max(watermark, event["occurred"])
    assert swapped > 0  # neighbours do come out of order
    assert late


def test_one_day_has_no_late_events() -> None:
    messages, manifest = generate_clickstream(2_000, seed=5, start_date=date(2026, 6, 1), days=1)
    assert manifest.late == 0
    assert manifest.events == 2_000
    dates = {e["occurred"].date() for _, v in messages if (e := _event(v)) is not None}
    assert dates == {date(2026, 6, 1)}


def test_zero_events_publish_nothing() -> None:
    messages, manifest = generate_clickstream(0)
    assert messages == []
    assert (manifest.events, manifest.messages, manifest.malformed) == (0, 0, 0)


@pytest.mark.parametrize("kwargs", [{"events": -1}, {"events": 10, "days": 0}])
def test_bad_arguments_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        iter_clickstream(**kwargs)
