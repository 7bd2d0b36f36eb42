"""The operational "app database" of Acme Outfitters (PostgreSQL), captured by CDC.

The storefront's backend keeps customers, orders and order lines in PostgreSQL; the platform
reads it by logical decoding (``pgoutput``), so this module produces what such a database really
sees: an initial state (:func:`seed`), then a stream of small committed transactions
(:func:`apply_workload`) with inserts, updates and deletes on every table, and one huge
transaction (:func:`bulk_update`) for the bounded-memory test. :func:`snapshot` gives the current
rows, the truth silver must equal.

Tables (schema ``public``)::

    customers(customer_id pk, email, first_name, last_name, country, segment,
              marketing_opt_in, created_at, updated_at)        REPLICA IDENTITY FULL
    orders(order_id pk, customer_id -> customers, status, currency, order_total,
           placed_at, updated_at)                              REPLICA IDENTITY FULL
    order_items(order_id -> orders ON DELETE CASCADE, line_no, sku, quantity,
                unit_price, pk (order_id, line_no))            REPLICA IDENTITY DEFAULT

``customers`` and ``orders`` carry full before-images (SCD2 history and deletes need the old
row); ``order_items`` keeps the default (its key), so the platform sees both kinds.

Ids match the other demo sources: customers ``cus_000001`` (as the clickstream and payments
reference them), orders ``ord_0000001`` (payments' ``metadata.order_id``), SKUs
``SKU-000001`` .. ``SKU-000500`` from the products catalog. Two sequences (``customers_no_seq``,
``orders_no_seq``) hand out the numbers, as an application's would: an id is never reused after
a delete, which CDC consumers rely on.

Deterministic: the same arguments on the same database state give the same rows, timestamps
included. All randomness comes from ``random.Random(seed)``; time is a simulated clock that
starts at the newest timestamp in the database, never the wall clock. Order statuses move
``placed -> paid -> shipped -> delivered`` (``-> returned`` for a few), or ``-> cancelled`` from
placed or paid; ``order_total`` always equals the sum of ``quantity * unit_price`` of its lines.
"""

from __future__ import annotations

import math
import random
import unicodedata
from bisect import bisect_right
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from pydantic import BaseModel

# The catalog's SKU format, and how many SKUs every demo source agrees on (SKU-000001 ..
# SKU-000500 are in the catalog the file generator writes at scale >= 0.25).
from medallion_platform.devkit.demo.clickstream import N_SKUS
from medallion_platform.devkit.demo.generator import catalog_sku
from medallion_platform.devkit.demo.payments_api import OrderToCharge

DEFAULT_START = datetime(2025, 10, 1, tzinfo=UTC)  # as the payments emulator's DEFAULT_START
SEED_DAYS = 30

TABLES = ("customers", "orders", "order_items")
KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id",),
    "orders": ("order_id",),
    "order_items": ("order_id", "line_no"),
}
STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned")
SEGMENTS = ("outdoor_enthusiast", "casual", "pro", "bargain_hunter")
EURO_COUNTRIES = frozenset({"DE", "FR", "NL", "AT"})

_SCHEMA = (
    "CREATE SEQUENCE IF NOT EXISTS public.customers_no_seq",
    "CREATE SEQUENCE IF NOT EXISTS public.orders_no_seq",
    """CREATE TABLE IF NOT EXISTS public.customers (
        customer_id text PRIMARY KEY,
        email text NOT NULL,
        first_name text,
        last_name text,
        country text,
        segment text,
        marketing_opt_in boolean NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS public.orders (
        order_id text PRIMARY KEY,
        customer_id text NOT NULL REFERENCES public.customers,
        status text NOT NULL,
        currency text NOT NULL,
        order_total numeric(12, 2) NOT NULL,
        placed_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS public.order_items (
        order_id text REFERENCES public.orders ON DELETE CASCADE,
        line_no integer,
        sku text NOT NULL,
        quantity integer NOT NULL,
        unit_price numeric(12, 2) NOT NULL,
        PRIMARY KEY (order_id, line_no)
    )""",
    # The foreign key's index, as any real app has: GDPR erasure looks orders up by customer.
    "CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON public.orders (customer_id)",
    "ALTER TABLE public.customers REPLICA IDENTITY FULL",
    "ALTER TABLE public.orders REPLICA IDENTITY FULL",
)

_CUSTOMER_COLUMNS = (
    "customer_id",
    "email",
    "first_name",
    "last_name",
    "country",
    "segment",
    "marketing_opt_in",
    "created_at",
    "updated_at",
)
_ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "status",
    "currency",
    "order_total",
    "placed_at",
    "updated_at",
)
_ITEM_COLUMNS = ("order_id", "line_no", "sku", "quantity", "unit_price")

