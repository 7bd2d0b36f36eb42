"""Every gold table built from the hand-built dataset (handbuilt.py), against figures worked
out by hand. The comments give the arithmetic; nothing here is read back from the output."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from pathlib import Path

import duckdb
import pytest
from dagster import AssetCheckSeverity

from medallion_platform.config import PlatformConfig
from medallion_platform.defs.gold import build_reconcile_check
from medallion_platform.defs.resources import WarehouseResource
from medallion_platform.gold.build import build_models, in_dependency_order
from medallion_platform.gold.checks import negative_counts, rule_violations, unresolved_references
from medallion_platform.gold.reconcile import reconcile
from medallion_platform.gold.spec import SqlModel
from medallion_platform_tests.gold.handbuilt import C, create_silver

AS_OF = date(2026, 11, 15)


@pytest.fixture(scope="module")
def gold(tmp_path_factory: pytest.TempPathFactory, config: PlatformConfig):
    conn = duckdb.connect(str(tmp_path_factory.mktemp("gold") / "handbuilt.duckdb"))
    create_silver(conn)
    build_models(conn, config.sql_models)
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def config() -> PlatformConfig:
    from medallion_platform.config import platform_config

    return platform_config()


def rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return conn.execute(sql).fetchall()


def test_models_build_in_dependency_order(config: PlatformConfig) -> None:
    order = [f"{m.layer}.{m.name}" for m in in_dependency_order(config.sql_models)]
    for model in config.sql_models:
        for dep in model.depends_on:
            if dep in order:
                assert order.index(dep) < order.index(f"{model.layer}.{model.name}")


def test_dim_customer(gold: duckdb.DuckDBPyConnection) -> None:
    got = {
        r[0]: r[1:]
        for r in rows(
            gold,
            "SELECT customer_id, email, segment, country, versions, is_deleted, "
            "CAST(first_seen_at AT TIME ZONE 'UTC' AS DATE) FROM gold.dim_customer",
        )
    }
    assert len(got) == 10  # every customer ever seen, the erased one included
    # Customer 1 changed segment: the current version wins, two live versions counted.
    assert got[C[1]] == ("c1@example.com", "pro", "US", 2, False, date(2026, 11, 20))
    assert got[C[3]] == ("c3@example.com", "outdoor_enthusiast", "DE", 1, False, date(2026, 11, 20))
    # Customer 9 was erased: the key stays (their order still resolves), the email does not.
    assert got[C[9]] == (None, "outdoor_enthusiast", "US", 1, True, date(2026, 11, 20))
    assert got[C[10]][4] is False


def test_dim_date(gold: duckdb.DuckDBPyConnection) -> None:
    # Orders from 2026-06-01, events and spend until 2026-11-15: the whole year 2026.
    assert rows(gold, "SELECT count(*), min(date), max(date) FROM gold.dim_date") == [
        (365, date(2026, 1, 1), date(2026, 12, 31))
    ]
    # 2026-11-15 is a Sunday in ISO week 46 (Monday 2026-11-09), Q4.
    assert rows(
        gold,
        "SELECT year, quarter, month, month_name, day_of_week, day_name, iso_week, week_start, "
        "is_weekend FROM gold.dim_date WHERE date = DATE '2026-11-15'",
    ) == [(2026, 4, 11, "November", 7, "Sunday", 46, date(2026, 11, 9), True)]


FCT_ORDERS = {
    # order: (customer, date, status, currency, items, units, gross, payment status, paid,
    #         refunded, net, is_revenue, is_deleted)
    "o01": (C[1], "2026-08-01", "delivered", "USD", 1, 1, 100, "paid", 100, 0, 100, True, False),
    "o02": (C[1], "2026-10-20", "delivered", "USD", 1, 2, 100, "paid", 100, 0, 100, True, False),
    "o03": (C[1], "2026-11-10", "shipped", "USD", 2, 2, 70, "paid", 70, 0, 70, True, False),
    # Returned and refunded in full: still a sale, net 0.
    "o04": (C[2], "2026-11-01", "returned", "USD", 1, 1, 100, "refunded", 100, 100, 0, True,
            False),
    "o05": (C[2], "2026-11-12", "paid", "USD", 1, 3, 60, "paid", 60, 0, 60, True, False),
    "o06": (C[3], "2026-11-01", "delivered", "EUR", 1, 1, 100, "paid", 100, 0, 100, True, False),
    "o07": (C[3], "2026-11-05", "delivered", "EUR", 1, 1, 50, "partially_refunded", 50, 10, 40,
            True, False),
    "o08": (C[4], "2026-07-15", "delivered", "USD", 1, 1, 100, "paid", 100, 0, 100, True, False),
    "o09": (C[5], "2026-09-20", "delivered", "USD", 1, 1, 50, "paid", 50, 0, 50, True, False),
    # Cancelled after its payment failed: nothing paid, not a sale.
    "o10": (C[5], "2026-09-25", "cancelled", "USD", 1, 1, 100, "failed", 0, 0, 100, False, False),
    "o11": (C[6], "2026-11-15", "placed", "USD", 1, 1, 20, "pending", 0, 0, 20, True, False),
    # o12's 50 refund failed: it does not count.
    "o12": (C[7], "2026-11-02", "delivered", "USD", 1, 2, 200, "paid", 200, 0, 200, True, False),
    "o13": (C[7], "2026-11-02", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o14": (C[8], "2026-11-03", "delivered", "USD", 1, 1, 50, "paid", 50, 0, 50, True, False),
    # Purged: no lines left, paid and refunded in full, flagged deleted.
    "o15": (C[8], "2026-11-14", "cancelled", "USD", 0, 0, 100, "refunded", 100, 100, 0, False,
            True),
    "o16": (C[9], "2026-10-01", "delivered", "USD", 0, 0, 20, "paid", 20, 0, 20, False, True),
    "o17": (C[1], "2026-09-01", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o18": (C[1], "2026-09-15", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o19": (C[2], "2026-10-05", "delivered", "USD", 1, 1, 50, "paid", 50, 0, 50, True, False),
    "o20": (C[2], "2026-10-25", "delivered", "USD", 1, 1, 50, "paid", 50, 0, 50, True, False),
    "o21": (C[3], "2026-10-10", "delivered", "EUR", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o22": (C[4], "2026-06-01", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o23": (C[4], "2026-06-20", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o24": (C[6], "2026-10-30", "delivered", "USD", 1, 1, 100, "paid", 100, 0, 100, True, False),
    "o25": (C[7], "2026-10-02", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o26": (C[7], "2026-10-12", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o27": (C[8], "2026-10-18", "delivered", "USD", 1, 1, 50, "paid", 50, 0, 50, True, False),
    "o28": (C[5], "2026-08-30", "delivered", "USD", 1, 1, 20, "paid", 20, 0, 20, True, False),
    "o29": (C[2], "2026-11-12", "delivered", "USD", 1, 1, 100, "paid", 100, 0, 100, True, False),
    "o30": (C[6], "2026-11-01", "delivered", "USD", 1, 1, 50, "paid", 50, 0, 50, True, False),
    # Their charges are in quarantine: what was paid is not known (not "unpaid"), and o31's
    # refund still counts, found through the quarantined charge's order id.
    "o31": (C[2], "2026-11-08", "returned", "USD", 1, 1, 50, "unknown", None, 50, 0, True,
            False),
    "o32": (C[3], "2026-11-09", "delivered", "EUR", 1, 1, 20, "unknown", None, 0, 20, True,
            False),
}  # fmt: skip


def test_fct_orders(gold: duckdb.DuckDBPyConnection) -> None:
    got = {
        r[0]: (r[1], str(r[2]), *r[3:])
        for r in rows(
            gold,
            "SELECT order_id, customer_id, order_date, status, currency, item_count, units, "
            "gross, payment_status, paid_amount, refunded_amount, net, is_revenue, is_deleted "
            "FROM gold.fct_orders",
        )
    }
    assert got == FCT_ORDERS


def test_fct_order_items(gold: duckdb.DuckDBPyConnection) -> None:
    # 32 orders, two purged (no lines), o03 has two lines: 31 lines.
    assert rows(
        gold, "SELECT count(*), sum(line_total), sum(quantity) FROM gold.fct_order_items"
    ) == [
        # line totals: the 32 orders' gross (1,870) but the purged o15 (100) and o16 (20);
        # units: one per line but o02 (2), o05 (3) and o12 (2): 31 + 4
        (31, D("1750.00"), 35)
    ]
    assert rows(
        gold,
        "SELECT line_no, sku, category, quantity, unit_price, line_total, customer_id, "
        "order_date, currency, is_revenue FROM gold.fct_order_items WHERE order_id = 'o03' "
        "ORDER BY line_no",
    ) == [
        (1, "SKU-000003", "apparel", 1, D("20.00"), D("20.00"), C[1], date(2026, 11, 10), "USD",
         True),
        (2, "SKU-000002", "footwear", 1, D("50.00"), D("50.00"), C[1], date(2026, 11, 10), "USD",
         True),
    ]  # fmt: skip


CUSTOMER_360 = {
    # customer: (currency, first order, last order, orders, lifetime value, gross, refunded,
    #            AOV, days since last order, sessions in the last 30 days, refund rate,
    #            top category, churn risk)
    # C1: o01 100 + o02 100 + o03 70 + o17 20 + o18 20 = 310 over 5 orders, AOV 62; footwear
    # 150 (o02 100, o03 50) beats tents 100 and apparel 60; last order 11-10, 5 days ago.
    C[1]: ("USD", "2026-08-01", "2026-11-10", 5, D("310.00"), D("310.00"), D("0.00"),
           D("62.00"), 5, 1, 0.0, "footwear", "low"),
    # C2: 100 + 60 + 50 + 50 + 100 + o31 50 = 410 gross, 150 refunded (o04 100, and o31 50
    # whose charge is quarantined): LTV 260, AOV 68.33, refund rate 150/410 = 0.3659; tents
    # 200 (o04, o29) beats footwear 150; sessions 10-31 and 11-12.
    C[2]: ("USD", "2026-10-05", "2026-11-12", 6, D("260.00"), D("410.00"), D("150.00"),
           D("68.33"), 3, 2, 0.3659, "tents", "low"),
    # C3 (EUR): 100 + 50 + 20 + o32 20 = 190, 10 refunded: LTV 180, AOV 47.50, rate 10/190 =
    # 0.0526; last order o32 on 11-09. (re_7's order o99 is not in silver: not theirs here.)
    C[3]: ("EUR", "2026-10-10", "2026-11-09", 4, D("180.00"), D("190.00"), D("10.00"),
           D("47.50"), 6, 1, 0.0526, "tents", "low"),
    # C4: 20 + 20 + 100 = 140, AOV 46.67; last order 07-15 is 123 days before 11-15: high.
    C[4]: ("USD", "2026-06-01", "2026-07-15", 3, D("140.00"), D("140.00"), D("0.00"),
           D("46.67"), 123, 0, 0.0, "tents", "high"),
    # C5: o28 20 + o09 50 (o10 was cancelled); last order 09-20, 56 days: medium. Their only
    # session (08-10) is older than 30 days.
    C[5]: ("USD", "2026-08-30", "2026-09-20", 2, D("70.00"), D("70.00"), D("0.00"),
           D("35.00"), 56, 0, 0.0, "footwear", "medium"),
    # C6: o24 100 + o30 50 + o11 20 (placed today, pending payment, still a sale) = 170.
    C[6]: ("USD", "2026-10-30", "2026-11-15", 3, D("170.00"), D("170.00"), D("0.00"),
           D("56.67"), 0, 1, 0.0, "tents", "low"),
    # C7: o12 200 + o13 20 + o25 20 + o26 20 = 260, AOV 65; two sessions on 11-02.
    C[7]: ("USD", "2026-10-02", "2026-11-02", 4, D("260.00"), D("260.00"), D("0.00"),
           D("65.00"), 13, 2, 0.0, "tents", "low"),
    # C8: o27 50 + o14 50 (o15 was cancelled and purged).
    C[8]: ("USD", "2026-10-18", "2026-11-03", 2, D("100.00"), D("100.00"), D("0.00"),
           D("50.00"), 12, 0, 0.0, "footwear", "low"),
    # C10 never ordered. (C9 was erased: not a current customer.)
    C[10]: (None, None, None, 0, D("0.00"), D("0.00"), D("0.00"), None, None, 0, None, None,
            "no_orders"),
}  # fmt: skip


def test_customer_360(gold: duckdb.DuckDBPyConnection) -> None:
    got = {
        r[0]: (r[1], *(str(v) if isinstance(v, date) else v for v in r[2:4]), *r[4:])
        for r in rows(
            gold,
            "SELECT customer_id, currency, first_order_date, last_order_date, order_count, "
            "lifetime_value, gross_revenue, refunded_amount, average_order_value, "
            "days_since_last_order, sessions_last_30_days, refund_rate, top_category, "
            "churn_risk FROM gold.customer_360",
        )
    }
    assert got == CUSTOMER_360
    assert rows(gold, "SELECT DISTINCT as_of_date FROM gold.customer_360") == [(AS_OF,)]


DAILY_REVENUE = [
    # (date, currency, orders, customers, new, returning, gross, refunds, net, AOV, refunds
    #  without an order)
    ("2026-06-01", "USD", 1, 1, 1, 0, 20, 0, 20, 20, 0),  # C4's first order
    ("2026-06-20", "USD", 1, 1, 0, 1, 20, 0, 20, 20, 0),
    ("2026-07-15", "USD", 1, 1, 0, 1, 100, 0, 100, 100, 0),
    ("2026-08-01", "USD", 1, 1, 1, 0, 100, 0, 100, 100, 0),  # C1's first
    ("2026-08-30", "USD", 1, 1, 1, 0, 20, 0, 20, 20, 0),  # C5's first
    ("2026-09-01", "USD", 1, 1, 0, 1, 20, 0, 20, 20, 0),
    ("2026-09-15", "USD", 1, 1, 0, 1, 20, 0, 20, 20, 0),
    ("2026-09-20", "USD", 1, 1, 0, 1, 50, 0, 50, 50, 0),  # o10 (cancelled, 09-25) has no row
    ("2026-10-02", "USD", 1, 1, 1, 0, 20, 0, 20, 20, 0),  # C7's first (o16, 10-01, was purged)
    ("2026-10-05", "USD", 1, 1, 1, 0, 50, 0, 50, 50, 0),  # C2's first
    ("2026-10-10", "EUR", 1, 1, 1, 0, 20, 0, 20, 20, 0),  # C3's first
    ("2026-10-12", "USD", 1, 1, 0, 1, 20, 0, 20, 20, 0),
    ("2026-10-18", "USD", 1, 1, 1, 0, 50, 0, 50, 50, 0),  # C8's first
    ("2026-10-20", "USD", 1, 1, 0, 1, 100, 0, 100, 100, 0),
    ("2026-10-25", "USD", 1, 1, 0, 1, 50, 0, 50, 50, 0),
    ("2026-10-30", "USD", 1, 1, 1, 0, 100, 0, 100, 100, 0),  # C6's first
    # o04 (100, refunded 100) and o30 (50): both customers returning; AOV 150 / 2.
    ("2026-11-01", "USD", 2, 2, 0, 2, 150, 100, 50, 75, 0),
    ("2026-11-01", "EUR", 1, 1, 0, 1, 100, 0, 100, 100, 0),  # never added to USD
    ("2026-11-02", "USD", 2, 1, 0, 1, 220, 0, 220, 110, 0),  # C7 twice
    ("2026-11-03", "USD", 1, 1, 0, 1, 50, 0, 50, 50, 0),
    ("2026-11-05", "EUR", 1, 1, 0, 1, 50, 10, 40, 50, 0),
    # o31's charge is quarantined: its 50 refund still counts, on the order's day.
    ("2026-11-08", "USD", 1, 1, 0, 1, 50, 50, 0, 50, 0),
    ("2026-11-09", "EUR", 1, 1, 0, 1, 20, 0, 20, 20, 0),  # o32: paid, amount unknown
    ("2026-11-10", "USD", 1, 1, 0, 1, 70, 0, 70, 70, 0),
    ("2026-11-12", "USD", 2, 1, 0, 1, 160, 0, 160, 80, 0),  # C2 twice
    # re_6's charge never arrived: no order known, so it counts on its own day.
    ("2026-11-13", "USD", 0, 0, 0, 0, 0, 15, -15, None, 15),
    # o15 (11-14) was cancelled: no USD row; re_7 names o99, which silver does not have.
    ("2026-11-14", "EUR", 0, 0, 0, 0, 0, 5, -5, None, 5),
    ("2026-11-15", "USD", 1, 1, 0, 1, 20, 0, 20, 20, 0),
]


def test_daily_revenue(gold: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        gold,
        "SELECT CAST(date AS VARCHAR), currency, orders, customers, new_customers, "
        "returning_customers, gross, refunds, net, aov, refunds_without_order "
        "FROM gold.daily_revenue ORDER BY date, currency DESC",
    )
    assert got == DAILY_REVENUE


FCT_REFUNDS = [
    # (refund, charge, charge state, order, has order, currency, amount, succeeded, day)
    ("re_1", "ch_o04", "valid", "o04", True, "USD", 100, True, "2026-11-14"),
    ("re_2", "ch_o07", "valid", "o07", True, "EUR", 10, True, "2026-11-14"),
    ("re_3", "ch_o15", "valid", "o15", True, "USD", 100, True, "2026-11-14"),
    ("re_4", "ch_o12", "valid", "o12", True, "USD", 50, False, "2026-11-14"),  # failed
    # The order comes from the quarantined charge's raw values.
    ("re_5", "ch_o31", "quarantined", "o31", True, "USD", 50, True, "2026-11-10"),
    ("re_6", "ch_gone", "missing", None, False, "USD", 15, True, "2026-11-13"),
    ("re_7", "ch_o99", "valid", "o99", False, "EUR", 5, True, "2026-11-14"),
]


def test_fct_refunds_keeps_every_refund_whatever_became_of_its_charge(
    gold: duckdb.DuckDBPyConnection,
) -> None:
    got = rows(
        gold,
        "SELECT refund_id, charge_id, charge_state, order_id, has_order, currency, amount, "
        "is_succeeded, CAST(refund_date AS VARCHAR) FROM gold.fct_refunds ORDER BY refund_id",
    )
    assert got == FCT_REFUNDS


MARKETING_ROAS = [
    # (date, channel, spend, impressions, clicks, orders, revenue, other-currency orders, roas)
    ("2026-06-01", "unattributed", 0, 0, 0, 1, 20, 0, None),
    ("2026-06-20", "unattributed", 0, 0, 0, 1, 20, 0, None),
    ("2026-07-15", "unattributed", 0, 0, 0, 1, 100, 0, None),
    ("2026-08-01", "unattributed", 0, 0, 0, 1, 100, 0, None),  # C1's session is later
    ("2026-08-30", "google_ads", 0, 0, 0, 1, 20, 0, None),  # C5's session 20 days before
    ("2026-09-01", "unattributed", 0, 0, 0, 1, 20, 0, None),
    ("2026-09-15", "unattributed", 0, 0, 0, 1, 20, 0, None),
    ("2026-09-20", "unattributed", 0, 0, 0, 1, 50, 0, None),  # that session is 41 days old
    ("2026-10-02", "unattributed", 0, 0, 0, 1, 20, 0, None),
    ("2026-10-05", "unattributed", 0, 0, 0, 1, 50, 0, None),
    ("2026-10-10", "unattributed", 0, 0, 0, 0, 0, 1, None),  # C3's EUR order
    ("2026-10-12", "unattributed", 0, 0, 0, 1, 20, 0, None),
    ("2026-10-18", "unattributed", 0, 0, 0, 1, 50, 0, None),
    ("2026-10-20", "unattributed", 0, 0, 0, 1, 100, 0, None),
    ("2026-10-25", "unattributed", 0, 0, 0, 1, 50, 0, None),
    ("2026-10-30", "unattributed", 0, 0, 0, 1, 100, 0, None),
    # o04 came after C2's meta_ads session (10-31): attributed, but refunded, so 0 revenue.
    ("2026-11-01", "meta_ads", 50, 2000, 40, 1, 0, 0, 0.0),
    ("2026-11-01", "unattributed", 0, 0, 0, 1, 50, 1, None),  # o30, and o06 in EUR
    ("2026-11-02", "google_ads", 100, 4000, 80, 1, 200, 0, 2.0),  # o12 after the 09:00 visit
    ("2026-11-02", "organic", 0, 0, 0, 1, 20, 0, None),  # o13 after the 17:00 visit
    ("2026-11-03", "unattributed", 0, 0, 0, 1, 50, 0, None),
    ("2026-11-05", "tiktok_ads", 20, 800, 16, 0, 0, 1, 0.0),  # o07 in EUR: counted, not added
    ("2026-11-08", "meta_ads", 0, 0, 0, 1, 0, 0, None),  # o31, refunded in full
    ("2026-11-09", "tiktok_ads", 0, 0, 0, 0, 0, 1, None),  # o32 in EUR
    ("2026-11-10", "google_ads", 50, 1500, 60, 1, 70, 0, 1.4),  # two campaigns: 35 + 15
    ("2026-11-12", "email", 5, 300, 30, 2, 160, 0, 32.0),  # o29 100 + o05 60
    # re_6 (no order known) takes its 15 off the day's USD revenue, unattributed; re_7 is EUR.
    ("2026-11-13", "unattributed", 0, 0, 0, 0, -15, 0, None),
    ("2026-11-15", "direct", 0, 0, 0, 1, 20, 0, None),
]


def test_marketing_roas_daily(gold: duckdb.DuckDBPyConnection) -> None:
    got = rows(
        gold,
        "SELECT CAST(date AS VARCHAR), channel, spend, impressions, clicks, attributed_orders, "
        "attributed_revenue, attributed_orders_other_currency, roas "
        "FROM gold.marketing_roas_daily ORDER BY date, channel",
    )
    assert got == MARKETING_ROAS
    # Last touch gives every USD sale to exactly one channel: the totals reconcile.
    usd_net = rows(gold, "SELECT sum(net) FROM gold.daily_revenue WHERE currency = 'USD'")
    attributed = rows(gold, "SELECT sum(attributed_revenue) FROM gold.marketing_roas_daily")
    assert usd_net == attributed == [(D("1295.00"),)]  # 1,310 before re_6's 15


def test_sessions_and_funnel(gold: duckdb.DuckDBPyConnection) -> None:
    # 9 sessions: anon_7's visits at 09:00-09:20 and 17:00 are two (a gap over 30 minutes).
    assert rows(gold, "SELECT count(*) FROM gold.sessions") == [(9,)]
    assert rows(
        gold,
        "SELECT channel, sessions, product_view_sessions, add_to_cart_sessions, "
        "checkout_sessions, purchase_sessions, revenue, view_to_cart_rate, "
        "cart_to_checkout_rate, conversion_rate FROM gold.funnel_daily "
        "WHERE date IN ('2026-11-10', '2026-11-14') ORDER BY date",
    ) == [
        ("google_ads", 1, 1, 1, 1, 1, D("70.00"), 1.0, 1.0, 1.0),
        ("organic", 1, 1, 1, 0, 0, D("0.00"), 1.0, 0.0, 0.0),
    ]


def test_marketing_spend_and_products(gold: duckdb.DuckDBPyConnection) -> None:
    assert rows(
        gold,
        "SELECT campaigns, spend, impressions, clicks, ctr, cpc FROM gold.marketing_spend_daily "
        "WHERE date = '2026-11-10' AND channel = 'google_ads'",
    ) == [(2, D("50.00"), 1500, 60, 0.04, 0.8333)]  # 60/1500 and 50/60
    assert rows(gold, "SELECT sku, price_band FROM gold.dim_product ORDER BY sku") == [
        ("SKU-000001", "100_to_250"),
        ("SKU-000002", "25_to_100"),
        ("SKU-000003", "under_25"),
    ]


def test_every_gold_check_passes_on_the_handbuilt_data(
    gold: duckdb.DuckDBPyConnection, config: PlatformConfig
) -> None:
    reconciled = []
    for model in config.gold_models:
        assert unresolved_references(gold, model).passed, model.name
        assert negative_counts(gold, model).passed, model.name
        for rule in model.rules:
            assert rule_violations(gold, model, rule).passed, (model.name, rule.name)
        for measure in model.reconcile.measures if model.reconcile else []:
            outcome = reconcile(gold, model, measure)
            assert outcome.passed, (model.name, outcome)
            reconciled.append(f"{model.name}.{measure}")
    assert sorted(reconciled) == [
        "customer_360.lifetime_value",
        "daily_revenue.gross",
        "daily_revenue.net",
        "daily_revenue.refunds",
        "fct_orders.gross",
        "fct_orders.net",
        "fct_orders.refunded_amount",
    ]
    # Gross of every order per currency, from both sides: the 32 orders total 1,870; EUR is
    # o06 100 + o07 50 + o21 20 + o32 20 = 190, USD the other 1,680.
    totals = {
        t.by: (t.gold, t.silver)
        for t in reconcile(gold, models(config)["fct_orders"], "gross").totals
    }
    assert totals == {"EUR": (D("190.00"), D("190.00")), "USD": (D("1680.00"), D("1680.00"))}


def test_checks_catch_broken_gold(
    tmp_path: Path, config: PlatformConfig, gold: duckdb.DuckDBPyConnection
) -> None:
    """Each kind of check fails on a table that breaks it, naming the offending rows."""
    models = {m.name: m for m in config.gold_models}
    conn = duckdb.connect(str(tmp_path / "broken.duckdb"))
    create_silver(conn)
    # An order of a customer the app database never had, on a day outside the calendar.
    conn.execute(
        "INSERT INTO silver.orders VALUES ('o99', 'cus_999999', 'paid', 'USD', 10, "
        "'2027-02-01 10:00:00+00', '2027-02-01 10:00:00+00', FALSE)"
    )
    build_models(conn, config.sql_models)
    fk = unresolved_references(conn, models["fct_orders"])
    assert not fk.passed and fk.detail == {"customer_id": 1, "order_date": 0}
    assert fk.examples == ["customer_id=cus_999999"]

    conn.execute("UPDATE gold.fct_orders SET net = net + 1 WHERE order_id = 'o07'")
    rule = next(r for r in models["fct_orders"].rules if r.name == "net_is_gross_minus_refunds")
    broken = rule_violations(conn, models["fct_orders"], rule)
    assert broken.failed_rows == 1 and broken.examples == ["o07"]

    conn.execute("UPDATE gold.daily_revenue SET orders = -1 WHERE date = '2026-11-02'")
    negative = negative_counts(conn, models["daily_revenue"])
    assert negative.failed_rows == 1 and negative.detail["orders"] == 1
    conn.close()


def models(config: PlatformConfig) -> dict[str, SqlModel]:
    return {m.name: m for m in config.gold_models}


def _broken(model: SqlModel, old: str, new: str) -> str:
    """The model's SQL with one deliberate mistake (the text must be there to break)."""
    assert model.sql.count(old) == 1, (model.name, old)
    return model.sql.replace(old, new)


