"""Seeded demo data for "Acme Outfitters", an online outdoor-gear retailer.

The generator writes the file drops a real landing zone receives, warts included: a product
catalog with deltas, a drifted export and files nobody can read, and daily ad-spend files per
marketing channel with re-sends, corrections, drift and broken rows. The platform's contracts,
quarantine and de-duplication are exercised by these files, so their formats are exact.

Same ``(scale, seed, start_date, days)`` gives byte-identical files: all randomness comes from
``random.Random`` instances derived from ``seed``, and nothing depends on the clock.
"""

from __future__ import annotations

import csv
import io
import os
import random
import shutil
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

FileKind = Literal["good", "duplicate_content", "unreadable", "drifted_header"]

PRODUCT_HEADER = (
    "sku",
    "name",
    "category",
    "brand",
    "unit_price",
    "currency",
    "weight_kg",
    "active",
    "updated_at",
)
DRIFTED_PRODUCT_HEADER = (
    "SKU",
    "Product Name",
    "Category",
    "Brand",
    "Price",
    "Currency",
    "Weight (kg)",
    "Active",
    "Updated At",
    "Season",
)
AD_SPEND_HEADER = ("date", "channel", "campaign", "spend", "impressions", "clicks")
DRIFTED_AD_SPEND_HEADER = (
    "date",
    "channel",
    "campaign",
    "cost",
    "impressions",
    "clicks",
    "conversions",
)

CATEGORIES = (
    "tents",
    "sleeping_bags",
    "backpacks",
    "footwear",
    "apparel",
    "climbing",
    "camp_kitchen",
    "accessories",
)
CHANNELS = ("google_ads", "meta_ads", "tiktok_ads", "email")
SEASONS = ("all-season", "winter", "summer")

# First day offset (0-based, from start_date) on which meta_ads files use the drifted header.
META_DRIFT_FROM_DAY = 20

# Invented brands; two are European, so non-ASCII text appears in the good (UTF-8) files too.
_BRANDS = (
    "Northpeak",
    "Ridgeway",
    "Timberline Co.",
    "Cascadia",
    "Bergsjö",
    "Alpenfels",
    "Granite & Pine",
    "Driftwood",
    "Summitcraft",
    "Lumen Trail",
)

# Category mix of an outdoor retailer: lots of apparel and small items, fewer tents.
_CATEGORY_WEIGHTS = {
    "apparel": 24,
    "footwear": 14,
    "accessories": 15,
    "camp_kitchen": 10,
    "backpacks": 10,
    "climbing": 10,
    "tents": 9,
    "sleeping_bags": 8,
}
_CATEGORY_TABLE = tuple(c for c, w in _CATEGORY_WEIGHTS.items() for _ in range(w))

_LINES = (
    "Alpine",
    "Basecamp",
    "Featherlite",
    "Ridgeline",
    "Stormhold",
    "Trailhead",
    "Summit",
    "Backcountry",
    "Canyon",
    "Tundra",
    "Switchback",
    "Evergreen",
)