# A mostly-American storefront that also ships to Canada, the UK, Australia and the eurozone.
_COUNTRY_WEIGHTS = {
    "US": 58,
    "CA": 9,
    "GB": 7,
    "DE": 8,
    "FR": 5,
    "AU": 6,
    "NL": 3,
    "AT": 2,
    "SE": 2,
}
_COUNTRY_TABLE = tuple(c for c, w in _COUNTRY_WEIGHTS.items() for _ in range(w))
_SEGMENT_WEIGHTS = {"casual": 40, "outdoor_enthusiast": 30, "bargain_hunter": 20, "pro": 10}
_SEGMENT_TABLE = tuple(s for s, w in _SEGMENT_WEIGHTS.items() for _ in range(w))
# Non-ASCII and an apostrophe on purpose: names must survive COPY, decoding and the warehouse.
_FIRST_NAMES = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Sophia", "Mason", "Mia", "Lucas",
    "Zoë", "José", "Siobhán", "Björn", "Chloé", "Mateo", "Hannah", "Aiden", "Priya", "Kenji",
)  # fmt: skip
_LAST_NAMES = (
    "Smith", "Johnson", "Brown", "Garcia", "Miller", "Davis", "Wilson", "Anderson", "Taylor",
    "Thomas", "Müller", "O'Connor", "García", "Nguyen", "Johansson", "Dubois", "Kowalski",
    "Rossi", "Tanaka", "Patel",
)  # fmt: skip
# Reserved example domains (RFC 2606/6761): realistic shapes, nobody's real mailbox.
_EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example", "trail.example")
_EMAIL_STYLES = 4
P_NO_NAME = 0.02  # accounts created at checkout without a name
P_NO_COUNTRY = 0.01
P_OPT_IN = 0.55
P_CUSTOMER_EDITED = 0.25  # seeded customers whose profile changed after sign-up
SHARE_BEFORE_START = 0.85  # seeded customers who signed up before the seed window
MEAN_LIFETIME_DAYS = 300  # how long a customer keeps buying after sign-up, on average
MAX_DRAWS = 40

_LINE_COUNTS = (1, 2, 3, 4, 5)
_LINE_COUNT_WEIGHTS = (40, 28, 17, 10, 5)
_QUANTITIES = (1, 2, 3)
_QUANTITY_WEIGHTS = (80, 15, 5)
P_SALE_PRICE = 0.10  # a line sold 20% below list price
_CENT_ENDINGS = (99, 99, 99, 95, 95, 49, 0)


def _list_prices() -> tuple[int, ...]:
    """List price in cents per SKU (index 0 is SKU-000001): fixed, whatever the seed, so a SKU
    costs the same in every order of every demo database. Log-uniform $9 .. $600."""
    rng = random.Random(0xAC3E)
    prices = []
    for _ in range(N_SKUS):
        dollars = int(math.exp(rng.uniform(math.log(9), math.log(600))))
        prices.append(dollars * 100 + _CENT_ENDINGS[int(rng.random() * len(_CENT_ENDINGS))])
    return tuple(prices)


_SKUS = tuple(catalog_sku(n) for n in range(1, N_SKUS + 1))
_LIST_PRICE_CENTS = _list_prices()


class SeedSummary(BaseModel):
    """What :func:`seed` inserted, and the simulated time it covers."""

    customers: int
    orders: int
    order_items: int
    start: datetime
    end: datetime  # orders are placed in [start, end); every timestamp is before end


class TableChanges(BaseModel):
    """Row changes on one table, as logical decoding reports them (cascaded deletes included)."""

    inserts: int = 0
    updates: int = 0
    deletes: int = 0


class WorkloadSummary(BaseModel):
    """What :func:`apply_workload` committed; a row updated twice counts twice."""

    transactions: int
    customers: TableChanges
    orders: TableChanges
    order_items: TableChanges
    clock_start: datetime  # the newest timestamp in the database before the workload
    clock_end: datetime  # the newest timestamp the workload wrote


# --------------------------------------------------------------------------------------------
# Schema and snapshot
# --------------------------------------------------------------------------------------------


def create_schema(conn: psycopg.Connection[Any]) -> None:
    """Create the tables, sequences and index if missing and set the replica identities.

    Idempotent. Runs in one transaction (a savepoint if ``conn`` is already in one)."""
    with conn.transaction():
        for statement in _SCHEMA:
            conn.execute(statement)


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[dict[str, Any]]]:
    """The current rows of the three tables, each ordered by its key.

    Read in one repeatable-read transaction when ``conn`` is idle (otherwise in the caller's),
    so the three tables are consistent with each other."""
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    result: dict[str, list[dict[str, Any]]] = {}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if idle:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for table in TABLES:
            query = sql.SQL("SELECT * FROM public.{} ORDER BY {}").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, KEYS[table]))
            )
            result[table] = cur.execute(query).fetchall()
    return result


def orders_to_charge(conn: psycopg.Connection[Any]) -> list[OrderToCharge]:
    """Every order as the payments emulator charges it (see ``payments_for_orders``), so the
    demo's payments agree with its orders."""
    rows = conn.execute(
        "SELECT order_id, customer_id, currency, (order_total * 100)::bigint,"
        " extract(epoch FROM placed_at)::bigint, status FROM public.orders ORDER BY order_id"
    ).fetchall()
    return [
        OrderToCharge(
            order_id=oid,
            customer_id=cid,
            currency=currency,
            total_cents=cents,
            placed_at=placed,
            status=status,
        )
        for oid, cid, currency, cents, placed, status in rows
    ]


