"""A small hand-built silver dataset whose every gold figure is worked out by hand in the tests.

Acme in miniature: 10 customers (one changed segment, one erased, one who never ordered),
32 orders over June-November 2026 in USD and EUR (one returned and refunded, one partially
refunded, one cancelled after a failed payment, one cancelled, refunded and purged, one still
placed with a pending charge, two whose charge was quarantined: one of them returned and
refunded), a refund whose charge never arrived and one whose order silver does not have,
3 products, 9 storefront sessions on 5 channels and 6 days of ad spend. The data ends on
2026-11-15, so that is the as-of date.
"""

from __future__ import annotations

import json

import duckdb

from medallion_platform.contracts.compile import QUARANTINE_COLUMNS

C = [f"cus_{n:06d}" for n in range(0, 11)]  # C[1] .. C[10]; C[0] unused

# (order, customer, placed_at UTC, status, currency, [(sku, quantity, unit_price)], deleted)
ORDERS = [
    ("o01", C[1], "2026-08-01 10:00", "delivered", "USD", [("SKU-000001", 1, 100)], False),
    ("o02", C[1], "2026-10-20 10:00", "delivered", "USD", [("SKU-000002", 2, 50)], False),
    ("o03", C[1], "2026-11-10 12:00", "shipped", "USD",
     [("SKU-000003", 1, 20), ("SKU-000002", 1, 50)], False),
    ("o04", C[2], "2026-11-01 09:00", "returned", "USD", [("SKU-000001", 1, 100)], False),
    ("o05", C[2], "2026-11-12 15:00", "paid", "USD", [("SKU-000003", 3, 20)], False),
    ("o06", C[3], "2026-11-01 11:00", "delivered", "EUR", [("SKU-000001", 1, 100)], False),
    ("o07", C[3], "2026-11-05 11:00", "delivered", "EUR", [("SKU-000002", 1, 50)], False),
    ("o08", C[4], "2026-07-15 10:00", "delivered", "USD", [("SKU-000001", 1, 100)], False),
    ("o09", C[5], "2026-09-20 10:00", "delivered", "USD", [("SKU-000002", 1, 50)], False),
    ("o10", C[5], "2026-09-25 10:00", "cancelled", "USD", [("SKU-000001", 1, 100)], False),
    ("o11", C[6], "2026-11-15 08:00", "placed", "USD", [("SKU-000003", 1, 20)], False),
    ("o12", C[7], "2026-11-02 10:00", "delivered", "USD", [("SKU-000001", 2, 100)], False),
    ("o13", C[7], "2026-11-02 18:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o14", C[8], "2026-11-03 10:00", "delivered", "USD", [("SKU-000002", 1, 50)], False),
    # Cancelled after payment, refunded and purged: its lines are gone, the order is flagged.
    ("o15", C[8], "2026-11-14 10:00", "cancelled", "USD", [], True),
    # The erased customer's order: flagged deleted with its lines gone (GDPR erasure).
    ("o16", C[9], "2026-10-01 10:00", "delivered", "USD", [], True),
    ("o17", C[1], "2026-09-01 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o18", C[1], "2026-09-15 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o19", C[2], "2026-10-05 10:00", "delivered", "USD", [("SKU-000002", 1, 50)], False),
    ("o20", C[2], "2026-10-25 10:00", "delivered", "USD", [("SKU-000002", 1, 50)], False),
    ("o21", C[3], "2026-10-10 10:00", "delivered", "EUR", [("SKU-000003", 1, 20)], False),
    ("o22", C[4], "2026-06-01 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o23", C[4], "2026-06-20 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o24", C[6], "2026-10-30 10:00", "delivered", "USD", [("SKU-000001", 1, 100)], False),
    ("o25", C[7], "2026-10-02 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o26", C[7], "2026-10-12 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o27", C[8], "2026-10-18 10:00", "delivered", "USD", [("SKU-000002", 1, 50)], False),
    ("o28", C[5], "2026-08-30 10:00", "delivered", "USD", [("SKU-000003", 1, 20)], False),
    ("o29", C[2], "2026-11-12 09:00", "delivered", "USD", [("SKU-000001", 1, 100)], False),
    ("o30", C[6], "2026-11-01 10:00", "delivered", "USD", [("SKU-000002", 1, 50)], False),
    # Their charges broke the contract (currency 'xxx'): only quarantine has them.
    ("o31", C[2], "2026-11-08 10:00", "returned", "USD", [("SKU-000002", 1, 50)], False),
    ("o32", C[3], "2026-11-09 10:00", "delivered", "EUR", [("SKU-000003", 1, 20)], False),
]  # fmt: skip
# Totals of the purged orders, whose lines are gone.
PURGED_TOTALS = {"o15": 100, "o16": 20}