# Per category: (product noun, price range in whole dollars, weight range in centi-kilograms).
_CATALOG: dict[str, tuple[tuple[str, tuple[int, int], tuple[int, int]], ...]] = {
    "tents": (
        ("1P Tent", (149, 449), (90, 180)),
        ("2P Tent", (179, 599), (130, 280)),
        ("3P Tent", (229, 699), (220, 420)),
        ("4P Family Tent", (249, 799), (450, 900)),
        ("Bivy Shelter", (89, 299), (40, 110)),
        ("Tarp Shelter", (59, 249), (30, 90)),
    ),
    "sleeping_bags": (
        ("Down Sleeping Bag 20°F", (249, 549), (70, 130)),
        ("Down Sleeping Bag 0°F", (349, 699), (110, 180)),
        ("Synthetic Sleeping Bag 30°F", (79, 199), (100, 190)),
        ("Sleeping Quilt", (179, 449), (50, 100)),
        ("Sleeping Bag Liner", (29, 89), (15, 40)),
    ),
    "backpacks": (
        ("Daypack 22L", (49, 149), (45, 95)),
        ("Backpack 45L", (129, 279), (95, 180)),
        ("Backpack 65L", (179, 379), (140, 260)),
        ("Hydration Pack 12L", (59, 149), (30, 70)),
        ("Summit Pack 30L", (79, 199), (40, 90)),
    ),
    "footwear": (
        ("Hiking Boot, Men's", (129, 279), (110, 170)),
        ("Hiking Boot, Women's", (129, 279), (90, 140)),
        ("Trail Runner, Men's", (99, 179), (55, 80)),
        ("Trail Runner, Women's", (99, 179), (45, 70)),
        ("Approach Shoe", (109, 189), (70, 100)),
        ("Camp Sandal", (39, 99), (25, 50)),
    ),
    "apparel": (
        ("Down Jacket, Men's", (179, 449), (30, 80)),
        ("Down Jacket, Women's", (179, 449), (25, 70)),
        ("Rain Shell", (99, 399), (20, 50)),
        ("Fleece Pullover", (59, 149), (25, 50)),
        ("Merino Base Layer", (59, 129), (15, 30)),
        ("Softshell Pant", (79, 179), (30, 55)),
        ("Trail Shorts", (39, 79), (15, 30)),
        ("Hiking Socks 3-Pack", (19, 49), (10, 20)),
    ),
    "climbing": (
        ("Harness", (59, 149), (30, 50)),
        ("Locking Carabiner", (12, 29), (5, 9)),
        ("Chalk Bag", (15, 39), (5, 15)),
        ("Dynamic Rope 60m", (179, 329), (300, 420)),
        ("Climbing Helmet", (59, 149), (20, 40)),
    ),
    "camp_kitchen": (
        ("Canister Stove", (39, 129), (8, 40)),
        ("Titanium Pot 900ml", (39, 79), (10, 20)),
        ("Cook Set", (49, 149), (30, 90)),
        ("Insulated Mug", (19, 39), (15, 35)),
        ("Water Filter", (29, 99), (8, 40)),
    ),
    "accessories": (
        ("Headlamp", (19, 99), (5, 15)),
        ("Trekking Poles", (59, 199), (35, 60)),
        ("Dry Bag 20L", (19, 39), (8, 15)),
        ("First Aid Kit", (19, 59), (15, 50)),
        ("Camp Chair", (49, 149), (80, 160)),
        ("Gaiters", (29, 69), (15, 30)),
    ),
}
_CENT_ENDINGS = (99, 99, 99, 95, 95, 49, 0)

# Per channel: (daily spend range in dollars, CPM range in dollars, CTR range).
# Email is different: spend is the send cost, impressions are emails delivered.
_CHANNEL_PROFILE: dict[
    str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
] = {
    "google_ads": ((20.0, 800.0), (4.0, 12.0), (0.015, 0.045)),
    "meta_ads": ((15.0, 600.0), (6.0, 14.0), (0.006, 0.02)),
    "tiktok_ads": ((10.0, 400.0), (3.0, 9.0), (0.006, 0.015)),
    "email": ((0.0, 0.0), (0.10, 0.30), (0.01, 0.045)),
}
_CAMPAIGN_THEMES = ("fall", "holiday", "evergreen", "clearance", "brand", "prospecting", "retarget")


class DemoFile(BaseModel):
    """One file written into the landing zone, and why it is there."""

    feed: str
    path: Path
    rows: int
    kind: FileKind
    note: str


class DemoManifest(BaseModel):
    """What the generator wrote, so tests and demos can check the platform's counts."""

    files: list[DemoFile]
    products: int
    ad_spend_rows: int
    malformed_rows: int


# A product kept in memory for the delta files:
# (number, name, category, brand, price_cents, currency, weight_centikg, active, updated_at).
_Product = tuple[int, str, str, str, int, str, int, bool, str]


def catalog_sku(number: int) -> str:
    return f"SKU-{number:06d}"


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _random_moment(rng: random.Random, start: datetime, end: datetime) -> str:
    """A timestamp in ``[start, end)`` with second precision."""
    span = int((end - start).total_seconds())
    return _ts(start + timedelta(seconds=int(rng.random() * span)))