def _require_idle(conn: psycopg.Connection[Any], what: str) -> None:
    """Each transaction we open must really commit, not become a savepoint of the caller's."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise ValueError(f"{what} needs a connection outside any transaction")


def _latest(conn: psycopg.Connection[Any]) -> datetime | None:
    """The newest timestamp in the database: where the simulated clock resumes."""
    row = conn.execute(
        "SELECT greatest((SELECT max(created_at) FROM public.customers),"
        " (SELECT max(updated_at) FROM public.customers),"
        " (SELECT max(placed_at) FROM public.orders),"
        " (SELECT max(updated_at) FROM public.orders))"
    ).fetchone()
    return None if row is None else row[0]


# --------------------------------------------------------------------------------------------
# Row builders shared by seed and workload
# --------------------------------------------------------------------------------------------


def customer_id(number: int) -> str:
    return f"cus_{number:06d}"


def order_id(number: int) -> str:
    return f"ord_{number:07d}"


def _slug(name: str | None) -> str:
    """ASCII lowercase letters of a name, for an email address ("Zoë" -> "zoe")."""
    if not name:
        return ""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_name.lower() if ch.isalpha())


def _email(first: str | None, last: str | None, number: int, style: int, domain: str) -> str:
    """An address unique to the customer: the local part is letters then the customer number,
    so two customers never share one whatever the style or domain."""
    given, family = _slug(first), _slug(last)
    if not given or not family:
        stem = "customer"
    elif style == 0:
        stem = f"{given}.{family}"
    elif style == 1:
        stem = f"{given[0]}{family}"
    elif style == 2:
        stem = f"{given}_"
    else:
        stem = f"{given}_{family}"
    return f"{stem}{number}@{domain}"


def _pick(rng: random.Random, table: tuple[str, ...]) -> str:
    return table[int(rng.random() * len(table))]


def _new_customer(rng: random.Random, number: int, created_at: datetime) -> tuple[Any, ...]:
    """A customer row (columns as ``_CUSTOMER_COLUMNS``), ``updated_at == created_at``."""
    if rng.random() < P_NO_NAME:
        first = last = None
    else:
        first, last = _pick(rng, _FIRST_NAMES), _pick(rng, _LAST_NAMES)
    style = int(rng.random() * _EMAIL_STYLES)
    email = _email(first, last, number, style, _pick(rng, _EMAIL_DOMAINS))
    country = None if rng.random() < P_NO_COUNTRY else _pick(rng, _COUNTRY_TABLE)
    segment = _pick(rng, _SEGMENT_TABLE)
    opt_in = rng.random() < P_OPT_IN
    return (
        customer_id(number),
        email,
        first,
        last,
        country,
        segment,
        opt_in,
        created_at,
        created_at,
    )


def _currency(country: str | None) -> str:
    return "EUR" if country in EURO_COUNTRIES else "USD"


def _cents(amount: int) -> Decimal:
    return Decimal(amount) / 100


def _new_lines(rng: random.Random) -> list[tuple[int, str, int, int]]:
    """1-5 order lines ``(line_no, sku, quantity, unit_price_cents)`` of distinct SKUs."""
    count = rng.choices(_LINE_COUNTS, _LINE_COUNT_WEIGHTS)[0]
    lines = []
    for line_no, index in enumerate(rng.sample(range(N_SKUS), count), start=1):
        quantity = rng.choices(_QUANTITIES, _QUANTITY_WEIGHTS)[0]
        price = _LIST_PRICE_CENTS[index]
        if rng.random() < P_SALE_PRICE:
            price = price * 80 // 100
        lines.append((line_no, _SKUS[index], quantity, price))
    return lines


def _next_status(rng: random.Random, status: str) -> tuple[str, int] | None:
    """The order's next status and how many seconds later it comes; None once final."""
    if status == "placed":
        if rng.random() < 0.07:
            return "cancelled", rng.randint(600, 86_400)
        return "paid", rng.randint(60, 1_800)
    if status == "paid":
        if rng.random() < 0.04:
            return "cancelled", rng.randint(3_600, 43_200)
        return "shipped", rng.randint(4 * 3_600, 48 * 3_600)
    if status == "shipped":
        return "delivered", rng.randint(2 * 86_400, 6 * 86_400)
    if status == "delivered" and rng.random() < 0.06:
        return "returned", rng.randint(3 * 86_400, 20 * 86_400)
    return None


# --------------------------------------------------------------------------------------------
# Seed
# --------------------------------------------------------------------------------------------


