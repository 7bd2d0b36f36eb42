"""The report's chart kit: small SVG charts drawn in Python (no JavaScript, no network).

Each chart function takes the report's data and returns one ``<svg>`` as ``Markup``: every
text it writes from the data is escaped here, so the page template inserts it as it is.
Bars and points carry a ``<title>`` (the browser's tooltip) with the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

from medallion_platform.reports.formats import (
    GRAIN_LABEL,
    customers,
    fmt_compact,
    fmt_int,
    fmt_money,
    fmt_pct,
    fmt_ratio,
    period,
    probability_bin,
)
from medallion_platform.reports.queries import RULE_BANDS, Channel, DailyPoint

SERIES_COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2")
FUNNEL_COLORS = ("#1e3a8a", "#1d4ed8", "#2563eb", "#3b82f6", "#60a5fa")
SPEND_COLOR = "#94a3b8"
REVENUE_COLOR = "#059669"
BAND_COLORS = {"low": "#16a34a", "medium": "#f59e0b", "high": "#dc2626", "no_orders": "#cbd5e1"}


def ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [min(lo, 0), max(hi, 0)]."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    return [start + i * step for i in range(round((stop - start) / step) + 1)]


@dataclass(frozen=True)
class Frame:
    """A plot area inside an SVG canvas, with a linear value axis."""

    ticks: Sequence[float]
    width: int = 640
    height: int = 300
    left: int = 64
    right: int = 16
    top: int = 36
    bottom: int = 52

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> float:
        return self.top + self.plot_height

    def y(self, value: float) -> float:
        lo, hi = self.ticks[0], self.ticks[-1]
        return self.top + self.plot_height * (1 - (value - lo) / (hi - lo))


def svg(frame: Frame, label: str, body: list[str]) -> Markup:
    """One chart: ``body`` is markup built here, its data-derived texts already escaped."""
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {frame.width} {frame.height}" '
        f'width="{frame.width}" height="{frame.height}" role="img" aria-label="{escape(label)}">'
        + "".join(body)
        + "</svg>"
    )


def axes(
    frame: Frame, *, y_title: str, x_title: str, y_format: Callable[[float], str]
) -> list[str]:
    right = frame.left + frame.plot_width
    parts = ['<g class="grid">']
    for tick in frame.ticks:
        y = frame.y(tick)
        parts.append(f'<line x1="{frame.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{frame.left - 8}" y="{y:.1f}" dy="0.32em" '
            f'text-anchor="end">{escape(y_format(tick))}</text>'
        )
    parts.append("</g>")
    zero = frame.y(0.0)
    parts.append(
        f'<line class="axis" x1="{frame.left}" x2="{right}" y1="{zero:.1f}" y2="{zero:.1f}"/>'
    )
    middle = frame.top + frame.plot_height / 2
    parts.append(
        f'<text class="axis-title" transform="translate(14 {middle:.1f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_title)}</text>'
    )
    parts.append(
        f'<text class="axis-title" x="{frame.left + frame.plot_width / 2:.1f}" '
        f'y="{frame.height - 6}" text-anchor="middle">{escape(x_title)}</text>'
    )
    return parts


def legend(frame: Frame, items: Sequence[tuple[str, str]], *, line: bool = False) -> list[str]:
    """Swatches along the top edge, right-aligned-ish from the plot's left."""
    parts = ['<g class="legend">']
    x = frame.left
    for label, color in items:
        if line:
            parts.append(
                f'<line x1="{x}" x2="{x + 16}" y1="14" y2="14" stroke="{color}" stroke-width="3" '
                'stroke-linecap="round"/>'
            )
        else:
            parts.append(f'<rect x="{x}" y="8" width="12" height="12" rx="2" fill="{color}"/>')
        text_x = x + (22 if line else 17)
        parts.append(f'<text x="{text_x}" y="14" dy="0.32em">{escape(label)}</text>')
        x = text_x + 7 * len(label) + 20
    parts.append("</g>")
    return parts