def _price_cents(rng: random.Random, low: int, high: int) -> int:
    """A retail-looking price: whole dollars plus a .99/.95/.49/.00 ending."""
    dollars = low + int(rng.random() * (high - low + 1))
    ending = _CENT_ENDINGS[int(rng.random() * len(_CENT_ENDINGS))]
    return dollars * 100 + ending


def _new_product(rng: random.Random, number: int, updated_at: str) -> _Product:
    category = _CATEGORY_TABLE[int(rng.random() * len(_CATEGORY_TABLE))]
    nouns = _CATALOG[category]
    brand = _BRANDS[int(rng.random() * len(_BRANDS))]
    line = _LINES[int(rng.random() * len(_LINES))]
    noun, (p_low, p_high), (w_low, w_high) = nouns[int(rng.random() * len(nouns))]
    weight = w_low + int(rng.random() * (w_high - w_low + 1))
    currency = "EUR" if rng.random() < 0.03 else "USD"
    active = rng.random() < 0.92
    return (
        number,
        f"{brand} {line} {noun}",
        category,
        brand,
        _price_cents(rng, p_low, p_high),
        currency,
        weight,
        active,
        updated_at,
    )


def _product_row(p: _Product) -> list[str]:
    number, name, category, brand, cents, currency, weight, active, updated_at = p
    return [
        catalog_sku(number),
        name,
        category,
        brand,
        f"{cents // 100}.{cents % 100:02d}",
        currency,
        f"{weight // 100}.{weight % 100:02d}",
        "true" if active else "false",
        updated_at,
    ]