def seed(
    conn: psycopg.Connection[Any],
    *,
    customers: int,
    orders: int,
    seed: int = 7,
    start: datetime = DEFAULT_START,
    days: int = SEED_DAYS,
) -> SeedSummary:
    """Create the schema if missing and insert the initial state, in one transaction, by COPY.

    The tables must be empty. 85% of the customers signed up in the two years before ``start``,
    the rest during ``[start, start + days)``; orders are placed in that window (``ord_0000001``
    first), each by a customer who existed then, and have since moved along their lifecycle
    as far as the window's end allows (so only recent orders are still open). Both sequences
    continue after the seeded ids.
    """
    if customers < 0 or orders < 0:
        raise ValueError(f"counts must be >= 0, got customers={customers} orders={orders}")
    if orders and not customers:
        raise ValueError("orders need customers: customers must be >= 1")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    _require_idle(conn, "seed")
    rng = random.Random(seed)
    end = start + timedelta(days=days)
    window = days * 86_400
    n_items = 0
    with conn.transaction():
        create_schema(conn)
        existing = conn.execute(
            "SELECT EXISTS (SELECT FROM public.customers) OR EXISTS (SELECT FROM public.orders)"
            " OR EXISTS (SELECT FROM public.order_items)"
        ).fetchone()
        if existing is not None and existing[0]:
            raise ValueError("seed needs empty tables; use a fresh database")

        created = _signup_times(rng, customers, start, window)
        customer_rows = []
        for number, created_at in enumerate(created, start=1):
            row = _new_customer(rng, number, created_at)
            span = int((end - created_at).total_seconds())  # >= 1
            if rng.random() < P_CUSTOMER_EDITED and span > 1:
                edited = created_at + timedelta(seconds=1 + int(rng.random() * (span - 1)))
                row = (*row[:8], edited)
            customer_rows.append(row)
        countries = [row[4] for row in customer_rows]

        placed = sorted(rng.randrange(window) for _ in range(orders))
        buyers = _Buyers(rng, created)
        order_rows = []
        item_rows = []
        for number, offset in enumerate(placed, start=1):
            placed_at = start + timedelta(seconds=offset)
            index = buyers.pick(placed_at)
            lines = _new_lines(rng)
            status, updated_at = "placed", placed_at
            while (step := _next_status(rng, status)) is not None:
                at = updated_at + timedelta(seconds=step[1])
                if at >= end:
                    break
                status, updated_at = step[0], at
            oid = order_id(number)
            total = sum(quantity * price for _, _, quantity, price in lines)
            order_rows.append(
                (
                    oid,
                    customer_id(index + 1),
                    status,
                    _currency(countries[index]),
                    _cents(total),
                    placed_at,
                    updated_at,
                )
            )
            for line_no, sku, quantity, price in lines:
                item_rows.append((oid, line_no, sku, quantity, _cents(price)))
        n_items = len(item_rows)

        with conn.cursor() as cur:
            _copy(cur, "customers", _CUSTOMER_COLUMNS, customer_rows)
            _copy(cur, "orders", _ORDER_COLUMNS, order_rows)
            _copy(cur, "order_items", _ITEM_COLUMNS, item_rows)
            # is_called=false: the next nextval returns exactly this number.
            cur.execute("SELECT setval('public.customers_no_seq', %s, false)", (customers + 1,))
            cur.execute("SELECT setval('public.orders_no_seq', %s, false)", (orders + 1,))
    return SeedSummary(
        customers=customers, orders=orders, order_items=n_items, start=start, end=end
    )


class _Buyers:
    """Who places the next order: customers differ in how often they buy and stop buying
    after a while (churn), as real shoppers do, so recency and frequency predict the future.

    Each customer gets a buying rate (log-normal: a few buy often, most rarely) and a lifetime
    after sign-up (exponential, mean ``MEAN_LIFETIME_DAYS``); an order goes to a customer who
    had signed up and not yet lapsed, chosen in proportion to their rate (sampled by the
    cumulative rate over sign-up order, redrawn when the pick has lapsed)."""

    def __init__(self, rng: random.Random, created: list[datetime]) -> None:
        self.rng = rng
        self.created = created
        rates = [rng.lognormvariate(0.0, 1.0) for _ in created]
        self.lapse_at = [
            at + timedelta(days=rng.expovariate(1 / MEAN_LIFETIME_DAYS)) for at in created
        ]
        self.cumulative = list(accumulate(rates))

    def pick(self, at: datetime) -> int:
        eligible = bisect_right(self.created, at)  # signed up by then (the first always has)
        total = self.cumulative[eligible - 1]
        index = 0
        for _ in range(MAX_DRAWS):
            index = min(bisect_right(self.cumulative, self.rng.random() * total), eligible - 1)
            if self.lapse_at[index] > at:
                break
        return index  # after MAX_DRAWS lapsed picks, a lapsed customer comes back: it happens


def _signup_times(rng: random.Random, n: int, start: datetime, window: int) -> list[datetime]:
    """Sign-up times in id order: most in the two years before ``start``, some in the window.

    The first customer always signed up before ``start``, so every order has a buyer."""
    before = max(1, round(n * SHARE_BEFORE_START)) if n else 0
    history = 730 * 86_400
    offsets = sorted(-1 - rng.randrange(history) for _ in range(before))
    offsets += sorted(rng.randrange(window) for _ in range(n - before))
    return [start + timedelta(seconds=offset) for offset in offsets]


