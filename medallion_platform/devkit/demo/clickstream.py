"""Seeded storefront clickstream of "Acme Outfitters", as its Kafka topic receives it.

The storefront publishes one message per event with at-least-once delivery, so the stream has
the warts of a real one: re-published copies, events that arrive more than a day late, small
reordering from network delay and a few messages no consumer can read. The platform's bronze
landing, contracts, quarantine, de-duplication and sessionization are tested against it, so
the counts in :class:`ClickstreamManifest` are exact.

A message is ``(key, value)``: the key is the visitor's ``anonymous_id`` (one visitor, one
partition) and the value compact UTF-8 JSON with these fields, in this order::

    {"event_id":"evt_<16 hex>","event_type":"page_view","occurred_at":"2026-11-20T10:03:12.123Z",
     "anonymous_id":"anon_000123","customer_id":"cus_000045"|null,"channel":"organic",
     "page":"/","sku":null,"order_id":null,"revenue":null,"currency":"USD"}

What the stream promises (``medallion_platform_tests/demo/test_clickstream.py`` checks it):

* Sessions: a visitor's events of one session are 5 s to 10 min apart; a visitor's sessions
  are more than 45 min apart, so sessionizing by 30 minutes of inactivity recovers them exactly.
  Every session starts with a ``page_view`` and has one channel.
* Known visitors: 35% of anonymous ids belong to a customer (a remembered login), and every event
  of such a visitor carries its ``customer_id``; the others stay anonymous, guest purchases too.
  Several anonymous ids (devices) may belong to one customer.
* Publish order is arrival order, ``occurred_at`` plus 0-5 s of network delay.
* Duplicates: about 2% of well-formed messages are re-published byte-identically within the next
  200 messages (malformed ones never are).
* Late: about 1% of events arrive 25 to 72 hours after they occurred, so they are published
  among the events of a later day. Only events that can still arrive inside the window
  ``[start_date, start_date + days)`` are made late (the late rate of the other events is raised
  to make up for it); the events of the last 25 hours are never late, and so with ``days=1``
  no event is.
* Malformed: about 0.2% extra messages (at least one from 500 events), each value distinct and
  broken in one way: truncated JSON, no ``event_id``, ``occurred_at`` "yesterday", event type
  "hover", or a purchase whose revenue is the string "12,50".

Same arguments give byte-identical messages: all randomness comes from ``random.Random``
instances derived from ``seed``, and nothing depends on the clock. Messages are produced one
day at a time, so memory stays at about one day of events whatever ``events`` is.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect, bisect_left
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from math import gcd
from operator import itemgetter
from typing import Any

from pydantic import BaseModel

from medallion_platform.devkit.demo.generator import CATEGORIES

EVENT_TYPES = ("page_view", "product_view", "add_to_cart", "checkout_started", "purchase")
CHANNELS = ("google_ads", "meta_ads", "tiktok_ads", "email", "organic", "direct")
CURRENCY = "USD"

# SKU-000001 .. SKU-000500: all in the products catalog the file generator writes at scale >= 0.25.
N_SKUS = 500
KNOWN_VISITOR_SHARE = 0.35
DUPLICATE_RATE = 0.02
DUPLICATE_WITHIN = 200  # messages
LATE_RATE = 0.01
MALFORMED_RATE = 0.002

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
MIN_EVENT_GAP_MS = 5_000
MAX_EVENT_GAP_MS = 10 * MINUTE_MS  # exclusive; far below the 30-minute sessionization gap
SESSION_GAP_MS = 45 * MINUTE_MS  # a visitor's sessions are more than this apart
MAX_NETWORK_DELAY_MS = 5_000
# A late event arrives 25-72 h after it occurred: clearly "more than a day", even for a consumer
# that judges lateness by the event times it has already seen.
LATE_MIN_MS = 25 * HOUR_MS
LATE_MAX_MS = 72 * HOUR_MS
LATE_END_MARGIN_MS = 10 * MINUTE_MS  # late arrivals land at least this long before the end

_CHANNEL_WEIGHTS = {
    "organic": 30,
    "google_ads": 20,
    "meta_ads": 15,
    "direct": 15,
    "email": 10,
    "tiktok_ads": 10,
}
_CHANNEL_TABLE = tuple(c for c, w in _CHANNEL_WEIGHTS.items() for _ in range(w))
# Chance that a session of the channel lands on the home page rather than a category page.
_HOME_LANDING = {
    "organic": 0.5,
    "google_ads": 0.2,
    "meta_ads": 0.2,
    "tiktok_ads": 0.2,
    "email": 0.5,
    "direct": 0.8,
}
# Sessions started per UTC hour: a US storefront, busiest in the American evening.
_HOUR_WEIGHTS = (9, 9, 8, 7, 5, 4, 3, 2, 2, 2, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 8, 8, 9, 9)
_HOUR_CUMULATIVE = tuple(sum(_HOUR_WEIGHTS[: i + 1]) for i in range(24))

# Funnel: share of sessions viewing a product, of those adding to cart, of those starting
# checkout, of those buying.
P_PRODUCT_VIEW = 0.60
P_ADD_TO_CART = 0.25
P_CHECKOUT = 0.50
P_PURCHASE = 0.60

# The JSON between the event id and the timestamp, per event type.
_TYPE_PART = {t: f'","event_type":"{t}","occurred_at":"' for t in EVENT_TYPES}
_PAGE_VIEW, _PRODUCT_VIEW, _ADD_TO_CART, _CHECKOUT, _PURCHASE = (_TYPE_PART[t] for t in EVENT_TYPES)


def _tail(page: str, sku: str | None = None) -> str:
    """The JSON from ``page`` to the end for an event that is not a purchase."""
    sku_json = "null" if sku is None else f'"{sku}"'
    return f'"page":"{page}","sku":{sku_json},"order_id":null,"revenue":null,"currency":"USD"}}'


_HOME_TAIL = _tail("/")
_CART_TAIL = _tail("/cart")
_CHECKOUT_TAIL = _tail("/checkout")
_CATEGORY_TAILS = tuple(_tail(f"/c/{c}") for c in CATEGORIES)
# Index 0 unused, so SKU-000123 is _PRODUCT_TAILS[123].
_PRODUCT_TAILS = ("", *(_tail(f"/p/SKU-{n:06d}", f"SKU-{n:06d}") for n in range(1, N_SKUS + 1)))

_MALFORMED_KINDS = (
    "truncated_json",
    "missing_event_id",
    "bad_timestamp",
    "unknown_event_type",
    "revenue_string",
)

_M64 = (1 << 64) - 1


class ClickstreamManifest(BaseModel):
    """What the stream holds, so tests and demos can check the platform's counts."""

    events: int  # distinct well-formed events (distinct event_id among well-formed messages)
    messages: int  # everything published: duplicates and malformed messages included
    duplicates: int  # re-published copies of well-formed messages
    late: int  # distinct events first published more than a day after they occurred
    malformed: int
    start_date: date
    days: int


