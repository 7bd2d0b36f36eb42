"""A local emulator of a Stripe-like payments REST API for "Acme Outfitters".

The REST connector's retries, pagination and incremental sync are tested against this server, so
it speaks the real shapes rather than a convenient approximation: Stripe's cursor-paginated lists
(``/v1/charges``, ``/v1/refunds``, ``/v1/payouts``, ``/v1/events``) with ``created[...]`` filters
and Stripe's 400 for an unknown parameter (``per_page``), records that change after creation (a
charge refunded or captured days later) with the change listed in ``/v1/events`` as Stripe
does, Stripe's error bodies, ``Stripe-Should-Retry`` and ``Stripe-Version`` headers and masked
API keys, and faults injected on demand (rate limits, 5xx, a 409 lock timeout, slow, dripped and
truncated responses, a repeated page, a redirect, an HTML page instead of JSON, schema drift, a
revoked token). ``payouts_pagination="link_header"`` keeps the older, gentler GitHub-style
page-numbered payouts (a bare array and a ``Link`` header) for the pager's tests. Stdlib HTTP only,
bound to loopback; the data is seeded and never depends on the clock.

As a process (the token comes from the environment so it never shows in ``ps``)::

    PAYMENTS_API_TOKEN=sk_test_... python -m medallion_platform.devkit.demo.payments_api --port 8765

prints its base URL on stdout once it accepts connections and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import copy
import hmac
import ipaddress
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import string
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from pydantic import BaseModel, Field

TOKEN_ENV = "PAYMENTS_API_TOKEN"
DEFAULT_START = 1_759_276_800  # 2025-10-01T00:00:00Z
DAY = 86_400

ID_ALPHABET = string.digits + string.ascii_letters
EUR_SHARE = 0.03
INVALID_CURRENCY = "xxx"
CARD_BRANDS = ("visa", "mastercard", "amex")
CARD_BRAND_WEIGHTS = (60, 30, 10)
REFUND_REASONS = ("requested_by_customer", "duplicate", "fraudulent")
REFUND_REASON_WEIGHTS = (80, 12, 8)
PRODUCTS = (
    "Alpine 2P tent",
    "Down sleeping bag -7C",
    "Trail running shoes",
    "Trekking poles (pair)",
    "Headlamp 400 lm",
    "Rain shell jacket",
    "Gravity water filter",
    "35 L daypack",
    "Two-burner camp stove",
    "Merino base layer",
)

PAYOUTS_DEFAULT_PER_PAGE = 30
PAYOUTS_MAX_PER_PAGE = 100
STRIPE_DEFAULT_LIMIT = 10


class PaymentsData(BaseModel):
    """Everything the emulator serves; plain Stripe-shaped dicts, each list oldest first."""

    charges: list[dict[str, Any]] = Field(default_factory=list)
    refunds: list[dict[str, Any]] = Field(default_factory=list)
    payouts: list[dict[str, Any]] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Seeded data
# --------------------------------------------------------------------------------------------


def _new_id(rng: random.Random, prefix: str, taken: set[str]) -> str:
    """A Stripe-looking id; redrawn on the (astronomically rare) collision so ids stay unique."""
    while True:
        candidate = prefix + "".join(rng.choices(ID_ALPHABET, k=24))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def generate_payments(
    n_charges: int,
    *,
    seed: int = 7,
    start: int = DEFAULT_START,
    span_seconds: int = 30 * DAY,
    refund_rate: float = 0.08,
) -> PaymentsData:
    """Charges, their refunds and payouts; same arguments give identical data, no clock involved.

    Charges are ``created`` in ``[start, start + span_seconds)``, non-decreasing in list order
    (ties allowed). About 3% are in EUR, and ``n_charges // 1000`` of them (at least one once there
    are 100 charges) carry the invalid currency ``"xxx"`` for the platform to quarantine. Refunds
    follow their charge by ten minutes to a week, so they may fall after the window.
    """
    if n_charges < 0:
        raise ValueError(f"n_charges must be >= 0, got {n_charges}")
    if span_seconds < 1:
        raise ValueError(f"span_seconds must be >= 1, got {span_seconds}")
    if not 0.0 <= refund_rate <= 1.0:
        raise ValueError(f"refund_rate must be within [0, 1], got {refund_rate}")
    rng = random.Random(seed)
    taken: set[str] = set()
    n_customers = max(50, n_charges // 4)
    offsets = sorted(rng.randrange(span_seconds) for _ in range(n_charges))
    charges: list[dict[str, Any]] = []
    for number, offset in enumerate(offsets, start=1):
        roll = rng.random()
        status = "succeeded" if roll < 0.95 else "failed" if roll < 0.98 else "pending"
        charges.append(
            {
                "id": _new_id(rng, "ch_", taken),
                "object": "charge",
                "amount": rng.randint(1_500, 45_000),
                "amount_refunded": 0,
                "currency": "eur" if rng.random() < EUR_SHARE else "usd",
                "customer": f"cus_{rng.randint(1, n_customers):06d}",
                "created": start + offset,
                "status": status,
                "paid": status == "succeeded",
                "refunded": False,
                "captured": True,
                "description": f"Acme Outfitters: {rng.randint(1, 3)} x {rng.choice(PRODUCTS)}",
                "metadata": {"order_id": f"ord_{number:07d}"},
                "payment_method_details": {
                    "type": "card",
                    "card": {
                        "brand": rng.choices(CARD_BRANDS, CARD_BRAND_WEIGHTS)[0],
                        "last4": "4242",
                    },
                },
                "livemode": False,
            }
        )
    n_invalid = max(1, n_charges // 1000) if n_charges >= 100 else 0
    for index in rng.sample(range(n_charges), n_invalid):
        charges[index]["currency"] = INVALID_CURRENCY
    refunds = _generate_refunds(rng, charges, refund_rate, taken)
    payouts = generate_payouts(
        max(5, n_charges // 50), seed=seed, start=start, span_seconds=span_seconds
    )
    return PaymentsData(charges=charges, refunds=refunds, payouts=payouts)


class OrderToCharge(BaseModel):
    """An order of the app database, as the storefront asked the payments API to charge it."""

    order_id: str
    customer_id: str
    currency: str  # ISO code, as the app database keeps it ("USD")
    total_cents: int
    placed_at: int  # epoch seconds
    status: str  # the order's status now: placed, paid, shipped, delivered, cancelled, returned


def payments_for_orders(orders: Sequence[OrderToCharge], *, seed: int = 7) -> PaymentsData:
    """The charges, refunds and payouts that the app database's orders imply.

    So the demo's sources agree with each other (gold joins orders to payments): one charge per
    order, for its total, a minute after it was placed. A still-``placed`` order's charge is
    pending; a ``cancelled`` one either failed (why it was cancelled) or was paid and refunded
    in full; a ``returned`` one is refunded in full; about 4% of the others get a partial
    refund. ``len(orders) // 1000`` charges carry the invalid currency ``"xxx"`` for the
    platform to quarantine, as :func:`generate_payments` does.
    """
    rng = random.Random(f"orders:{seed}")
    taken: set[str] = set()
    charges: list[dict[str, Any]] = []
    refunds: list[dict[str, Any]] = []
    for order in sorted(orders, key=lambda o: (o.placed_at, o.order_id)):
        created = order.placed_at + rng.randint(20, 120)
        if order.status == "placed":
            status = "pending"
        elif order.status == "cancelled":
            status = "failed" if rng.random() < 0.5 else "succeeded"
        else:
            status = "succeeded"
        charge = {
            "id": _new_id(rng, "ch_", taken),
            "object": "charge",
            "amount": order.total_cents,
            "amount_refunded": 0,
            "currency": order.currency.lower(),
            "customer": order.customer_id,
            "created": created,
            "status": status,
            "paid": status == "succeeded",
            "refunded": False,
            "captured": True,
            "description": f"Acme Outfitters order {order.order_id}",
            "metadata": {"order_id": order.order_id},
            "payment_method_details": {
                "type": "card",
                "card": {"brand": rng.choices(CARD_BRANDS, CARD_BRAND_WEIGHTS)[0], "last4": "4242"},
            },
            "livemode": False,
        }
        charges.append(charge)
        if status != "succeeded":
            continue
        if order.status in ("cancelled", "returned"):
            part = order.total_cents
        elif rng.random() < 0.04:
            part = rng.randint(order.total_cents // 10, order.total_cents * 9 // 10)
        else:
            continue
        refunds.append(
            {
                "id": _new_id(rng, "re_", taken),
                "object": "refund",
                "amount": part,
                "charge": charge["id"],
                "created": created + rng.randint(600, 7 * DAY),
                "currency": charge["currency"],
                "status": "succeeded",
                "reason": "requested_by_customer",
            }
        )
        charge["amount_refunded"] = part
        charge["refunded"] = part == order.total_cents
    n_invalid = len(charges) // 1000
    for index in rng.sample(range(len(charges)), n_invalid):
        charges[index]["currency"] = INVALID_CURRENCY
    refunds.sort(key=lambda refund: (refund["created"], refund["id"]))
    start = charges[0]["created"] if charges else DEFAULT_START
    span = max(DAY, (charges[-1]["created"] - start + 1) if charges else DAY)
    payouts = generate_payouts(
        max(5, len(charges) // 50), seed=seed, start=start, span_seconds=span
    )
    return PaymentsData(charges=charges, refunds=refunds, payouts=payouts)


def _generate_refunds(
    rng: random.Random, charges: list[dict[str, Any]], refund_rate: float, taken: set[str]
) -> list[dict[str, Any]]:
    """Refund some succeeded charges (full, partial, or partial then the rest) and update them."""
    refunds: list[dict[str, Any]] = []
    for charge in charges:
        if charge["status"] != "succeeded" or rng.random() >= refund_rate:
            continue
        amount = charge["amount"]
        roll = rng.random()
        if roll < 0.55:
            parts = [amount]
        elif roll < 0.90:
            parts = [rng.randint(amount // 10, amount * 9 // 10)]
        else:
            first = rng.randint(amount // 10, amount * 9 // 10)
            parts = [first, amount - first]
        created = charge["created"]
        for part in parts:
            created += rng.randint(600, 7 * DAY)
            refunds.append(
                {
                    "id": _new_id(rng, "re_", taken),
                    "object": "refund",
                    "amount": part,
                    "charge": charge["id"],
                    "created": created,
                    "currency": charge["currency"],
                    "status": "succeeded",
                    "reason": rng.choices(REFUND_REASONS, REFUND_REASON_WEIGHTS)[0],
                }
            )
        charge["amount_refunded"] = sum(parts)
        charge["refunded"] = charge["amount_refunded"] == amount
    refunds.sort(key=lambda refund: (refund["created"], refund["id"]))
    return refunds


def _event(kind: str, obj: dict[str, Any], created: int, taken: set[str]) -> dict[str, Any]:
    """A Stripe event: the object as it was right after the change, at ``data.object``."""
    rng = random.Random(f"event:{kind}:{obj['id']}:{created}:{len(taken)}")
    return {
        "id": _new_id(rng, "evt_", taken),
        "object": "event",
        "api_version": STRIPE_VERSION,
        "created": created,
        "type": kind,
        "data": {"object": copy.deepcopy(obj)},
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
    }


def _change_events(data: PaymentsData) -> list[dict[str, Any]]:
    """The events that changed records after creation in the seeded data: each refund's
    ``refund.created`` and ``charge.refunded`` (the charge as it stood after that refund)."""
    charges = {charge["id"]: charge for charge in data.charges}
    refunded: dict[str, int] = {}
    taken: set[str] = set()
    events: list[dict[str, Any]] = []
    for refund in sorted(data.refunds, key=lambda r: (r["created"], r["id"])):
        charge = charges.get(refund["charge"])
        events.append(_event("refund.created", refund, refund["created"], taken))
        if charge is None:
            continue
        refunded[charge["id"]] = refunded.get(charge["id"], 0) + refund["amount"]
        state = {
            **charge,
            "amount_refunded": refunded[charge["id"]],
            "refunded": refunded[charge["id"]] >= charge["amount"],
        }
        events.append(_event("charge.refunded", state, refund["created"], taken))
    return events


def generate_payouts(
    n_payouts: int, *, seed: int = 7, start: int = DEFAULT_START, span_seconds: int = 30 * DAY
) -> list[dict[str, Any]]:
    """Payouts spread evenly over the window, oldest first; independent of the charges' draws."""
    if n_payouts < 0:
        raise ValueError(f"n_payouts must be >= 0, got {n_payouts}")
    # A string seed is hashed with SHA-512, so this stream is stable across processes and does not
    # replay the charges' stream (which uses the bare integer seed).
    rng = random.Random(f"payouts:{seed}")
    taken: set[str] = set()
    gap = span_seconds // n_payouts if n_payouts else 0
    payouts: list[dict[str, Any]] = []
    for number in range(n_payouts):
        created = start + number * span_seconds // n_payouts + (rng.randrange(gap) if gap else 0)
        payouts.append(
            {
                "id": _new_id(rng, "po_", taken),
                "object": "payout",
                "amount": rng.randint(50_000, 2_500_000),
                "currency": "usd",
                "arrival_date": (created // DAY + 2) * DAY,
                "created": created,
                "status": "paid",
            }
        )
    return payouts


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

FaultKind = Literal[
    "429",
    "409",  # Stripe's lock_timeout: another request holds the object (Stripe-Should-Retry: true)
    "500",
    "502",
    "503",
    "slow",  # answers after ``delay`` seconds
    "drip",  # sends the body one byte every ``delay`` seconds
    "truncated",  # half of the body, still labelled JSON
    "repeat_page",  # the path's previous page again: has_more true, the same cursor (a loop)
    "redirect",  # 301 to the same URL on https, as a load balancer in front of an API does
    "html",  # 200 with an HTML maintenance page
    "new_field",
    "revoke",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
# These change the server's state for good when they fire rather than shaping one response.
_STICKY_KINDS = frozenset({"new_field", "revoke"})


@dataclass
class _Fault:
    kind: str
    path: str
    count: int
    after: int
    retry_after: float | None
    delay: float
    should_retry: bool | None = None


class FaultPlan:
    """Faults queued by a test, consumed by the requests whose path starts with their ``path``.

    Every fault counts the matching requests independently: it lets ``after`` of them pass, then
    fires. At most one response-shaping fault applies per request (the earliest added; the others
    wait for the next request); ``new_field`` and ``revoke`` fire alongside and are permanent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []

    def add(
        self,
        kind: FaultKind,
        *,
        path: str = "/v1/",
        count: int = 1,
        after: int = 0,
        retry_after: float | None = None,
        delay: float = 0.0,
        should_retry: bool | None = None,
    ) -> None:
        """Queue a fault; see the module's kinds. ``count`` is ignored by the permanent kinds.
        ``should_retry`` sends ``Stripe-Should-Retry`` with an error status (as Stripe does)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if count < 1 or after < 0 or delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError("count must be >= 1; after, delay and retry_after must be >= 0")
        fault = _Fault(kind, path, count, after, retry_after, delay, should_retry)
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        """Drop the queued faults (a token already revoked or drift already begun stays)."""
        with self._lock:
            self._faults.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def take(self, path: str) -> tuple[_Fault | None, list[_Fault]]:
        """Consume what one request to ``path`` triggers: (response fault, permanent faults)."""
        response: _Fault | None = None
        sticky: list[_Fault] = []
        with self._lock:
            keep: list[_Fault] = []
            for fault in self._faults:
                if not path.startswith(fault.path):
                    keep.append(fault)
                elif fault.after > 0:
                    fault.after -= 1
                    keep.append(fault)
                elif fault.kind in _STICKY_KINDS:
                    sticky.append(fault)
                elif response is None:
                    response = replace(fault)
                    fault.count -= 1
                    if fault.count > 0:
                        keep.append(fault)
                else:
                    keep.append(fault)
            self._faults = keep
        return response, sticky


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One served request, appended before its response is written (so a client sees it)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    time: float
    faults: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    drip_s: float = 0.0  # > 0: the body goes out one byte at a time, this far apart


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _Response(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


def _stripe_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Response:
    error: dict[str, str] = {"type": type_, "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
    return _json(status, {"error": error}, headers)


def mask_key(key: str) -> str:
    """Stripe's masking: keep a ``sk_test_``-style prefix and, for long keys, the last four."""
    prefix = match.group(0) if (match := re.match(r"(?:sk|rk|pk)_(?:test|live)_", key)) else ""
    rest = key[len(prefix) :]
    return f"{prefix}****{rest[-4:]}" if len(rest) >= 12 else f"{prefix}****"


def _risk_score(object_id: str) -> int:
    """A stable pseudo-random score per object, so drifted pages are reproducible."""
    return random.Random(f"risk:{object_id}").randint(0, 100)


_INTEGER = re.compile(r"-?[0-9]+")
_LIST_PARAMS = frozenset(
    {
        "limit",
        "starting_after",
        "ending_before",
        "created",
        "created[gte]",
        "created[gt]",
        "created[lte]",
        "created[lt]",
    }
)
_LISTS = {
    "/v1/charges": "charge",
    "/v1/refunds": "refund",
    "/v1/payouts": "payout",
    "/v1/events": "event",
}
_PAGED = frozenset(_LISTS)
STRIPE_VERSION = "2024-06-20"
_RETRIEVE = re.compile(r"/v1/(charges|refunds)/([^/]+)")


class _BadRequest(Exception):
    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


def _stripe_int(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise _BadRequest(_stripe_error(400, f"Invalid integer: {value}", param=name))
    return int(value)


def _created_window(neg_created: list[int], query: dict[str, str]) -> tuple[int, int]:
    """Positions ``[low, high)`` of a newest-first list that pass the ``created`` filters.

    The list is ascending in ``-created``, so each bound is one bisect, not a scan.
    """
    low, high = 0, len(neg_created)
    for name in ("created", "created[gte]", "created[gt]", "created[lte]", "created[lt]"):
        bound = _stripe_int(query, name)
        if bound is None:
            continue
        if name in {"created", "created[gte]"}:
            high = min(high, bisect.bisect_right(neg_created, -bound))
        if name == "created[gt]":
            high = min(high, bisect.bisect_left(neg_created, -bound))
        if name in {"created", "created[lte]"}:
            low = max(low, bisect.bisect_left(neg_created, -bound))
        if name == "created[lt]":
            low = max(low, bisect.bisect_right(neg_created, -bound))
    return low, high


class _Listing:
    """An immutable newest-first view of one object type, replaced whole when records arrive.

    Readers take the current instance without a lock; the sort, the ``-created`` keys used to
    bisect the ``created[...]`` window and the id -> position map are built once per change.
    """

    __slots__ = ("neg_created", "objects", "position")

    def __init__(self, objects: Iterable[dict[str, Any]]) -> None:
        self.objects = sorted(objects, key=lambda obj: (obj["created"], obj["id"]), reverse=True)
        self.neg_created = [-obj["created"] for obj in self.objects]
        self.position = {obj["id"]: index for index, obj in enumerate(self.objects)}
        if len(self.position) != len(self.objects):
            raise ValueError("object ids must be unique")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


class PaymentsApi:
    """The emulator: serves ``data`` on loopback to clients presenting ``token``.

    Usable as a context manager (``with PaymentsApi(data, token=...) as api:``). ``faults`` injects
    failures; ``requests`` records every served request; ``add_charges`` and ``revoke_token``
    change the world while a client is syncing.
    """

    def __init__(
        self,
        data: PaymentsData,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_page_size: int = 100,
        payouts_pagination: Literal["cursor", "link_header"] = "cursor",
    ) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        if not _is_loopback(host):
            raise ValueError(f"the emulator binds to IPv4 loopback only, got host {host!r}")
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be >= 1, got {max_page_size}")
        self.faults = FaultPlan()
        self.requests: list[RequestRecord] = []
        self.max_page_size = max_page_size
        self._host = host
        self._port = port
        self._token = token
        self._revoked = False
        self._drift_prefixes: tuple[str, ...] = ()
        self._last_page: dict[str, _Response] = {}  # per list path, for ``repeat_page``
        self._lock = threading.Lock()
        self._charges = _Listing(data.charges)
        self._refunds = _Listing(data.refunds)
        self.payouts_pagination = payouts_pagination
        self._payouts = sorted(data.payouts, key=lambda payout: (payout["created"], payout["id"]))
        self._payouts_list = _Listing(self._payouts)
        self._events = _Listing(_change_events(data))
        self._request_ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``; the port is known once started (``port=0`` picks one)."""
        if self._server is None:
            raise RuntimeError("the payments API is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> PaymentsApi:
        """Bind and serve on a daemon thread; the socket listens before this returns."""
        if self._server is not None:
            raise RuntimeError("the payments API was already started")
        self._server = _Server((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="payments-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut kept-alive connections, so no client is answered afterwards."""
        server, thread = self._server, self._thread
        if server is None or thread is None or not thread.is_alive():
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(timeout=5)

    def __enter__(self) -> PaymentsApi:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the world changing under a sync -------------------------------------------------------

    def add_charges(self, charges: list[dict[str, Any]]) -> None:
        """New charges arrive (copied); they take their place in the order by ``created``."""
        batch = copy.deepcopy(charges)
        with self._lock:
            current = self._charges
            seen = set(current.position)
            for charge in batch:
                if not isinstance(charge.get("id"), str) or not isinstance(
                    charge.get("created"), int
                ):
                    raise ValueError("every charge needs a str 'id' and an int 'created'")
                if charge["id"] in seen:
                    raise ValueError(f"duplicate charge id {charge['id']!r}")
                seen.add(charge["id"])
            self._charges = _Listing([*current.objects, *batch])

    def refund_charge(self, charge_id: str, amount: int, *, at: int) -> dict[str, Any]:
        """Refund ``amount`` cents of a charge at ``at`` (epoch seconds), as Stripe does it: a
        new refund, the charge's ``amount_refunded``/``refunded`` updated in place, and the
        ``refund.created`` and ``charge.refunded`` events listed. The charge keeps its
        ``created``, so a list filtered on ``created`` never shows it again."""
        with self._lock:
            charge = self._charge(charge_id)
            if amount < 1 or charge["amount_refunded"] + amount > charge["amount"]:
                raise ValueError(f"cannot refund {amount} of {charge_id}")
            taken = set(self._refunds.position) | set(self._events.position)
            refund = {
                "id": _new_id(random.Random(f"refund:{charge_id}:{at}"), "re_", taken),
                "object": "refund",
                "amount": amount,
                "charge": charge_id,
                "created": at,
                "currency": charge["currency"],
                "status": "succeeded",
                "reason": "requested_by_customer",
            }
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            self._refunds = _Listing([*self._refunds.objects, refund])
            self._replace_charge(charge)
            self._emit("refund.created", refund, at)
            self._emit("charge.refunded", charge, at)
            return copy.deepcopy(refund)

    def update_charge(
        self, charge_id: str, changes: dict[str, Any], *, at: int, event: str = "charge.updated"
    ) -> None:
        """Change a charge after its creation (``status`` pending -> succeeded, a dispute) and
        list the change as ``event`` in ``/v1/events``."""
        with self._lock:
            charge = {**self._charge(charge_id), **copy.deepcopy(changes)}
            self._replace_charge(charge)
            self._emit(event, charge, at)

    def _charge(self, charge_id: str) -> dict[str, Any]:
        position = self._charges.position.get(charge_id)
        if position is None:
            raise KeyError(f"no such charge {charge_id!r}")
        return copy.deepcopy(self._charges.objects[position])

    def _replace_charge(self, charge: dict[str, Any]) -> None:
        others = [c for c in self._charges.objects if c["id"] != charge["id"]]
        self._charges = _Listing([*others, charge])

    def _emit(self, kind: str, obj: dict[str, Any], at: int) -> None:
        """Append an event; the log only grows forward in time, as Stripe's does (a change
        made now is never dated before the newest event)."""
        newest = self._events.objects[0]["created"] + 1 if self._events.objects else at
        taken = set(self._events.position)
        event = _event(kind, obj, max(at, newest), taken)
        self._events = _Listing([*self._events.objects, event])

    def revoke_token(self) -> None:
        """From now on the token is refused with 401, as after a key roll."""
        with self._lock:
            self._revoked = True

    # -- request handling ----------------------------------------------------------------------

    def _respond(
        self,
        method: str,
        target: str,
        authorization: str | None,
        stripe_version: str | None = None,
    ) -> _Response:
        """Answer one request and record it; the handler only moves bytes."""
        received = time.time()
        split = urlsplit(target)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        fault, sticky = self.faults.take(path)
        for permanent in sticky:
            if permanent.kind == "revoke":
                self.revoke_token()
            else:
                with self._lock:
                    self._drift_prefixes = (*self._drift_prefixes, permanent.path)
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "slow":
            time.sleep(fault.delay)
        with self._lock:
            previous = self._last_page.get(path)
        if fault is not None and kind in {"409", "429", "500", "502", "503", "redirect", "html"}:
            response = _fault_response(fault, self.base_url, target)
        elif kind == "repeat_page" and previous is not None:
            response = previous
        else:
            try:
                response = self._authorize(authorization) or self._route(method, path, query)
            except _BadRequest as bad:
                response = bad.response
            except Exception:
                traceback.print_exc()
                response = _stripe_error(
                    500, "An unexpected error occurred in the emulator.", type_="api_error"
                )
            if response.status == 200 and method == "GET" and path in _PAGED:
                with self._lock:
                    self._last_page[path] = response
            if fault is not None and fault.kind == "truncated":
                response = replace(response, body=response.body[: len(response.body) // 2])
            if fault is not None and fault.kind == "drip":
                response = replace(response, drip_s=max(fault.delay, 0.001))
        kinds = tuple(f.kind for f in sticky) + ((fault.kind,) if fault is not None else ())
        extra = [
            ("Request-Id", f"req_{next(self._request_ids):014d}"),
            ("Stripe-Version", stripe_version or STRIPE_VERSION),
        ]
        if fault is not None and fault.should_retry is not None:
            extra.append(("Stripe-Should-Retry", "true" if fault.should_retry else "false"))
        response = replace(response, headers=(*response.headers, *extra))
        record = RequestRecord(method, path, query, response.status, received, kinds)
        with self._lock:
            self.requests.append(record)
        return response

    def _authorize(self, authorization: str | None) -> _Response | None:
        """``None`` when the bearer token is the live one, else Stripe's 401 (key masked)."""
        challenge = (("WWW-Authenticate", 'Bearer realm="Stripe"'),)
        scheme, _, key = (authorization or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return _stripe_error(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
                headers=challenge,
            )
        if self._revoked or not hmac.compare_digest(key.encode(), self._token.encode()):
            return _stripe_error(
                401, f"Invalid API Key provided: {mask_key(key)}", headers=challenge
            )
        return None

    def _route(self, method: str, path: str, query: dict[str, str]) -> _Response:
        retrieve = _RETRIEVE.fullmatch(path)
        if path not in _LISTS and retrieve is None:
            return _stripe_error(404, f"Unrecognized request URL ({method}: {path}).")
        if method != "GET":
            return _stripe_error(405, f"This emulator is read-only; {method} is not allowed.")
        if path == "/v1/payouts" and self.payouts_pagination == "link_header":
            return self._payouts_page(query)
        if retrieve is not None:
            return self._retrieve(retrieve.group(1), retrieve.group(2), path)
        return self._list(path, query)

    def _with_drift(self, path: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not any(path.startswith(prefix) for prefix in self._drift_prefixes):
            return objects
        return [{**obj, "risk_score": _risk_score(obj["id"])} for obj in objects]

    def _retrieve(self, collection: str, object_id: str, path: str) -> _Response:
        listing = self._charges if collection == "charges" else self._refunds
        position = listing.position.get(object_id)
        if position is None:
            noun = _LISTS[f"/v1/{collection}"]
            return _stripe_error(
                404, f"No such {noun}: '{object_id}'", param="id", code="resource_missing"
            )
        return _json(200, self._with_drift(path, [listing.objects[position]])[0])

    def _list(self, path: str, query: dict[str, str]) -> _Response:
        """Stripe list semantics: newest first, ``limit`` + cursor, ``created[...]`` window."""
        noun = _LISTS[path]
        listing = {
            "charge": self._charges,
            "refund": self._refunds,
            "payout": self._payouts_list,
            "event": self._events,
        }[noun]
        allowed = _LIST_PARAMS | ({"type"} if noun == "event" else set())
        unknown = sorted(set(query) - allowed)
        if unknown:
            return _stripe_error(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])
        raw_limit = query.get("limit")
        if raw_limit is None:
            limit = min(STRIPE_DEFAULT_LIMIT, self.max_page_size)
        elif _INTEGER.fullmatch(raw_limit) and 1 <= int(raw_limit) <= self.max_page_size:
            limit = int(raw_limit)
        else:
            return _stripe_error(
                400,
                f"Invalid limit: must be an integer between 1 and {self.max_page_size} "
                f"(got {raw_limit!r}).",
                param="limit",
            )
        low, high = _created_window(listing.neg_created, query)
        after, before = query.get("starting_after"), query.get("ending_before")
        if after is not None and before is not None:
            return _stripe_error(
                400,
                "You may only specify one of these parameters: starting_after, ending_before.",
            )
        cursor_param = "starting_after" if after is not None else "ending_before"
        cursor = after if after is not None else before
        if cursor is not None:
            position = listing.position.get(cursor)
            if position is None:
                return _stripe_error(
                    400, f"No such {noun}: '{cursor}'", param=cursor_param, code="resource_missing"
                )
            if after is not None:
                low = max(low, position + 1)
            else:
                high = min(high, position)
        objects = listing.objects
        if noun == "event" and query.get("type"):
            # Stripe's type filter: one event name, or a group with * as a wildcard.
            pattern = re.compile(re.escape(query["type"]).replace(r"\*", ".*"))
            kept = [i for i in range(low, high) if pattern.fullmatch(objects[i]["type"])]
            if before is not None:
                kept = kept[-limit:] if len(kept) > limit else kept
                page, has_more = [objects[i] for i in kept], len(kept) == limit
            else:
                page, has_more = [objects[i] for i in kept[:limit]], len(kept) > limit
        elif before is not None:
            first = max(low, high - limit)
            page, has_more = objects[first:high], first > low
        else:
            end = min(high, low + limit)
            page, has_more = objects[low:end], end < high
        return _json(
            200,
            {
                "object": "list",
                "data": self._with_drift(path, page),
                "has_more": has_more,
                "url": path,
            },
        )

    def _payouts_page(self, query: dict[str, str]) -> _Response:
        """GitHub-style pages: a bare array, ``Link`` with prev/next/last/first as they apply.

        Like GitHub, bad ``page``/``per_page`` values fall back to the defaults and ``per_page`` is
        capped at 100 rather than refused; a page past the end is an empty array.
        """
        page = _lenient_positive_int(query.get("page"), 1)
        per_page = min(
            _lenient_positive_int(query.get("per_page"), PAYOUTS_DEFAULT_PER_PAGE),
            PAYOUTS_MAX_PER_PAGE,
        )
        last = max(1, math.ceil(len(self._payouts) / per_page))
        items = self._payouts[(page - 1) * per_page : page * per_page]
        extra = [(key, value) for key, value in query.items() if key not in {"page", "per_page"}]

        def link(number: int, rel: str) -> str:
            params = urlencode([("page", number), ("per_page", per_page), *extra])
            return f'<{self.base_url}/v1/payouts?{params}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        headers = (("Link", ", ".join(links)),) if links else ()
        return _json(200, self._with_drift("/v1/payouts", items), headers)


def _lenient_positive_int(value: str | None, default: int) -> int:
    if value is None or not value.isdigit() or int(value) < 1:
        return default
    return int(value)


def _fault_response(fault: _Fault, base_url: str, target: str) -> _Response:
    if fault.kind == "redirect":
        location = "https://" + base_url.split("://", 1)[1] + target
        page = "<html><head><title>301 Moved Permanently</title></head><body>nginx</body></html>"
        return _Response(301, page.encode(), "text/html", (("Location", location),))
    if fault.kind == "html":
        page = (
            "<!DOCTYPE html><html><head><title>Down for maintenance</title></head>"
            "<body><h1>We'll be back soon.</h1></body></html>"
        )
        return _Response(200, page.encode(), "text/html; charset=utf-8")
    status = int(fault.kind)
    retry_after = () if fault.retry_after is None else (("Retry-After", str(fault.retry_after)),)
    if status == 409:
        return _stripe_error(
            409,
            "This object cannot be accessed right now because another API request or Stripe "
            "process is currently accessing it. If you see this error intermittently, retry the "
            "request.",
            code="lock_timeout",
            headers=retry_after,
        )
    if status == 429:
        return _stripe_error(
            429,
            "Too many requests hit the API too quickly. We recommend an exponential backoff of "
            "your requests.",
            type_="rate_limit_error",
            code="rate_limit",
            headers=retry_after or (("Retry-After", "1"),),
        )
    if status == 500:
        return _stripe_error(
            500,
            "An unknown error occurred while processing this request; please retry.",
            type_="api_error",
            headers=retry_after,
        )
    phrase = HTTPStatus(status).phrase
    page = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return _Response(status, page.encode(), "text/html", retry_after)


class _Server(ThreadingHTTPServer):
    """Knows its API and its open connections, so ``stop`` can cut kept-alive clients."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: PaymentsApi) -> None:
        self.api = api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up is routine here (timeouts, stop); anything else is a bug."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a 100-page walk reuses one connection
    server_version = "payments-api-emulator/1"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every kept-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def _serve(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit():
            self.rfile.read(int(length))
        if self.command != "GET":
            self.close_connection = True
        response = self.server.api._respond(
            self.command,
            self.path,
            self.headers.get("Authorization"),
            self.headers.get("Stripe-Version"),
        )
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if not response.drip_s:
            self.wfile.write(response.body)
            return
        for offset in range(len(response.body)):  # a client that gives up ends this (EPIPE)
            self.wfile.write(response.body[offset : offset + 1])
            self.wfile.flush()
            time.sleep(response.drip_s)

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a sync issues hundreds of requests; ``PaymentsApi.requests`` records them."""


# --------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------


def serve_forever(data: PaymentsData, token: str, port: int) -> None:
    """Serve ``data`` until SIGTERM/SIGINT, printing the URL when ready.

    The signals are blocked and then awaited with ``sigwait`` (POSIX; main thread), so no handler
    runs at an arbitrary point and a signal arriving during start-up is not lost.
    """
    signals = {signal.SIGINT, signal.SIGTERM}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        # The server thread inherits the blocked mask, so the signal is left for sigwait.
        with PaymentsApi(data, token=token, port=port) as api:
            print(api.base_url, flush=True)
            signal.sigwait(signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medallion_platform.devkit.demo.payments_api",
        description="Serve the Acme Outfitters payments API emulator on 127.0.0.1. "
        f"The bearer token clients must present is read from ${TOKEN_ENV}.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--charges", type=int, default=2_000, help="charges to generate")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    parser.add_argument(
        "--orders-file",
        help="JSON lines of orders (OrderToCharge) to charge instead of generated charges",
    )
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        parser.error(f"${TOKEN_ENV} must be set to the token clients will present")
    if args.orders_file:
        with open(args.orders_file, encoding="utf-8") as lines:
            orders = [OrderToCharge.model_validate_json(line) for line in lines if line.strip()]
        data = payments_for_orders(orders, seed=args.seed)
    else:
        data = generate_payments(args.charges, seed=args.seed)
    serve_forever(data, token, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
