"""The demo's calendar: every demo source covers a window that ends on the same day.

Gold joins the sources (orders with payments, sessions and ad spend), so their data must
overlap in time: the app database holds a year of orders (enough history for a 90-day churn
label), and the clickstream, ad spend and payments cover the recent weeks of that same year.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

DEMO_AS_OF = date(2026, 11, 15)  # the demo's "today": the sources' windows end here
ORDER_HISTORY_DAYS = 365
CLICKSTREAM_DAYS = 14
AD_SPEND_DAYS = 30


def days_before(days: int) -> date:
    return DEMO_AS_OF - timedelta(days=days)


def order_history_start() -> datetime:
    """Where the app database's seeded orders begin (UTC midnight)."""
    start = days_before(ORDER_HISTORY_DAYS)
    return datetime(start.year, start.month, start.day, tzinfo=UTC)