# A session before it is placed in time: (offset from its first event in ms, type part, tail);
# a purchase's tail is None until its order id and revenue are drawn.
_Shape = list[tuple[int, str, str | None]]


def _session_shape(rng: random.Random) -> tuple[str, _Shape]:
    """A session's channel and its funnel: landing page, product views, cart, checkout, purchase."""
    rnd = rng.random
    channel = _CHANNEL_TABLE[int(rnd() * len(_CHANNEL_TABLE))]
    steps: list[tuple[str, str | None]] = []

    def category_tail() -> str:
        return _CATEGORY_TAILS[int(rnd() * len(_CATEGORY_TAILS))]

    steps.append((_PAGE_VIEW, _HOME_TAIL if rnd() < _HOME_LANDING[channel] else category_tail()))
    if rnd() < P_PRODUCT_VIEW:
        views = 1
        while views < 6 and rnd() < 0.45:
            views += 1
        sku = 0
        for i in range(views):
            if i and rnd() < 0.3:
                steps.append((_PAGE_VIEW, category_tail()))
            # A few best sellers get most of the views.
            sku = 1 + int(N_SKUS * rnd() * rnd())
            steps.append((_PRODUCT_VIEW, _PRODUCT_TAILS[sku]))
        if rnd() < P_ADD_TO_CART:
            steps.append((_ADD_TO_CART, _PRODUCT_TAILS[sku]))
            if rnd() < P_CHECKOUT:
                steps.append((_PAGE_VIEW, _CART_TAIL))
                steps.append((_CHECKOUT, _CHECKOUT_TAIL))
                if rnd() < P_PURCHASE:
                    steps.append((_PURCHASE, None))
    elif rnd() < 0.5:  # no product viewed: half bounce, the others browse a page or two
        for _ in range(1 + int(rnd() * 2)):
            steps.append((_PAGE_VIEW, category_tail()))

    shape: _Shape = []
    offset = 0
    for i, (part, tail) in enumerate(steps):
        if i:
            # Mostly quick clicks, now and then a long read; always 5 s to under 10 min.
            r = rnd()
            offset += MIN_EVENT_GAP_MS + int((MAX_EVENT_GAP_MS - MIN_EVENT_GAP_MS) * r * r * r)
        shape.append((offset, part, tail))
    return channel, shape


