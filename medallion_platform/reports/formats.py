"""How the report writes numbers, money, shares and periods (shared by the charts and the page).

Money carries its currency and is never added across currencies; a missing value is a dash.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

TIMES, EN_DASH = "\u00d7", "\u2013"  # typography, spelled out for the linter
GRAIN_LABEL = {"day": "Date", "week": "Week of", "month": "Month"}


def fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_money(amount: Decimal | float | None, currency: str) -> str:
    return "—" if amount is None else f"{currency} {Decimal(amount):,.2f}"


def fmt_pct(share: float | None, digits: int = 1) -> str:
    return "—" if share is None else f"{share * 100:.{digits}f}%"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}{TIMES}"


def fmt_compact(value: float) -> str:
    """An axis tick: 1.5k, 2M, 0.25."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.1f}".removesuffix(".0") + suffix
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def customers(count: int) -> str:
    return f"{fmt_int(count)} customer{'' if count == 1 else 's'}"


def period(day: date, grain: str) -> str:
    """A day, week (its Monday) or month of the revenue series, as the page names it."""
    return day.strftime("%Y-%m") if grain == "month" else day.isoformat()


def probability_bin(index: int) -> str:
    """The churn histogram's ``index``-th tenth, 0.3 to 0.4 joined by an en dash."""
    return f"{index / 10:.1f}{EN_DASH}{(index + 1) / 10:.1f}"