def _rebuild(conn: duckdb.DuckDBPyConnection, config: PlatformConfig, sql: dict[str, str]):
    """Rebuild the named gold models from the given SQL, then what reads them, in order."""
    for model in [m for m in in_dependency_order(config.gold_models) if m.name in sql]:
        conn.execute(f"CREATE OR REPLACE TABLE gold.{model.name} AS {sql[model.name]}")


def test_reconciliation_fails_on_a_model_that_loses_refunds_of_quarantined_charges(
    tmp_path: Path, config: PlatformConfig
) -> None:
    """The old mistake: refunds reach orders only through charges that are in silver. Gold
    still agrees with itself (net = gross - refunds holds), but not with silver: every money
    check downstream names the order, day and customer, with the difference per currency."""
    by_name = models(config)
    conn = duckdb.connect(str(tmp_path / "broken.duckdb"))
    create_silver(conn)
    build_models(conn, config.sql_models)
    fct = by_name["fct_orders"]
    _rebuild(
        conn,
        config,
        {
            "fct_orders": _broken(
                fct,
                "WHERE is_succeeded AND has_order",
                "WHERE is_succeeded AND has_order AND charge_state = 'valid'",
            ),
            "customer_360": by_name["customer_360"].sql,
            "daily_revenue": by_name["daily_revenue"].sql,
        },
    )
    rule = next(r for r in fct.rules if r.name == "net_is_gross_minus_refunds")
    assert rule_violations(conn, fct, rule).passed  # gold agrees with itself

    found = {
        (name, measure): reconcile(conn, by_name[name], measure)
        for name in ("fct_orders", "daily_revenue", "customer_360")
        for measure in by_name[name].reconcile.measures
    }
    failed = {key: o for key, o in found.items() if not o.passed}
    assert sorted(failed) == [
        ("customer_360", "lifetime_value"),
        ("daily_revenue", "net"),
        ("daily_revenue", "refunds"),
        ("fct_orders", "net"),
        ("fct_orders", "refunded_amount"),
    ]
    # o31's 50 USD refund is the one lost: gold shows 50 too much net, 50 too little refunded.
    refunded = failed[("fct_orders", "refunded_amount")]
    assert refunded.mismatched_keys == 1
    assert {t.by: t.difference for t in refunded.totals} == {"EUR": 0, "USD": D("-50.00")}
    assert refunded.examples == [
        "currency=USD, order_id=o31: gold 0.00, silver 50.00 (difference -50.00)"
    ]
    assert failed[("daily_revenue", "net")].examples == [
        "currency=USD, date=2026-11-08: gold 50.00, silver 0.00 (difference 50.00)"
    ]
    assert failed[("customer_360", "lifetime_value")].examples == [
        f"currency=USD, customer_id={C[2]}: gold 310.00, silver 260.00 (difference 50.00)"
    ]

    # The Dagster check: a warning (gold is built; nothing downstream is blocked), with the
    # difference per currency and the offending keys in its metadata.
    conn.close()
    check = build_reconcile_check(fct, "refunded_amount")
    result = check(warehouse=WarehouseResource(path=str(tmp_path / "broken.duckdb")))
    assert not result.passed
    assert result.severity == AssetCheckSeverity.WARN
    (key,) = check.check_keys
    assert key.name == "refunded_amount_reconciles_with_silver"
    assert not check.get_spec_for_check_key(key).blocking
    assert result.metadata["difference"].value == {"EUR": "0.00", "USD": "-50.00"}
    assert result.metadata["mismatched_keys"].value == 1
    assert "order_id=o31" in result.metadata["offending_keys"].value
    # Refunds of known orders in USD: o04 100 + o15 100 + o31 50 in silver; gold lost o31's.
    assert "| USD | 200.00 | 250.00 | -50.00 |" in result.metadata["totals"].value