def daily_revenue_svg(points: list[DailyPoint], currencies: list[str], grain: str) -> Markup:
    days = sorted({p.day for p in points})
    first, span = days[0], (days[-1] - days[0]).days
    values = [float(p.net) for p in points]
    frame = Frame(ticks=ticks(min(values), max(values)))

    def x(day: date) -> float:
        if span == 0:
            return frame.left + frame.plot_width / 2
        return frame.left + frame.plot_width * (day - first).days / span

    body = axes(
        frame,
        y_title=f"Net revenue per {grain} (own currency)",
        x_title="Order date" if grain == "day" else f"Order {grain}",
        y_format=fmt_compact,
    )
    label_count = min(len(days), 6)
    picks = sorted(
        {round(i * (len(days) - 1) / max(label_count - 1, 1)) for i in range(label_count)}
    )
    date_format = "%b %d" if span < 330 else "%b %Y"
    for i in picks:
        day = days[i]
        body.append(
            f'<line class="axis" x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{frame.baseline}" '
            f'y2="{frame.baseline + 4}"/>'
            f'<text class="tick" x="{x(day):.1f}" y="{frame.baseline + 18}" '
            f'text-anchor="middle">{escape(day.strftime(date_format))}</text>'
        )
    colors = {c: SERIES_COLORS[i % len(SERIES_COLORS)] for i, c in enumerate(currencies)}
    for currency in currencies:
        series = [p for p in points if p.currency == currency]
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{x(p.day):.1f},{frame.y(float(p.net)):.1f}"
            for i, p in enumerate(series)
        )
        color = colors[currency]
        body.append(
            f'<g class="series" data-series="{escape(currency)}">'
            f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
        )
        radius = 3 if len(series) <= 60 else 2
        for p in series:
            body.append(
                f'<circle class="point" cx="{x(p.day):.1f}" cy="{frame.y(float(p.net)):.1f}" '
                f'r="{radius}" fill="{color}"><title>'
                f"{escape(GRAIN_LABEL[grain] + ' ' if grain == 'week' else '')}"
                f"{escape(period(p.day, grain))} · "
                f"{escape(fmt_money(p.net, currency))} net · {escape(fmt_int(p.orders))} orders"
                "</title></circle>"
            )
        body.append("</g>")
    body += legend(frame, [(c, colors[c]) for c in currencies], line=True)
    return svg(frame, f"Net revenue per {grain} and currency", body)


