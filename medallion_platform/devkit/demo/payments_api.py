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
page-numbered payouts (a bare array and a ``Link`` header) for the pager's tests. It runs on the
harness's shared emulator server (:mod:`medallion_platform.devkit.demo.http_emulator`: server,
routing, fault plan, request log), bound to loopback, and keeps here only what is Stripe's; the
data is seeded and never depends on the clock.

As a process (the token comes from the environment so it never shows in ``ps``)::

    PAYMENTS_API_TOKEN=sk_test_... python -m medallion_platform.devkit.demo.payments_api --port 8765

prints its base URL on stdout once it accepts connections and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import itertools
import math
import os
import random
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from pydantic import BaseModel, Field

from medallion_platform.devkit.demo.http_emulator import (
    SERVER_FAULTS,
    Admission,
    ApiError,
    EmulatorServer,
    Fault,
    FaultPlan,
    Headers,
    Request,
    Response,
    Route,
    bearer_token,
    json_response,
    proxy_error_page,
    same_secret,
    serve_until_signal,
)

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
_PERMANENT_KINDS = frozenset({"new_field", "revoke"})
_STATUS_KINDS = frozenset({"409", "429", "500", "502", "503"})


class StripeFaults:
    """Faults queued by a test by the names above, consumed by the requests whose path starts
    with their ``path`` (the shared server's :class:`FaultPlan` underneath).

    Every fault counts the matching requests independently: it lets ``after`` of them pass, then
    fires. At most one response-shaping fault applies per request (the earliest added; the others
    wait for the next request); ``new_field`` and ``revoke`` fire alongside and are permanent.
    """

    def __init__(self, plan: FaultPlan) -> None:
        self._plan = plan

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
        headers = (
            () if should_retry is None else (("Stripe-Should-Retry", str(should_retry).lower()),)
        )
        self._plan.add(
            Fault(
                kind,
                count,
                path,
                retry_after=retry_after,
                seconds=delay,
                after=after,
                headers=headers,
            )
        )

    def clear(self) -> None:
        """Drop the queued faults (a token already revoked or drift already begun stays)."""
        self._plan.clear()

    def __len__(self) -> int:
        return len(self._plan)


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


def _stripe_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: Headers = (),
) -> Response:
    error: dict[str, str] = {"type": type_, "message": message}
    if param is not None:
        error["param"] = param
    if code is not None:
        error["code"] = code
    return json_response(status, {"error": error}, headers)


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
STRIPE_VERSION = "2024-06-20"
_RETRIEVE = re.compile(r"/v1/(charges|refunds)/([^/]+)")


def _stripe_int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise ApiError(_stripe_error(400, f"Invalid integer: {value}", param=name))
    return int(value)


def _created_window(neg_created: list[int], query: Mapping[str, str]) -> tuple[int, int]:
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