# Charge status per order (default: succeeded for the full total).
CHARGE_STATUS = {"o10": "failed", "o11": "pending"}
# Orders whose (succeeded) charge is in quarantine only; o05's charge was quarantined once
# too, but a later fetch of it is valid, so silver has it.
QUARANTINED_CHARGES = ("o31", "o32")
REQUARANTINED_VALID = ("o05",)
# (refund, charge, amount, currency, status, created): o12's refund failed, so it must not
# count; o31's charge is quarantined; ch_gone never arrived; ch_o99 names an order that silver
# does not have (its order broke the contract).
REFUNDS = [
    ("re_1", "ch_o04", 100, "usd", "succeeded", "2026-11-14 00:00"),
    ("re_2", "ch_o07", 10, "eur", "succeeded", "2026-11-14 00:00"),
    ("re_3", "ch_o15", 100, "usd", "succeeded", "2026-11-14 00:00"),
    ("re_4", "ch_o12", 50, "usd", "failed", "2026-11-14 00:00"),
    ("re_5", "ch_o31", 50, "usd", "succeeded", "2026-11-10 09:00"),
    ("re_6", "ch_gone", 15, "usd", "succeeded", "2026-11-13 16:00"),
    ("re_7", "ch_o99", 5, "eur", "succeeded", "2026-11-14 12:00"),
]

PRODUCTS = [
    ("SKU-000001", "Alpine 2P tent", "tents", 100),
    ("SKU-000002", "Trail runner", "footwear", 50),
    ("SKU-000003", "Merino tee", "apparel", 20),
]

# (anonymous_id, customer, channel, [(occurred_at, event_type)]): one session each, except
# anon_7's two visits 7 hours apart (two sessions: google_ads, then organic).
SESSIONS = [
    ("anon_1", C[1], "google_ads", [("2026-11-10 11:30", "page_view"),
                                    ("2026-11-10 11:35", "product_view"),
                                    ("2026-11-10 11:40", "add_to_cart"),
                                    ("2026-11-10 11:45", "checkout_started"),
                                    ("2026-11-10 11:50", "purchase")]),
    ("anon_2", C[2], "meta_ads", [("2026-10-31 20:00", "page_view"),
                                  ("2026-10-31 20:10", "product_view")]),
    ("anon_2", C[2], "email", [("2026-11-12 08:30", "page_view")]),
    ("anon_3", C[3], "tiktok_ads", [("2026-11-05 10:00", "page_view")]),
    ("anon_4", None, "organic", [("2026-11-14 12:00", "page_view"),
                                 ("2026-11-14 12:10", "product_view"),
                                 ("2026-11-14 12:20", "add_to_cart")]),
    ("anon_7", C[7], "google_ads", [("2026-11-02 09:00", "page_view"),
                                    ("2026-11-02 09:20", "product_view")]),
    ("anon_7", C[7], "organic", [("2026-11-02 17:00", "page_view")]),
    ("anon_6", C[6], "direct", [("2026-11-15 07:50", "page_view")]),
    ("anon_5", C[5], "google_ads", [("2026-08-10 10:00", "page_view")]),
]  # fmt: skip

AD_SPEND = [
    ("2026-11-10", "google_ads", "camp_a", 35, 1000, 50),
    ("2026-11-10", "google_ads", "camp_b", 15, 500, 10),
    ("2026-11-01", "meta_ads", "camp_m", 50, 2000, 40),
    ("2026-11-12", "email", "newsletter", 5, 300, 30),
    ("2026-11-02", "google_ads", "camp_a", 100, 4000, 80),
    ("2026-11-05", "tiktok_ads", "camp_t", 20, 800, 16),
]

SIGNUP = "2025-01-15 09:00:00+00"
CAPTURED = "2026-11-20 00:00:00+00"  # when the platform took its snapshot of the app database