def _reprice(rng: random.Random, cents: int) -> int:
    """A new price for a repriced product: a markdown or a rise, never the same price."""
    factor = rng.uniform(0.75, 1.15)
    dollars = max(1, int(cents * factor) // 100)
    new = dollars * 100 + _CENT_ENDINGS[int(rng.random() * len(_CENT_ENDINGS))]
    return new if new != cents else new + 100


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> int:
    """Write a UTF-8 CSV with '\\n' line endings; return the number of data rows written."""
    counted = _Counter(rows)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(counted)
    return counted.count


class _Counter:
    """Pass rows through to ``csv.writer.writerows`` while counting them."""

    def __init__(self, rows: Iterable[Sequence[str]]) -> None:
        self._rows = rows
        self.count = 0

    def __iter__(self) -> Iterator[Sequence[str]]:
        for row in self._rows:
            self.count += 1
            yield row


def _with_inserts(
    rows: Iterable[list[str]], inserts: dict[int, list[list[str]]]
) -> Iterator[list[str]]:
    """Yield ``rows`` with extra rows placed before given positions (or at the end)."""
    for position, row in enumerate(rows):
        yield from inserts.pop(position, [])
        yield row
    for position in sorted(inserts):
        yield from inserts[position]


def generate_landing_files(
    landing_dir: Path,
    *,
    scale: float = 1.0,
    seed: int = 42,
    start_date: date = date(2026, 10, 1),
    days: int = 30,
) -> DemoManifest:
    """Write the Acme Outfitters demo drops into ``landing_dir`` and describe them.

    Existing files with the same names are overwritten; other files are left alone.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    landing_dir = Path(landing_dir).absolute()
    master = random.Random(seed)
    # Each feed gets its own stream, so changing one feed's logic leaves the other's bytes alone.
    product_rng = random.Random(master.getrandbits(64))
    ad_rng = random.Random(master.getrandbits(64))

    products_files, products, product_malformed = _write_products(
        landing_dir / "products", product_rng, scale, start_date
    )
    ad_files, ad_rows, ad_malformed = _write_ad_spend(
        landing_dir / "ad_spend", ad_rng, scale, start_date, days
    )
    _dropped_earlier([f.path for f in products_files + ad_files])
    return DemoManifest(
        files=products_files + ad_files,
        products=products,
        ad_spend_rows=ad_rows,
        malformed_rows=product_malformed + ad_malformed,
    )


DROPPED_AGO_S = 3600


def _dropped_earlier(paths: list[Path]) -> None:
    """Date the drops an hour back, in the order they were written: the demo's files are
    complete, so they must not look like uploads still in flight (a feed loads a file only
    once it is older than its ``settle_seconds``), and the order of arrival is kept."""
    shift = DROPPED_AGO_S * 1_000_000_000
    for path in paths:
        st = path.lstat()
        os.utime(path, ns=(st.st_atime_ns - shift, st.st_mtime_ns - shift), follow_symlinks=False)


def _write_products(
    folder: Path, rng: random.Random, scale: float, start_date: date
) -> tuple[list[DemoFile], int, int]:
    """Write the catalog drops; return the files, the distinct good SKUs and the broken rows."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[DemoFile] = []
    n = max(50, int(2000 * scale))
    n_new = max(1, round(n * 0.02))
    n_changed = max(2, round(n * 0.10))
    n_drift = max(2, round(n * 0.05))
    start = datetime(start_date.year, start_date.month, start_date.day)
    export_at = start + timedelta(hours=8)

    # Choose up front which products the later files touch, so only those are kept in memory.
    changed = sorted(rng.sample(range(1, n + 1), n_changed))
    changed_set = set(changed)
    broken_pool = [
        i for i in rng.sample(range(1, n + 1), min(n, n_changed + 8)) if i not in changed_set
    ]
    broken = broken_pool[:8]
    drifted = sorted(rng.sample(range(1, n + n_new + 1), n_drift))
    keep = changed_set | set(broken) | set(drifted)
    kept: dict[int, _Product] = {}

    # a. the full catalog, streamed.
    def full_rows() -> Iterator[list[str]]:
        window_start = start - timedelta(days=365)
        for number in range(1, n + 1):
            p = _new_product(rng, number, _random_moment(rng, window_start, start))
            if number in keep:
                kept[number] = p
            yield _product_row(p)

    full_path = folder / f"catalog_full_{start_date.isoformat()}.csv"
    rows = _write_csv(full_path, PRODUCT_HEADER, full_rows())
    files.append(
        DemoFile(
            feed="products",
            path=full_path,
            rows=rows,
            kind="good",
            note=f"full catalog export at {_ts(export_at)}: every SKU once",
        )
    )

    # b. the first delta: repriced products, new SKUs, one SKU twice and eight broken rows.
    d1_day = start_date + timedelta(days=7)
    d1_from, d1_to = start + timedelta(days=1), start + timedelta(days=7, hours=6)
    dup_number = changed[int(rng.random() * len(changed))]
    dup_older: list[str] = []

    def delta_rows() -> Iterator[list[str]]:
        for number in changed:
            old = kept[number]
            if number == dup_number:
                # Two versions in one file; the newer comes first, so "last row wins" is wrong.
                first = _random_moment(rng, d1_from, d1_from + timedelta(days=2))
                second = _random_moment(rng, d1_from + timedelta(days=3), d1_to)
                older = (*old[:4], _reprice(rng, old[4]), *old[5:8], first)
                dup_older.extend(_product_row(older))
                new = (*old[:4], _reprice(rng, older[4]), *old[5:8], second)
            else:
                new = (
                    *old[:4],
                    _reprice(rng, old[4]),
                    *old[5:8],
                    _random_moment(rng, d1_from, d1_to),
                )
            kept[number] = new
            yield _product_row(new)
        for number in range(n + 1, n + n_new + 1):
            p = _new_product(rng, number, _random_moment(rng, d1_from, d1_to))
            if number in keep:
                kept[number] = p
            yield _product_row(p)
        yield dup_older

    broken_rows = _broken_product_rows(rng, [kept[i] for i in broken], d1_from, d1_to)
    good_count = n_changed + n_new + 1
    inserts: dict[int, list[list[str]]] = {}
    for row in broken_rows:
        inserts.setdefault(int(rng.random() * good_count), []).append(row)
    d1_path = folder / f"catalog_delta_{d1_day.isoformat()}.csv"
    rows = _write_csv(d1_path, PRODUCT_HEADER, _with_inserts(delta_rows(), inserts))
    files.append(
        DemoFile(
            feed="products",
            path=d1_path,
            rows=rows,
            kind="good",
            note=(
                f"delta: {n_changed} repriced, {n_new} new SKUs, {catalog_sku(dup_number)} twice "
                f"(newer updated_at first) and {len(broken_rows)} malformed rows"
            ),
        )
    )

    # c. the same delta delivered again under a different name.
    copy_path = folder / f"catalog_delta_{d1_day.isoformat()} (copy).csv"
    shutil.copyfile(d1_path, copy_path)
    files.append(
        DemoFile(
            feed="products",
            path=copy_path,
            rows=rows,
            kind="duplicate_content",
            note=f"byte-identical copy of {d1_path.name}",
        )
    )

    # d. the second delta, from an export tool that renamed the columns and added Season.
    d2_day = start_date + timedelta(days=14)
    d2_from, d2_to = start + timedelta(days=8), start + timedelta(days=14, hours=6)

    def drifted_rows() -> Iterator[list[str]]:
        for number in drifted:
            old = kept[number]
            active = (not old[7]) if rng.random() < 0.1 else old[7]
            new = (*old[:4], _reprice(rng, old[4]), old[5], old[6], active)
            row = _product_row((*new, _random_moment(rng, d2_from, d2_to)))
            season = "winter" if old[2] == "sleeping_bags" else SEASONS[int(rng.random() * 3)]
            row.append(season)
            yield row

    d2_path = folder / f"catalog_delta_{d2_day.isoformat()}.csv"
    rows = _write_csv(d2_path, DRIFTED_PRODUCT_HEADER, drifted_rows())
    files.append(
        DemoFile(
            feed="products",
            path=d2_path,
            rows=rows,
            kind="drifted_header",
            note=f"delta: {n_drift} updated; columns renamed, Season column added",
        )
    )

    # e. files no reader can take as a product catalog.
    files.extend(_unreadable_catalogs(folder, rng, n, d2_from, d2_to))
    return files, n + n_new, len(broken_rows)


def _broken_product_rows(
    rng: random.Random, sources: list[_Product], window_from: datetime, window_to: datetime
) -> list[list[str]]:
    """Eight rows, each broken in one way, for existing SKUs that the delta does not reprice."""
    rows = [_product_row((*p[:8], _random_moment(rng, window_from, window_to))) for p in sources]
    rows[0].append("see attached")  # too many columns
    rows[1].pop()  # too few columns: no updated_at
    rows[2][4] = "N/A"  # unparsable price
    rows[3][4] = rows[3][4].replace(".", ",")  # decimal comma, e.g. "12,99"
    rows[4][2] = "kayaks"  # category outside the enum
    rows[5][4] = "-" + rows[5][4]  # negative price
    rows[6][0] = ""  # missing key
    rows[7][8] = "not-a-date"  # unparsable timestamp
    return rows


def _unreadable_catalogs(
    folder: Path, rng: random.Random, n: int, window_from: datetime, window_to: datetime
) -> list[DemoFile]:
    """Files that fail before any row can be read: empty, binary, wrong encoding, no key."""
    files: list[DemoFile] = []

    empty = folder / "catalog_empty.csv"
    empty.write_bytes(b"")
    files.append(
        DemoFile(feed="products", path=empty, rows=0, kind="unreadable", note="zero bytes")
    )

    images = folder / "catalog_images.csv"
    # A PNG signature and chunk header, then noise: someone exported images under a .csv name.
    png_start = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    images.write_bytes(png_start + rng.randbytes(2048 - len(png_start)))
    files.append(
        DemoFile(
            feed="products",
            path=images,
            rows=0,
            kind="unreadable",
            note="2 KiB of binary (PNG bytes, NUL bytes included) named .csv",
        )
    )

    latin1 = folder / "catalog_latin1.csv"
    names = (
        ("Alpenfels Édition Été Zelt 2P", "tents", "Alpenfels", "349.00", "2.10"),
        ("Bergsjö Hüttenschuh, Damen", "footwear", "Bergsjö", "69.95", "0.45"),
        ("Alpenfels Gipfelstürmer Rucksack 45L", "backpacks", "Alpenfels", "189.00", "1.45"),
    )
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PRODUCT_HEADER)
    for name, category, brand, price, weight in names:
        number = 1 + int(rng.random() * n)
        moment = _random_moment(rng, window_from, window_to)
        writer.writerow(
            [catalog_sku(number), name, category, brand, price, "EUR", weight, "true", moment]
        )
    latin1.write_bytes(buffer.getvalue().encode("latin-1"))
    files.append(
        DemoFile(
            feed="products",
            path=latin1,
            rows=0,
            kind="unreadable",
            note="valid header and 3 rows, but encoded latin-1 so strict UTF-8 decoding fails",
        )
    )

    no_sku = folder / "catalog_no_sku.csv"
    header = PRODUCT_HEADER[1:]
    sku_less = []
    for _ in range(3):
        p = _new_product(rng, 0, _random_moment(rng, window_from, window_to))
        sku_less.append(_product_row(p)[1:])
    _write_csv(no_sku, header, sku_less)
    files.append(
        DemoFile(
            feed="products",
            path=no_sku,
            rows=0,
            kind="unreadable",
            note="valid UTF-8 CSV with 3 rows, but the header has no sku column",
        )
    )
    return files