def _mix(x: int) -> int:
    """A bijection on 64-bit integers (splitmix64's finalizer): distinct in, distinct out."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _minute_prefixes(start_date: date, days: int) -> list[str]:
    """``YYYY-MM-DDTHH:MM:`` for every minute of the window, indexed by minute offset."""
    start = datetime(start_date.year, start_date.month, start_date.day)
    prefixes = []
    for d in range(days):
        day = (start + timedelta(days=d)).strftime("%Y-%m-%dT")
        prefixes.extend(f"{day}{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
    return prefixes


def _malformed_value(
    rng: random.Random,
    kind: str,
    event_id: str,
    occurred_at: str,
    part: str,
    middle: str,
    tail: str,
    order_number: int,
) -> str:
    """A message value broken in the way ``kind`` names, made from one real event's fields.

    Each carries a fresh ``event_id`` (or, without one, a fresh ``eventId``), so no two are equal.
    """
    if kind == "missing_event_id":
        # An old SDK that spells the field eventId: valid JSON without an event_id.
        return f'{{"eventId":"{event_id}{part}{occurred_at}",{middle}{tail}'
    if kind == "bad_timestamp":
        return f'{{"event_id":"{event_id}{part}yesterday",{middle}{tail}'
    if kind == "unknown_event_type":
        hover = '","event_type":"hover","occurred_at":"'
        return f'{{"event_id":"{event_id}{hover}{occurred_at}",{middle}{tail}'
    if kind == "revenue_string":
        cents = 1500 + int(rng.random() * 88_500)
        purchase_tail = (
            f'"page":"/checkout/complete","sku":null,"order_id":"ord_{order_number:08d}",'
            f'"revenue":"{cents // 100},{cents % 100:02d}","currency":"USD"}}'
        )
        return f'{{"event_id":"{event_id}{_PURCHASE}{occurred_at}",{middle}{purchase_tail}'
    # truncated_json: the producer died mid-write. Cut after the event id, before the closing
    # brace, so the text stays unique and is never valid JSON.
    full = f'{{"event_id":"{event_id}{part}{occurred_at}",{middle}{tail}'
    keep_from = len('{"event_id":"') + len(event_id) + 2
    return full[: keep_from + int(rng.random() * (len(full) - 1 - keep_from))]


def _check_arguments(events: int, days: int) -> None:
    if events < 0:
        raise ValueError(f"events must not be negative, got {events}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")


def iter_clickstream(
    events: int, *, seed: int = 7, start_date: date = date(2026, 11, 1), days: int = 14
) -> Iterator[tuple[bytes, bytes]]:
    """Messages ``(key, value)`` in publish order; ``events`` distinct well-formed events.

    Memory is bounded by about one day of events, so millions of events stream fine.
    """
    _check_arguments(events, days)
    return _stream(events, seed, start_date, days, None)


def clickstream_manifest(
    events: int, *, seed: int = 7, start_date: date = date(2026, 11, 1), days: int = 14
) -> ClickstreamManifest:
    """The manifest of ``iter_clickstream`` with the same arguments (it runs the stream)."""
    _check_arguments(events, days)
    manifest = _empty_manifest(start_date, days)
    for _ in _stream(events, seed, start_date, days, manifest):
        pass
    return manifest


def generate_clickstream(
    events: int, **kwargs: Any
) -> tuple[list[tuple[bytes, bytes]], ClickstreamManifest]:
    """All messages in a list, and their manifest; for tests and small demos."""
    seed: int = kwargs.pop("seed", 7)
    start_date: date = kwargs.pop("start_date", date(2026, 11, 1))
    days: int = kwargs.pop("days", 14)
    if kwargs:
        raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
    _check_arguments(events, days)
    manifest = _empty_manifest(start_date, days)
    messages = list(_stream(events, seed, start_date, days, manifest))
    return messages, manifest


def _empty_manifest(start_date: date, days: int) -> ClickstreamManifest:
    return ClickstreamManifest(
        events=0, messages=0, duplicates=0, late=0, malformed=0, start_date=start_date, days=days
    )


def _stream(
    events: int,
    seed: int,
    start_date: date,
    days: int,
    manifest: ClickstreamManifest | None,
) -> Iterator[tuple[bytes, bytes]]:
    """Generate one day of sessions at a time and publish what has arrived by its end.

    Times are milliseconds from the start of the window. Pending messages are sorted by arrival
    time; a message whose arrival is before the end of the day just generated can be published,
    since every later session starts after it.
    """
    master = random.Random(seed)
    # Separate streams, so changing one wart leaves the others' draws alone.
    session_rng = random.Random(master.getrandbits(64))
    time_rng = random.Random(master.getrandbits(64))
    dup_rng = random.Random(master.getrandbits(64))
    bad_rng = random.Random(master.getrandbits(64))
    id_base = master.getrandbits(64)
    visitor_key = master.getrandbits(64)
    order_step = _coprime_step(master, 90_000_000)
    order_base = int(master.random() * 90_000_000)

    end_ms = days * DAY_MS
    minute_prefix = _minute_prefixes(start_date, days)
    n_customers = max(50, events // 40)
    n_visitors = max(100, events // 10)
    n_loyal = max(10, n_visitors // 10)
    # Raise the late rate of the events that can be late so that about LATE_RATE of all are.
    eligible_ms = end_ms - LATE_MIN_MS - LATE_END_MARGIN_MS
    p_late = min(1.0, LATE_RATE * end_ms / eligible_ms) if eligible_ms > 0 else 0.0
    n_malformed = round(events * MALFORMED_RATE)
    if events >= 500:
        n_malformed = max(1, n_malformed)
    malformed_at = set(bad_rng.sample(range(events), n_malformed))
    bad_kind_offset = int(bad_rng.random() * len(_MALFORMED_KINDS))

    srnd = session_rng.random
    trnd = time_rng.random
    drnd = dup_rng.random
    per_day, extra_days = divmod(events, days)

    # (arrival << 32 | sequence, key, value, well_formed); the sequence keeps the order total.
    pending: list[tuple[int, bytes, bytes, bool]] = []
    duplicates_due: list[tuple[int, int, bytes, bytes]] = []  # (due position, seq, key, value)
    seq = 0
    ids_used = 0
    orders_used = 0
    event_index = 0
    late = 0
    malformed = 0
    published = 0
    duplicates = 0
    carry: dict[int, list[tuple[int, int]]] = {}

    def next_id() -> str:
        nonlocal ids_used
        x = _mix((id_base + ids_used) & _M64)
        ids_used += 1
        return f"evt_{x:016x}"

    def next_order() -> int:
        nonlocal orders_used
        number = 10_000_000 + (order_base + orders_used * order_step) % 90_000_000
        orders_used += 1
        return number

    def publish(batch: list[tuple[int, bytes, bytes, bool]]) -> Iterator[tuple[bytes, bytes]]:
        nonlocal published, duplicates
        for _, key, value, well_formed in batch:
            yield key, value
            published += 1
            if well_formed and drnd() < DUPLICATE_RATE:
                due = published + int(drnd() * DUPLICATE_WITHIN)
                heapq.heappush(duplicates_due, (due, duplicates, key, value))
                duplicates += 1
            while duplicates_due and duplicates_due[0][0] <= published:
                _, _, dup_key, dup_value = heapq.heappop(duplicates_due)
                yield dup_key, dup_value
                published += 1

    for day in range(days):
        day_start = day * DAY_MS
        target = per_day + (1 if day < extra_days else 0)
        # A visitor's sessions so far that a new one must keep clear of: (first, last event).
        spans = carry
        produced = 0
        while produced < target:
            channel, shape = _session_shape(session_rng)
            if len(shape) > target - produced:
                shape = shape[: target - produced]  # the day is full: the visitor left early
            # Place it: a visitor (loyal ones come back often) and a start by hour of day.
            attempts = 0
            while True:
                if attempts % 4 == 0:
                    if srnd() < 0.3:
                        visitor = 1 + int(srnd() * n_loyal)
                    else:
                        visitor = 1 + int(srnd() * n_visitors)
                attempts += 1
                hour = bisect(_HOUR_CUMULATIVE, srnd() * _HOUR_CUMULATIVE[-1])
                start = day_start + hour * HOUR_MS + int(srnd() * HOUR_MS)
                # The window ends: whatever comes after it never happened.
                times = [start + offset for offset, _, _ in shape if start + offset < end_ms]
                first, last = times[0], times[-1]
                previous = spans.get(visitor)
                if previous is None:
                    spans[visitor] = [(first, last)]
                    break
                if all(
                    first - p_last > SESSION_GAP_MS or p_first - last > SESSION_GAP_MS
                    for p_first, p_last in previous
                ):
                    previous.append((first, last))
                    break

            anonymous_id = f"anon_{visitor:06d}"
            key = anonymous_id.encode()
            h = _mix((visitor ^ visitor_key) & _M64)
            if (h & 0xFFFF) < KNOWN_VISITOR_SHARE * 0x10000:
                customer = f'"cus_{1 + (h >> 16) % n_customers:06d}"'
            else:
                customer = "null"
            middle = (
                f'"anonymous_id":"{anonymous_id}","customer_id":{customer},"channel":"{channel}",'
            )

            for t, (_, part, tail) in zip(times, shape, strict=False):
                if tail is None:
                    r = (srnd() + srnd()) / 2  # revenue: mostly around $116, $15 to $900
                    cents = int(1500 * 60**r)
                    tail = (
                        f'"page":"/checkout/complete","sku":null,"order_id":"ord_{next_order():08d}",'
                        f'"revenue":{cents // 100}.{cents % 100:02d},"currency":"USD"}}'
                    )
                rem = t % MINUTE_MS
                occurred_at = f"{minute_prefix[t // MINUTE_MS]}{rem // 1000:02d}.{rem % 1000:03d}Z"
                event_id = next_id()
                value = f'{{"event_id":"{event_id}{part}{occurred_at}",{middle}{tail}'
                if trnd() < p_late and t < eligible_ms:
                    latest = min(LATE_MAX_MS, end_ms - LATE_END_MARGIN_MS - t)
                    arrival = t + LATE_MIN_MS + int(trnd() * (latest - LATE_MIN_MS))
                    late += 1
                else:
                    arrival = t + int(trnd() * (MAX_NETWORK_DELAY_MS + 1))
                pending.append(((arrival << 32) | seq, key, value.encode(), True))
                seq += 1
                if event_index in malformed_at:
                    kind = _MALFORMED_KINDS[(malformed + bad_kind_offset) % len(_MALFORMED_KINDS)]
                    bad = _malformed_value(
                        bad_rng,
                        kind,
                        next_id(),
                        occurred_at,
                        part,
                        middle,
                        tail,
                        next_order() if kind == "revenue_string" else 0,
                    )
                    bad_arrival = arrival + 1 + int(bad_rng.random() * MAX_NETWORK_DELAY_MS)
                    pending.append(((bad_arrival << 32) | seq, key, bad.encode(), False))
                    seq += 1
                    malformed += 1
                event_index += 1
            produced += len(times)

        # Sessions of later days start at the next midnight or after: keep only the spans that
        # a session then could come too close to.
        next_start = day_start + DAY_MS
        carry = {
            v: near
            for v, vs in spans.items()
            if (near := [s for s in vs if s[1] >= next_start - SESSION_GAP_MS])
        }
        pending.sort(key=itemgetter(0))
        cut = bisect_left(pending, next_start << 32, key=itemgetter(0))
        if day == days - 1:
            cut = len(pending)  # the end: publish everything still in flight
        batch = pending[:cut]
        del pending[:cut]
        yield from publish(batch)
        del batch  # not kept while the next day is generated

    while duplicates_due:
        _, _, dup_key, dup_value = heapq.heappop(duplicates_due)
        yield dup_key, dup_value
        published += 1

    if manifest is not None:
        manifest.events = event_index
        manifest.messages = published
        manifest.duplicates = duplicates
        manifest.late = late
        manifest.malformed = malformed


def _coprime_step(rng: random.Random, modulus: int) -> int:
    """A step coprime to ``modulus``, so ``base + i * step`` never repeats within it."""
    while True:
        step = 1 + int(rng.random() * (modulus - 1))
        if gcd(step, modulus) == 1:
            return step