def funnel_svg(stages: list[tuple[str, int]]) -> Markup:
    frame = Frame(ticks=ticks(0, max(v for _, v in stages)), bottom=66, top=28)
    body = axes(frame, y_title="Sessions", x_title="Funnel stage", y_format=fmt_compact)
    slot = frame.plot_width / len(stages)
    width = slot * 0.62
    first = stages[0][1]
    for i, (label, value) in enumerate(stages):
        left = frame.left + slot * i + (slot - width) / 2
        top = frame.y(value)
        center = left + width / 2
        previous = stages[i - 1][1] if i else None
        of_previous = value / previous if previous else None
        tooltip = f"{label}: {fmt_int(value)} sessions"
        if i:
            tooltip += (
                f" ({fmt_pct(of_previous)} of {stages[i - 1][0].lower()}, "
                f"{fmt_pct(value / first if first else None)} of sessions)"
            )
        body.append(
            f'<rect class="bar" x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" '
            f'height="{max(frame.baseline - top, 0):.1f}" rx="3" '
            f'fill="{FUNNEL_COLORS[i % len(FUNNEL_COLORS)]}">'
            f"<title>{escape(tooltip)}</title></rect>"
            f'<text class="value" x="{center:.1f}" y="{top - 6:.1f}" text-anchor="middle">'
            f"{escape(fmt_int(value))}</text>"
            f'<text class="tick" x="{center:.1f}" y="{frame.baseline + 16}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
        if i:
            body.append(
                f'<text class="rate" x="{center:.1f}" y="{frame.baseline + 31}" '
                f'text-anchor="middle">{escape("→ " + fmt_pct(of_previous))}</text>'
            )
    return svg(frame, "Conversion funnel, all channels", body)


def roas_svg(channels: list[Channel]) -> Markup:
    peak = max(max(float(c.spend), float(c.revenue)) for c in channels)
    frame = Frame(ticks=ticks(0, peak), top=48, bottom=56)
    body = axes(frame, y_title="USD", x_title="Channel", y_format=fmt_compact)
    slot = frame.plot_width / len(channels)
    group = min(slot * 0.72, 120)
    bar = group / 2
    for i, c in enumerate(channels):
        left = frame.left + slot * i + (slot - group) / 2
        center = left + group / 2
        tops = []
        for j, (what, amount, color) in enumerate(
            (("spend", c.spend, SPEND_COLOR), ("attributed revenue", c.revenue, REVENUE_COLOR))
        ):
            top = frame.y(float(amount))
            tops.append(top)
            body.append(
                f'<rect class="bar" x="{left + j * bar + 1:.1f}" y="{top:.1f}" '
                f'width="{bar - 2:.1f}" height="{max(frame.baseline - top, 0):.1f}" rx="2" '
                f'fill="{color}"><title>{escape(c.channel)} · {what} '
                f"{escape(fmt_money(amount, 'USD'))}</title></rect>"
            )
        roas = fmt_ratio(c.roas) if c.roas is not None else "no spend"
        body.append(
            f'<text class="value" x="{center:.1f}" y="{min(tops) - 7:.1f}" text-anchor="middle">'
            f"{escape(roas)}<title>{escape(c.channel)} · ROAS {escape(roas)}</title></text>"
        )
        name = c.channel if len(c.channel) <= 14 else c.channel[:13] + "…"
        body.append(
            f'<text class="tick" x="{center:.1f}" y="{frame.baseline + 16}" '
            f'text-anchor="middle">{escape(name)}<title>{escape(c.channel)}</title></text>'
        )
    body += legend(frame, [("Ad spend", SPEND_COLOR), ("Attributed revenue", REVENUE_COLOR)])
    return svg(frame, "Spend and attributed revenue by channel, USD", body)


def histogram_color(index: int) -> str:
    """Green → amber → red over the ten probability bins."""
    stops = ((22, 163, 74), (245, 158, 11), (220, 38, 38))
    t = index / 9 * 2
    a, b = stops[min(int(t), 1)], stops[min(int(t), 1) + 1]
    f = t - min(int(t), 1)
    return "#" + "".join(f"{round(a[k] + (b[k] - a[k]) * f):02x}" for k in range(3))


def churn_histogram_svg(bins: list[int]) -> Markup:
    frame = Frame(ticks=ticks(0, max(bins)), height=260, top=20, bottom=50)
    body = axes(
        frame,
        y_title="Customers",
        x_title="Churn probability (latest score per customer)",
        y_format=fmt_compact,
    )
    slot = frame.plot_width / len(bins)
    for i, count in enumerate(bins):
        top = frame.y(count)
        body.append(
            f'<rect class="bar" x="{frame.left + slot * i + 1:.1f}" y="{top:.1f}" '
            f'width="{slot - 2:.1f}" height="{max(frame.baseline - top, 0):.1f}" '
            f'fill="{histogram_color(i)}"><title>{probability_bin(i)}: '
            f"{escape(customers(count))}</title></rect>"
        )
        if count:
            body.append(
                f'<text class="value" x="{frame.left + slot * (i + 0.5):.1f}" '
                f'y="{top - 5:.1f}" text-anchor="middle">{escape(fmt_int(count))}</text>'
            )
    for i in range(0, 11, 2):
        body.append(
            f'<text class="tick" x="{frame.left + slot * i:.1f}" y="{frame.baseline + 16}" '
            f'text-anchor="middle">{i / 10:.1f}</text>'
        )
    return svg(frame, "Histogram of churn probability in ten bins", body)


def bands_svg(rows: list[tuple[str, dict[str, int], Sequence[str]]]) -> Markup:
    """One stacked bar per view of churn risk (model bands, the customer_360 rule)."""
    row_height, gap = 24, 14
    height = 30 + len(rows) * (row_height + gap) + 26
    frame = Frame(ticks=(0.0, 1.0), height=height, left=150, top=30, bottom=26)
    body = []
    bands = [b for b in RULE_BANDS if any(b in counts for _, counts, _ in rows)]
    body += legend(
        Frame(ticks=(0.0, 1.0), left=frame.left),
        [(b.replace("_", " "), BAND_COLORS[b]) for b in bands],
    )
    for r, (label, counts, order) in enumerate(rows):
        y = frame.top + r * (row_height + gap)
        total = sum(counts.values())
        body.append(
            f'<text class="row-label" x="{frame.left - 10}" y="{y + row_height / 2:.1f}" '
            f'dy="0.32em" text-anchor="end">{escape(label)}</text>'
        )
        x = float(frame.left)
        for band in [*order, *sorted(set(counts) - set(order), key=str)]:
            count = counts.get(band, 0)
            if not count:
                continue
            width = frame.plot_width * count / total
            share = fmt_pct(count / total, 0)
            color = BAND_COLORS.get(band, SPEND_COLOR)
            body.append(
                f'<rect class="bar" x="{x:.1f}" y="{y}" width="{width:.1f}" '
                f'height="{row_height}" fill="{color}"><title>{escape(label)} · {escape(band)}: '
                f"{escape(customers(count))} ({escape(share)})</title></rect>"
            )
            text = f"{fmt_int(count)} · {share}" if width > 72 else share if width > 30 else ""
            if text:
                body.append(
                    f'<text class="in-bar{" on-light" if band == "no_orders" else ""}" '
                    f'x="{x + 6:.1f}" y="{y + row_height / 2:.1f}" '
                    f'dy="0.32em">{escape(text)}</text>'
                )
            x += width
    body.append(
        f'<text class="axis-title" x="{frame.left + frame.plot_width / 2:.1f}" '
        f'y="{height - 6}" text-anchor="middle">Share of customers per risk band</text>'
    )
    return svg(frame, "Customers per churn risk band", body)