# Broken ad-spend rows: (day offset, channel, what is broken). Each replaces one campaign's row
# in that file, so every file still holds one row per campaign. Days avoid the special files.
_AD_BREAKAGE: tuple[tuple[int, str, str], ...] = (
    (3, "google_ads", "impressions_na"),
    (4, "meta_ads", "extra_column"),
    (6, "email", "clicks_gt_impressions"),
    (8, "google_ads", "negative_spend"),
    (11, "tiktok_ads", "bad_date"),
    (12, "meta_ads", "bad_channel"),
    (15, "email", "empty_campaign"),
)


def _break_ad_row(row: list[str], how: str, year: int, rng: random.Random) -> list[str]:
    """Break one row in the way ``how`` names; the others stay realistic."""
    row = list(row)
    if how == "impressions_na":
        row[4] = "n/a"
    elif how == "extra_column":
        row.append("manual_adjustment")
    elif how == "clicks_gt_impressions":
        row[5] = str(int(row[4]) + 1 + int(rng.random() * 500))
    elif how == "negative_spend":
        row[3] = "-" + row[3]
    elif how == "bad_date":
        row[0] = f"{year}-13-01"
    elif how == "bad_channel":
        row[1] = "carrier_pigeon"
    elif how == "empty_campaign":
        row[2] = ""
    return row