class PaymentsApi(EmulatorServer):
    """The emulator: serves ``data`` on loopback to clients presenting ``token``.

    Usable as a context manager (``with PaymentsApi(data, token=...) as api:``). ``faults`` injects
    failures; ``requests`` records every served request; ``add_charges`` and ``revoke_token``
    change the world while a client is syncing.
    """

    name = "payments API"
    server_software = "payments-api-emulator/1"
    fault_kinds = SERVER_FAULTS | FAULT_KINDS
    permanent_faults = _PERMANENT_KINDS

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
        super().__init__(token=token, host=host, port=port, rate_limit=None)
        if max_page_size < 1:
            raise ValueError(f"max_page_size must be >= 1, got {max_page_size}")
        self.faults = StripeFaults(self._faults)
        self.max_page_size = max_page_size
        self._drift_prefixes: tuple[str, ...] = ()
        self._last_page: dict[str, Response] = {}  # per list path, for ``repeat_page``
        self._charges = _Listing(data.charges)
        self._refunds = _Listing(data.refunds)
        self.payouts_pagination = payouts_pagination
        self._payouts = sorted(data.payouts, key=lambda payout: (payout["created"], payout["id"]))
        self._payouts_list = _Listing(self._payouts)
        self._events = _Listing(_change_events(data))
        self._request_ids = itertools.count(1)

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
        self.expire_token()

    # -- request handling ----------------------------------------------------------------------

    def handle(self, request: Request) -> Response | None:
        return self._respond(
            request.method,
            request.target,
            request.header("Authorization"),
            request.header("Stripe-Version"),
        )

    def _respond(
        self,
        method: str,
        target: str,
        authorization: str | None,
        stripe_version: str | None = None,
    ) -> Response | None:
        """Answer one request and record it, from what Stripe reads of it (the request target,
        the key, the pinned version): where a test's subclass acts while a page is served."""
        split = urlsplit(target)
        headers = {"authorization": authorization, "stripe-version": stripe_version}
        request = Request(
            method=method,
            path=unquote(split.path),
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={name: value for name, value in headers.items() if value is not None},
            target=target,
        )
        return super().handle(request)

    def _routes(self) -> list[Route]:
        lists = [
            Route("GET", re.compile(re.escape(path)), f"GET {path}", self._list_route)
            for path in _LISTS
        ]
        return [*lists, Route("GET", _RETRIEVE, "GET /v1/{collection}/{id}", self._retrieve_route)]

    def _authenticate(self, request: Request) -> Response | None:
        """``None`` when the bearer token is the live one, else Stripe's 401 (key masked)."""
        challenge = (("WWW-Authenticate", 'Bearer realm="Stripe"'),)
        key = bearer_token(request)
        if key is None:
            return _stripe_error(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
                headers=challenge,
            )
        token, revoked = self._token_state()
        if revoked or not same_secret(key, token):
            return _stripe_error(
                401, f"Invalid API Key provided: {mask_key(key)}", headers=challenge
            )
        return None

    def _headers(self, request: Request) -> Headers:
        return (
            ("Request-Id", f"req_{next(self._request_ids):014d}"),
            ("Stripe-Version", request.header("Stripe-Version") or STRIPE_VERSION),
        )

    def _limited(self, admission: Admission) -> Response:
        return self._fault(429, max(round(admission.retry_after, 3), 0.001))

    def _fault(self, status: int, retry_after: float | None) -> Response:
        """Stripe's own error for 409, 429 and 500; what the proxy in front says otherwise."""
        retry = () if retry_after is None else (("Retry-After", str(retry_after)),)
        if status == 409:
            return _stripe_error(
                409,
                "This object cannot be accessed right now because another API request or Stripe "
                "process is currently accessing it. If you see this error intermittently, retry "
                "the request.",
                code="lock_timeout",
                headers=retry,
            )
        if status == 429:
            return _stripe_error(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential backoff "
                "of your requests.",
                type_="rate_limit_error",
                code="rate_limit",
                headers=retry or (("Retry-After", "1"),),
            )
        if status == 500:
            return _stripe_error(
                500,
                "An unknown error occurred while processing this request; please retry.",
                type_="api_error",
                headers=retry,
            )
        return proxy_error_page(status, signature="nginx", headers=retry)

    def _not_found(self, request: Request, allowed: list[str]) -> Response:
        if not allowed:
            return _stripe_error(
                404, f"Unrecognized request URL ({request.method}: {request.path})."
            )
        return _stripe_error(405, f"This emulator is read-only; {request.method} is not allowed.")

    def _internal_error(self) -> Response:
        return _stripe_error(
            500, "An unexpected error occurred in the emulator.", type_="api_error"
        )

    def _injected(self, request: Request, fault: Fault) -> Response | None:
        if fault.kind in _STATUS_KINDS:
            return self._fault(int(fault.kind), fault.retry_after)
        if fault.kind == "redirect":
            location = "https://" + self.base_url.split("://", 1)[1] + request.target
            page = (
                "<html><head><title>301 Moved Permanently</title></head><body>nginx</body></html>"
            )
            return Response(301, page.encode(), "text/html", (("Location", location),))
        if fault.kind == "html":
            page = (
                "<!DOCTYPE html><html><head><title>Down for maintenance</title></head>"
                "<body><h1>We'll be back soon.</h1></body></html>"
            )
            return Response(200, page.encode(), "text/html; charset=utf-8")
        if fault.kind == "repeat_page":
            with self._lock:
                return self._last_page.get(request.path)  # none yet: the page itself
        return super()._injected(request, fault)

    def _permanent_fault(self, fault: Fault) -> None:
        if fault.kind == "revoke":
            self.revoke_token()
        else:  # new_field: the objects under its path gain a field from now on
            with self._lock:
                self._drift_prefixes = (*self._drift_prefixes, fault.path)

    def _list_route(self, request: Request, match: re.Match[str]) -> Response:
        if request.path == "/v1/payouts" and self.payouts_pagination == "link_header":
            response = self._payouts_page(request.query)
        else:
            response = self._list(request.path, request.query)
        if response.status == 200:
            with self._lock:
                self._last_page[request.path] = response
        return response

    def _retrieve_route(self, request: Request, match: re.Match[str]) -> Response:
        return self._retrieve(match.group(1), match.group(2), request.path)

    def _with_drift(self, path: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not any(path.startswith(prefix) for prefix in self._drift_prefixes):
            return objects
        return [{**obj, "risk_score": _risk_score(obj["id"])} for obj in objects]

    def _retrieve(self, collection: str, object_id: str, path: str) -> Response:
        listing = self._charges if collection == "charges" else self._refunds
        position = listing.position.get(object_id)
        if position is None:
            noun = _LISTS[f"/v1/{collection}"]
            return _stripe_error(
                404, f"No such {noun}: '{object_id}'", param="id", code="resource_missing"
            )
        return json_response(200, self._with_drift(path, [listing.objects[position]])[0])

    def _list(self, path: str, query: Mapping[str, str]) -> Response:
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
        return json_response(
            200,
            {
                "object": "list",
                "data": self._with_drift(path, page),
                "has_more": has_more,
                "url": path,
            },
        )

    def _payouts_page(self, query: Mapping[str, str]) -> Response:
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
        return json_response(200, self._with_drift("/v1/payouts", items), headers)


def _lenient_positive_int(value: str | None, default: int) -> int:
    if value is None or not value.isdigit() or int(value) < 1:
        return default
    return int(value)


# --------------------------------------------------------------------------------------------
# As a process
# --------------------------------------------------------------------------------------------


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
    serve_until_signal(PaymentsApi(data, token=token, port=args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