def create_silver(conn: duckdb.DuckDBPyConnection) -> None:
    """The silver tables gold reads, with the platform's column names and types."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS silver")
    conn.execute("CREATE SCHEMA IF NOT EXISTS gold")
    conn.execute(
        """CREATE OR REPLACE TABLE silver.customers_history (
            customer_id VARCHAR, email VARCHAR, first_name VARCHAR, last_name VARCHAR,
            country VARCHAR, segment VARCHAR, marketing_opt_in BOOLEAN,
            created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, valid_from TIMESTAMPTZ,
            valid_to TIMESTAMPTZ, is_current BOOLEAN, _op VARCHAR, _commit_lsn BIGINT,
            _seq BIGINT, _commit_ts TIMESTAMPTZ, _batch_id BIGINT, _source VARCHAR)"""
    )
    for n in range(1, 11):
        country = "DE" if n == 3 else "US"
        segment = "casual" if n == 1 else "outdoor_enthusiast"
        lsn = n
        ends = {1: "2026-11-21 00:00:00+00", 9: "2026-11-22 00:00:00+00"}.get(n)
        conn.execute(
            "INSERT INTO silver.customers_history VALUES "
            "(?, ?, ?, 'Doe', ?, ?, TRUE, ?, ?, ?, ?, ?, 'r', ?, 1, ?, 1, 'app_db')",
            [C[n], f"c{n}@example.com", f"Name{n}", country, segment, SIGNUP, SIGNUP,
             CAPTURED, ends, ends is None, lsn, CAPTURED],
        )  # fmt: skip
    # Customer 1 moved to the "pro" segment; customer 9 was erased (a tombstone closes them).
    conn.execute(
        "INSERT INTO silver.customers_history VALUES (?, 'c1@example.com', 'Name1', 'Doe', "
        "'US', 'pro', TRUE, ?, ?, ?, NULL, TRUE, 'u', 100, 1, ?, 2, 'app_db')",
        [C[1], SIGNUP, *["2026-11-21 00:00:00+00"] * 3],
    )
    conn.execute(
        "INSERT INTO silver.customers_history VALUES (?, NULL, NULL, NULL, NULL, NULL, NULL, "
        "NULL, NULL, '2026-11-22 00:00:00+00', NULL, FALSE, 'd', 101, 1, '2026-11-22 00:00:00+00', "
        "3, 'app_db')",
        [C[9]],
    )

    # The current customers, as the contract keeps them: the erased customer 9 has left.
    conn.execute(
        "CREATE OR REPLACE TABLE silver.customers AS SELECT customer_id, email, first_name, "
        "last_name, country, segment, marketing_opt_in, created_at, updated_at, _op, "
        "_commit_lsn, _seq, _commit_ts FROM silver.customers_history WHERE is_current"
    )
    conn.execute(
        """CREATE OR REPLACE TABLE silver.orders (
            order_id VARCHAR, customer_id VARCHAR, status VARCHAR, currency VARCHAR,
            order_total DECIMAL(12,2), placed_at TIMESTAMPTZ, updated_at TIMESTAMPTZ,
            _deleted BOOLEAN)"""
    )
    conn.execute(
        """CREATE OR REPLACE TABLE silver.order_items (
            order_id VARCHAR, line_no INTEGER, sku VARCHAR, quantity INTEGER,
            unit_price DECIMAL(12,2))"""
    )
    conn.execute(
        """CREATE OR REPLACE TABLE silver.payments_charges (
            charge_id VARCHAR, amount DECIMAL(14,2), amount_refunded DECIMAL(14,2),
            currency VARCHAR, customer_id VARCHAR, order_id VARCHAR, status VARCHAR,
            paid BOOLEAN, created_at TIMESTAMP)"""
    )
    conn.execute(
        """CREATE OR REPLACE TABLE silver.payments_refunds (
            refund_id VARCHAR, charge_id VARCHAR, amount DECIMAL(14,2), currency VARCHAR,
            status VARCHAR, reason VARCHAR, created_at TIMESTAMP)"""
    )
    conn.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    conn.execute(
        "CREATE OR REPLACE TABLE quarantine.payments_charges ("
        + ", ".join(f"{name} {sql_type}" for name, sql_type in QUARANTINE_COLUMNS.items())
        + ")"
    )
    for oid, cid, placed, status, currency, lines, deleted in ORDERS:
        total = PURGED_TOTALS.get(oid, sum(q * p for _, q, p in lines))
        conn.execute(
            "INSERT INTO silver.orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [oid, cid, status, currency, total, f"{placed}:00+00", f"{placed}:00+00", deleted],
        )
        for line_no, (sku, quantity, price) in enumerate(lines, start=1):
            conn.execute(
                "INSERT INTO silver.order_items VALUES (?, ?, ?, ?, ?)",
                [oid, line_no, sku, quantity, price],
            )
        charge_status = CHARGE_STATUS.get(oid, "succeeded")
        if oid in (*QUARANTINED_CHARGES, *REQUARANTINED_VALID):
            _quarantine_charge(conn, oid, cid, total, placed)
        if oid not in QUARANTINED_CHARGES:
            conn.execute(
                "INSERT INTO silver.payments_charges VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?)",
                [f"ch_{oid}", total, currency.lower(), cid, oid, charge_status,
                 charge_status == "succeeded", f"{placed}:00"],
            )  # fmt: skip
    # The charge of an order that silver does not have.
    conn.execute(
        "INSERT INTO silver.payments_charges VALUES "
        "('ch_o99', 5, 0, 'eur', ?, 'o99', 'succeeded', TRUE, '2026-11-14 10:00')",
        [C[3]],
    )
    conn.executemany(
        "INSERT INTO silver.payments_refunds VALUES (?, ?, ?, ?, ?, 'requested_by_customer', ?)",
        REFUNDS,
    )

    conn.execute(
        """CREATE OR REPLACE TABLE silver.products (
            sku VARCHAR, name VARCHAR, category VARCHAR, brand VARCHAR,
            unit_price DECIMAL(12,2), currency VARCHAR, weight_kg DECIMAL(10,2),
            active BOOLEAN, updated_at TIMESTAMP)"""
    )
    for sku, name, category, price in PRODUCTS:
        conn.execute(
            "INSERT INTO silver.products VALUES (?, ?, ?, 'Acme', ?, 'USD', 1, TRUE, '2026-01-01')",
            [sku, name, category, price],
        )

    conn.execute(
        """CREATE OR REPLACE TABLE silver.events (
            event_id VARCHAR, event_type VARCHAR, occurred_at TIMESTAMP, anonymous_id VARCHAR,
            customer_id VARCHAR, channel VARCHAR, page VARCHAR, sku VARCHAR, order_id VARCHAR,
            revenue DECIMAL(12,2), currency VARCHAR, event_date DATE)"""
    )
    number = 0
    for anonymous_id, cid, channel, events in SESSIONS:
        for occurred_at, event_type in events:
            number += 1
            purchase = event_type == "purchase"
            conn.execute(
                "INSERT INTO silver.events VALUES (?, ?, ?, ?, ?, ?, '/', NULL, ?, ?, 'USD', "
                "CAST(? AS DATE))",
                [f"evt_{number:016x}", event_type, f"{occurred_at}:00", anonymous_id, cid, channel,
                 "o03" if purchase else None, 70 if purchase else None, occurred_at],
            )  # fmt: skip

    conn.execute(
        """CREATE OR REPLACE TABLE silver.ad_spend (
            date DATE, channel VARCHAR, campaign VARCHAR, spend DECIMAL(14,2),
            impressions BIGINT, clicks BIGINT)"""
    )
    conn.executemany("INSERT INTO silver.ad_spend VALUES (?, ?, ?, ?, ?, ?)", AD_SPEND)


def _quarantine_charge(
    conn: duckdb.DuckDBPyConnection, oid: str, cid: str, total: int, placed: str
) -> None:
    """The charge as the payments_charges contract quarantines it: the raw values by column."""
    raw = {
        "charge_id": f"ch_{oid}",
        "amount": str(total * 100),
        "amount_refunded": "0",
        "currency": "xxx",
        "customer_id": cid,
        "order_id": oid,
        "status": "succeeded",
        "paid": "true",
        "created_at": placed,
        "metadata": json.dumps({"order_id": oid}),
    }
    conn.execute(
        "INSERT INTO quarantine.payments_charges VALUES (1, 'payments api', ?, "
        "'currency: ''xxx'' is not one of usd, eur, gbp', ?, '2026-11-20 00:00:00+00')",
        [int(oid[1:]), json.dumps(raw)],
    )