def _campaigns(
    rng: random.Random, channel: str, count: int
) -> list[tuple[str, float, float, float]]:
    """Fixed per-campaign traits: (name, daily base spend or sends, CPM, CTR)."""
    (s_low, s_high), (cpm_low, cpm_high), (ctr_low, ctr_high) = _CHANNEL_PROFILE[channel]
    width = max(2, len(str(count)))
    result = []
    for i in range(1, count + 1):
        theme = _CAMPAIGN_THEMES[int(rng.random() * len(_CAMPAIGN_THEMES))]
        category = CATEGORIES[int(rng.random() * len(CATEGORIES))]
        name = f"{channel}_{theme}_{category}_{i:0{width}d}"
        base = rng.uniform(2_000, 50_000) if channel == "email" else rng.uniform(s_low, s_high)
        result.append((name, base, rng.uniform(cpm_low, cpm_high), rng.uniform(ctr_low, ctr_high)))
    return result


def _ad_rows(
    rng: random.Random,
    channel: str,
    day: date,
    campaigns: list[tuple[str, float, float, float]],
    drifted: bool,
) -> Iterator[list[str]]:
    """One row per campaign for one channel and day."""
    iso = day.isoformat()
    weekend = day.weekday() >= 5
    # Search spend dips at weekends, social spend rises; email goes out less at weekends.
    day_factor = {"google_ads": 0.85, "meta_ads": 1.1, "tiktok_ads": 1.15, "email": 0.6}
    factor = day_factor[channel] if weekend else 1.0
    for name, base, cpm, ctr in campaigns:
        noise = 0.8 + rng.random() * 0.4
        if channel == "email":
            impressions = int(base * factor * noise)
            spend = impressions * cpm / 1000
        else:
            spend = base * factor * noise
            impressions = int(spend / cpm * 1000 * (0.9 + rng.random() * 0.2))
        day_ctr = min(0.05, max(0.005, ctr * (0.85 + rng.random() * 0.3)))
        clicks = min(impressions, round(impressions * day_ctr))
        row = [iso, channel, name, f"{spend:.2f}", str(impressions), str(clicks)]
        if drifted:
            row.append(str(int(clicks * (0.01 + rng.random() * 0.07))))
        yield row