def test_reconciliation_fails_on_models_that_drop_orphan_refunds_or_add_cancelled_orders(
    tmp_path: Path, config: PlatformConfig
) -> None:
    by_name = models(config)
    conn = duckdb.connect(str(tmp_path / "broken.duckdb"))
    create_silver(conn)
    build_models(conn, config.sql_models)
    daily = by_name["daily_revenue"]
    # Refunds with no known order dropped (a LEFT JOIN where a FULL one belongs), and the
    # cancelled o10 (100 USD, 09-25) counted as a sale.
    sql = _broken(daily, "FULL OUTER JOIN orphan_refunds", "LEFT JOIN orphan_refunds")
    sql = sql.replace("WHERE is_revenue", "WHERE NOT is_deleted", 1)
    _rebuild(conn, config, {"daily_revenue": sql})
    refunds = reconcile(conn, daily, "refunds")
    assert not refunds.passed and refunds.mismatched_keys == 2
    assert {t.by: t.difference for t in refunds.totals} == {"EUR": D("-5.00"), "USD": D("-15.00")}
    assert refunds.examples == [
        "currency=USD, date=2026-11-13: gold 0.00, silver 15.00 (difference -15.00)",
        "currency=EUR, date=2026-11-14: gold 0.00, silver 5.00 (difference -5.00)",
    ]
    gross = reconcile(conn, daily, "gross")
    assert gross.examples == [
        "currency=USD, date=2026-09-25: gold 100.00, silver 0.00 (difference 100.00)"
    ]
    net = reconcile(conn, daily, "net")
    assert {t.by: t.difference for t in net.totals} == {"EUR": D("5.00"), "USD": D("115.00")}
    assert net.mismatched_keys == 3
    conn.close()


def test_a_reconciliation_reads_silver_only_and_needs_its_sql(config: PlatformConfig) -> None:
    """The silver side never reads gold (it would agree with what it checks); a model that
    declares a reconciliation without its SQL is refused when the config loads."""
    for model in config.gold_models:
        if model.reconcile is not None:
            assert {t.split(".")[0] for t in model.reconcile_tables} <= {"silver", "quarantine"}
    declared = models(config)["dim_product"].model_dump()
    with pytest.raises(ValueError, match=r"reconcile needs .*reconcile/dim_product\.sql"):
        SqlModel.model_validate({**declared, "reconcile": {"key": ["sku"], "measures": ["x"]}})