def _copy(
    cur: psycopg.Cursor[Any], table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    statement = sql.SQL("COPY public.{} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


class _Pool(Generic[T]):
    """A set with O(1) add, remove and seeded random choice, in a deterministic order."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._index: dict[T, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        self._index[item] = len(self._items)
        self._items.append(item)

    def remove(self, item: T) -> None:
        position = self._index.pop(item)
        last = self._items.pop()
        if position < len(self._items):
            self._items[position] = last
            self._index[last] = position

    def choice(self, rng: random.Random) -> T:
        return self._items[int(rng.random() * len(self._items))]

    def sample(self, rng: random.Random, k: int) -> list[T]:
        return [self._items[i] for i in rng.sample(range(len(self._items)), k)]


# Transaction kinds and their weights (the storefront's mix of writes).
_KINDS = {
    "new_customer": 8,
    "signup_checkout": 4,  # customers + orders + order_items in one transaction
    "new_order": 22,  # the order and its lines in one transaction
    "advance_order": 32,
    "carrier_batch": 3,  # several orders delivered in one transaction
    "order_edit": 5,  # order_items + orders; sometimes the same rows twice
    "remove_line": 3,  # a line deleted, the order's total updated
    "email_change": 5,  # sometimes a typo, then the fix: the same row twice
    "segment_change": 5,
    "opt_in_flip": 6,
    "delete_cancelled": 4,  # orders delete, its lines cascade
    "gdpr_erasure": 2,  # lines, orders, then the customer
}
_KIND_NAMES = tuple(_KINDS)
_KIND_WEIGHTS = tuple(_KINDS.values())
# Which open orders move next: most moves are payments and shipments, returns are rare.
_ADVANCE_WEIGHTS = {"placed": 30, "paid": 30, "shipped": 30, "delivered": 3}


class _Workload:
    """The storefront's writes against a mirror of the state they need, loaded once."""

    def __init__(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        self.conn = conn
        self.rng = rng
        latest = _latest(conn)
        self.clock_start = DEFAULT_START if latest is None else latest
        self.now = self.clock_start
        self.changes = {table: TableChanges() for table in TABLES}
        self.customers: _Pool[str] = _Pool()
        # customer_id -> [email, first_name, last_name, country, segment, marketing_opt_in]
        self.profiles: dict[str, list[Any]] = {}
        rows = conn.execute(
            "SELECT customer_id, email, first_name, last_name, country, segment,"
            " marketing_opt_in FROM public.customers ORDER BY customer_id"
        ).fetchall()
        for cid, *profile in rows:
            self.customers.add(cid)
            self.profiles[cid] = profile
        self.by_status: dict[str, _Pool[str]] = {status: _Pool() for status in STATUSES}
        self.status: dict[str, str] = {}
        for oid, status in conn.execute(
            "SELECT order_id, status FROM public.orders ORDER BY order_id"
        ).fetchall():
            self.status[oid] = status
            self.by_status[status].add(oid)

    # -- bookkeeping -------------------------------------------------------------------------

    def tick(self) -> datetime:
        """Advance the simulated clock to this transaction's time."""
        self.now += timedelta(seconds=self.rng.randint(1, 90))
        return self.now

    def later(self) -> datetime:
        """A second later, for a second write to the same row within one transaction."""
        self.now += timedelta(seconds=1)
        return self.now

    def run(self, statement: str, params: tuple[Any, ...], table: str, change: str) -> int:
        count = self.conn.execute(statement, params).rowcount
        counts = self.changes[table]
        setattr(counts, change, getattr(counts, change) + count)
        return count

    def set_status(self, oid: str, status: str | None) -> None:
        """Move an order between the status pools (None: it was deleted)."""
        self.by_status[self.status.pop(oid)].remove(oid)
        if status is not None:
            self.status[oid] = status
            self.by_status[status].add(oid)

    def next_number(self, sequence: str) -> int:
        row = self.conn.execute(f"SELECT nextval('public.{sequence}')").fetchone()
        assert row is not None
        return int(row[0])

    # -- transactions --------------------------------------------------------------------------

    def transaction(self) -> None:
        """One committed transaction; a kind whose rows do not exist falls back to an order or a
        sign-up, so every transaction changes at least one row."""
        kind = self.rng.choices(_KIND_NAMES, _KIND_WEIGHTS)[0]
        with self.conn.transaction():
            at = self.tick()
            if not getattr(self, kind)(at) and not self.new_order(at):
                self.new_customer(at)

    def new_customer(self, at: datetime) -> bool:
        self.insert_customer(at)
        return True

    def insert_customer(self, at: datetime) -> str:
        row = _new_customer(self.rng, self.next_number("customers_no_seq"), at)
        placeholders = ", ".join(["%s"] * len(row))
        self.run(
            f"INSERT INTO public.customers VALUES ({placeholders})", row, "customers", "inserts"
        )
        self.customers.add(row[0])
        self.profiles[row[0]] = list(row[1:7])
        return row[0]

    def signup_checkout(self, at: datetime) -> bool:
        cid = self.insert_customer(at)
        self.insert_order(cid, self.later())
        return True

    def new_order(self, at: datetime) -> bool:
        if not self.customers:
            return False
        self.insert_order(self.customers.choice(self.rng), at)
        return True

    def insert_order(self, cid: str, at: datetime) -> None:
        oid = order_id(self.next_number("orders_no_seq"))
        lines = _new_lines(self.rng)
        total = _cents(sum(quantity * price for _, _, quantity, price in lines))
        currency = _currency(self.profiles[cid][3])
        self.run(
            "INSERT INTO public.orders VALUES (%s, %s, 'placed', %s, %s, %s, %s)",
            (oid, cid, currency, total, at, at),
            "orders",
            "inserts",
        )
        with self.conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.order_items VALUES (%s, %s, %s, %s, %s)",
                [(oid, n, sku, quantity, _cents(price)) for n, sku, quantity, price in lines],
            )
        self.changes["order_items"].inserts += len(lines)
        self.status[oid] = "placed"
        self.by_status["placed"].add(oid)

    def advance_order(self, at: datetime) -> bool:
        open_statuses = [s for s in _ADVANCE_WEIGHTS if self.by_status[s]]
        if not open_statuses:
            return False
        weights = [_ADVANCE_WEIGHTS[s] for s in open_statuses]
        status = self.rng.choices(open_statuses, weights)[0]
        oid = self.by_status[status].choice(self.rng)
        step = _next_status(self.rng, status)
        new_status = "returned" if step is None else step[0]  # a delivered order comes back
        self.update_status(oid, new_status, at)
        return True

    def update_status(self, oid: str, status: str, at: datetime) -> None:
        self.run(
            "UPDATE public.orders SET status = %s, updated_at = %s WHERE order_id = %s",
            (status, at, oid),
            "orders",
            "updates",
        )
        self.set_status(oid, status)

    def carrier_batch(self, at: datetime) -> bool:
        shipped = self.by_status["shipped"]
        if len(shipped) < 2:
            return self.advance_order(at)
        for oid in sorted(shipped.sample(self.rng, min(len(shipped), self.rng.randint(2, 5)))):
            self.update_status(oid, "delivered", at)
        return True

    def editable_order(self) -> str | None:
        """An order not yet shipped (placed or paid), chosen uniformly."""
        placed, paid = self.by_status["placed"], self.by_status["paid"]
        if not placed and not paid:
            return None
        pick = int(self.rng.random() * (len(placed) + len(paid)))
        pool = placed if pick < len(placed) else paid
        return pool.choice(self.rng)

    def lines_of(self, oid: str) -> list[tuple[int, int]]:
        rows = self.conn.execute(
            "SELECT line_no, quantity FROM public.order_items WHERE order_id = %s ORDER BY line_no",
            (oid,),
        ).fetchall()
        return [(int(n), int(q)) for n, q in rows]

    def update_total(self, oid: str, at: datetime) -> None:
        self.run(
            "UPDATE public.orders SET order_total = (SELECT coalesce(sum(quantity * unit_price), 0)"
            " FROM public.order_items WHERE order_id = %s), updated_at = %s WHERE order_id = %s",
            (oid, at, oid),
            "orders",
            "updates",
        )

    def order_edit(self, at: datetime) -> bool:
        """The customer changes a quantity before shipping; sometimes changes it again (the same
        line and order updated twice in the transaction), or a second line."""
        oid = self.editable_order()
        if oid is None:
            return False
        lines = self.lines_of(oid)
        if not lines:
            return False
        line_no, quantity = lines[int(self.rng.random() * len(lines))]
        edits = 1 if self.rng.random() < 0.6 else 2
        for edit in range(edits):
            if edit:
                at = self.later()
                if self.rng.random() < 0.5:  # otherwise the same line again
                    line_no, quantity = lines[int(self.rng.random() * len(lines))]
            new_quantity = quantity % 4 + 1  # always different from the current one
            self.run(
                "UPDATE public.order_items SET quantity = %s WHERE order_id = %s AND line_no = %s",
                (new_quantity, oid, line_no),
                "order_items",
                "updates",
            )
            lines = [(n, new_quantity if n == line_no else q) for n, q in lines]
            quantity = new_quantity
            self.update_total(oid, at)
        return True

    def remove_line(self, at: datetime) -> bool:
        oid = self.editable_order()
        if oid is None:
            return False
        lines = self.lines_of(oid)
        if len(lines) < 2:
            return self.order_edit(at) if lines else False
        line_no = lines[int(self.rng.random() * len(lines))][0]
        self.run(
            "DELETE FROM public.order_items WHERE order_id = %s AND line_no = %s",
            (oid, line_no),
            "order_items",
            "deletes",
        )
        self.update_total(oid, at)
        return True

    def update_customer(self, cid: str, column: str, value: Any, at: datetime) -> None:
        self.run(
            f"UPDATE public.customers SET {column} = %s, updated_at = %s WHERE customer_id = %s",
            (value, at, cid),
            "customers",
            "updates",
        )

    def email_change(self, at: datetime) -> bool:
        if not self.customers:
            return False
        cid = self.customers.choice(self.rng)
        profile = self.profiles[cid]
        number = int(cid.removeprefix("cus_"))
        new = profile[0]
        while new == profile[0]:
            style = int(self.rng.random() * _EMAIL_STYLES)
            new = _email(profile[1], profile[2], number, style, _pick(self.rng, _EMAIL_DOMAINS))
        if self.rng.random() < 0.15:
            # Saved with a typo in the domain, fixed a moment later in the same transaction.
            local, domain = new.split("@")
            self.update_customer(cid, "email", f"{local}@{domain[1]}{domain[0]}{domain[2:]}", at)
            at = self.later()
        self.update_customer(cid, "email", new, at)
        profile[0] = new
        return True

    def segment_change(self, at: datetime) -> bool:
        if not self.customers:
            return False
        cid = self.customers.choice(self.rng)
        profile = self.profiles[cid]
        segment = profile[4]
        while segment == profile[4]:
            segment = _pick(self.rng, _SEGMENT_TABLE)
        self.update_customer(cid, "segment", segment, at)
        profile[4] = segment
        return True

    def opt_in_flip(self, at: datetime) -> bool:
        if not self.customers:
            return False
        cid = self.customers.choice(self.rng)
        profile = self.profiles[cid]
        profile[5] = not profile[5]
        self.update_customer(cid, "marketing_opt_in", profile[5], at)
        return True

    def delete_cancelled(self, at: datetime) -> bool:
        cancelled = self.by_status["cancelled"]
        if not cancelled:
            return False
        oid = cancelled.choice(self.rng)
        row = self.conn.execute(
            "SELECT count(*) FROM public.order_items WHERE order_id = %s", (oid,)
        ).fetchone()
        assert row is not None
        self.run("DELETE FROM public.orders WHERE order_id = %s", (oid,), "orders", "deletes")
        self.changes["order_items"].deletes += int(row[0])  # by ON DELETE CASCADE
        self.set_status(oid, None)
        return True

    def gdpr_erasure(self, at: datetime) -> bool:
        """A customer's right to erasure: their lines, orders and account, in one transaction."""
        if not self.customers:
            return False
        cid = self.customers.choice(self.rng)
        self.run(
            "DELETE FROM public.order_items WHERE order_id IN"
            " (SELECT order_id FROM public.orders WHERE customer_id = %s)",
            (cid,),
            "order_items",
            "deletes",
        )
        deleted = self.conn.execute(
            "DELETE FROM public.orders WHERE customer_id = %s RETURNING order_id", (cid,)
        ).fetchall()
        self.changes["orders"].deletes += len(deleted)
        for (oid,) in deleted:
            self.set_status(oid, None)
        self.run(
            "DELETE FROM public.customers WHERE customer_id = %s", (cid,), "customers", "deletes"
        )
        self.customers.remove(cid)
        del self.profiles[cid]
        return True


def apply_workload(
    conn: psycopg.Connection[Any], *, transactions: int, seed: int = 7
) -> WorkloadSummary:
    """Commit ``transactions`` storefront transactions, one at a time.

    The mix: sign-ups, orders with their lines (one transaction each), status moves, carrier
    batches, order edits and removed lines, email, segment and opt-in changes, deleted
    cancelled orders and GDPR erasures. What it needs (customers, open orders, the clock, the
    next ids) is read from the database first, so it can be applied again and again, and the
    same seed on the same state commits the same rows. ``conn`` must not be in a transaction.
    """
    if transactions < 0:
        raise ValueError(f"transactions must be >= 0, got {transactions}")
    _require_idle(conn, "apply_workload")
    with conn.transaction():
        workload = _Workload(conn, random.Random(seed))
    for _ in range(transactions):
        workload.transaction()
    return WorkloadSummary(
        transactions=transactions,
        customers=workload.changes["customers"],
        orders=workload.changes["orders"],
        order_items=workload.changes["order_items"],
        clock_start=workload.clock_start,
        clock_end=workload.now,
    )


def renumber_lines(conn: psycopg.Connection[Any], *, lines: int, seed: int = 7) -> int:
    """Move ``lines`` order lines of unshipped orders to a new line number, one committed
    transaction each: a primary-key update, which logical decoding sends with the old key
    (``order_items`` keeps replica identity DEFAULT) and CDC turns into a delete of the old key
    and a create of the new one. Returns how many moved (fewer when fewer such lines exist)."""
    if lines < 0:
        raise ValueError(f"lines must be >= 0, got {lines}")
    _require_idle(conn, "renumber_lines")
    candidates = conn.execute(
        "SELECT i.order_id, i.line_no FROM public.order_items i"
        " JOIN public.orders o USING (order_id) WHERE o.status IN ('placed', 'paid')"
        " ORDER BY i.order_id, i.line_no"
    ).fetchall()
    picked = random.Random(seed).sample(candidates, min(lines, len(candidates)))
    moved = 0
    for oid, line_no in picked:
        with conn.transaction():
            moved += conn.execute(
                "UPDATE public.order_items SET line_no = (SELECT max(line_no) + 1"
                " FROM public.order_items WHERE order_id = %s)"
                " WHERE order_id = %s AND line_no = %s",
                (oid, oid, line_no),
            ).rowcount
    return moved


# --------------------------------------------------------------------------------------------
# Bulk
# --------------------------------------------------------------------------------------------

LINES_PER_BULK_ORDER = 5

# Bulk orders and their lines from generate_series, in one statement, so nothing row by row
# crosses the wire. Order g (0-based) gets lines 1..L(g), L spreading %(items)s lines evenly
# (1 to 5 each); customers and SKUs are assigned round-robin through hash joins.
_BULK_SQL = """
WITH cust AS (
    SELECT customer_id, country, row_number() OVER (ORDER BY customer_id) - 1 AS idx
    FROM public.customers
), n_cust AS (
    SELECT count(*) AS n FROM cust
), catalog AS (
    SELECT sku, price, idx - 1 AS idx
    FROM unnest(%(skus)s::text[], %(prices)s::numeric[]) WITH ORDINALITY AS t(sku, price, idx)
), lines AS (
    SELECT g, l, 1 + (g + l) %% 3 AS quantity, (g * 7 + l * 31) %% %(n_skus)s AS sku_idx
    FROM generate_series(0::bigint, %(n_orders)s::bigint - 1) AS g
    CROSS JOIN LATERAL generate_series(
        1, ((g + 1) * %(items)s) / %(n_orders)s - (g * %(items)s) / %(n_orders)s
    ) AS l
), priced AS (
    SELECT 'ord_' || lpad((%(first)s + g)::text, greatest(7, length((%(first)s + g)::text)), '0')
               AS order_id,
           g, l, quantity, catalog.sku, catalog.price
    FROM lines JOIN catalog ON catalog.idx = lines.sku_idx
), new_orders AS (
    INSERT INTO public.orders
        (order_id, customer_id, status, currency, order_total, placed_at, updated_at)
    SELECT p.order_id, cust.customer_id, 'placed',
           CASE WHEN cust.country = ANY(%(euro)s::text[]) THEN 'EUR' ELSE 'USD' END,
           sum(p.quantity * p.price), %(at)s, %(at)s
    FROM priced AS p
    JOIN n_cust ON true
    JOIN cust ON cust.idx = p.g %% n_cust.n
    GROUP BY p.order_id, cust.customer_id, cust.country
)
INSERT INTO public.order_items (order_id, line_no, sku, quantity, unit_price)
SELECT order_id, l, sku, quantity, price FROM priced
"""


def bulk_update(conn: psycopg.Connection[Any], *, rows: int) -> int:
    """Commit one transaction that inserts exactly ``rows`` rows: ``ceil(rows / 6)`` orders
    (a wholesale import, status ``placed``) and ``rows`` minus that many order lines, 1-5 per
    order. Returns the number of rows changed (``rows``).

    Server-side SQL (one statement), so 200,000 rows take a few seconds and no client memory:
    the point is to give CDC one huge transaction to stream. Needs at least one customer;
    deterministic for a given state; ``conn`` must not be in a transaction.
    """
    if rows < 2:
        raise ValueError(f"rows must be >= 2 (an order and a line), got {rows}")
    _require_idle(conn, "bulk_update")
    n_orders = -(-rows // (LINES_PER_BULK_ORDER + 1))
    items = rows - n_orders
    with conn.transaction():
        found = conn.execute("SELECT EXISTS (SELECT FROM public.customers)").fetchone()
        if found is None or not found[0]:
            raise ValueError("bulk_update needs customers: seed the database first")
        latest = _latest(conn) or DEFAULT_START
        first_row = conn.execute("SELECT nextval('public.orders_no_seq')").fetchone()
        assert first_row is not None
        first = int(first_row[0])
        conn.execute("SELECT setval('public.orders_no_seq', %s)", (first + n_orders - 1,))
        params = {
            "skus": list(_SKUS),
            "prices": [_cents(price) for price in _LIST_PRICE_CENTS],
            "n_skus": N_SKUS,
            "n_orders": n_orders,
            "items": items,
            "first": first,
            "euro": sorted(EURO_COUNTRIES),
            "at": latest + timedelta(seconds=1),
        }
        inserted = conn.execute(_BULK_SQL, params).rowcount
        if inserted != items:  # pragma: no cover - the SQL above guarantees it; roll back
            raise RuntimeError(f"bulk_update inserted {inserted} order lines, not {items}")
    return rows