def _write_ad_spend(
    folder: Path, rng: random.Random, scale: float, start_date: date, days: int
) -> tuple[list[DemoFile], int, int]:
    """Write one file per channel per day; return the files, all data rows and broken rows."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[DemoFile] = []
    per_channel = max(3, int(10 * scale))
    campaigns = {c: _campaigns(rng, c, per_channel) for c in CHANNELS}
    breakage = {(d, c): how for d, c, how in _AD_BREAKAGE if d < days}
    total_rows = 0
    malformed = 0

    for offset in range(days):
        day = start_date + timedelta(days=offset)
        for channel in CHANNELS:
            path = folder / f"{channel}_{day.isoformat()}.csv"
            if channel == "tiktok_ads" and offset == 9:
                path.write_bytes(b"")
                files.append(
                    DemoFile(
                        feed="ad_spend",
                        path=path,
                        rows=0,
                        kind="unreadable",
                        note="zero bytes: the day's tiktok export failed",
                    )
                )
                continue
            drifted = channel == "meta_ads" and offset >= META_DRIFT_FROM_DAY
            rows_iter = _ad_rows(rng, channel, day, campaigns[channel], drifted)
            how = breakage.get((offset, channel))
            note = f"{per_channel} campaigns"
            if how is not None:
                target = int(rng.random() * per_channel)
                rows_iter = _break_at(rows_iter, target, how, day.year, rng)
                note += f"; one malformed row ({how.replace('_', ' ')})"
                malformed += 1
            kept: list[list[str]] = []
            if channel == "tiktok_ads" and offset == 5:
                rows_iter = _tee(rows_iter, kept)
            header = DRIFTED_AD_SPEND_HEADER if drifted else AD_SPEND_HEADER
            rows = _write_csv(path, header, rows_iter)
            total_rows += rows
            kind: FileKind = "drifted_header" if drifted else "good"
            if drifted:
                note += "; header has cost instead of spend and a new conversions column"
            files.append(DemoFile(feed="ad_spend", path=path, rows=rows, kind=kind, note=note))

            if channel == "google_ads" and offset == 2:
                resend = folder / f"{channel}_{day.isoformat()}_resend.csv"
                shutil.copyfile(path, resend)
                total_rows += rows
                files.append(
                    DemoFile(
                        feed="ad_spend",
                        path=resend,
                        rows=rows,
                        kind="duplicate_content",
                        note=f"byte-identical re-send of {path.name}",
                    )
                )
            if kept:
                corrected = folder / f"{channel}_{day.isoformat()}_corrected.csv"
                rows = _write_csv(corrected, AD_SPEND_HEADER, _corrected(rng, kept))
                total_rows += rows
                files.append(
                    DemoFile(
                        feed="ad_spend",
                        path=corrected,
                        rows=rows,
                        kind="good",
                        note=f"re-delivers {path.name} with corrected spend (same keys)",
                    )
                )
    return files, total_rows, malformed


def _break_at(
    rows: Iterable[list[str]], index: int, how: str, year: int, rng: random.Random
) -> Iterator[list[str]]:
    """Pass rows through, breaking the one at ``index``."""
    for i, row in enumerate(rows):
        yield _break_ad_row(row, how, year, rng) if i == index else row


def _tee(rows: Iterable[list[str]], sink: list[list[str]]) -> Iterator[list[str]]:
    """Keep a copy of rows while they are written, for the corrected re-delivery."""
    for row in rows:
        sink.append(row)
        yield row


def _corrected(rng: random.Random, rows: list[list[str]]) -> Iterator[list[str]]:
    """The same rows with spend reduced a little, as after an invalid-traffic credit."""
    for row in rows:
        old = round(float(row[3]) * 100)
        new = round(old * (0.85 + rng.random() * 0.12))
        if new == old:
            new = max(0, old - 1)
        yield [*row[:3], f"{new // 100}.{new % 100:02d}", *row[4:]]
